//! `axtary proxy`: build the pipeline from the config, listen, print what an agent needs,
//! and shut down gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::Cli;
use crate::broker::Broker;
use crate::config::Config;
use crate::error::CliError;
use crate::ledger::Ledger;
use crate::paths::Home;
use crate::proxy::auth::ProxyAuth;
use crate::proxy::certs::CertAuthority;
use crate::proxy::{BuildError, Running, State};
use crate::secret::Secret;

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Listen address (overrides proxy.listen); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// Everything `proxy` and `run` need before they can serve.
pub struct Prepared {
    pub home: Home,
    pub config: Config,
    pub state: std::sync::Arc<State>,
    pub listen: SocketAddr,
    pub proxy_token: Option<Secret>,
}

/// Loads config, CA, ledger and credentials, and checks the listen rules.
pub fn prepare(cli: &Cli, listen: Option<SocketAddr>) -> Result<Prepared, CliError> {
    let home = super::home()?;
    let config = super::load_config(cli, &home)?;
    let listen = listen.unwrap_or(config.proxy.listen);

    let proxy_token = match &config.proxy.auth_token_env {
        Some(name) => match std::env::var(name).map(Secret::new) {
            Ok(t) if !t.is_empty() => {
                crate::logging::register_secret(&t);
                Some(t)
            }
            _ => {
                return Err(CliError::Usage(format!(
                    "{}: proxy.auth.tokenEnv names {name}, which is not set: export it (any long random string) before starting the proxy",
                    config.source
                )))
            }
        },
        None => None,
    };
    // SECURITY: a proxy that injects credentials must not be open to the network.
    if !listen.ip().is_loopback() && proxy_token.is_none() {
        return Err(CliError::Usage(format!(
            "{}: listening on {listen} (not loopback) requires proxy.auth: add `proxy: {{auth: {{tokenEnv: AXTARY_PROXY_TOKEN}}}}` and set that variable, or listen on 127.0.0.1",
            config.source
        )));
    }

    home.ensure()
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", home.root().display())))?;
    let ca = CertAuthority::load_or_create(&home).map_err(CliError::Failed)?;
    let ledger = match &config.ledger {
        Some(path) => Ledger::open(path).map_err(|e| {
            CliError::Failed(format!("cannot open the ledger {}: {e}", path.display()))
        })?,
        None => Ledger::off(),
    };
    let store_choice = crate::broker::store::StoreChoice::from_env().map_err(CliError::Usage)?;
    let store = std::sync::Arc::new(crate::broker::store::Store::new(home.clone(), store_choice));
    let broker = Broker::load(&config, store).map_err(CliError::Failed)?;
    let state = State::build(
        &config,
        ca,
        broker,
        ledger,
        proxy_token.clone().map(ProxyAuth::new),
    )
    .map_err(|e| match e {
        BuildError::Config(c) => CliError::Usage(c.to_string()),
        BuildError::Setup(s) => CliError::Failed(s),
    })?;
    Ok(Prepared {
        home,
        config,
        state,
        listen,
        proxy_token,
    })
}

/// Binds the listener, with an error that says what to do when the port is taken.
pub async fn bind(p: &Prepared) -> Result<Running, CliError> {
    crate::proxy::start(p.state.clone(), p.listen)
        .await
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot listen on {}: {e}; stop whatever holds it or pick another address with --listen",
                p.listen
            ))
        })
}

pub fn run(cli: &Cli, args: &ProxyArgs) -> Result<(), CliError> {
    let prepared = prepare(cli, args.listen)?;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        // Signal handlers first: a SIGTERM that arrives right after the address is printed
        // must start a graceful shutdown, not kill the process with the default action.
        let stop = shutdown_signal()?;
        let running = bind(&prepared).await?;
        if let Some(admin) = prepared.config.proxy.admin {
            let bound = crate::proxy::server::start_admin(prepared.state.clone(), admin)
                .await
                .map_err(|e| {
                    CliError::Failed(format!(
                        "cannot listen on the admin address {admin}: {e}; change proxy.admin"
                    ))
                })?;
            tracing::info!(%bound, "admin listener: GET /healthz, GET /metrics");
        }
        announce(cli, &prepared, running.addr)?;
        stop.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let grace = prepared.config.proxy.shutdown_grace;
        if !running.shutdown(grace).await {
            tracing::warn!(
                "some connections were still open after {} s; closing them",
                grace.as_secs()
            );
        }
        Ok(())
    })
}

fn announce(cli: &Cli, p: &Prepared, addr: SocketAddr) -> Result<(), CliError> {
    let vars = super::env::agent_env(&p.home, addr, None)?;
    let ready: Vec<serde_json::Value> = p
        .config
        .connectors
        .iter()
        .enumerate()
        .map(|(i, c)| match p.state.broker.describe(i) {
            Ok(src) => serde_json::json!({"name": c.name, "hosts": c.hosts, "ready": true, "source": src.as_str()}),
            Err(why) => serde_json::json!({"name": c.name, "hosts": c.hosts, "ready": false, "problem": why}),
        })
        .collect();
    if cli.json {
        let env: serde_json::Map<String, serde_json::Value> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "listen": format!("http://{addr}"),
                "caPath": p.home.ca_cert().display().to_string(),
                "config": p.config.source,
                "connectors": ready,
                "env": env,
            })
        );
    } else {
        println!("axtary proxy listening on http://{addr}");
        println!("config: {}", p.config.source);
        println!("CA certificate: {}", p.home.ca_cert().display());
        for c in &ready {
            if c["ready"] == true {
                println!(
                    "connector {}: ready ({})",
                    c["name"].as_str().unwrap_or(""),
                    c["source"].as_str().unwrap_or("")
                );
            } else {
                println!(
                    "connector {}: NOT READY: {}",
                    c["name"].as_str().unwrap_or(""),
                    c["problem"].as_str().unwrap_or("")
                );
            }
        }
        println!("Point an agent at it with:");
        print!("{}", super::env::render(&vars, super::env::Shell::Sh));
        if p.proxy_token.is_some() {
            println!(
                "# proxy.auth is on: put the token in the proxy URL, http://axtary:$TOKEN@{addr}"
            );
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on the
/// first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::Failed(format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Failed(format!("cannot watch SIGINT: {e}")))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Grace period default, re-exported for callers that stop a proxy themselves.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(crate::config::DEFAULT_SHUTDOWN_GRACE_SECS);
