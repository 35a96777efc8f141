//! OAuth 2 against Linear and Slack with the `oauth2` crate: the authorize URL (PKCE S256 and
//! a random `state`), the code exchange, the refresh grant and the device grant (RFC 8628).
//!
//! The crate's HTTP client is an async function over `crate::outbound`, so every token call
//! honours `upstream.resolve` and `upstream.caFile` and verifies TLS like the proxy does.
//! Provider defaults (SPEC 5.1) are overridden by the connector's `oauth:` keys. Slack answers
//! errors as HTTP 200 with `"ok": false`, which the crate sees as an unparseable token
//! response: those bodies are read again for Slack's `error` field. Response bodies are never
//! shown whole, since a successful one holds tokens.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::url::Url;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use time::OffsetDateTime;

use super::store::Tokens;
use crate::config::{ConnectorConfig, UpstreamSettings};
use crate::connectors::Provider;
use crate::outbound::{self, HttpsClient, ProxyBody};
use crate::secret::Secret;

/// Largest token-endpoint answer read.
const MAX_BODY: usize = 1024 * 1024;
/// Bound on one token-endpoint exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connector's OAuth endpoints and settings: provider defaults, then its `oauth:` keys.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub provider: Provider,
    pub authorize_url: String,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub scopes: Vec<String>,
    pub client_id_env: String,
    pub client_secret_env: String,
}

impl Endpoints {
    /// The endpoints of `c`; an error for providers `connect` does not support.
    pub fn of(c: &ConnectorConfig) -> Result<Endpoints, String> {
        let (authorize, token, scopes): (&str, &str, &[&str]) = match c.provider {
            Provider::Linear => (
                "https://linear.app/oauth/authorize",
                "https://api.linear.app/oauth/token",
                &["read", "write"],
            ),
            Provider::Slack => (
                "https://slack.com/oauth/v2/authorize",
                "https://slack.com/api/oauth.v2.access",
                &["chat:write"],
            ),
            Provider::Github => {
                return Err(
                    "there is no `connect github`: use a GitHub App (`mode: app`) or a token in the env var named by tokenEnv".to_string(),
                )
            }
        };
        let o = &c.oauth;
        let upper = c.provider.as_str().to_ascii_uppercase();
        Ok(Endpoints {
            provider: c.provider,
            authorize_url: o
                .authorize_url
                .clone()
                .unwrap_or_else(|| authorize.to_string()),
            token_url: o.token_url.clone().unwrap_or_else(|| token.to_string()),
            device_authorization_url: o.device_authorization_url.clone(),
            scopes: o
                .scopes
                .clone()
                .unwrap_or_else(|| scopes.iter().map(|s| s.to_string()).collect()),
            client_id_env: o
                .client_id_env
                .clone()
                .unwrap_or_else(|| format!("AXTARY_{upper}_CLIENT_ID")),
            client_secret_env: o
                .client_secret_env
                .clone()
                .unwrap_or_else(|| format!("AXTARY_{upper}_CLIENT_SECRET")),
        })
    }
}

/// What a token endpoint granted.
#[derive(Debug)]
pub struct Granted {
    pub tokens: Tokens,
    pub expires_at: Option<OffsetDateTime>,
    /// Scopes the provider says it granted; `None` when it did not say.
    pub scopes: Option<Vec<String>>,
}

/// A failed exchange. `permanent` when retrying with the same grant cannot help (the provider
/// refused it: `invalid_grant`, a revoked or already used refresh token, a wrong client).
#[derive(Debug, Clone)]
pub struct OauthError {
    pub message: String,
    pub permanent: bool,
}

impl std::fmt::Display for OauthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The HTTP client error handed to `oauth2`.
#[derive(Debug)]
pub struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// The `oauth2` HTTP client: a named type rather than a closure, so the futures built on it
/// are plainly `Send` (a closure here defeats the compiler's Send inference in callers).
struct Http<'a>(&'a OauthClient);

type HttpFuture<'c> =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, HttpError>> + Send + 'c>>;

impl<'c> oauth2::AsyncHttpClient<'c> for Http<'_> {
    type Error = HttpError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.0.send(request))
    }
}

/// An OAuth client for one connector: endpoints, client credentials, outbound HTTPS.
pub struct OauthClient {
    endpoints: Endpoints,
    client_id: ClientId,
    client_secret: ClientSecret,
    http: HttpsClient<ProxyBody>,
}

impl OauthClient {
    pub fn new(
        endpoints: Endpoints,
        client_id: &Secret,
        client_secret: &Secret,
        upstream: &UpstreamSettings,
    ) -> Result<OauthClient, String> {
        for (what, url) in [
            ("authorizeUrl", Some(&endpoints.authorize_url)),
            ("tokenUrl", Some(&endpoints.token_url)),
            (
                "deviceAuthorizationUrl",
                endpoints.device_authorization_url.as_ref(),
            ),
        ] {
            if let Some(url) = url {
                let parsed = Url::parse(url)
                    .map_err(|e| format!("oauth.{what} `{url}` is not a URL: {e}"))?;
                // SECURITY: client secrets and codes only ever travel over verified TLS.
                if parsed.scheme() != "https" {
                    return Err(format!("oauth.{what} `{url}` must be an https URL"));
                }
            }
        }
        Ok(OauthClient {
            endpoints,
            client_id: ClientId::new(client_id.expose().to_string()),
            client_secret: ClientSecret::new(client_secret.expose().to_string()),
            http: outbound::https_client(upstream)?,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn token_url(&self) -> Result<TokenUrl, String> {
        TokenUrl::new(self.endpoints.token_url.clone())
            .map_err(|e| format!("oauth.tokenUrl is not a URL: {e}"))
    }

    /// Both providers take comma-separated scopes in one parameter.
    fn scope(scopes: &[String]) -> Scope {
        Scope::new(scopes.join(","))
    }

    /// The URL to send the user to, with a fresh random `state` and PKCE S256 challenge.
    pub fn authorize_url(
        &self,
        redirect: &str,
        scopes: &[String],
    ) -> Result<(Url, CsrfToken, PkceCodeVerifier), String> {
        let auth = AuthUrl::new(self.endpoints.authorize_url.clone())
            .map_err(|e| format!("oauth.authorizeUrl is not a URL: {e}"))?;
        let redirect = RedirectUrl::new(redirect.to_string())
            .map_err(|e| format!("the redirect URI `{redirect}` is not a URL: {e}"))?;
        let client = BasicClient::new(self.client_id.clone())
            .set_auth_uri(auth)
            .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Self::scope(scopes))
            .set_pkce_challenge(challenge)
            .url();
        Ok((url, state, verifier))
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: PkceCodeVerifier,
        redirect: &str,
    ) -> Result<Granted, OauthError> {
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| OauthError {
            message: format!("the redirect URI is not a URL: {e}"),
            permanent: true,
        })?;
        let client = BasicClient::new(self.client_id.clone())
            .set_client_secret(self.client_secret.clone())
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(self.token_url().map_err(permanent)?)
            .set_redirect_uri(redirect);
        let http = Http(self);
        let result = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await;
        self.granted(result, None)
    }

    /// The refresh grant. Linear and Slack rotate refresh tokens: the one sent here is dead
    /// once this returns `Ok`, so the caller must persist the new pair before using it.
    pub async fn refresh(&self, refresh: &Secret) -> Result<Granted, OauthError> {
        let client = BasicClient::new(self.client_id.clone())
            .set_client_secret(self.client_secret.clone())
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(self.token_url().map_err(permanent)?);
        let http = Http(self);
        let token = RefreshToken::new(refresh.expose().to_string());
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&http)
            .await;
        // A provider that does not rotate answers without a refresh token: keep the old one.
        self.granted(result, Some(refresh))
    }

    /// Starts the device grant: the user code and where to enter it.
    pub async fn device_start(
        &self,
        scopes: &[String],
    ) -> Result<StandardDeviceAuthorizationResponse, OauthError> {
        let url = self.device_url()?;
        let client = BasicClient::new(self.client_id.clone())
            .set_client_secret(self.client_secret.clone())
            .set_auth_type(AuthType::RequestBody)
            .set_device_authorization_url(url);
        let http = Http(self);
        client
            .exchange_device_code()
            .add_scope(Self::scope(scopes))
            .request_async(&http)
            .await
            .map_err(|e| describe_error(self.endpoints.provider, e))
    }

    /// Polls the token endpoint until the user approves, refuses, or the code expires,
    /// honouring the server's `interval` and `slow_down`.
    pub async fn device_poll(
        &self,
        details: &StandardDeviceAuthorizationResponse,
        timeout: Duration,
    ) -> Result<Granted, OauthError> {
        let url = self.device_url()?;
        let client = BasicClient::new(self.client_id.clone())
            .set_client_secret(self.client_secret.clone())
            .set_auth_type(AuthType::RequestBody)
            .set_device_authorization_url(url)
            .set_token_uri(self.token_url().map_err(permanent)?);
        let http = Http(self);
        let result = client
            .exchange_device_access_token(details)
            .request_async(&http, tokio::time::sleep, Some(timeout))
            .await;
        match result {
            Ok(resp) => Ok(granted_from(&resp, None)),
            Err(e) => Err(describe_error(self.endpoints.provider, e)),
        }
    }

    fn device_url(&self) -> Result<DeviceAuthorizationUrl, OauthError> {
        let url = self.endpoints.device_authorization_url.clone().ok_or_else(|| OauthError {
            message: "this connector has no oauth.deviceAuthorizationUrl: add it to the connector's `oauth:` block, or connect without --device".to_string(),
            permanent: true,
        })?;
        DeviceAuthorizationUrl::new(url).map_err(|e| OauthError {
            message: format!("oauth.deviceAuthorizationUrl is not a URL: {e}"),
            permanent: true,
        })
    }

    fn granted<E: std::error::Error + 'static>(
        &self,
        result: Result<BasicTokenResponse, RequestTokenError<E, oauth2::basic::BasicErrorResponse>>,
        old_refresh: Option<&Secret>,
    ) -> Result<Granted, OauthError> {
        match result {
            Ok(resp) => Ok(granted_from(&resp, old_refresh)),
            Err(e) => Err(describe_error(self.endpoints.provider, e)),
        }
    }

    /// The `oauth2` HTTP client: one request over the shared outbound client.
    async fn send(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let (mut parts, body) = req.into_parts();
        parts.headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("axtary/", env!("CARGO_PKG_VERSION"))),
        );
        let req = http::Request::from_parts(parts, outbound::full(body));
        let fetched = outbound::fetch(&self.http, req, EXCHANGE_TIMEOUT, MAX_BODY)
            .await
            .map_err(HttpError)?;
        let mut resp = http::Response::new(fetched.body.to_vec());
        *resp.status_mut() = fetched.status;
        *resp.headers_mut() = fetched.headers;
        Ok(resp)
    }
}

fn permanent(message: String) -> OauthError {
    OauthError {
        message,
        permanent: true,
    }
}

fn granted_from<TR: TokenResponse>(resp: &TR, old_refresh: Option<&Secret>) -> Granted {
    let access = Secret::new(resp.access_token().secret());
    crate::logging::register_secret(&access);
    let refresh = resp
        .refresh_token()
        .map(|r| Secret::new(r.secret()))
        .filter(|s| !s.is_empty())
        .or_else(|| old_refresh.cloned());
    if let Some(r) = &refresh {
        crate::logging::register_secret(r);
    }
    let expires_at = resp.expires_in().and_then(|d| {
        let d = time::Duration::try_from(d).ok()?;
        OffsetDateTime::now_utc().checked_add(d)
    });
    let scopes = resp.scopes().map(|s| {
        s.iter()
            .flat_map(|scope| scope.as_str().split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    Granted {
        tokens: Tokens { access, refresh },
        expires_at,
        scopes,
    }
}

/// What a provider's `error` code means for the user.
fn hint(code: &str) -> &'static str {
    match code {
        "invalid_grant"
        | "invalid_refresh_token"
        | "token_revoked"
        | "invalid_code"
        | "code_already_used" => "the grant is no longer valid: run `axtary connect` again",
        "invalid_client" | "invalid_client_id" | "bad_client_secret" | "unauthorized_client" => {
            "check the client id and secret in the env vars"
        }
        "bad_redirect_uri" | "invalid_redirect_uri" | "redirect_uri_mismatch" => {
            "the redirect URI must match one registered in the provider's app settings"
        }
        "invalid_scope" => "check the scopes (--scopes or oauth.scopes)",
        "access_denied" => "the request was refused in the browser",
        "expired_token" => "the device code expired before it was approved: run the command again",
        _ => "see the provider's OAuth documentation for this error",
    }
}

fn is_permanent(code: &str) -> bool {
    !matches!(
        code,
        "temporarily_unavailable"
            | "server_error"
            | "ratelimited"
            | "slow_down"
            | "authorization_pending"
    )
}

/// Turns an `oauth2` failure into a message that never holds a response body.
fn describe_error<RE, T>(provider: Provider, e: RequestTokenError<RE, T>) -> OauthError
where
    RE: std::error::Error + 'static,
    T: oauth2::ErrorResponse + 'static,
{
    let name = provider.as_str();
    match e {
        RequestTokenError::ServerResponse(resp) => {
            // The standard error types all serialise to `{"error": "...", ...}`.
            let v = serde_json::to_value(&resp).unwrap_or_default();
            let code = v["error"].as_str().unwrap_or("unknown_error").to_string();
            let desc = v["error_description"]
                .as_str()
                .map(|d| format!(" ({})", d.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            OauthError {
                message: format!("{name} refused: {code}{desc}; {}", hint(&code)),
                permanent: is_permanent(&code),
            }
        }
        RequestTokenError::Request(e) => OauthError {
            message: format!("cannot reach the {name} token endpoint: {e}"),
            permanent: false,
        },
        RequestTokenError::Parse(_, body) => {
            // Slack: HTTP 200 with {"ok": false, "error": "..."}.
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if v["ok"] == serde_json::Value::Bool(false) {
                let code = v["error"].as_str().unwrap_or("unknown_error").to_string();
                return OauthError {
                    message: format!("{name} refused: {code}; {}", hint(&code)),
                    permanent: is_permanent(&code),
                };
            }
            if let Some(code) = v["error"].as_str() {
                return OauthError {
                    message: format!("{name} refused: {code}; {}", hint(code)),
                    permanent: is_permanent(code),
                };
            }
            OauthError {
                message: format!(
                    "the {name} token endpoint answered something that is not a token response ({} bytes); check oauth.tokenUrl",
                    body.len()
                ),
                permanent: false,
            }
        }
        RequestTokenError::Other(m) => OauthError {
            message: format!("the {name} token exchange failed: {m}"),
            permanent: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::paths::Home;

    #[test]
    fn defaults_and_overrides() {
        let cfg = Config::parse(
            "version: 1\nconnectors:\n  linear:\n    provider: linear\n  slack:\n    provider: slack\n    oauth:\n      tokenUrl: https://example.test/token\n      scopes: [a, b]\n      clientIdEnv: MY_ID\n",
            "t.yml",
            std::path::Path::new("/"),
            &Home::at("/h"),
        )
        .unwrap();
        let linear = Endpoints::of(&cfg.connectors[0]).unwrap();
        assert_eq!(linear.authorize_url, "https://linear.app/oauth/authorize");
        assert_eq!(linear.scopes, ["read", "write"]);
        assert_eq!(linear.client_id_env, "AXTARY_LINEAR_CLIENT_ID");
        assert_eq!(linear.client_secret_env, "AXTARY_LINEAR_CLIENT_SECRET");
        let slack = Endpoints::of(&cfg.connectors[1]).unwrap();
        assert_eq!(slack.authorize_url, "https://slack.com/oauth/v2/authorize");
        assert_eq!(slack.token_url, "https://example.test/token");
        assert_eq!(slack.scopes, ["a", "b"]);
        assert_eq!(slack.client_id_env, "MY_ID");
    }

    #[test]
    fn authorize_url_has_pkce_and_state() {
        let cfg = Config::parse(
            "version: 1\nconnectors:\n  linear:\n    provider: linear\n",
            "t.yml",
            std::path::Path::new("/"),
            &Home::at("/h"),
        )
        .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = OauthClient::new(
            Endpoints::of(&cfg.connectors[0]).unwrap(),
            &Secret::new("cid"),
            &Secret::new("csecret"),
            &cfg.upstream,
        )
        .unwrap();
        let (url, state, _v) = client
            .authorize_url(
                "http://127.0.0.1:7878/callback",
                &["read".into(), "write".into()],
            )
            .unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], *state.secret());
        assert_eq!(q["scope"], "read,write");
        assert_eq!(q["client_id"], "cid");
        assert!(!url.as_str().contains("csecret"));
    }
}
