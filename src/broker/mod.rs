//! The credential broker: which secret each connector injects, and where it came from.
//!
//! Precedence (SPEC 2) for a token connector: a broker token from `axtary connect` (unexpired),
//! else that token after a refresh (expired or within 60 s of expiry, with a refresh token),
//! else the env var named by `tokenEnv`, else none. Env values are read once at start (the
//! process environment does not change under us) and kept as ready-made `Credential`s, so the
//! per-request cost is an `Arc` clone; a broker token adds a lock-free load and a clock read.
//! Every loaded secret is registered with the log scrubber.
//!
//! Each connector has one `Kind` of source. A new kind (GitHub App minting) is one more
//! variant of `Kind`, answered in `cached`, `credential`, `describe` and `details`.
//!
//! # Layout
//!
//! - `store`: `credentials.json` (metadata; tokens when no keychain), its lock, atomic writes.
//! - `keychain`: the OS keychain through `keyring-core` and the platform's store crate.
//! - `oauth`: provider endpoints, code exchange, refresh, device grant (the `oauth2` crate).
//! - `connected`: a stored connection in use: expiry, single-flight refresh, env fallback.
//! - `github_app`: GitHub App mode: JWT, installation discovery, minted and cached tokens.
//! - `loopback`: the local HTTP listener that receives the browser's OAuth callback.

pub mod connected;
pub mod github_app;
pub mod keychain;
pub mod loopback;
pub mod oauth;
pub mod store;

use std::sync::Arc;

use http::HeaderValue;

use time::OffsetDateTime;

use self::connected::Connected;
use self::github_app::GithubApp;
use self::oauth::Endpoints;
use self::store::{Storage, Store};
use crate::config::{Config, ConnectorConfig, GithubMode, UpstreamSettings};
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

/// Where one connector's credential comes from.
enum Kind {
    /// The env var named by `tokenEnv` (or nothing).
    Env(Slot),
    /// A stored connection from `axtary connect`, with the env var as fallback.
    Connected(Box<Connected>),
    /// GitHub App mode: installation tokens minted per request path's installation.
    App(Box<GithubApp>),
}

/// What `doctor` and the proxy's start-up lines say about a connector's credential.
#[derive(Clone, Debug)]
pub struct CredentialDetails {
    /// The source in use now; None when there is no credential.
    pub source: Option<CredentialSource>,
    /// Where a stored connection's token lives (None without a connection).
    pub storage: Option<Storage>,
    /// When the stored token expires (None: no connection, or no expiry).
    pub expires_at: Option<OffsetDateTime>,
    /// Why the broker token or any credential is not in use, with the fix.
    pub problem: Option<String>,
}

/// Credentials for every connector, indexed like `Config::connectors`.
pub struct Broker {
    slots: Vec<(String, Kind)>,
}

impl Broker {
    /// Reads each connector's credential from the environment only (no stored connections).
    pub fn from_env(config: &Config) -> Broker {
        Broker::with_lookup(config, |k| std::env::var(k).ok())
    }

    /// Builds a broker from explicit values (tests, benches): `lookup` stands in for the env.
    pub fn with_lookup(config: &Config, lookup: impl Fn(&str) -> Option<String>) -> Broker {
        let slots = config
            .connectors
            .iter()
            .map(|c| (c.name.clone(), kind_from_env(c, &config.upstream, &lookup)))
            .collect();
        Broker { slots }
    }

    /// The full precedence: stored connections in `store` first, then the environment.
    /// Blocking (it reads the store and, for keychain entries, the keychain): call it before
    /// the async runtime starts or from `spawn_blocking`. Fails when the credentials file is
    /// unreadable, unparseable or readable by others (the message says how to fix it).
    pub fn load(config: &Config, store: Arc<Store>) -> Result<Broker, String> {
        let stored = store.list()?;
        let mut slots = Vec::new();
        for c in &config.connectors {
            if c.mode == GithubMode::App {
                let kind = kind_from_env(c, &config.upstream, |k| std::env::var(k).ok());
                slots.push((c.name.clone(), kind));
                continue;
            }
            let env = slot_from_env(c, |k| std::env::var(k).ok());
            let conn = stored.iter().find(|s| s.connector == c.name);
            let kind = match conn {
                Some(conn)
                    if c.mode == GithubMode::Token && conn.provider == c.provider.as_str() =>
                {
                    let tokens = match store.get(&c.name)? {
                        Some((_, tokens)) => tokens,
                        None => Err("the connection disappeared while loading".to_string()),
                    };
                    let fallback = match &env {
                        Slot::Ready(cred) => Some(cred.clone()),
                        Slot::Missing(_) => None,
                    };
                    Kind::Connected(Box::new(Connected::new(
                        c.name.clone(),
                        c.provider,
                        c.token_env.clone(),
                        fallback,
                        Endpoints::of(c).ok(),
                        store.clone(),
                        config.upstream.clone(),
                        conn.clone(),
                        tokens,
                    )))
                }
                Some(conn) => {
                    tracing::warn!(
                        connector = %c.name,
                        stored = %conn.provider,
                        "the stored connection is for another provider or mode than the config says: ignored (run `axtary disconnect {}`)",
                        c.name
                    );
                    Kind::Env(env)
                }
                None => Kind::Env(env),
            };
            slots.push((c.name.clone(), kind));
        }
        Ok(Broker { slots })
    }

    /// The credential for connector `index`, for a request to `path` (GitHub App mode picks
    /// the installation by the repository owner in the path).
    pub async fn credential(
        &self,
        index: usize,
        path: &str,
    ) -> Result<Arc<Credential>, ProxyError> {
        match self.slots.get(index) {
            Some((_, Kind::Env(Slot::Ready(c)))) => Ok(c.clone()),
            Some((name, Kind::Env(Slot::Missing(why)))) => Err(ProxyError::new(
                ErrorCode::CredentialUnavailable,
                why.clone(),
            )
            .for_connector(name)),
            Some((name, Kind::Connected(c))) => c.credential().await.map_err(|why| {
                ProxyError::new(ErrorCode::CredentialUnavailable, why).for_connector(name)
            }),
            Some((_, Kind::App(app))) => app.credential(path).await,
            None => Err(ProxyError::new(
                ErrorCode::CredentialUnavailable,
                "no such connector",
            )),
        }
    }

    /// The credential for connector `index` when it is ready now, without waiting: the
    /// per-request fast path. `None` means call `credential` (which refreshes, or explains).
    #[inline]
    pub fn cached(&self, index: usize, path: &str) -> Option<Arc<Credential>> {
        match self.slots.get(index) {
            Some((_, Kind::Env(Slot::Ready(c)))) => Some(c.clone()),
            Some((_, Kind::Connected(c))) => c.cached(),
            Some((_, Kind::App(app))) => app.cached(path),
            _ => None,
        }
    }

    /// Where connector `index`'s credential comes from, or why it has none.
    pub fn describe(&self, index: usize) -> Result<CredentialSource, String> {
        match self.slots.get(index) {
            Some((_, Kind::Env(Slot::Ready(c)))) => Ok(c.source),
            Some((_, Kind::Env(Slot::Missing(why)))) => Err(why.clone()),
            Some((_, Kind::Connected(c))) => c.describe(),
            Some((_, Kind::App(_))) => Ok(CredentialSource::GithubApp),
            None => Err("no such connector".to_string()),
        }
    }

    /// `describe` plus where a stored token lives and when it expires.
    pub fn details(&self, index: usize) -> CredentialDetails {
        let described = self.describe(index);
        let (storage, expires_at, problem) = match self.slots.get(index) {
            Some((_, Kind::Connected(c))) => {
                let (conn, problem) = c.connection();
                (Some(conn.storage), conn.expires_at, problem)
            }
            _ => (None, None, described.as_ref().err().cloned()),
        };
        CredentialDetails {
            source: described.as_ref().ok().copied(),
            storage,
            expires_at,
            problem: problem.or_else(|| described.err()),
        }
    }
}

/// A connector's source from the environment: a GitHub App (`mode: app`), else `tokenEnv`.
fn kind_from_env(
    c: &ConnectorConfig,
    upstream: &UpstreamSettings,
    lookup: impl Fn(&str) -> Option<String>,
) -> Kind {
    if c.mode != GithubMode::App {
        return Kind::Env(slot_from_env(c, lookup));
    }
    match GithubApp::from_config(c, upstream, lookup) {
        Ok(app) => Kind::App(Box::new(app)),
        Err(why) => Kind::Env(Slot::Missing(why)),
    }
}

fn slot_from_env(c: &ConnectorConfig, lookup: impl Fn(&str) -> Option<String>) -> Slot {
    match lookup(&c.token_env).map(Secret::new) {
        Some(s) if !s.is_empty() => match Credential::new(c.provider, s, CredentialSource::Env) {
            Ok(cred) => Slot::Ready(Arc::new(cred)),
            Err(why) => Slot::Missing(format!(
                "connector `{}`: {} is unusable: {why}; set it to the bare token",
                c.name, c.token_env
            )),
        },
        _ if matches!(c.provider, Provider::Linear | Provider::Slack) => Slot::Missing(format!(
            "connector `{}` has no credential: run `axtary connect {}`, or set {} (e.g. with `op run`, `doppler run` or export) before starting axtary",
            c.name, c.name, c.token_env
        )),
        _ => Slot::Missing(format!(
            "connector `{}` has no credential: set {} (e.g. with `op run`, `doppler run` or export) before starting axtary",
            c.name, c.token_env
        )),
    }
}
