//! GitHub App mode (SPEC 6): installation tokens minted from the app's private key.
//!
//! The app signs a short-lived RS256 JWT, finds the installation a request belongs to (the
//! configured id, else the repository owner's installation, else the app's only one), and
//! trades the JWT for an installation token at `POST /app/installations/{id}/access_tokens`.
//! Tokens are cached per installation until five minutes before they expire, so the
//! per-request cost is one read lock, a map lookup and an `Arc` clone (`cached`). Everything
//! slower happens in `credential`, where concurrent callers share one flight per owner and per
//! installation: fifty requests arriving together cause one lookup and one mint. Signing costs
//! milliseconds, so the JWT is reused for most of its ten-minute life.
//!
//! GitHub's clock is learned from the `Date` header of its answers: a local clock that is off
//! would otherwise make every JWT invalid (GitHub allows about a minute) and misjudge when a
//! token expires.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::broker::{Credential, CredentialSource};
use crate::config::{ConnectorConfig, UpstreamSettings};
use crate::connectors::Provider;
use crate::error::{ErrorCode, ProxyError};
use crate::outbound::{self, Fetched, HttpsClient, ProxyBody};
use crate::secret::Secret;

/// Env names used when the connector names none.
pub const DEFAULT_APP_ID_ENV: &str = "AXTARY_GITHUB_APP_ID";
pub const DEFAULT_PRIVATE_KEY_ENV: &str = "AXTARY_GITHUB_APP_PRIVATE_KEY";
/// Only suggested in messages: an installation id is read only from a configured env name.
pub const SUGGESTED_INSTALLATION_ID_ENV: &str = "AXTARY_GITHUB_INSTALLATION_ID";

/// `iat` is backdated by this much, as GitHub recommends, to absorb small clock drift.
const JWT_BACKDATE_SECS: i64 = 60;
/// `exp` is this far ahead; GitHub refuses more than 10 minutes.
const JWT_LIFETIME_SECS: i64 = 9 * 60;
/// A JWT is re-signed after this long, so one handed out has at least a minute left.
const JWT_REUSE: Duration = Duration::from_secs(8 * 60);
/// A token is replaced this long before GitHub says it expires.
const REFRESH_MARGIN_SECS: i64 = 5 * 60;
/// Calls to GitHub's app endpoints: tries in all for a 5xx or a network error.
const MAX_ATTEMPTS: u32 = 4;
/// First backoff delay; doubled per retry up to `BACKOFF_CAP`.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Bound on an app-endpoint answer read into memory.
const MAX_BODY: usize = 1 << 20;
/// A clock difference smaller than this is noise (the `Date` header has one-second steps) and
/// well inside what the backdated `iat` absorbs.
const SKEW_TOLERANCE_SECS: i64 = 30;
/// Longest piece of GitHub's own error message repeated to the agent.
const MAX_MESSAGE_CHARS: usize = 300;

const API_VERSION: &str = "2022-11-28";
const ACCEPT: &str = "application/vnd.github+json";
const USER_AGENT: &str = concat!("axtary/", env!("CARGO_PKG_VERSION"));

/// One GitHub App connector: its key, its discovered installations and their tokens. Shared by
/// every connection (`Send + Sync`).
pub struct GithubApp {
    connector: String,
    host: String,
    client: HttpsClient<ProxyBody>,
    timeout: Duration,
    signer: Signer,
    env: EnvNames,
    /// The installation from `installationIdEnv`, which skips discovery.
    fixed_installation: Option<u64>,
    /// The JSON body narrowing every token (`repositories`, `permissions`), when configured.
    narrowing: Option<String>,
    cache: RwLock<Cache>,
    owner_flights: Flights<String, u64>,
    sole_flight: Flights<(), u64>,
    mint_flights: Flights<u64, Arc<Credential>>,
    /// GitHub's clock minus ours, in seconds; 0 while within `SKEW_TOLERANCE_SECS`.
    skew: AtomicI64,
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp")
            .field("connector", &self.connector)
            .field("host", &self.host)
            .field("fixed_installation", &self.fixed_installation)
            .finish_non_exhaustive()
    }
}

/// The env names to put in messages, as configured or defaulted.
struct EnvNames {
    app_id: String,
    key: String,
    installation: String,
}

#[derive(Default)]
struct Cache {
    /// Lower-case owner login -> installation id.
    owners: HashMap<String, u64>,
    /// The app's only installation, once listed.
    sole: Option<u64>,
    tokens: HashMap<u64, Minted>,
}

struct Minted {
    credential: Arc<Credential>,
    /// Local time at which the token stops being handed out.
    refresh_at: Instant,
}

impl GithubApp {
    /// Builds the app from the connector config and the environment (`lookup` stands in for
    /// it): the app id from `appIdEnv`, the client id from `clientIdEnv` (it becomes the JWT
    /// issuer when set), the key as PEM text from `privateKeyEnv` or as a file named by
    /// `privateKeyFileEnv`, and an optional installation id from `installationIdEnv`. Signs
    /// one JWT to prove the key works. Errors name the variable to set or fix.
    pub fn from_config(
        c: &ConnectorConfig,
        upstream: &UpstreamSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<GithubApp, String> {
        let name = &c.name;
        let present = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());

        let app_id_env = c
            .app
            .app_id_env
            .clone()
            .unwrap_or_else(|| DEFAULT_APP_ID_ENV.to_string());
        let client_id = c.app.client_id_env.as_deref().and_then(present);
        let issuer = match (client_id, present(&app_id_env)) {
            (Some(client_id), _) => client_id.trim().to_string(),
            (None, Some(app_id)) => app_id.trim().to_string(),
            (None, None) => {
                let alt = match &c.app.client_id_env {
                    Some(cid) => format!(" (or {cid} to the app's client id)"),
                    None => String::new(),
                };
                return Err(format!(
                    "connector `{name}` is in `mode: app` and needs the GitHub App's id: set {app_id_env} to the App ID shown on the app's settings page{alt}"
                ));
            }
        };

        let (pem, key_source, key_env) = load_key(c, &lookup)?;
        let pem = normalise_pem(pem.expose());
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            format!(
                "connector `{name}`: {key_source} does not hold an RSA private key in PEM form: use the .pem file GitHub generated for the app (it starts with -----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----)"
            )
        })?;

        let installation_env = c
            .app
            .installation_id_env
            .clone()
            .unwrap_or_else(|| SUGGESTED_INSTALLATION_ID_ENV.to_string());
        let fixed_installation = match c.app.installation_id_env.as_deref().and_then(present) {
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| {
                        format!(
                            "connector `{name}`: {installation_env} must be a numeric installation id (the number at the end of the installation's settings URL), or be unset to discover it"
                        )
                    })?,
            ),
            None => None,
        };

        let narrowing = narrowing_body(c)?;
        let host = c
            .hosts
            .first()
            .cloned()
            .ok_or_else(|| format!("connector `{name}` has no host to mint tokens at"))?;
        let client = outbound::https_client(upstream)
            .map_err(|e| format!("connector `{name}`: cannot set up HTTPS to {host}: {e}"))?;

        let app = GithubApp {
            connector: name.clone(),
            host,
            client,
            timeout: upstream.timeout,
            signer: Signer {
                key,
                issuer,
                current: Mutex::new(None),
            },
            env: EnvNames {
                app_id: app_id_env,
                key: key_env,
                installation: installation_env,
            },
            fixed_installation,
            narrowing,
            cache: RwLock::new(Cache::default()),
            owner_flights: Flights::default(),
            sole_flight: Flights::default(),
            mint_flights: Flights::default(),
            skew: AtomicI64::new(0),
        };
        // A key that parses can still fail to sign (a non-RSA key in a PKCS#8 wrapper): find
        // out now, at start, rather than on the first request.
        app.jwt().map_err(|_| {
            format!(
                "connector `{name}`: {key_source} cannot sign RS256 tokens: it must be the GitHub App's RSA private key"
            )
        })?;
        Ok(app)
    }

    /// The cached, unexpired installation token for a request to `path`, if there is one. No
    /// I/O: one read lock and map lookups. `None` means call `credential`.
    pub fn cached(&self, path: &str) -> Option<Arc<Credential>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let installation = match self.fixed_installation {
            Some(id) => id,
            None => match repo_of(path) {
                Some((owner, _)) => *cache.owners.get(lower(owner).as_ref())?,
                None => cache.sole?,
            },
        };
        let minted = cache.tokens.get(&installation)?;
        (Instant::now() < minted.refresh_at).then(|| minted.credential.clone())
    }

    /// The installation token for a request to `path`: from the cache, else discovered and
    /// minted (one flight per owner and per installation however many callers wait).
    pub async fn credential(&self, path: &str) -> Result<Arc<Credential>, ProxyError> {
        if let Some(c) = self.cached(path) {
            return Ok(c);
        }
        let installation = self.installation_for(path).await?;
        self.token_for(installation).await
    }

    /// A fresh JWT, signed now (no cache): the local part of every mint. Public for benches.
    pub fn sign_jwt(&self) -> Result<Secret, String> {
        self.signer.sign(self.github_now())
    }

    /// Puts `token` in the cache for `installation`, valid for `valid_for` before the refresh
    /// margin, as a mint would. For benches and tests that measure or exercise the cached
    /// path without a GitHub to mint from.
    #[doc(hidden)]
    pub fn prime(
        &self,
        installation: u64,
        owner: Option<&str>,
        token: Secret,
        valid_for: Duration,
    ) -> Result<(), String> {
        let credential = Credential::new(Provider::Github, token, CredentialSource::GithubApp)?;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        match owner {
            Some(o) => {
                cache.owners.insert(o.to_ascii_lowercase(), installation);
            }
            None => cache.sole = Some(installation),
        }
        cache.tokens.insert(
            installation,
            Minted {
                credential: Arc::new(credential),
                refresh_at: Instant::now() + valid_for,
            },
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Discovery

    async fn installation_for(&self, path: &str) -> Result<u64, ProxyError> {
        if let Some(id) = self.fixed_installation {
            return Ok(id);
        }
        match repo_of(path) {
            Some((owner, repo)) => {
                let key = owner.to_ascii_lowercase();
                self.owner_flights
                    .run(key.clone(), || self.discover_owner(key, repo.to_string()))
                    .await
            }
            None => self.sole_flight.run((), || self.discover_sole(path)).await,
        }
    }

    async fn discover_owner(&self, owner: String, repo: String) -> Result<u64, ProxyError> {
        if let Some(id) = self.read_cache().owners.get(&owner) {
            return Ok(*id);
        }
        let what = format!("looking up the app's installation for {owner}/{repo}");
        let resp = self
            .app_call(
                Method::GET,
                &format!("/repos/{owner}/{repo}/installation"),
                None,
                &what,
            )
            .await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(self.unavailable(format!(
                "the GitHub App is not installed on {owner}/{repo} (GitHub answered 404): install the app on {owner}, or set {} to the installation to use for every request",
                self.env.installation
            )));
        }
        if !resp.status.is_success() {
            return Err(self.refused(&what, &resp, None));
        }
        let found: Installation = serde_json::from_slice(&resp.body)
            .map_err(|_| self.unexpected(&what, "an installation with a numeric `id`"))?;
        tracing::debug!(connector = %self.connector, %owner, installation = found.id, "found the app's installation");
        self.write_cache().owners.insert(owner, found.id);
        Ok(found.id)
    }

    async fn discover_sole(&self, path: &str) -> Result<u64, ProxyError> {
        if let Some(id) = self.read_cache().sole {
            return Ok(id);
        }
        let what = "listing the app's installations";
        // Two are enough to tell "exactly one" from "several".
        let resp = self
            .app_call(Method::GET, "/app/installations?per_page=2", None, what)
            .await?;
        if !resp.status.is_success() {
            return Err(self.refused(what, &resp, None));
        }
        let found: Vec<Installation> = serde_json::from_slice(&resp.body)
            .map_err(|_| self.unexpected(what, "a list of installations"))?;
        let path = path.split('?').next().unwrap_or(path);
        match found.as_slice() {
            [only] => {
                tracing::debug!(connector = %self.connector, installation = only.id, "the app has one installation");
                self.write_cache().sole = Some(only.id);
                Ok(only.id)
            }
            [] => Err(self.unavailable(format!(
                "the GitHub App is not installed anywhere yet: install it on an account or organisation from the app's settings page (request for {path})"
            ))),
            _ => Err(self.unavailable(format!(
                "the GitHub App has several installations and {path} names no repository to pick one by: set {} to the installation id to use (and `installationIdEnv: {}` in connector `{}`)",
                self.env.installation, self.env.installation, self.connector
            ))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Minting

    async fn token_for(&self, installation: u64) -> Result<Arc<Credential>, ProxyError> {
        self.mint_flights
            .run(installation, || self.mint(installation))
            .await
    }

    async fn mint(&self, installation: u64) -> Result<Arc<Credential>, ProxyError> {
        // A flight that finished just before this one started may already have a token.
        if let Some(m) = self.read_cache().tokens.get(&installation) {
            if Instant::now() < m.refresh_at {
                return Ok(m.credential.clone());
            }
        }
        let what = format!("minting a token for installation {installation}");
        let resp = self
            .app_call(
                Method::POST,
                &format!("/app/installations/{installation}/access_tokens"),
                self.narrowing.clone(),
                &what,
            )
            .await?;
        if resp.status == StatusCode::NOT_FOUND {
            self.forget_installation(installation);
            let fix = if self.fixed_installation.is_some() {
                format!("fix {}", self.env.installation)
            } else {
                "retry: the installation is looked up again".to_string()
            };
            return Err(self.unavailable(format!(
                "GitHub has no installation {installation} for this app (404; the app may have been uninstalled): {fix}"
            )));
        }
        if resp.status == StatusCode::UNPROCESSABLE_ENTITY && self.narrowing.is_some() {
            let hint = format!(
                "fix `repositories` or `permissions` of connector `{}` (repositories are names in the installation's account; permissions cannot exceed the app's)",
                self.connector
            );
            return Err(self.refused(&what, &resp, Some(hint)));
        }
        if resp.status != StatusCode::CREATED && resp.status != StatusCode::OK {
            return Err(self.refused(&what, &resp, None));
        }
        let minted: AccessToken = serde_json::from_slice(&resp.body)
            .map_err(|_| self.unexpected(&what, "`token` and `expires_at`"))?;
        let expires_at = parse_rfc3339(&minted.expires_at)
            .ok_or_else(|| self.unexpected(&what, "an RFC 3339 `expires_at`"))?;
        let token = Secret::new(minted.token);
        if token.is_empty() {
            return Err(self.unexpected(&what, "a non-empty `token`"));
        }
        let credential = Credential::new(Provider::Github, token, CredentialSource::GithubApp)
            .map_err(|why| self.unavailable(format!("GitHub's token for installation {installation} is unusable ({why}); retry, and report it if it persists")))?;
        let credential = Arc::new(credential);

        // Seconds until the refresh point, on GitHub's clock (which `expires_at` is on).
        let usable_secs = expires_at - REFRESH_MARGIN_SECS - self.github_now();
        if usable_secs > 0 {
            let refresh_at = Instant::now() + Duration::from_secs(usable_secs.unsigned_abs());
            self.write_cache().tokens.insert(
                installation,
                Minted {
                    credential: credential.clone(),
                    refresh_at,
                },
            );
            tracing::info!(connector = %self.connector, installation, reuse_secs = usable_secs, "minted a GitHub App installation token");
        } else {
            // Used for the callers that waited on it, not kept: the next request mints anew.
            tracing::warn!(connector = %self.connector, installation, "GitHub minted a token that expires within 5 minutes; not caching it (is the clock right?)");
        }
        Ok(credential)
    }

    /// Drops every route to an installation GitHub no longer knows, so it is looked up again.
    fn forget_installation(&self, installation: u64) {
        let mut cache = self.write_cache();
        cache.owners.retain(|_, id| *id != installation);
        if cache.sole == Some(installation) {
            cache.sole = None;
        }
        cache.tokens.remove(&installation);
    }

    // -----------------------------------------------------------------------------------------
    // Calls to GitHub

    /// One call to an app endpoint with the JWT: 5xx answers and network errors are retried
    /// with exponential backoff; other answers are returned for the caller to judge. A 401 that
    /// reveals a clock difference is retried once with a JWT on GitHub's time.
    async fn app_call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        what: &str,
    ) -> Result<Fetched, ProxyError> {
        let uri = format!("https://{}{path}", self.host);
        let mut skew_retry_left = true;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let skew_before = self.skew.load(Ordering::Relaxed);
            let jwt = self.jwt().map_err(|why| {
                self.unavailable(format!(
                    "cannot sign the app's JWT ({why}): check {}",
                    self.env.key
                ))
            })?;
            let req = self.build_request(&method, &uri, &jwt, body.as_deref())?;
            let failure = match outbound::fetch(&self.client, req, self.timeout, MAX_BODY).await {
                Ok(resp) => {
                    self.learn_skew(&resp.headers);
                    if resp.status == StatusCode::UNAUTHORIZED
                        && skew_retry_left
                        && self.skew.load(Ordering::Relaxed) != skew_before
                    {
                        skew_retry_left = false;
                        attempt -= 1;
                        tracing::warn!(connector = %self.connector, skew_secs = self.skew.load(Ordering::Relaxed), "GitHub's clock differs from ours; signing the JWT on GitHub's time and retrying");
                        continue;
                    }
                    if !resp.status.is_server_error() {
                        return Ok(resp);
                    }
                    format!("GitHub answered {}", resp.status.as_u16())
                }
                Err(e) => e,
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(self.unavailable(format!(
                    "{what} failed {MAX_ATTEMPTS} times, last: {failure}; check the connection to {} and retry (GitHub's status page says whether it is down)",
                    self.host
                )));
            }
            let delay = backoff(attempt);
            tracing::warn!(connector = %self.connector, attempt, error = %crate::logging::scrub(&failure), retry_in_ms = delay.as_millis() as u64, "GitHub App call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn build_request(
        &self,
        method: &Method,
        uri: &str,
        jwt: &Secret,
        body: Option<&str>,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", jwt.expose()))
            .map_err(|_| self.unavailable("the signed JWT cannot go in a header; report this"))?;
        // SECURITY: keeps the JWT out of HPACK tables and Debug output.
        auth.set_sensitive(true);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, ACCEPT)
            .header("x-github-api-version", API_VERSION)
            .header(http::header::USER_AGENT, USER_AGENT);
        let body = match body {
            Some(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                outbound::full(b.to_string())
            }
            None => outbound::full(bytes::Bytes::new()),
        };
        builder.body(body).map_err(|_| {
            self.unavailable(format!(
                "cannot build a request to {}: check the connector's `hosts`",
                self.host
            ))
        })
    }

    /// The JWT to send now: the cached one while it has over a minute left and was signed on
    /// the clock we now believe, else a fresh one.
    fn jwt(&self) -> Result<Secret, String> {
        let skew = self.skew.load(Ordering::Relaxed);
        let mut current = self
            .signer
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(jwt) = current.as_ref() {
            if jwt.skew == skew && jwt.signed.elapsed() < JWT_REUSE {
                return Ok(jwt.value.clone());
            }
        }
        let value = self.signer.sign(unix_now() + skew)?;
        crate::logging::register_secret(&value);
        *current = Some(SignedJwt {
            value: value.clone(),
            signed: Instant::now(),
            skew,
        });
        Ok(value)
    }

    /// Records GitHub's clock from a `Date` header.
    fn learn_skew(&self, headers: &http::HeaderMap) {
        let Some(date) = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
        else {
            return;
        };
        let diff = date - unix_now();
        let skew = if diff.abs() < SKEW_TOLERANCE_SECS {
            0
        } else {
            diff
        };
        self.skew.store(skew, Ordering::Relaxed);
    }

    fn github_now(&self) -> i64 {
        unix_now() + self.skew.load(Ordering::Relaxed)
    }

    // -----------------------------------------------------------------------------------------
    // Errors: every one is `credential_unavailable` with the fix, and never holds a secret.

    fn unavailable(&self, message: impl Into<String>) -> ProxyError {
        ProxyError::new(ErrorCode::CredentialUnavailable, message.into())
            .for_connector(&self.connector)
    }

    fn refused(&self, what: &str, resp: &Fetched, hint: Option<String>) -> ProxyError {
        let status = resp.status.as_u16();
        let said = github_message(&resp.body);
        let hint = hint.unwrap_or_else(|| match resp.status {
            StatusCode::UNAUTHORIZED => format!(
                "check that {} names this app and {} holds its current private key (a clock off by over a minute also causes this)",
                self.env.app_id, self.env.key
            ),
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                "check the app's permissions and installation on GitHub, or wait if its rate limit is spent".to_string()
            }
            _ => "check the app's settings and installation on GitHub".to_string(),
        });
        self.unavailable(format!("GitHub refused {what} ({status}: {said}): {hint}"))
    }

    fn unexpected(&self, what: &str, wanted: &str) -> ProxyError {
        self.unavailable(format!(
            "GitHub's answer to {what} did not hold {wanted}: check that the connector's first host ({}) is GitHub's API",
            self.host
        ))
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }
}

// ---------------------------------------------------------------------------------------------
// JWT

struct Signer {
    key: EncodingKey,
    issuer: String,
    current: Mutex<Option<SignedJwt>>,
}

struct SignedJwt {
    value: Secret,
    signed: Instant,
    /// The clock difference it was signed with; a new one invalidates it.
    skew: i64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

impl Signer {
    /// Signs a JWT for `now` (Unix seconds on GitHub's clock).
    fn sign(&self, now: i64) -> Result<Secret, String> {
        let claims = Claims {
            iat: now - JWT_BACKDATE_SECS,
            exp: now + JWT_LIFETIME_SECS,
            iss: &self.issuer,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| format!("RS256 signing failed: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Config and env

/// Reads the private key: PEM text from `privateKeyEnv` (the default when neither key is
/// configured), else the file named by `privateKeyFileEnv`. Returns the PEM, a description of
/// where it came from for messages, and the env name to fix.
fn load_key(
    c: &ConnectorConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(Secret, String, String), String> {
    let name = &c.name;
    let text_env = match (&c.app.private_key_env, &c.app.private_key_file_env) {
        (Some(e), _) => Some(e.clone()),
        (None, None) => Some(DEFAULT_PRIVATE_KEY_ENV.to_string()),
        (None, Some(_)) => None,
    };
    if let Some(env) = &text_env {
        if let Some(pem) = lookup(env).map(Secret::new).filter(|s| !s.is_empty()) {
            crate::logging::register_secret(&pem);
            return Ok((pem, env.clone(), env.clone()));
        }
    }
    if let Some(env) = &c.app.private_key_file_env {
        if let Some(path) = lookup(env).filter(|p| !p.trim().is_empty()) {
            let path = std::path::PathBuf::from(path.trim());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "connector `{name}`: {env} names {}, which cannot be read ({e}): point it at the app's .pem file",
                    path.display()
                )
            })?;
            warn_if_loose(&path);
            let pem = Secret::new(text);
            crate::logging::register_secret(&pem);
            let source = format!("{} (named by {env})", path.display());
            return Ok((pem, source, env.clone()));
        }
    }
    let mut ways = Vec::new();
    if let Some(t) = &text_env {
        ways.push(format!("set {t} to the PEM text of its private key"));
    }
    if let Some(f) = &c.app.private_key_file_env {
        ways.push(format!("set {f} to the path of its .pem file"));
    }
    Err(format!(
        "connector `{name}` is in `mode: app` and needs the GitHub App's private key: {}",
        ways.join(", or ")
    ))
}

#[cfg(unix)]
fn warn_if_loose(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the GitHub App private key is readable by other users: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_loose(_path: &std::path::Path) {}

/// PEM text pasted into an env var often arrives with its newlines escaped as `\n`.
fn normalise_pem(text: &str) -> String {
    if !text.contains('\n') && text.contains("\\n") {
        text.replace("\\n", "\n")
    } else {
        text.to_string()
    }
}

#[derive(Serialize)]
struct Narrowing<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    repositories: &'a [String],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    permissions: &'a std::collections::BTreeMap<String, String>,
}

/// The `access_tokens` body from `repositories` and `permissions`, or none when both are empty.
fn narrowing_body(c: &ConnectorConfig) -> Result<Option<String>, String> {
    if c.repositories.is_empty() && c.permissions.is_empty() {
        return Ok(None);
    }
    for repo in &c.repositories {
        if repo.contains('/') {
            let short = repo.rsplit('/').next().unwrap_or(repo);
            return Err(format!(
                "connectors.{}.repositories entry `{repo}`: GitHub narrows tokens by repository name within the installation's account: write `{short}`",
                c.name
            ));
        }
        if repo.trim().is_empty() {
            return Err(format!(
                "connectors.{}.repositories has an empty entry: remove it",
                c.name
            ));
        }
    }
    serde_json::to_string(&Narrowing {
        repositories: &c.repositories,
        permissions: &c.permissions,
    })
    .map(Some)
    .map_err(|e| format!("connectors.{}: cannot encode the narrowing: {e}", c.name))
}

// ---------------------------------------------------------------------------------------------
// GitHub's answers

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

/// The mint's answer. Deliberately no `Debug`: it holds the token.
#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: String,
}

/// GitHub's `message` from an error body (else the start of the text), single-line, bounded
/// and scrubbed: it is repeated to the agent.
fn github_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let raw = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut one_line: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    one_line = one_line.trim().to_string();
    if one_line.is_empty() {
        one_line = "no message".to_string();
    }
    crate::logging::scrub(&one_line).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Single flight

/// At most one running job per key; callers that arrive while it runs wait for its result
/// (success or error) instead of starting their own. If the caller running the job goes away,
/// a waiting caller takes it over.
struct Flights<K, V> {
    running: Mutex<HashMap<K, Flight<V>>>,
}

/// One job's eventual result, shared by everyone waiting on it.
type Flight<V> = Arc<OnceCell<Result<V, ProxyError>>>;

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    async fn run<F, Fut>(&self, key: K, job: F) -> Result<V, ProxyError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, ProxyError>>,
    {
        let cell = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let result = cell.get_or_init(job).await.clone();
        // The first caller back retires the flight; later callers start a new one, and the
        // job re-checks the cache first, so a finished success is never repeated.
        let mut running = self.lock();
        if running.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            running.remove(&key);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<V>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// ---------------------------------------------------------------------------------------------
// Paths, clocks and dates

/// `(owner, repo)` of a `/repos/{owner}/{repo}[/...]` path, when both are plausible GitHub
/// names (anything else is not looked up by owner).
fn repo_of(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next().unwrap_or(path);
    let rest = path.strip_prefix("/repos/")?;
    let mut parts = rest.splitn(3, '/');
    let owner = parts.next()?;
    let repo = parts.next()?;
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s != "."
            && s != ".."
    };
    (name_ok(owner) && name_ok(repo)).then_some((owner, repo))
}

/// Lower-cases only when needed, so the common all-lower-case owner costs no allocation.
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn timestamp(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let valid = (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && (0..=23).contains(&h)
        && (0..=59).contains(&mi)
        && (0..=60).contains(&s);
    valid.then(|| days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Unix seconds of an RFC 3339 time as GitHub writes `expires_at`
/// (`2016-07-11T22:14:10Z`; fractions and numeric offsets accepted).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() {
        return None;
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (c, sign * (num(oh)? * 3600 + num(om)? * 60))
    };
    let clock = clock.split('.').next()?;
    let mut t = clock.split(':');
    let (h, mi, sec) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if t.next().is_some() {
        return None;
    }
    Some(timestamp(y, mo, day, h, mi, sec)? - offset)
}

/// Unix seconds of an HTTP `Date` (IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let day = num(parts.next()?)?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year = num(parts.next()?)?;
    let mut t = parts.next()?.split(':');
    let (h, mi, sec) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if parts.next()? != "GMT" {
        return None;
    }
    timestamp(year, month, day, h, mi, sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppSettings, Config};
    use crate::paths::Home;
    use std::path::Path;
    use std::sync::OnceLock;

    struct Keys {
        pkcs1: String,
        pkcs8: String,
        public: String,
    }

    /// One 2048-bit key per test run (generation takes a moment).
    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
            Keys {
                pkcs1: key.to_pkcs1_pem(LineEnding::LF).expect("pkcs1").to_string(),
                pkcs8: key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string(),
                public: key
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .expect("public pem"),
            }
        })
    }

    fn connector(extra: &str) -> (ConnectorConfig, UpstreamSettings) {
        let yaml = format!(
            "version: 1\nconnectors:\n  github:\n    provider: github\n    mode: app\n{extra}"
        );
        let config = Config::parse(&yaml, "axtary.yml", Path::new("/cfg"), &Home::at("/h"))
            .expect("config parses");
        (config.connectors[0].clone(), config.upstream)
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn claims_of(jwt: &Secret) -> serde_json::Value {
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        let key =
            jsonwebtoken::DecodingKey::from_rsa_pem(keys().public.as_bytes()).expect("public key");
        jsonwebtoken::decode::<serde_json::Value>(jwt.expose(), &key, &validation)
            .expect("JWT verifies with the app's public key")
            .claims
    }

    #[test]
    fn jwt_claims_with_app_id_from_pkcs1_and_pkcs8() {
        let (c, up) = connector("");
        for pem in [&keys().pkcs1, &keys().pkcs8] {
            let app = GithubApp::from_config(
                &c,
                &up,
                env(&[
                    (DEFAULT_APP_ID_ENV, "12345"),
                    (DEFAULT_PRIVATE_KEY_ENV, pem),
                ]),
            )
            .expect("app from env");
            let jwt = app.sign_jwt().expect("sign");
            let claims = claims_of(&jwt);
            let now = unix_now();
            assert_eq!(claims["iss"], "12345");
            let iat = claims["iat"].as_i64().expect("iat");
            let exp = claims["exp"].as_i64().expect("exp");
            assert!((now - 61..=now - 59).contains(&iat), "iat {iat} now {now}");
            assert!(
                (now + 539..=now + 541).contains(&exp),
                "exp {exp} now {now}"
            );
            assert!(exp - now <= 600);
        }
    }

    #[test]
    fn client_id_becomes_the_issuer_and_escaped_newlines_are_accepted() {
        let (c, up) = connector("    clientIdEnv: APP_CLIENT_ID\n");
        let escaped = keys().pkcs1.trim().replace('\n', "\\n");
        let app = GithubApp::from_config(
            &c,
            &up,
            env(&[
                ("APP_CLIENT_ID", "Iv23liExampleClient"),
                (DEFAULT_PRIVATE_KEY_ENV, &escaped),
            ]),
        )
        .expect("client id alone is enough");
        assert_eq!(
            claims_of(&app.sign_jwt().expect("sign"))["iss"],
            "Iv23liExampleClient"
        );
    }

    #[test]
    fn key_from_a_file() {
        let (c, up) = connector("    privateKeyFileEnv: APP_KEY_FILE\n");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.pem");
        std::fs::write(&path, &keys().pkcs8).expect("write key");
        let path_text = path.to_string_lossy().into_owned();
        let app = GithubApp::from_config(
            &c,
            &up,
            env(&[(DEFAULT_APP_ID_ENV, "7"), ("APP_KEY_FILE", &path_text)]),
        )
        .expect("key file");
        assert_eq!(claims_of(&app.sign_jwt().expect("sign"))["iss"], "7");

        let missing = dir.path().join("nope.pem").to_string_lossy().into_owned();
        let e = GithubApp::from_config(
            &c,
            &up,
            env(&[(DEFAULT_APP_ID_ENV, "7"), ("APP_KEY_FILE", &missing)]),
        )
        .expect_err("missing file");
        assert!(e.contains("APP_KEY_FILE") && e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn errors_name_the_variable_to_set() {
        let (c, up) = connector("    installationIdEnv: APP_INSTALLATION\n");
        let e = GithubApp::from_config(&c, &up, env(&[(DEFAULT_PRIVATE_KEY_ENV, &keys().pkcs1)]))
            .expect_err("no app id");
        assert!(e.contains(DEFAULT_APP_ID_ENV), "{e}");

        let e =
            GithubApp::from_config(&c, &up, env(&[(DEFAULT_APP_ID_ENV, "1")])).expect_err("no key");
        assert!(e.contains(DEFAULT_PRIVATE_KEY_ENV), "{e}");

        let e = GithubApp::from_config(
            &c,
            &up,
            env(&[
                (DEFAULT_APP_ID_ENV, "1"),
                (
                    DEFAULT_PRIVATE_KEY_ENV,
                    "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----",
                ),
            ]),
        )
        .expect_err("bad key");
        assert!(
            e.contains(DEFAULT_PRIVATE_KEY_ENV) && !e.contains("not a key"),
            "{e}"
        );

        let e = GithubApp::from_config(
            &c,
            &up,
            env(&[
                (DEFAULT_APP_ID_ENV, "1"),
                (DEFAULT_PRIVATE_KEY_ENV, &keys().pkcs1),
                ("APP_INSTALLATION", "acme"),
            ]),
        )
        .expect_err("bad installation id");
        assert!(e.contains("APP_INSTALLATION"), "{e}");

        let app = GithubApp::from_config(
            &c,
            &up,
            env(&[
                (DEFAULT_APP_ID_ENV, "1"),
                (DEFAULT_PRIVATE_KEY_ENV, &keys().pkcs1),
                ("APP_INSTALLATION", " 42 "),
            ]),
        )
        .expect("numeric installation id");
        assert_eq!(app.fixed_installation, Some(42));
    }

    #[test]
    fn narrowing_body_and_owner_qualified_names() {
        let (c, _) = connector(
            "    repositories: [widgets, gadgets]\n    permissions:\n      contents: read\n      issues: write\n",
        );
        let body: serde_json::Value =
            serde_json::from_str(&narrowing_body(&c).expect("body").expect("some")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"repositories": ["widgets", "gadgets"], "permissions": {"contents": "read", "issues": "write"}})
        );
        let (c, _) = connector("    permissions:\n      metadata: read\n");
        assert_eq!(
            narrowing_body(&c).expect("body").as_deref(),
            Some(r#"{"permissions":{"metadata":"read"}}"#)
        );
        let (c, _) = connector("");
        assert_eq!(narrowing_body(&c).expect("none"), None);
        let (c, _) = connector("    repositories: [acme/widgets]\n");
        let e = narrowing_body(&c).expect_err("owner-qualified");
        assert!(e.contains("`widgets`"), "{e}");
        let _ = AppSettings::default();
    }

    #[test]
    fn cached_follows_the_owner_and_the_refresh_point() {
        let (c, up) = connector("");
        let app = GithubApp::from_config(
            &c,
            &up,
            env(&[
                (DEFAULT_APP_ID_ENV, "1"),
                (DEFAULT_PRIVATE_KEY_ENV, &keys().pkcs1),
            ]),
        )
        .expect("app");
        assert!(app.cached("/repos/acme/widgets").is_none());
        app.prime(
            101,
            Some("acme"),
            Secret::new("ghs_acme_token_of_any_length"),
            Duration::from_secs(60),
        )
        .expect("prime");
        app.prime(
            202,
            Some("Globex"),
            Secret::new("ghs_globex"),
            Duration::ZERO,
        )
        .expect("prime");
        let acme = app
            .cached("/repos/ACME/widgets/pulls?state=open")
            .expect("acme cached");
        assert_eq!(acme.secret.expose(), "ghs_acme_token_of_any_length");
        assert_eq!(acme.source, CredentialSource::GithubApp);
        assert!(
            app.cached("/repos/globex/gadgets").is_none(),
            "past its refresh point"
        );
        assert!(
            app.cached("/rate_limit").is_none(),
            "no sole installation known"
        );
        assert!(app.cached("/repos/other/x").is_none());
    }

    #[test]
    fn repo_paths() {
        assert_eq!(repo_of("/repos/acme/widgets"), Some(("acme", "widgets")));
        assert_eq!(
            repo_of("/repos/acme/widgets/pulls/1"),
            Some(("acme", "widgets"))
        );
        assert_eq!(
            repo_of("/repos/acme/wid.gets?x=1"),
            Some(("acme", "wid.gets"))
        );
        assert_eq!(repo_of("/repos/acme"), None);
        assert_eq!(repo_of("/repos/acme/"), None);
        assert_eq!(repo_of("/repos/ac%2Fme/x"), None);
        assert_eq!(repo_of("/repos/acme/.."), None);
        assert_eq!(repo_of("/user/repos"), None);
        assert_eq!(repo_of("/graphql"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        assert_eq!(
            parse_rfc3339("2016-07-11T22:14:10.123Z"),
            Some(1_468_275_250)
        );
        assert_eq!(
            parse_rfc3339("2016-07-12T00:14:10+02:00"),
            Some(1_468_275_250)
        );
        assert_eq!(
            parse_rfc3339("2016-07-11T21:14:10-01:00"),
            Some(1_468_275_250)
        );
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(parse_rfc3339("2016-13-11T22:14:10Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(9), BACKOFF_CAP);
    }

    #[test]
    fn github_messages_are_bounded_and_scrubbed() {
        assert_eq!(
            github_message(br#"{"message":"Bad credentials","documentation_url":"x"}"#),
            "Bad credentials"
        );
        assert_eq!(github_message(b""), "no message");
        let long = "x".repeat(1000);
        assert_eq!(github_message(long.as_bytes()).len(), MAX_MESSAGE_CHARS);
        let leaky = r#"{"message":"bad token ghs_abcdefABCDEF0123456789\nnext line"}"#;
        assert_eq!(
            github_message(leaky.as_bytes()),
            "bad token [redacted] next line"
        );
    }

    #[tokio::test]
    async fn flights_share_one_result() {
        let flights: Flights<u8, u32> = Flights::default();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut handles = Vec::new();
        let flights = Arc::new(flights);
        for _ in 0..20 {
            let flights = flights.clone();
            let runs = runs.clone();
            handles.push(tokio::spawn(async move {
                flights
                    .run(1, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.expect("join").expect("ok"), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.lock().is_empty(), "finished flights are retired");
    }
}
