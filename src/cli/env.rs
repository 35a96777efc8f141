//! `axtary env`: the environment lines that point an agent at the proxy, and the CA bundle
//! they name (system roots plus the Axtary CA, so the agent's other HTTPS keeps working).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::Cli;
use crate::error::CliError;
use crate::paths::Home;
use crate::proxy::certs::{write_atomic, CertAuthority};

/// Where Debian, RHEL, Alpine/macOS keep the system roots.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Shell::Sh)]
    pub shell: Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Fish,
    Json,
}

pub fn run(cli: &Cli, args: &EnvArgs) -> Result<(), CliError> {
    let home = super::home()?;
    let config = super::load_config(cli, &home)?;
    CertAuthority::load_or_create(&home).map_err(CliError::Failed)?;
    let vars = agent_env(&home, config.proxy.listen, None)?;
    let shell = if cli.json { Shell::Json } else { args.shell };
    super::print_out(&render(&vars, shell));
    Ok(())
}

/// The env an agent needs for a proxy at `addr`. `proxy_token` goes into the proxy URL.
pub fn agent_env(
    home: &Home,
    addr: SocketAddr,
    proxy_token: Option<&str>,
) -> Result<Vec<(&'static str, String)>, CliError> {
    let bundle = write_bundle(home)?;
    let bundle = bundle.display().to_string();
    let ca = home.ca_cert().display().to_string();
    let proxy = match proxy_token {
        Some(t) => format!("http://axtary:{t}@{addr}"),
        None => format!("http://{addr}"),
    };
    Ok(vec![
        ("HTTPS_PROXY", proxy.clone()),
        ("https_proxy", proxy),
        ("NO_PROXY", "localhost,127.0.0.1,::1".to_string()),
        ("SSL_CERT_FILE", bundle.clone()),
        ("REQUESTS_CA_BUNDLE", bundle.clone()),
        ("CURL_CA_BUNDLE", bundle.clone()),
        ("NODE_EXTRA_CA_CERTS", ca),
        ("GIT_SSL_CAINFO", bundle),
    ])
}

/// Renders env lines for a shell.
pub fn render(vars: &[(&str, String)], shell: Shell) -> String {
    match shell {
        Shell::Sh => vars
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
            .collect(),
        Shell::Fish => vars
            .iter()
            .map(|(k, v)| format!("set -gx {k} {}\n", sh_quote(v)))
            .collect(),
        Shell::Json => {
            let map: serde_json::Map<String, serde_json::Value> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&map).unwrap_or_default()
            )
        }
    }
}

fn sh_quote(v: &str) -> String {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/:._-,@".contains(&b))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// Writes `ca/bundle.pem`: the system roots followed by the Axtary CA.
pub fn write_bundle(home: &Home) -> Result<PathBuf, CliError> {
    let ca = std::fs::read(home.ca_cert()).map_err(|e| {
        CliError::Failed(format!(
            "cannot read the CA certificate {}: {e}; run `axtary ca init`",
            home.ca_cert().display()
        ))
    })?;
    let mut bundle = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(&ca);
    let path = home.ca_dir().join("bundle.pem");
    write_atomic(&path, &bundle, 0o644).map_err(CliError::Failed)?;
    Ok(path)
}
