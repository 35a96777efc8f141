//! The command line: one module per subcommand. Each returns `Result<(), CliError>`;
//! `main` prints the error and picks the exit code.

pub mod ca;
pub mod connect;
pub mod connections;
pub mod disconnect;
pub mod doctor;
pub mod env;
pub mod ledger;
pub mod proxy;
pub mod run;
pub mod smoke;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::CliError;
use crate::paths::Home;

/// Axtary: a local credential proxy for AI agents. The agent never holds the token.
#[derive(Parser, Debug)]
#[command(name = "axtary", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: ./axtary.yml, else the built-in default).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print exactly one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy.
    Proxy(proxy::ProxyArgs),
    /// The audit ledger: verify its hash chain, show recent lines.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// The local CA that signs intercepted hosts' certificates.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Print the environment an agent needs to use the proxy.
    Env(env::EnvArgs),
    /// Connect a provider by browser OAuth (or --device) and store its token.
    Connect(connect::ConnectArgs),
    /// List stored connections (metadata only, never a token).
    Connections,
    /// Remove a stored connection (keychain item and file entry).
    Disconnect(disconnect::DisconnectArgs),
    /// Run a command with a proxy of its own (ephemeral loopback port) and the env it needs.
    Run(run::RunArgs),
    /// One harmless real call per connector through the injection path; exit 0 when all pass.
    Smoke(smoke::SmokeArgs),
    /// Check connectors, the CA, the listen port, the clock and this shell's env.
    Doctor,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Proxy(args) => proxy::run(&cli, args),
        Command::Ledger { command } => ledger::run(&cli, command),
        Command::Ca { command } => ca::run(&cli, command),
        Command::Env(args) => env::run(&cli, args),
        Command::Connect(args) => connect::run(&cli, args),
        Command::Connections => connections::run(&cli),
        Command::Disconnect(args) => disconnect::run(&cli, args),
        Command::Run(args) => run::run(&cli, args),
        Command::Smoke(args) => smoke::run(&cli, args),
        Command::Doctor => doctor::run(&cli),
    }
}

/// The state directory, or a usage error saying how to set it.
pub fn home() -> Result<Home, CliError> {
    Home::from_env().map_err(CliError::Usage)
}

/// Loads the config named by `--config` (or the default chain); errors are usage errors.
pub fn load_config(cli: &Cli, home: &Home) -> Result<Config, CliError> {
    Config::load(cli.config.as_deref(), home).map_err(|e| CliError::Usage(e.to_string()))
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    print_out(&format!("{text}\n"));
}

/// Writes to stdout. A reader that went away (`axtary doctor --json | head`) is not an error
/// worth a panic: the output is simply dropped.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// The async runtime: multi-threaded, one worker per core.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}
