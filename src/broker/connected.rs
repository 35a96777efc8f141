//! A connector with a stored connection (`axtary connect`): its broker token, refreshed when
//! it is about to expire, and the env-var credential it falls back to.
//!
//! The state a request reads is one `Arc<Current>` behind an `ArcSwap`, so the fast path is a
//! lock-free load, a clock read and an `Arc` clone. Refreshing is single-flight twice over:
//! inside the process an async mutex lets one task refresh while the others wait and then
//! reuse its result; across processes sharing `AXTARY_HOME` the store's file lock is held for
//! the whole refresh, and the store is read again after taking it, because another process
//! may already have spent the refresh token (Linear and Slack rotate them: a used one is dead)
//! and stored the new pair. The new pair is persisted before it is used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use super::oauth::{Endpoints, OauthClient};
use super::store::{Connection, Storage, Store, Tokens};
use super::{Credential, CredentialSource};
use crate::config::UpstreamSettings;
use crate::connectors::Provider;
use crate::secret::Secret;

/// A token this close to its expiry is refreshed before use (SPEC 5.1).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// After a refresh failed for a reason that may pass (network, 5xx), how long the fallback is
/// used before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// What requests use now.
struct Current {
    /// The credential to inject: the broker token, or the env fallback. None: nothing usable.
    cred: Option<Arc<Credential>>,
    /// `cred` may be handed out until then; after it, the slow path decides again. None: no
    /// expiry.
    until: Option<Instant>,
    /// The connection as last read from the store.
    conn: Connection,
    /// The tokens as last read or granted (None when they could not be read).
    tokens: Option<Tokens>,
    /// Why the broker token is not in use (shown by `describe` and sent as the error message
    /// when there is no fallback either).
    problem: Option<String>,
    /// A refresh token the provider refused: never sent again.
    refused: Option<Secret>,
}

impl Current {
    fn usable_now(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now < t)
    }
}

/// One connected connector.
pub struct Connected {
    name: String,
    provider: Provider,
    token_env: String,
    current: ArcSwap<Current>,
    /// Serialises refreshes inside this process.
    gate: tokio::sync::Mutex<()>,
    env: Option<Arc<Credential>>,
    endpoints: Option<Endpoints>,
    store: Arc<Store>,
    upstream: UpstreamSettings,
}

/// Until when a token may be used: its expiry less the margin, as an `Instant`.
fn use_until(expires_at: Option<OffsetDateTime>) -> Option<Instant> {
    let expires_at = expires_at?;
    let left = expires_at - OffsetDateTime::now_utc() - REFRESH_MARGIN;
    let now = Instant::now();
    Some(match Duration::try_from(left) {
        Ok(d) => now + d,
        Err(_) => now,
    })
}

impl Connected {
    /// Builds the state from what the store held at start-up (blocking: keychain reads are
    /// done by the caller before this).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        provider: Provider,
        token_env: String,
        env: Option<Arc<Credential>>,
        endpoints: Option<Endpoints>,
        store: Arc<Store>,
        upstream: UpstreamSettings,
        conn: Connection,
        tokens: Result<Tokens, String>,
    ) -> Connected {
        let this = Connected {
            name,
            provider,
            token_env,
            current: ArcSwap::from_pointee(placeholder(&conn)),
            gate: tokio::sync::Mutex::new(()),
            env,
            endpoints,
            store,
            upstream,
        };
        let current = match tokens {
            Ok(tokens) => this.with_tokens(conn, tokens, None),
            // The keychain cannot be read here: use the fallback for the life of the process.
            Err(why) => this.fallback(conn, None, why, None, None),
        };
        this.current.store(Arc::new(current));
        this
    }

    /// The fast path: the credential when it may be used now.
    #[inline]
    pub fn cached(&self) -> Option<Arc<Credential>> {
        let cur = self.current.load();
        if cur.usable_now(Instant::now()) {
            cur.cred.clone()
        } else {
            None
        }
    }

    /// The slow path: refresh (once, for everyone) when the token is about to expire.
    pub async fn credential(&self) -> Result<Arc<Credential>, String> {
        let _turn = self.gate.lock().await;
        let cur = self.current.load_full();
        if cur.usable_now(Instant::now()) {
            // Refreshed while we waited, or a fallback that is not due for a retry yet.
            return cur.cred.clone().ok_or_else(|| self.no_credential(&cur));
        }
        let next = self.renew(&cur).await;
        let result = next.cred.clone().ok_or_else(|| self.no_credential(&next));
        self.current.store(Arc::new(next));
        result
    }

    /// Where the credential comes from now, or why there is none. An expired broker token
    /// with a refresh token still counts as the broker: the first request refreshes it.
    pub fn describe(&self) -> Result<CredentialSource, String> {
        let cur = self.current.load();
        if cur.usable_now(Instant::now()) {
            return match &cur.cred {
                Some(c) => Ok(c.source),
                None => Err(self.no_credential(&cur)),
            };
        }
        let refreshable = cur
            .tokens
            .as_ref()
            .and_then(|t| t.refresh.as_ref())
            .is_some_and(|r| cur.refused.as_ref() != Some(r));
        if refreshable {
            return Ok(CredentialSource::Broker);
        }
        match &self.env {
            Some(c) => Ok(c.source),
            None => Err(self.no_credential(&cur)),
        }
    }

    /// Storage and expiry of the stored connection, and the problem if it is not in use.
    pub fn connection(&self) -> (Connection, Option<String>) {
        let cur = self.current.load();
        (cur.conn.clone(), cur.problem.clone())
    }

    fn no_credential(&self, cur: &Current) -> String {
        format!(
            "connector `{}` has no usable credential: {}; run `axtary connect {}` again, or set {}",
            self.name,
            cur.problem
                .as_deref()
                .unwrap_or("the stored token has expired"),
            self.name,
            self.token_env
        )
    }

    /// State for a token read from the store or just granted.
    fn with_tokens(&self, conn: Connection, tokens: Tokens, refused: Option<Secret>) -> Current {
        match Credential::new(
            self.provider,
            tokens.access.clone(),
            CredentialSource::Broker,
        ) {
            Ok(cred) => {
                if let Some(r) = &tokens.refresh {
                    crate::logging::register_secret(r);
                }
                Current {
                    cred: Some(Arc::new(cred)),
                    until: use_until(conn.expires_at),
                    conn,
                    tokens: Some(tokens),
                    problem: None,
                    refused,
                }
            }
            Err(why) => self.fallback(
                conn,
                None,
                format!("the stored token is unusable: {why}"),
                None,
                None,
            ),
        }
    }

    /// State that uses the env credential (if any) because the broker token cannot be used;
    /// `retry` is when the slow path may try the broker again (None: never, in this process).
    fn fallback(
        &self,
        conn: Connection,
        tokens: Option<Tokens>,
        why: String,
        retry: Option<Duration>,
        refused: Option<Secret>,
    ) -> Current {
        if self.env.is_some() {
            tracing::warn!(connector = %self.name, reason = %why, env = %self.token_env, "broker token not usable: falling back to the env var");
        } else {
            tracing::warn!(connector = %self.name, reason = %why, "broker token not usable and no env var fallback");
        }
        Current {
            cred: self.env.clone(),
            // No retry: the fallback holds for good. Else until the retry time.
            until: retry.map(|d| Instant::now() + d),
            conn,
            tokens,
            problem: Some(why),
            refused,
        }
    }

    /// Reads the store again under its lock, refreshes if that is still needed, persists.
    async fn renew(&self, cur: &Current) -> Current {
        let store = self.store.clone();
        let name = self.name.clone();
        let locked = blocking(move || {
            let locked = store.lock()?;
            let latest = locked.get(&name)?;
            Ok::<_, String>((locked, latest))
        })
        .await;
        let (locked, latest) = match locked {
            Ok(v) => v,
            Err(why) => {
                return self.fallback(
                    cur.conn.clone(),
                    cur.tokens.clone(),
                    format!("the credential store cannot be read: {why}"),
                    Some(RETRY_AFTER_FAILURE),
                    cur.refused.clone(),
                )
            }
        };
        let (conn, tokens) = match latest {
            None => {
                drop(locked);
                return self.fallback(
                    cur.conn.clone(),
                    None,
                    "the connection was removed (`axtary disconnect`)".to_string(),
                    None,
                    None,
                );
            }
            Some((conn, Err(why))) => {
                drop(locked);
                return self.fallback(
                    conn,
                    None,
                    why,
                    Some(RETRY_AFTER_FAILURE),
                    cur.refused.clone(),
                );
            }
            Some((conn, Ok(tokens))) => (conn, tokens),
        };
        // Another process (or `connect`) may have stored a fresh token already.
        let fresh = use_until(conn.expires_at).is_none_or(|t| Instant::now() < t);
        if fresh {
            drop(locked);
            tracing::info!(connector = %self.name, "using the token stored by another process");
            return self.with_tokens(conn, tokens, cur.refused.clone());
        }
        let Some(refresh) = tokens.refresh.clone() else {
            drop(locked);
            return self.fallback(
                conn,
                Some(tokens),
                "the stored token has expired and there is no refresh token".to_string(),
                None,
                None,
            );
        };
        if cur.refused.as_ref() == Some(&refresh) {
            drop(locked);
            return self.fallback(
                conn,
                Some(tokens),
                "the provider refused the stored refresh token".to_string(),
                Some(RETRY_AFTER_FAILURE),
                cur.refused.clone(),
            );
        }
        let client = match self.oauth_client(&conn) {
            Ok(c) => c,
            Err(why) => {
                drop(locked);
                return self.fallback(conn, Some(tokens), why, Some(RETRY_AFTER_FAILURE), None);
            }
        };
        tracing::info!(connector = %self.name, "refreshing the broker token");
        match client.refresh(&refresh).await {
            Ok(granted) => {
                let mut next = conn.clone();
                next.expires_at = granted.expires_at;
                if let Some(scopes) = granted.scopes.clone() {
                    next.scopes = scopes;
                }
                let new_tokens = granted.tokens;
                let to_store = new_tokens.clone();
                // SECURITY/rotation: the old refresh token is dead now; persist the new pair
                // before anything uses it, still under the cross-process lock.
                let saved = blocking(move || {
                    let r = locked.put(next, &to_store);
                    drop(locked);
                    r
                })
                .await;
                let conn = match saved {
                    Ok(stored) => stored,
                    Err(why) => {
                        tracing::error!(connector = %self.name, error = %why, "the refreshed token could not be saved; it is used by this process only");
                        let mut c = conn;
                        c.expires_at = granted.expires_at;
                        c
                    }
                };
                self.with_tokens(conn, new_tokens, None)
            }
            Err(e) => {
                drop(locked);
                let refused = e.permanent.then_some(refresh);
                self.fallback(
                    conn,
                    Some(tokens),
                    format!("refreshing the token failed: {}", e.message),
                    Some(RETRY_AFTER_FAILURE),
                    refused,
                )
            }
        }
    }

    fn oauth_client(&self, conn: &Connection) -> Result<OauthClient, String> {
        let endpoints = self.endpoints.clone().ok_or_else(|| {
            format!(
                "provider {} has no OAuth endpoints to refresh with",
                self.provider.as_str()
            )
        })?;
        let id_env = conn
            .client_id_env
            .clone()
            .unwrap_or_else(|| endpoints.client_id_env.clone());
        let secret_env = conn
            .client_secret_env
            .clone()
            .unwrap_or_else(|| endpoints.client_secret_env.clone());
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .map(Secret::new)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!("the token expired and refreshing it needs {name} in the proxy's environment (the same variable `axtary connect` read)")
                })
        };
        let id = read(&id_env)?;
        let secret = read(&secret_env)?;
        crate::logging::register_secret(&secret);
        OauthClient::new(endpoints, &id, &secret, &self.upstream)
    }

    /// Storage of the stored connection.
    pub fn storage(&self) -> Storage {
        self.current.load().conn.storage
    }
}

/// A stand-in state for the moment between construction and the first real one.
fn placeholder(conn: &Connection) -> Current {
    Current {
        cred: None,
        until: None,
        conn: conn.clone(),
        tokens: None,
        problem: Some("starting".to_string()),
        refused: None,
    }
}

/// Runs blocking store work (file lock, keychain) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("the credential store task failed: {e}")),
    }
}
