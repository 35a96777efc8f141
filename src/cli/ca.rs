//! `axtary ca init|path`.

use clap::Subcommand;

use super::Cli;
use crate::error::CliError;
use crate::proxy::certs::CertAuthority;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create the local CA if it does not exist, and print its certificate's path.
    Init,
    /// Print the CA certificate's path.
    Path,
}

pub fn run(cli: &Cli, cmd: &CaCommand) -> Result<(), CliError> {
    let home = super::home()?;
    let path = home.ca_cert();
    let existed = path.exists();
    if matches!(cmd, CaCommand::Init) {
        CertAuthority::load_or_create(&home).map_err(CliError::Failed)?;
    }
    let exists = path.exists();
    if cli.json {
        super::print_json(&serde_json::json!({
            "path": path.display().to_string(),
            "exists": exists,
            "created": exists && !existed,
        }));
    } else {
        println!("{}", path.display());
        if !exists {
            eprintln!("the CA does not exist yet: run `axtary ca init` (or start the proxy)");
        }
    }
    if exists {
        Ok(())
    } else {
        Err(CliError::Failed(String::new()))
    }
}
