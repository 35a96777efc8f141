//! The proxy pipeline: accept -> classify -> intercept -> guard -> inject -> forward.
//!
//! `State` is the one shared context (Arcs inside) handed to every connection; it is built
//! once from the resolved config, the broker and the ledger.

pub mod auth;
pub mod body;
pub mod certs;
pub mod forward;
pub mod guard;
pub mod inject;
pub mod intercept;
pub mod metrics;
pub mod pipeline;
pub mod respond;
pub mod server;
pub mod tunnel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{Config, ConfigError, Unmatched, UpstreamSettings, WritesSetting};
use crate::connectors::Provider;
use crate::ledger::Ledger;
use auth::ProxyAuth;
use certs::{CertAuthority, InterceptTls, LeafCache};
use forward::Upstream;
use guard::{Guard, GuardRules, RateLimitSpec, UpstreamQuota, WritesMode};

pub use server::{start, Running};

/// Where an injected request goes: a connector and one of its hosts. Cheap to clone (the
/// authority is shared bytes), parsed once at start instead of per request.
#[derive(Clone, Debug)]
pub struct Route {
    pub index: usize,
    pub authority: Authority,
}

impl Route {
    pub fn host(&self) -> &str {
        self.authority.as_str()
    }
}

/// A connector as the proxy runs it: its compiled guard and upstream quota memory.
pub struct ConnectorRuntime {
    pub name: String,
    pub provider: Provider,
    /// Where gateway-mode requests go: the connector's first host.
    pub gateway_route: Route,
    /// `x-axtary-connector` value, built once.
    pub name_header: HeaderValue,
    pub guard: Guard,
    pub quota: UpstreamQuota,
}

/// Everything a connection needs, shared.
pub struct State {
    pub connectors: Vec<ConnectorRuntime>,
    /// Intercepted host (lower-case) -> its route.
    pub host_index: HashMap<String, Route>,
    pub tls: InterceptTls,
    pub upstream: Upstream,
    pub upstream_settings: UpstreamSettings,
    pub broker: Broker,
    pub ledger: Ledger,
    pub auth: Option<ProxyAuth>,
    pub unmatched: Unmatched,
    pub timeout: Duration,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    /// Every connection task and tunnel, so shutdown can wait for them.
    pub tasks: TaskTracker,
    pub metrics: metrics::Metrics,
}

/// Why the proxy could not be built: a config error (exit 2) or an environment problem.
#[derive(Debug)]
pub enum BuildError {
    Config(ConfigError),
    Setup(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Config(e) => e.fmt(f),
            BuildError::Setup(s) => f.write_str(s),
        }
    }
}

impl State {
    /// Builds the shared state. `auth` is the proxy token when `proxy.auth` is set.
    pub fn build(
        config: &Config,
        ca: CertAuthority,
        broker: Broker,
        ledger: Ledger,
        auth: Option<ProxyAuth>,
    ) -> Result<Arc<State>, BuildError> {
        let mut connectors = Vec::new();
        let mut host_index = HashMap::new();
        for (i, c) in config.connectors.iter().enumerate() {
            let guard = build_guard(c)?;
            let mut routes = Vec::new();
            for h in &c.hosts {
                let authority = h.parse::<Authority>().map_err(|_| {
                    BuildError::Setup(format!("connector `{}`: `{h}` is not a valid host", c.name))
                })?;
                let route = Route {
                    index: i,
                    authority,
                };
                host_index.insert(h.clone(), route.clone());
                routes.push(route);
            }
            let gateway_route = routes
                .into_iter()
                .next()
                .ok_or_else(|| BuildError::Setup(format!("connector `{}` has no hosts", c.name)))?;
            connectors.push(ConnectorRuntime {
                name_header: HeaderValue::from_str(&c.name).map_err(|_| {
                    BuildError::Setup(format!(
                        "connector name `{}` is not a valid header value",
                        c.name
                    ))
                })?,
                name: c.name.clone(),
                provider: c.provider,
                gateway_route,
                guard,
                quota: UpstreamQuota::new(),
            });
        }
        let tls = InterceptTls::new(Arc::new(LeafCache::new(ca))).map_err(BuildError::Setup)?;
        let upstream = Upstream::new(&config.upstream).map_err(BuildError::Setup)?;
        Ok(Arc::new(State {
            connectors,
            host_index,
            tls,
            upstream,
            upstream_settings: config.upstream.clone(),
            broker,
            ledger,
            auth,
            unmatched: config.proxy.unmatched,
            timeout: config.upstream.timeout,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: metrics::Metrics::new(
                config.connectors.iter().map(|c| c.name.clone()).collect(),
            ),
        }))
    }

    /// The route for `host` on port 443, when a connector intercepts it.
    pub fn connector_for(&self, host: &str, port: u16) -> Option<Route> {
        if port != 443 {
            return None;
        }
        self.host_index.get(host).cloned()
    }
}

fn build_guard(c: &crate::config::ConnectorConfig) -> Result<Guard, BuildError> {
    // Compile each pattern alone first so a bad one is reported at its own line.
    for p in c.guard.allow.iter().flatten().chain(c.guard.deny.iter()) {
        let one = [p.value.clone()];
        Guard::new(GuardRules {
            deny: &one,
            ..GuardRules::default()
        })
        .map_err(|msg| BuildError::Config(p.error(format!("connectors.{}: {msg}", c.name))))?;
    }
    let allow: Option<Vec<String>> = c
        .guard
        .allow
        .as_ref()
        .map(|v| v.iter().map(|l| l.value.clone()).collect());
    let deny: Vec<String> = c.guard.deny.iter().map(|l| l.value.clone()).collect();
    Guard::new(GuardRules {
        writes: match c.guard.writes {
            WritesSetting::Allow => WritesMode::Allow,
            WritesSetting::Deny => WritesMode::Deny,
            WritesSetting::DryRun => WritesMode::DryRun,
        },
        allow: allow.as_deref(),
        deny: &deny,
        rate_limit: c
            .guard
            .rate_limit
            .map(|(per_minute, burst)| RateLimitSpec { per_minute, burst }),
        graphql_paths: c.provider.graphql_paths(),
    })
    .map_err(|msg| BuildError::Setup(format!("connector `{}`: {msg}", c.name)))
}
