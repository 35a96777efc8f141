//! The credential broker: which secret each connector injects, and where it came from.
//!
//! Precedence (SPEC 2) for a token connector: a broker token, else the env var named by
//! `tokenEnv`, else none. Env values are read once at start (the process environment does
//! not change under us) and kept as ready-made `Credential`s, so the per-request cost is an
//! `Arc` clone. Every loaded secret is registered with the log scrubber.

use std::sync::Arc;

use http::HeaderValue;

use crate::config::{Config, ConnectorConfig, GithubMode};
use crate::connectors::Provider;
use crate::error::{ErrorCode, ProxyError};
use crate::redact::Redactor;
use crate::secret::Secret;

/// Where the injected credential came from (`doctor` and the ledger name it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Broker,
    Env,
    GithubApp,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Broker => "broker",
            CredentialSource::Env => "env",
            CredentialSource::GithubApp => "github-app",
        }
    }
}

/// A credential ready to inject: the header value is built once, and the redactor that
/// scrubs it from responses is compiled once.
pub struct Credential {
    pub secret: Secret,
    pub header: HeaderValue,
    pub redactor: Arc<Redactor>,
    pub source: CredentialSource,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn new(
        provider: Provider,
        secret: Secret,
        source: CredentialSource,
    ) -> Result<Credential, String> {
        let header = provider.authorization(&secret).map_err(|_| {
            "the token holds characters that cannot go in an HTTP header (a newline or control character inside it)".to_string()
        })?;
        let redactor = Redactor::new(std::slice::from_ref(&secret))
            .ok_or_else(|| "the token is empty".to_string())?;
        crate::logging::register_secret(&secret);
        Ok(Credential {
            secret,
            header,
            redactor: Arc::new(redactor),
            source,
        })
    }
}

enum Slot {
    Ready(Arc<Credential>),
    /// Why there is none, with the fix; sent to the agent as `credential_unavailable`.
    Missing(String),
}

/// Credentials for every connector, indexed like `Config::connectors`.
pub struct Broker {
    slots: Vec<(String, Slot)>,
}

impl Broker {
    /// Reads each connector's credential from the environment.
    pub fn from_env(config: &Config) -> Broker {
        let slots = config
            .connectors
            .iter()
            .map(|c| (c.name.clone(), slot_from_env(c, |k| std::env::var(k).ok())))
            .collect();
        Broker { slots }
    }

    /// Builds a broker from explicit values (tests, benches): `lookup` stands in for the env.
    pub fn with_lookup(config: &Config, lookup: impl Fn(&str) -> Option<String>) -> Broker {
        let slots = config
            .connectors
            .iter()
            .map(|c| (c.name.clone(), slot_from_env(c, &lookup)))
            .collect();
        Broker { slots }
    }

    /// The credential for connector `index`, for a request to `path` (GitHub App mode picks
    /// the installation by the repository owner in the path).
    pub async fn credential(
        &self,
        index: usize,
        _path: &str,
    ) -> Result<Arc<Credential>, ProxyError> {
        match self.slots.get(index) {
            Some((_, Slot::Ready(c))) => Ok(c.clone()),
            Some((name, Slot::Missing(why))) => Err(ProxyError::new(
                ErrorCode::CredentialUnavailable,
                why.clone(),
            )
            .for_connector(name)),
            None => Err(ProxyError::new(
                ErrorCode::CredentialUnavailable,
                "no such connector",
            )),
        }
    }

    /// The credential for connector `index` when it is ready now, without waiting: the
    /// per-request fast path. `None` means call `credential` (which explains the problem).
    pub fn cached(&self, index: usize, _path: &str) -> Option<Arc<Credential>> {
        match self.slots.get(index) {
            Some((_, Slot::Ready(c))) => Some(c.clone()),
            _ => None,
        }
    }

    /// Where connector `index`'s credential comes from, or why it has none.
    pub fn describe(&self, index: usize) -> Result<CredentialSource, String> {
        match self.slots.get(index) {
            Some((_, Slot::Ready(c))) => Ok(c.source),
            Some((_, Slot::Missing(why))) => Err(why.clone()),
            None => Err("no such connector".to_string()),
        }
    }
}

fn slot_from_env(c: &ConnectorConfig, lookup: impl Fn(&str) -> Option<String>) -> Slot {
    if c.mode == GithubMode::App {
        return Slot::Missing(format!(
            "connector `{}` is set to `mode: app`, which this build cannot mint tokens for yet: set `mode: token` and {}",
            c.name, c.token_env
        ));
    }
    match lookup(&c.token_env).map(Secret::new) {
        Some(s) if !s.is_empty() => match Credential::new(c.provider, s, CredentialSource::Env) {
            Ok(cred) => Slot::Ready(Arc::new(cred)),
            Err(why) => Slot::Missing(format!(
                "connector `{}`: {} is unusable: {why}; set it to the bare token",
                c.name, c.token_env
            )),
        },
        _ => Slot::Missing(format!(
            "connector `{}` has no credential: set {} (e.g. with `op run`, `doppler run` or export) before starting axtary",
            c.name, c.token_env
        )),
    }
}
