//! The `axtary` binary: parse the command line, start logging, dispatch, and turn the
//! result into an exit code. The one place that prints an error.

use clap::Parser;

use axtary::cli::{self, Cli};

fn main() {
    // One crypto provider (ring), installed before anything builds a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    axtary::logging::init(cli.verbose);
    if let Err(e) = cli::run(cli) {
        let msg = e.to_string();
        if !msg.is_empty() {
            eprintln!("axtary: {msg}");
        }
        std::process::exit(e.exit_code());
    }
}
