//! `axtary run -- CMD [ARGS]`: a proxy on an ephemeral loopback port for the lifetime of one
//! command. The command gets the env lines of `axtary env`, signals are forwarded to it, and
//! `axtary run` exits with its status.

use std::ffi::OsString;
use std::net::SocketAddr;

use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Cli;
use crate::config::Config;
use crate::error::CliError;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The command and its arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

pub fn run(cli: &Cli, args: &RunArgs) -> Result<(), CliError> {
    let ephemeral: SocketAddr = ([127, 0, 0, 1], 0).into();
    let prepared = super::proxy::prepare(cli, Some(ephemeral))?;
    let runtime = super::runtime()?;
    let code = runtime.block_on(async {
        let running = super::proxy::bind(&prepared).await?;
        let token = prepared
            .proxy_token
            .as_ref()
            .map(|t| t.expose().to_string());
        let vars = super::env::agent_env(&prepared.home, running.addr, token.as_deref())?;
        let (program, rest) = args.command.split_first().ok_or_else(|| {
            CliError::Usage("axtary run needs a command: axtary run -- CMD [ARGS]".into())
        })?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(rest).envs(vars.iter().map(|(k, v)| (k, v)));
        // SECURITY: the child is the agent; the credentials the proxy read from this
        // environment must not be handed to it.
        for name in credential_env_names(&prepared.config) {
            cmd.env_remove(name);
        }
        // Handlers before the child exists, so no signal meant for it can kill us first.
        let signals = Signals::install()?;
        let mut child = cmd.spawn().map_err(|e| {
            CliError::Failed(format!(
                "cannot run `{}`: {e}; check the command name and PATH",
                program.to_string_lossy()
            ))
        })?;
        tracing::debug!(addr = %running.addr, "proxy for the child is listening");
        let status = wait_forwarding_signals(&mut child, signals).await;
        running.shutdown(prepared.config.proxy.shutdown_grace).await;
        status
    })?;
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::Exit(code))
    }
}

/// Every env var the config names as a credential source, plus the proxy token's.
pub fn credential_env_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config.proxy.auth_token_env.iter().cloned().collect();
    for c in &config.connectors {
        names.push(c.token_env.clone());
        let app = &c.app;
        let oauth = &c.oauth;
        for n in [
            &app.private_key_env,
            &app.private_key_file_env,
            &oauth.client_secret_env,
        ]
        .into_iter()
        .flatten()
        {
            names.push(n.clone());
        }
        names.push(format!(
            "AXTARY_{}_CLIENT_SECRET",
            c.provider.as_str().to_ascii_uppercase()
        ));
    }
    names.sort();
    names.dedup();
    names
}

/// Waits for the child, forwarding SIGINT and SIGTERM to it; returns its exit code (128 +
/// signal number when a signal ended it, as shells report).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())
                .map_err(|e| CliError::Failed(format!("cannot watch SIGTERM: {e}")))?,
            int: signal(SignalKind::interrupt())
                .map_err(|e| CliError::Failed(format!("cannot watch SIGINT: {e}")))?,
        })
    }
}

async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
    signals: Signals,
) -> Result<i32, CliError> {
    let Signals { mut term, mut int } = signals;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::Failed(format!("waiting for the command failed: {e}")))?;
                use std::os::unix::process::ExitStatusExt;
                return Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
            }
            _ = term.recv() => forward(pid, Signal::SIGTERM),
            _ = int.recv() => forward(pid, Signal::SIGINT),
        }
    }
}

fn forward(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        if let Err(e) = kill(pid, sig) {
            tracing::debug!(error = %e, "could not forward {sig} to the command");
        }
    }
}
