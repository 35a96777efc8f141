//! `axtary ledger verify|tail`.

use clap::Subcommand;

use super::Cli;
use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Check the hash chain; names the first broken line.
    Verify,
    /// Show the most recent lines.
    Tail {
        /// How many lines.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
    },
}

pub fn run(cli: &Cli, cmd: &LedgerCommand) -> Result<(), CliError> {
    let home = super::home()?;
    let config = super::load_config(cli, &home)?;
    let Some(path) = config.ledger else {
        return Err(CliError::Failed(
            "the ledger is off in this config (`ledger.path: off`)".to_string(),
        ));
    };
    if !path.exists() {
        return Err(CliError::Failed(format!(
            "no ledger at {} yet: it is written by `axtary proxy`",
            path.display()
        )));
    }
    match cmd {
        LedgerCommand::Verify => match crate::ledger::verify(&path) {
            Ok(lines) => {
                if cli.json {
                    super::print_json(&serde_json::json!({
                        "ok": true, "lines": lines, "path": path.display().to_string(),
                    }));
                } else {
                    println!(
                        "ledger ok: {lines} lines, hash chain intact ({})",
                        path.display()
                    );
                }
                Ok(())
            }
            Err(e) => {
                if cli.json {
                    super::print_json(&serde_json::json!({
                        "ok": false, "line": e.line, "reason": e.reason,
                        "path": path.display().to_string(),
                    }));
                }
                Err(CliError::Failed(format!(
                    "ledger {} is broken at line {}: {}",
                    path.display(),
                    e.line,
                    e.reason
                )))
            }
        },
        LedgerCommand::Tail { n } => {
            let lines = crate::ledger::tail(&path, *n)
                .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
            if cli.json {
                let values: Vec<serde_json::Value> = lines
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                super::print_json(&serde_json::Value::Array(values));
            } else {
                let mut text = String::new();
                for l in &lines {
                    match serde_json::from_str::<serde_json::Value>(l) {
                        Ok(v) => text.push_str(&format!(
                            "{} {:<9} {:<7} {}{} {} {} {}ms\n",
                            v["ts"].as_str().unwrap_or("-"),
                            v["connector"].as_str().unwrap_or("-"),
                            v["method"].as_str().unwrap_or("-"),
                            v["host"].as_str().unwrap_or("-"),
                            v["path"].as_str().unwrap_or(""),
                            v["status"],
                            v["decision"].as_str().unwrap_or("-"),
                            v["durationMs"],
                        )),
                        Err(_) => {
                            text.push_str(l);
                            text.push('\n');
                        }
                    }
                }
                super::print_out(&text);
            }
            Ok(())
        }
    }
}
