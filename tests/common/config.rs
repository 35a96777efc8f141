//! Builds `axtary.yml` texts that point the real code paths at a mock provider.
//!
//! `upstream.resolve` maps every provider host's port 443 to the mock's address and
//! `upstream.caFile` trusts the test CA, so the proxy connects to 127.0.0.1 while SNI, Host and
//! certificate verification keep the real names. The three connectors read their tokens from
//! the env vars named in `super::*_ENV`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ca::TestCa;
use super::mock::{MockProvider, PROVIDER_HOSTS};
use super::{GITHUB_ENV, LINEAR_ENV, SLACK_ENV};

/// A config under construction; `build()` renders the YAML.
#[derive(Clone)]
pub struct ConfigBuilder {
    ca_file: Option<PathBuf>,
    resolve: Vec<(String, String)>,
    listen: String,
    unmatched: Option<String>,
    auth_env: Option<String>,
    admin: Option<String>,
    timeout_secs: Option<u64>,
    ledger: Option<String>,
    connector_extra: Vec<(String, String)>,
    extra: String,
}

impl ConfigBuilder {
    /// Every provider host routed to `mock`, trusting `ca`.
    pub fn new(ca: &TestCa, mock: &MockProvider) -> ConfigBuilder {
        ConfigBuilder::for_addr(ca.pem_path(), mock.addr())
    }

    /// Every provider host routed to `addr`, trusting the CA at `ca_file`.
    pub fn for_addr(ca_file: &Path, addr: SocketAddr) -> ConfigBuilder {
        ConfigBuilder {
            ca_file: Some(ca_file.to_path_buf()),
            resolve: PROVIDER_HOSTS
                .iter()
                .map(|h| (format!("{h}:443"), addr.to_string()))
                .collect(),
            listen: "127.0.0.1:0".to_string(),
            unmatched: None,
            auth_env: None,
            admin: None,
            timeout_secs: Some(10),
            ledger: None,
            connector_extra: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// `proxy.unmatched: deny`.
    pub fn unmatched_deny(mut self) -> Self {
        self.unmatched = Some("deny".to_string());
        self
    }

    /// `proxy.unmatched: tunnel`, written out explicitly.
    pub fn unmatched_tunnel(mut self) -> Self {
        self.unmatched = Some("tunnel".to_string());
        self
    }

    /// `proxy.admin: ADDR`.
    pub fn admin(mut self, addr: &str) -> Self {
        self.admin = Some(addr.to_string());
        self
    }

    /// `proxy.auth.tokenEnv: NAME`.
    pub fn auth(mut self, token_env: &str) -> Self {
        self.auth_env = Some(token_env.to_string());
        self
    }

    /// `upstream.timeoutSecs`; `None` leaves the product default.
    pub fn timeout_secs(mut self, secs: Option<u64>) -> Self {
        self.timeout_secs = secs;
        self
    }

    /// Routes `host_port` (e.g. `api.github.com:443`) to `addr` instead.
    pub fn resolve(mut self, host_port: &str, addr: &str) -> Self {
        self.resolve.retain(|(h, _)| h != host_port);
        self.resolve.push((host_port.to_string(), addr.to_string()));
        self
    }

    /// Leaves out `upstream.caFile`, so the test CA is not trusted.
    pub fn without_ca_file(mut self) -> Self {
        self.ca_file = None;
        self
    }

    /// `ledger.path`: a path or `off`.
    pub fn ledger(mut self, value: &str) -> Self {
        self.ledger = Some(value.to_string());
        self
    }

    /// Extra keys for one connector's block, e.g. guard rules; written indented under it.
    pub fn connector_yaml(mut self, connector: &str, yaml: &str) -> Self {
        self.connector_extra
            .push((connector.to_string(), yaml.to_string()));
        self
    }

    /// Raw YAML appended at the end (top-level keys).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    pub fn build(&self) -> String {
        let mut y = String::from("version: 1\nproxy:\n");
        y += &format!("  listen: {}\n", quote(&self.listen));
        if let Some(u) = &self.unmatched {
            y += &format!("  unmatched: {u}\n");
        }
        if let Some(env) = &self.auth_env {
            y += &format!("  auth:\n    tokenEnv: {env}\n");
        }
        if let Some(admin) = &self.admin {
            y += &format!("  admin: {}\n", quote(admin));
        }
        y += "upstream:\n";
        if let Some(ca) = &self.ca_file {
            y += &format!("  caFile: {}\n", quote(&ca.to_string_lossy()));
        }
        if !self.resolve.is_empty() {
            y += "  resolve:\n";
            for (host, addr) in &self.resolve {
                y += &format!("    {}: {}\n", quote(host), quote(addr));
            }
        }
        if let Some(t) = self.timeout_secs {
            y += &format!("  timeoutSecs: {t}\n");
        }
        if let Some(l) = &self.ledger {
            y += &format!("ledger:\n  path: {}\n", quote(l));
        }
        y += "connectors:\n";
        let connectors = [
            (
                "github",
                "provider: github\nmode: token\ntokenEnv: ".to_string() + GITHUB_ENV,
            ),
            (
                "slack",
                "provider: slack\ntokenEnv: ".to_string() + SLACK_ENV,
            ),
            (
                "linear",
                "provider: linear\ntokenEnv: ".to_string() + LINEAR_ENV,
            ),
        ];
        for (name, base) in connectors {
            y += &format!("  {name}:\n");
            y += &indent(&base, 4);
            for (c, extra) in &self.connector_extra {
                if c == name {
                    y += &indent(extra, 4);
                }
            }
        }
        y += &self.extra;
        y
    }
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("quote string")
}
