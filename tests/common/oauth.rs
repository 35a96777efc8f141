//! A mock OAuth provider on loopback TLS standing in for Linear and Slack, plus a test
//! "browser" that walks its consent page.
//!
//! One server answers every provider host (the leaf covers `linear.app`, `api.linear.app`,
//! `slack.com`, ...): the authorize page with Allow and Deny links, the token endpoint in
//! Linear's shape (`/oauth/token`, errors as 4xx) and Slack's (`/api/oauth.v2.access`, errors
//! as HTTP 200 with `"ok": false`), the device endpoints, and, for any other path, an echo of
//! the `Authorization` it received, so a proxied API call shows which token was injected.
//!
//! The token endpoint checks what a real one checks: the client id and secret, the redirect
//! URI, that a code is used once, and the PKCE verifier against the S256 challenge the
//! authorize request carried. Refresh tokens rotate: a used one is refused with
//! `invalid_grant`, which is how a test proves that concurrent refreshes were serialised.
//! Tokens are random per run. Counters and knobs are shared with the test thread.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use rcgen::PublicKeyData;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::ca::{accept_tls, serve_by_alpn, tls_server, TestCa};
use super::random_alnum;

/// The hosts the OAuth mock's certificate covers.
pub const OAUTH_HOSTS: [&str; 5] = [
    "linear.app",
    "api.linear.app",
    "slack.com",
    "api.github.com",
    "example.test",
];

/// One step of the device grant's answers to polls, in order; the last one repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStep {
    Pending,
    SlowDown,
    Approve,
    Deny,
    Expire,
}

/// What the mock does; tests change these before (or during) a flow.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// `expires_in` of tokens from a code or device grant (None: omitted).
    pub code_expires_in: Option<i64>,
    /// `expires_in` of tokens from a refresh.
    pub refresh_expires_in: Option<i64>,
    /// The token endpoint refuses code grants with this error.
    pub token_error: Option<String>,
    /// The Allow link redirects with a state that is not the one it was given.
    pub wrong_state: bool,
    /// Time the refresh grant takes (widens race windows).
    pub refresh_delay: Duration,
    /// The device endpoint's `interval`.
    pub device_interval: u64,
    /// The device grant's answers to successive polls.
    pub device_script: Vec<DeviceStep>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            code_expires_in: Some(3600),
            refresh_expires_in: Some(3600),
            token_error: None,
            wrong_state: false,
            refresh_delay: Duration::ZERO,
            device_interval: 1,
            device_script: vec![DeviceStep::Approve],
        }
    }
}

struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: String,
    challenge: String,
    scope: String,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
}

#[derive(Default)]
struct DeviceState {
    codes: HashSet<String>,
    polls: Vec<Instant>,
    step: usize,
}

/// What the mock saw of one API (non-OAuth) request.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub host: String,
    pub path: String,
    pub authorization: Option<String>,
}

struct Shared {
    client_id: String,
    client_secret: String,
    knobs: Mutex<Knobs>,
    pending: Mutex<HashMap<String, AuthRequest>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    /// Refresh token -> still usable.
    refresh_tokens: Mutex<HashMap<String, bool>>,
    /// Every access token issued, in order.
    issued: Mutex<Vec<String>>,
    device: Mutex<DeviceState>,
    api: Mutex<Vec<ApiRequest>>,
    /// Every token-endpoint request as `grant_type`.
    token_calls: Mutex<Vec<String>>,
    code_exchanges: AtomicUsize,
    refreshes: AtomicUsize,
    refresh_rejections: AtomicUsize,
    pkce_failures: AtomicUsize,
    device_too_fast: AtomicUsize,
}

/// The running mock. Dropping it stops the server.
pub struct OauthMock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    spki_sha256: String,
    runtime: Option<Runtime>,
}

impl OauthMock {
    /// Starts a mock whose certificate is signed by `ca`, with a random client id and secret.
    pub fn start(ca: &TestCa) -> OauthMock {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let leaf = ca.issue(&OAUTH_HOSTS);
        let key_pair = match &leaf.key {
            rustls_pki_types::PrivateKeyDer::Pkcs8(k) => {
                rcgen::KeyPair::try_from(k.secret_pkcs8_der()).expect("leaf key")
            }
            _ => panic!("the test CA issues PKCS#8 keys"),
        };
        let spki_sha256 = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(key_pair.subject_public_key_info()));
        let (acceptor, runtime, listener, addr) =
            tls_server(leaf, &[b"h2", b"http/1.1"], "mock-oauth");
        let shared = Arc::new(Shared {
            client_id: format!("cid-{}", random_alnum(12)),
            client_secret: format!("csecret-{}", random_alnum(24)),
            knobs: Mutex::new(Knobs::default()),
            pending: Mutex::default(),
            codes: Mutex::default(),
            refresh_tokens: Mutex::default(),
            issued: Mutex::default(),
            device: Mutex::default(),
            api: Mutex::default(),
            token_calls: Mutex::default(),
            code_exchanges: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            refresh_rejections: AtomicUsize::new(0),
            pkce_failures: AtomicUsize::new(0),
            device_too_fast: AtomicUsize::new(0),
        });
        runtime.spawn(accept_loop(listener, acceptor, shared.clone()));
        OauthMock {
            addr,
            shared,
            spki_sha256,
            runtime: Some(runtime),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// base64 SHA-256 of the leaf's SubjectPublicKeyInfo (Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }

    /// Changes the knobs.
    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.shared.knobs.lock().expect("knobs"));
    }

    /// Every access token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.shared.issued.lock().expect("issued").clone()
    }

    /// Every refresh token issued so far (used or not).
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.shared
            .refresh_tokens
            .lock()
            .expect("refresh")
            .keys()
            .cloned()
            .collect()
    }

    pub fn code_exchanges(&self) -> usize {
        self.shared.code_exchanges.load(Ordering::SeqCst)
    }

    /// Successful refresh grants.
    pub fn refreshes(&self) -> usize {
        self.shared.refreshes.load(Ordering::SeqCst)
    }

    /// Refresh grants refused because the token was already used (or unknown).
    pub fn refresh_rejections(&self) -> usize {
        self.shared.refresh_rejections.load(Ordering::SeqCst)
    }

    pub fn pkce_failures(&self) -> usize {
        self.shared.pkce_failures.load(Ordering::SeqCst)
    }

    /// Device polls that came sooner than the interval allowed.
    pub fn device_too_fast(&self) -> usize {
        self.shared.device_too_fast.load(Ordering::SeqCst)
    }

    /// When each device poll arrived.
    pub fn device_polls(&self) -> Vec<Instant> {
        self.shared.device.lock().expect("device").polls.clone()
    }

    /// `grant_type` of every token-endpoint call.
    pub fn token_calls(&self) -> Vec<String> {
        self.shared.token_calls.lock().expect("calls").clone()
    }

    /// API requests (anything but the OAuth endpoints) received so far.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.shared.api.lock().expect("api").clone()
    }
}

impl Drop for OauthMock {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    accept_tls(listener, acceptor, move |tls| {
        let shared = shared.clone();
        async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, shared).await) }
            });
            serve_by_alpn(tls, svc).await;
        }
    })
    .await;
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("json response")
}

fn html(status: StatusCode, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("html response")
}

fn redirect(location: &str) -> Resp {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .expect("redirect")
}

fn parse_query(q: &str) -> HashMap<String, String> {
    oauth2::url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    let mut url = oauth2::url::Url::parse(base).expect("redirect uri");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    match (parts.method.as_str(), path.as_str()) {
        ("GET", "/oauth/authorize") | ("GET", "/oauth/v2/authorize") => authorize(&shared, &query),
        ("GET", "/oauth/decide") => decide(&shared, &query),
        ("POST", "/oauth/token") => token(&shared, &body, false).await,
        ("POST", "/api/oauth.v2.access") => token(&shared, &body, true).await,
        ("POST", "/oauth/device/code") => device_code(&shared, &body),
        (method, _) => {
            let authorization = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            shared.api.lock().expect("api").push(ApiRequest {
                method: method.to_string(),
                host: host.clone(),
                path: path.clone(),
                authorization: authorization.clone(),
            });
            json(
                StatusCode::OK,
                serde_json::json!({"ok": true, "path": path, "host": host, "authorization": authorization}),
            )
        }
    }
}

fn authorize(shared: &Shared, q: &HashMap<String, String>) -> Resp {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let problem = if get("client_id") != shared.client_id {
        Some("unknown client_id")
    } else if get("response_type") != "code" {
        Some("response_type must be code")
    } else if get("code_challenge_method") != "S256" {
        Some("code_challenge_method must be S256")
    } else if get("code_challenge").len() < 43 {
        Some("code_challenge missing")
    } else if get("state").is_empty() {
        Some("state missing")
    } else if get("redirect_uri").is_empty() {
        Some("redirect_uri missing")
    } else {
        None
    };
    if let Some(p) = problem {
        return html(
            StatusCode::BAD_REQUEST,
            format!(
                "<html><body><h1>Bad authorize request</h1><p id=\"problem\">{p}</p></body></html>"
            ),
        );
    }
    let id = random_alnum(16);
    let scope = get("scope");
    shared.pending.lock().expect("pending").insert(
        id.clone(),
        AuthRequest {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            state: get("state"),
            challenge: get("code_challenge"),
            scope: scope.clone(),
        },
    );
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><title>Authorize</title></head><body>\
             <h1>Allow the app to access your workspace?</h1><p>Scopes: <span id=\"scopes\">{scope}</span></p>\
             <a id=\"allow\" href=\"/oauth/decide?req={id}&amp;decision=allow\"><button>Allow</button></a> \
             <a id=\"deny\" href=\"/oauth/decide?req={id}&amp;decision=deny\">Deny</a>\
             </body></html>"
        ),
    )
}

fn decide(shared: &Shared, q: &HashMap<String, String>) -> Resp {
    let id = q.get("req").cloned().unwrap_or_default();
    let Some(req) = shared.pending.lock().expect("pending").remove(&id) else {
        return html(StatusCode::BAD_REQUEST, "<p>unknown request</p>".into());
    };
    if q.get("decision").map(String::as_str) != Some("allow") {
        return redirect(&with_params(
            &req.redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "The user denied access"),
                ("state", &req.state),
            ],
        ));
    }
    let code = format!("code-{}", random_alnum(20));
    shared.codes.lock().expect("codes").insert(
        code.clone(),
        CodeGrant {
            client_id: req.client_id,
            redirect_uri: req.redirect_uri.clone(),
            challenge: req.challenge,
            scope: req.scope,
        },
    );
    let wrong = shared.knobs.lock().expect("knobs").wrong_state;
    let state = if wrong {
        format!("{}-tampered", req.state)
    } else {
        req.state
    };
    redirect(&with_params(
        &req.redirect_uri,
        &[("code", &code), ("state", &state)],
    ))
}

fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let digest = Sha256::digest(verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) == challenge
}

fn oauth_error(slack: bool, code: &str, desc: &str) -> Resp {
    if slack {
        json(
            StatusCode::OK,
            serde_json::json!({"ok": false, "error": code}),
        )
    } else {
        let status = if code == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        json(
            status,
            serde_json::json!({"error": code, "error_description": desc}),
        )
    }
}

fn issue(shared: &Shared, slack: bool, scope: &str, expires_in: Option<i64>) -> Resp {
    let (access, refresh) = if slack {
        (
            format!("xoxe.xoxb-1-{}", random_alnum(40)),
            format!("xoxe-1-{}", random_alnum(40)),
        )
    } else {
        (
            format!("lin_oauth_{}", random_alnum(40)),
            format!("lin_refresh_{}", random_alnum(40)),
        )
    };
    shared.issued.lock().expect("issued").push(access.clone());
    shared
        .refresh_tokens
        .lock()
        .expect("refresh")
        .insert(refresh.clone(), true);
    let mut v = if slack {
        serde_json::json!({
            "ok": true, "access_token": access, "token_type": "bot", "scope": scope,
            "refresh_token": refresh, "bot_user_id": "U0BOT", "app_id": "A0APP",
            "team": {"id": "T0TEAM", "name": "Test"},
        })
    } else {
        serde_json::json!({
            "access_token": access, "token_type": "Bearer", "scope": scope, "refresh_token": refresh,
        })
    };
    if let Some(e) = expires_in {
        v["expires_in"] = serde_json::json!(e);
    }
    json(StatusCode::OK, v)
}

async fn token(shared: &Shared, body: &[u8], slack: bool) -> Resp {
    let form = parse_query(&String::from_utf8_lossy(body));
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let grant = get("grant_type");
    shared
        .token_calls
        .lock()
        .expect("calls")
        .push(grant.clone());
    if get("client_id") != shared.client_id || get("client_secret") != shared.client_secret {
        return oauth_error(slack, "invalid_client", "client authentication failed");
    }
    let knobs = shared.knobs.lock().expect("knobs").clone();
    match grant.as_str() {
        "authorization_code" => {
            if let Some(e) = &knobs.token_error {
                return oauth_error(slack, e, "refused by the test");
            }
            let Some(grant) = shared.codes.lock().expect("codes").remove(&get("code")) else {
                return oauth_error(slack, "invalid_grant", "unknown or used code");
            };
            if grant.client_id != shared.client_id || grant.redirect_uri != get("redirect_uri") {
                return oauth_error(slack, "invalid_grant", "redirect_uri mismatch");
            }
            if !pkce_ok(&get("code_verifier"), &grant.challenge) {
                shared.pkce_failures.fetch_add(1, Ordering::SeqCst);
                return oauth_error(slack, "invalid_grant", "PKCE verification failed");
            }
            shared.code_exchanges.fetch_add(1, Ordering::SeqCst);
            issue(shared, slack, &grant.scope, knobs.code_expires_in)
        }
        "refresh_token" => {
            if !knobs.refresh_delay.is_zero() {
                tokio::time::sleep(knobs.refresh_delay).await;
            }
            let presented = get("refresh_token");
            let alive = {
                let mut tokens = shared.refresh_tokens.lock().expect("refresh");
                match tokens.get_mut(&presented) {
                    Some(alive) if *alive => {
                        // Rotation: this refresh token dies now.
                        *alive = false;
                        true
                    }
                    _ => false,
                }
            };
            if !alive {
                shared.refresh_rejections.fetch_add(1, Ordering::SeqCst);
                return oauth_error(
                    slack,
                    "invalid_grant",
                    "refresh token already used or unknown",
                );
            }
            shared.refreshes.fetch_add(1, Ordering::SeqCst);
            issue(shared, slack, "read,write", knobs.refresh_expires_in)
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            let step = {
                let mut d = shared.device.lock().expect("device");
                if !d.codes.contains(&get("device_code")) {
                    return oauth_error(slack, "invalid_grant", "unknown device code");
                }
                let now = Instant::now();
                let too_fast = d.polls.last().is_some_and(|last| {
                    now.duration_since(*last)
                        < Duration::from_secs(knobs.device_interval) - Duration::from_millis(100)
                });
                d.polls.push(now);
                if too_fast {
                    shared.device_too_fast.fetch_add(1, Ordering::SeqCst);
                    None
                } else {
                    let i = d.step.min(knobs.device_script.len().saturating_sub(1));
                    d.step += 1;
                    knobs.device_script.get(i).copied()
                }
            };
            match step {
                None | Some(DeviceStep::SlowDown) => {
                    oauth_error(slack, "slow_down", "polling too fast")
                }
                Some(DeviceStep::Pending) => {
                    oauth_error(slack, "authorization_pending", "waiting for the user")
                }
                Some(DeviceStep::Deny) => oauth_error(slack, "access_denied", "the user said no"),
                Some(DeviceStep::Expire) => oauth_error(slack, "expired_token", "too late"),
                Some(DeviceStep::Approve) => {
                    issue(shared, slack, "read,write", knobs.code_expires_in)
                }
            }
        }
        other => oauth_error(slack, "unsupported_grant_type", other),
    }
}

fn device_code(shared: &Shared, body: &[u8]) -> Resp {
    let form = parse_query(&String::from_utf8_lossy(body));
    if form.get("client_id").map(String::as_str) != Some(shared.client_id.as_str()) {
        return oauth_error(false, "invalid_client", "unknown client");
    }
    let code = format!("dev-{}", random_alnum(24));
    shared
        .device
        .lock()
        .expect("device")
        .codes
        .insert(code.clone());
    let interval = shared.knobs.lock().expect("knobs").device_interval;
    json(
        StatusCode::OK,
        serde_json::json!({
            "device_code": code,
            "user_code": "WDJB-MJHT",
            "verification_uri": "https://linear.app/device",
            "verification_uri_complete": "https://linear.app/device?user_code=WDJB-MJHT",
            "expires_in": 600,
            "interval": interval,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// The test browser

/// What the browser saw at the end of a flow.
#[derive(Debug)]
pub struct BrowserResult {
    /// Where the provider redirected (the loopback callback URL).
    pub callback_url: String,
    pub status: u16,
    pub body: String,
}

/// A scripted browser: it opens the authorize URL at the mock (through the same resolve
/// override the product uses), follows the Allow (or Deny) link, then the redirect to the
/// loopback callback.
pub struct TestBrowser {
    ca_file: std::path::PathBuf,
    mock: SocketAddr,
}

impl TestBrowser {
    pub fn new(ca_file: &Path, mock: SocketAddr) -> TestBrowser {
        TestBrowser {
            ca_file: ca_file.to_path_buf(),
            mock,
        }
    }

    /// GETs `url` at the mock; returns (status, Location, body).
    fn get_mock(&self, url: &str) -> (u16, Option<String>, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let uri: http::Uri = url.parse().expect("mock URL");
        let host = uri.host().expect("host").to_string();
        let mut resolve = HashMap::new();
        resolve.insert((host, 443), self.mock);
        let settings = axtary::config::UpstreamSettings {
            ca_file: Some(self.ca_file.clone()),
            resolve,
            timeout: Duration::from_secs(10),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("browser runtime");
        rt.block_on(async {
            let client = axtary::outbound::https_client(&settings).expect("browser client");
            let req = Request::get(uri)
                .body(axtary::outbound::full(Bytes::new()))
                .expect("request");
            let resp = axtary::outbound::fetch(&client, req, Duration::from_secs(10), 1 << 20)
                .await
                .unwrap_or_else(|e| panic!("browser GET {url}: {e}"));
            let location = resp
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (
                resp.status.as_u16(),
                location,
                String::from_utf8_lossy(&resp.body).into_owned(),
            )
        })
    }

    /// Opens the consent page and clicks Allow (or Deny); returns where the provider
    /// redirects.
    pub fn consent(&self, authorize_url: &str, allow: bool) -> String {
        let (status, _, page) = self.get_mock(authorize_url);
        assert_eq!(status, 200, "consent page: {page}");
        let id = if allow { "id=\"allow\"" } else { "id=\"deny\"" };
        let at = page
            .find(id)
            .unwrap_or_else(|| panic!("no {id} on the consent page: {page}"));
        let rest = &page[at..];
        let href_at = rest.find("href=\"").expect("href") + 6;
        let href = &rest[href_at..];
        let href = href[..href.find('"').expect("href end")].replace("&amp;", "&");
        let base = oauth2::url::Url::parse(authorize_url).expect("authorize URL");
        let decide = base.join(&href).expect("decide URL");
        let (status, location, body) = self.get_mock(decide.as_str());
        assert_eq!(status, 302, "decision: {body}");
        location.expect("redirect location")
    }

    /// Follows the provider's redirect to the loopback callback (plain HTTP on 127.0.0.1).
    pub fn callback(&self, url: &str) -> BrowserResult {
        let (status, body) = http_get_loopback(url);
        BrowserResult {
            callback_url: url.to_string(),
            status,
            body,
        }
    }

    /// The whole flow: consent, then the callback.
    pub fn authorize(&self, authorize_url: &str, allow: bool) -> BrowserResult {
        let location = self.consent(authorize_url, allow);
        self.callback(&location)
    }
}

/// A plain HTTP/1.1 GET to a loopback URL; returns (status, body).
pub fn http_get_loopback(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let parsed = oauth2::url::Url::parse(url).expect("callback URL");
    let host = parsed.host_str().expect("host").to_string();
    let port = parsed.port_or_known_default().expect("port");
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("loopback address");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the callback {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("write callback request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// Running `axtary connect`

/// A running `axtary connect`: its stderr is watched for the authorize URL and the callback
/// address, so a test can play the browser.
pub struct ConnectRun {
    child: Option<std::process::Child>,
    stdout: super::Captured,
    stderr: super::Captured,
    lines: std::sync::mpsc::Receiver<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
    seen: Vec<String>,
}

impl ConnectRun {
    /// Starts `cmd` (an `axtary connect ...` command).
    pub fn start(mut cmd: std::process::Command) -> ConnectRun {
        use std::process::Stdio;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start axtary connect: {e}"));
        let stdout = super::Captured::default();
        let stderr = super::Captured::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let readers = vec![
            stdout.drain(child.stdout.take().expect("stdout"), None),
            stderr.drain(child.stderr.take().expect("stderr"), Some(tx)),
        ];
        ConnectRun {
            child: Some(child),
            stdout,
            stderr,
            lines: rx,
            readers,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line that `pick` accepts and returns what it picked.
    fn wait_line(&mut self, what: &str, pick: impl Fn(&str) -> Option<String>) -> String {
        if let Some(found) = self.seen.iter().find_map(|l| pick(l)) {
            return found;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "axtary connect printed no {what}\n--- stderr\n{}",
                    self.stderr.text()
                ),
            }
        }
    }

    /// The authorize URL printed on stderr.
    pub fn authorize_url(&mut self) -> String {
        self.wait_line("authorize URL", |l| {
            let t = l.trim();
            (t.starts_with("https://") && t.contains("authorize")).then(|| t.to_string())
        })
    }

    /// The loopback callback base printed on stderr (`http://127.0.0.1:PORT/path`).
    pub fn callback_base(&mut self) -> String {
        self.wait_line("callback address", |l| {
            let at = l.find("http://127.0.0.1:")?;
            let rest = &l[at..];
            let end = rest.find(' ').unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
    }

    /// Waits (bounded) for the exit; both streams complete.
    pub fn finish(mut self) -> super::RunOutput {
        let mut child = self.child.take().expect("child");
        let status = super::wait_bounded(&mut child, Duration::from_secs(30));
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "axtary connect did not exit\n--- stderr\n{}",
                    self.stderr.text()
                );
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        super::RunOutput {
            status,
            stdout: self.stdout.bytes(),
            stderr: self.stderr.bytes(),
        }
    }
}

impl Drop for ConnectRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A mock OAuth provider, a home and a config pointing every provider host at the mock.
pub struct OauthStack {
    pub ca: TestCa,
    pub mock: OauthMock,
    pub home: super::Home,
    pub config: std::path::PathBuf,
}

impl OauthStack {
    pub fn start() -> OauthStack {
        OauthStack::with_config(|c| c)
    }

    /// With the config adjusted by `f`.
    pub fn with_config(f: impl FnOnce(super::ConfigBuilder) -> super::ConfigBuilder) -> OauthStack {
        let ca = TestCa::new();
        let mock = OauthMock::start(&ca);
        let home = super::Home::new();
        let builder = super::ConfigBuilder::for_addr(ca.pem_path(), mock.addr());
        let config = home.write_config(&f(builder).build());
        OauthStack {
            ca,
            mock,
            home,
            config,
        }
    }

    /// `axtary connect PROVIDER --config C --no-browser --redirect-port 0 ARGS` with the
    /// mock's client id and secret in the default env vars of `provider`.
    pub fn connect_command(&self, provider: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = self.home.command(["connect", provider]);
        cmd.arg("--config").arg(&self.config).arg("--no-browser");
        if !args.contains(&"--redirect-port") {
            cmd.args(["--redirect-port", "0"]);
        }
        cmd.args(args);
        let upper = provider.to_ascii_uppercase();
        // Every byte the command writes is checked for secrets by the tests, at full verbosity.
        cmd.env("RUST_LOG", "trace");
        cmd.env(format!("AXTARY_{upper}_CLIENT_ID"), self.mock.client_id())
            .env(
                format!("AXTARY_{upper}_CLIENT_SECRET"),
                self.mock.client_secret(),
            );
        cmd
    }

    /// Runs a whole `connect linear` with the test browser clicking Allow.
    pub fn connect_linear(&self) -> super::RunOutput {
        let mut run = ConnectRun::start(self.connect_command("linear", &[]));
        let url = run.authorize_url();
        let browser = TestBrowser::new(self.ca.pem_path(), self.mock.addr());
        let page = browser.authorize(&url, true);
        assert_eq!(page.status, 200, "connected page: {}", page.body);
        run.finish()
    }

    /// A browser for this mock.
    pub fn browser(&self) -> TestBrowser {
        TestBrowser::new(self.ca.pem_path(), self.mock.addr())
    }

    /// `credentials.json` as text ("" when absent).
    pub fn credentials_text(&self) -> String {
        std::fs::read_to_string(self.home.path().join("credentials.json")).unwrap_or_default()
    }

    /// `credentials.json` parsed.
    pub fn credentials(&self) -> serde_json::Value {
        serde_json::from_str(&self.credentials_text()).expect("credentials.json is JSON")
    }

    /// A proxy on this home and config, with the client id and secret of both providers in
    /// its environment (for refreshes) and no token env vars.
    pub fn proxy(&self) -> super::ProxyBuilder {
        let mut b = self.home.proxy(&self.config);
        for p in ["LINEAR", "SLACK"] {
            b = b
                .env(format!("AXTARY_{p}_CLIENT_ID"), self.mock.client_id())
                .env(
                    format!("AXTARY_{p}_CLIENT_SECRET"),
                    self.mock.client_secret(),
                );
        }
        b
    }
}
