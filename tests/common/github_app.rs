//! A mock GitHub for App mode, on loopback TLS, and a proxy set up to mint from it.
//!
//! The mock checks every JWT the way GitHub does (RS256 signature against the app's public
//! key, `iss`, `iat` in the past, `exp` at most ten minutes ahead) and answers the app
//! endpoints: `GET /app/installations`, `GET /repos/{owner}/{repo}/installation` and
//! `POST /app/installations/{id}/access_tokens`, the last from a script of statuses so a test
//! can make it fail. Tokens it mints have random lengths. Every other path is "the API": it
//! answers 200 with the installation whose token was presented, or 401 for an unknown token,
//! so a test sees which token the proxy injected without the token itself crossing back (the
//! proxy would redact it anyway). Its clock can be set off from ours to test skew handling.
//!
//! The app's RSA key is generated at test time, once per test binary.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::ca::{accept_tls, serve_by_alpn, tls_server, TestCa};
use super::proxy::{Proxy, ProxyBuilder};
use super::{random_alnum, run_bounded, scrub_env, Home, RunOutput};

/// The env names the App-mode test config reads.
pub const APP_ID_ENV: &str = "AXTARY_GITHUB_APP_ID";
pub const CLIENT_ID_ENV: &str = "AXTARY_GITHUB_CLIENT_ID";
pub const PRIVATE_KEY_ENV: &str = "AXTARY_GITHUB_APP_PRIVATE_KEY";
pub const PRIVATE_KEY_FILE_ENV: &str = "AXTARY_GITHUB_APP_PRIVATE_KEY_FILE";
pub const INSTALLATION_ID_ENV: &str = "AXTARY_GITHUB_INSTALLATION_ID";

/// The app id the tests use.
pub const APP_ID: &str = "424242";

/// The app's key in both PEM forms GitHub users meet, and its public half.
pub struct AppKey {
    /// `-----BEGIN RSA PRIVATE KEY-----`, the form GitHub hands out.
    pub pkcs1: String,
    /// `-----BEGIN PRIVATE KEY-----`.
    pub pkcs8: String,
    pub public: String,
}

/// A 2048-bit RSA key made when first asked for, shared by the tests of one binary.
pub fn app_key() -> &'static AppKey {
    static KEY: OnceLock<AppKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("generate RSA key");
        AppKey {
            pkcs1: key
                .to_pkcs1_pem(LineEnding::LF)
                .expect("PKCS#1 PEM")
                .to_string(),
            pkcs8: key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("PKCS#8 PEM")
                .to_string(),
            public: key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("public PEM"),
        }
    })
}

/// What the mock answers to the next `access_tokens` request.
#[derive(Clone, Debug)]
pub enum MintReply {
    /// 201 with a fresh token expiring this long after the mock's now.
    Created(Duration),
    /// This status with this JSON body, and no token.
    Status(u16, serde_json::Value),
}

/// One request to a non-app path, as the mock saw it.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The installation whose token was presented; `None` for an unknown token.
    pub installation: Option<u64>,
}

#[derive(Default)]
struct State {
    issuer: String,
    installations: Vec<(u64, String)>,
    clock_offset_secs: i64,
    default_lifetime: Duration,
    script: Mutex<VecDeque<MintReply>>,
    mint_attempts: AtomicUsize,
    mints: Mutex<Vec<u64>>,
    mint_bodies: Mutex<Vec<serde_json::Value>>,
    lookups: Mutex<Vec<String>>,
    list_calls: AtomicUsize,
    jwts: Mutex<Vec<String>>,
    jwt_problems: Mutex<Vec<String>>,
    tokens: Mutex<HashMap<String, u64>>,
    api: Mutex<Vec<ApiRequest>>,
}

impl State {
    fn now(&self) -> i64 {
        unix_now() + self.clock_offset_secs
    }
}

/// Options for a `GithubAppMock`.
pub struct GithubAppMockBuilder<'a> {
    ca: &'a TestCa,
    issuer: String,
    installations: Vec<(u64, String)>,
    script: Vec<MintReply>,
    lifetime: Duration,
    clock_offset_secs: i64,
}

impl GithubAppMockBuilder<'_> {
    /// The `iss` every JWT must carry (default: `APP_ID`).
    pub fn issuer(mut self, iss: &str) -> Self {
        self.issuer = iss.to_string();
        self
    }

    /// Replaces the installations (default: 101 on `acme`, 202 on `globex`).
    pub fn installations(mut self, list: &[(u64, &str)]) -> Self {
        self.installations = list.iter().map(|(i, o)| (*i, o.to_string())).collect();
        self
    }

    /// Answers for the first mints, in order; later mints get 201 with the default lifetime.
    pub fn script(mut self, replies: &[MintReply]) -> Self {
        self.script = replies.to_vec();
        self
    }

    /// The lifetime of tokens minted after the script runs out (default one hour).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets the mock's clock (its `Date` header, its JWT checks, its `expires_at`) this many
    /// seconds off ours.
    pub fn clock_offset_secs(mut self, secs: i64) -> Self {
        self.clock_offset_secs = secs;
        self
    }

    pub fn start(self) -> GithubAppMock {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let leaf = self.ca.issue(&["api.github.com"]);
        let (acceptor, runtime, listener, addr) =
            tls_server(leaf, &[b"h2", b"http/1.1"], "mock-github-app");
        let decoding = jsonwebtoken::DecodingKey::from_rsa_pem(app_key().public.as_bytes())
            .expect("public key");
        let state = Arc::new(State {
            issuer: self.issuer,
            installations: self.installations,
            clock_offset_secs: self.clock_offset_secs,
            default_lifetime: self.lifetime,
            script: Mutex::new(self.script.into()),
            ..State::default()
        });
        runtime.spawn(accept_loop(
            listener,
            acceptor,
            state.clone(),
            Arc::new(decoding),
        ));
        GithubAppMock {
            addr,
            state,
            runtime: Some(runtime),
        }
    }
}

/// A running mock GitHub. Dropping it stops the server.
pub struct GithubAppMock {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<Runtime>,
}

impl GithubAppMock {
    pub fn builder(ca: &TestCa) -> GithubAppMockBuilder<'_> {
        GithubAppMockBuilder {
            ca,
            issuer: APP_ID.to_string(),
            installations: vec![(101, "acme".to_string()), (202, "globex".to_string())],
            script: Vec::new(),
            lifetime: Duration::from_secs(3600),
            clock_offset_secs: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `access_tokens` requests that carried a valid JWT, whatever was answered.
    pub fn mint_attempts(&self) -> usize {
        self.state.mint_attempts.load(Ordering::SeqCst)
    }

    /// Tokens minted (201 answers).
    pub fn mints(&self) -> usize {
        self.state.mints.lock().expect("lock").len()
    }

    /// Tokens minted for `installation`.
    pub fn mints_for(&self, installation: u64) -> usize {
        let mints = self.state.mints.lock().expect("lock");
        mints.iter().filter(|i| **i == installation).count()
    }

    /// The JSON bodies of the `access_tokens` requests (`null` for an empty body).
    pub fn mint_bodies(&self) -> Vec<serde_json::Value> {
        self.state.mint_bodies.lock().expect("lock").clone()
    }

    /// Owners looked up with `GET /repos/{owner}/{repo}/installation`, in order.
    pub fn lookups(&self) -> Vec<String> {
        self.state.lookups.lock().expect("lock").clone()
    }

    /// `GET /app/installations` calls.
    pub fn list_calls(&self) -> usize {
        self.state.list_calls.load(Ordering::SeqCst)
    }

    /// Every JWT presented, valid or not.
    pub fn jwts(&self) -> Vec<String> {
        self.state.jwts.lock().expect("lock").clone()
    }

    /// Why JWTs were refused.
    pub fn jwt_problems(&self) -> Vec<String> {
        self.state.jwt_problems.lock().expect("lock").clone()
    }

    /// Every token minted.
    pub fn tokens(&self) -> Vec<String> {
        self.state
            .tokens
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Requests to non-app paths.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.state.api.lock().expect("lock").clone()
    }
}

impl Drop for GithubAppMock {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

type Decoding = Arc<jsonwebtoken::DecodingKey>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    key: Decoding,
) {
    accept_tls(listener, acceptor, move |tls| {
        let state = state.clone();
        let key = key.clone();
        async move {
            let svc = service_fn(move |req| handle(req, state.clone(), key.clone()));
            serve_by_alpn(tls, svc).await;
        }
    })
    .await;
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    key: Decoding,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut resp = route(&state, &key, &parts.method, &path, auth, &body);
    // Like GitHub: a Date header on every answer, on the mock's clock.
    if let Ok(v) = HeaderValue::from_str(&http_date(state.now())) {
        resp.headers_mut().insert(http::header::DATE, v);
    }
    Ok(resp)
}

fn route(
    state: &State,
    key: &jsonwebtoken::DecodingKey,
    method: &Method,
    path: &str,
    auth: Option<String>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let app_call = path == "/app/installations"
        || (path.starts_with("/repos/") && path.ends_with("/installation"))
        || (path.starts_with("/app/installations/") && path.ends_with("/access_tokens"));
    if !app_call {
        return api(state, method, path, auth);
    }
    if let Err(why) = check_jwt(state, key, auth.as_deref()) {
        state.jwt_problems.lock().expect("lock").push(why.clone());
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"message": why, "documentation_url": "https://docs.github.com/rest"}),
        );
    }
    if path == "/app/installations" && method == Method::GET {
        state.list_calls.fetch_add(1, Ordering::SeqCst);
        let list: Vec<serde_json::Value> = state
            .installations
            .iter()
            .map(|(id, owner)| installation_json(*id, owner))
            .collect();
        return json(StatusCode::OK, serde_json::Value::Array(list));
    }
    if let Some(rest) = path.strip_prefix("/repos/") {
        let owner = rest.split('/').next().unwrap_or_default().to_string();
        state.lookups.lock().expect("lock").push(owner.clone());
        return match state
            .installations
            .iter()
            .find(|(_, o)| o.eq_ignore_ascii_case(&owner))
        {
            Some((id, o)) => json(StatusCode::OK, installation_json(*id, o)),
            None => not_found(),
        };
    }
    if method != Method::POST {
        return not_found();
    }
    let id: u64 = path
        .trim_start_matches("/app/installations/")
        .trim_end_matches("/access_tokens")
        .parse()
        .unwrap_or(0);
    state.mint_attempts.fetch_add(1, Ordering::SeqCst);
    let sent = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(serde_json::Value::String("not JSON".into()))
    };
    state.mint_bodies.lock().expect("lock").push(sent.clone());
    let reply = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(MintReply::Created(state.default_lifetime));
    let lifetime = match reply {
        MintReply::Status(code, body) => {
            return json(StatusCode::from_u16(code).expect("status"), body);
        }
        MintReply::Created(lifetime) => lifetime,
    };
    if !state.installations.iter().any(|(i, _)| *i == id) {
        return not_found();
    }
    // Token shapes change: never the same length twice in a row.
    let len = 36 + (state.mint_attempts.load(Ordering::SeqCst) * 17) % 60;
    let token = format!("ghs_{}", random_alnum(len));
    state.tokens.lock().expect("lock").insert(token.clone(), id);
    state.mints.lock().expect("lock").push(id);
    let expires_at = state.now() + lifetime.as_secs() as i64;
    let mut answer = serde_json::json!({
        "token": token,
        "expires_at": rfc3339(expires_at),
        "permissions": {"contents": "read", "metadata": "read"},
        "repository_selection": "all",
    });
    if let Some(repos) = sent.get("repositories") {
        answer["repository_selection"] = "selected".into();
        answer["repositories"] = repos.clone();
    }
    if let Some(perms) = sent.get("permissions") {
        answer["permissions"] = perms.clone();
    }
    json(StatusCode::CREATED, answer)
}

/// GitHub's rules for an app JWT, on the mock's clock.
fn check_jwt(
    state: &State,
    key: &jsonwebtoken::DecodingKey,
    auth: Option<&str>,
) -> Result<(), String> {
    let jwt = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("A JSON web token could not be decoded")?;
    state.jwts.lock().expect("lock").push(jwt.to_string());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[state.issuer.as_str()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, key, &validation)
        .map_err(|e| format!("A JSON web token could not be decoded ({e})"))?
        .claims;
    let now = state.now();
    let iat = claims["iat"]
        .as_i64()
        .ok_or("'Issued at' claim must be an integer")?;
    let exp = claims["exp"]
        .as_i64()
        .ok_or("'Expiration time' claim must be an integer")?;
    if iat > now {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past".into(),
        );
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".into());
    }
    if exp - now > 600 || exp - iat > 660 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    Ok(())
}

fn api(state: &State, method: &Method, path: &str, auth: Option<String>) -> Response<Full<Bytes>> {
    let token = auth.as_deref().and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("token "))
    });
    let installation = token.and_then(|t| state.tokens.lock().expect("lock").get(t).copied());
    state.api.lock().expect("lock").push(ApiRequest {
        method: method.to_string(),
        path: path.to_string(),
        authorization: auth.clone(),
        installation,
    });
    let Some(installation) = installation else {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
        );
    };
    let mut answer = serde_json::json!({"path": path, "installation": installation});
    if let Some(rest) = path.strip_prefix("/repos/") {
        let mut parts = rest.split('/');
        if let (Some(o), Some(r)) = (parts.next(), parts.next()) {
            answer["full_name"] = format!("{o}/{r}").into();
            answer["name"] = r.into();
        }
    }
    json(StatusCode::OK, answer)
}

fn installation_json(id: u64, owner: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "app_id": APP_ID.parse::<u64>().unwrap_or(0),
        "account": {"login": owner, "type": "Organization"},
        "target_type": "Organization",
    })
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("response")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn datetime(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).expect("timestamp in range")
}

/// `2016-07-11T22:14:10Z`, as GitHub writes `expires_at`.
pub fn rfc3339(secs: i64) -> String {
    datetime(secs)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    datetime(secs).format(&format).expect("HTTP date")
}

// ---------------------------------------------------------------------------------------------
// A proxy in App mode in front of the mock

/// How the proxy gets the app's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyForm {
    /// PKCS#1 PEM text in `PRIVATE_KEY_ENV`.
    Pkcs1Env,
    /// A PKCS#8 `.pem` file named by `PRIVATE_KEY_FILE_ENV`.
    Pkcs8File,
}

/// A running proxy in GitHub App mode in front of a `GithubAppMock`. Fields drop proxy first.
pub struct AppStack {
    pub proxy: Proxy,
    pub mock: GithubAppMock,
    pub home: Home,
    pub ca: TestCa,
}

/// Options for an `AppStack`.
pub struct AppStackBuilder {
    mock: Box<dyn FnOnce(GithubAppMockBuilder<'_>) -> GithubAppMockBuilder<'_>>,
    connector_yaml: String,
    key: KeyForm,
    env: Vec<(String, String)>,
    rust_log: Option<String>,
}

impl AppStack {
    pub fn builder() -> AppStackBuilder {
        AppStackBuilder {
            mock: Box::new(|m| m),
            connector_yaml: String::new(),
            key: KeyForm::Pkcs1Env,
            env: vec![(APP_ID_ENV.to_string(), APP_ID.to_string())],
            rust_log: None,
        }
    }

    /// curl through the proxy to `https://api.github.com{path}`, with a placeholder token as
    /// an agent would send.
    pub fn get(&self, path: &str) -> super::CurlOutput {
        self.proxy.curl([
            "-H".to_string(),
            "Authorization: token placeholder".to_string(),
            format!("https://api.github.com{path}"),
        ])
    }

    /// `count` GETs of `path` at once (one curl, `--parallel`, a connection each); returns
    /// each response's status and body.
    pub fn get_parallel(&self, path: &str, count: usize) -> Vec<(u16, String)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = std::process::Command::new("/usr/bin/env");
        scrub_env(&mut cmd);
        cmd.arg("curl")
            .args([
                "-q",
                "-sS",
                "--max-time",
                "30",
                "--parallel",
                "--parallel-immediate",
            ])
            .args(["--parallel-max", &count.to_string()])
            .args(["-x", &self.proxy.proxy_url()])
            .arg("--cacert")
            .arg(self.proxy.ca_pem())
            .args(["-H", "Authorization: token placeholder"])
            .args(["-w", "%{http_code} %{filename_effective}\n"]);
        for i in 0..count {
            cmd.arg("-o")
                .arg(dir.path().join(format!("{i}.body")))
                .arg(format!("https://api.github.com{path}"));
        }
        let out = run_bounded(cmd, Duration::from_secs(60));
        assert_eq!(
            out.code(),
            Some(0),
            "curl --parallel failed: {}",
            out.stderr()
        );
        let mut results = Vec::new();
        for line in out.stdout().lines() {
            let Some((code, file)) = line.split_once(' ') else {
                continue;
            };
            let body = std::fs::read_to_string(file).unwrap_or_default();
            results.push((code.parse().unwrap_or(0), body));
        }
        assert_eq!(
            results.len(),
            count,
            "one result per request: {}",
            out.stdout()
        );
        results
    }

    /// The real `gh` CLI through the proxy, with a clean home and a placeholder token.
    /// A missing `gh` fails the test.
    pub fn gh(&self, args: &[&str]) -> RunOutput {
        let dir = tempfile::tempdir().expect("temp home for gh");
        let mut cmd = std::process::Command::new("gh");
        scrub_env(&mut cmd);
        cmd.args(args)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("GH_TOKEN", "placeholder")
            .env("GH_NO_UPDATE_NOTIFIER", "1")
            .env("GH_PROMPT_DISABLED", "1")
            .env("NO_COLOR", "1")
            .env("HTTPS_PROXY", self.proxy.proxy_url())
            .env("SSL_CERT_FILE", self.proxy.ca_pem());
        if which("gh").is_none() {
            panic!("the `gh` CLI is required by this test (Debian package `gh`; scripts/test.sh installs it)");
        }
        run_bounded(cmd, Duration::from_secs(60))
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

impl AppStackBuilder {
    pub fn mock(
        mut self,
        f: impl FnOnce(GithubAppMockBuilder<'_>) -> GithubAppMockBuilder<'_> + 'static,
    ) -> Self {
        self.mock = Box::new(f);
        self
    }

    /// Extra keys under the github connector (e.g. `repositories`).
    pub fn connector_yaml(mut self, yaml: &str) -> Self {
        self.connector_yaml.push_str(yaml);
        if !self.connector_yaml.ends_with('\n') {
            self.connector_yaml.push('\n');
        }
        self
    }

    pub fn key(mut self, form: KeyForm) -> Self {
        self.key = form;
        self
    }

    /// An env var for the proxy.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Leaves an env var unset (e.g. the app id, when a client id is the issuer).
    pub fn without_env(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = Some(filter.to_string());
        self
    }

    pub fn start(self) -> AppStack {
        let ca = TestCa::new();
        let mock = (self.mock)(GithubAppMock::builder(&ca)).start();
        let home = Home::new();
        let q = |s: &str| serde_json::to_string(s).expect("quote");
        let mut yaml = format!(
            "version: 1\nproxy:\n  listen: \"127.0.0.1:0\"\nupstream:\n  caFile: {}\n  resolve:\n    \"api.github.com:443\": {}\n  timeoutSecs: 10\nconnectors:\n  github:\n    provider: github\n    mode: app\n    appIdEnv: {APP_ID_ENV}\n    clientIdEnv: {CLIENT_ID_ENV}\n    privateKeyEnv: {PRIVATE_KEY_ENV}\n    privateKeyFileEnv: {PRIVATE_KEY_FILE_ENV}\n    installationIdEnv: {INSTALLATION_ID_ENV}\n",
            q(&ca.pem_path().to_string_lossy()),
            q(&mock.addr().to_string()),
        );
        for line in self.connector_yaml.lines().filter(|l| !l.trim().is_empty()) {
            yaml += &format!("    {line}\n");
        }
        let config = home.write_config(&yaml);
        let mut builder: ProxyBuilder = home.proxy(&config);
        match self.key {
            KeyForm::Pkcs1Env => builder = builder.env(PRIVATE_KEY_ENV, &app_key().pkcs1),
            KeyForm::Pkcs8File => {
                let path = home.path().join("app-key.pem");
                std::fs::write(&path, &app_key().pkcs8).expect("write key file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod key file");
                builder = builder.env(PRIVATE_KEY_FILE_ENV, &path);
            }
        }
        for (k, v) in &self.env {
            builder = builder.env(k, v);
        }
        if let Some(filter) = &self.rust_log {
            builder = builder.rust_log(filter);
        }
        let proxy = builder.start();
        AppStack {
            proxy,
            mock,
            home,
            ca,
        }
    }
}
