//! A mock upstream provider: a real TLS server on 127.0.0.1 standing in for GitHub, Slack and
//! Linear.
//!
//! It presents one leaf from a `TestCa` covering every provider host, speaks HTTP/2 and
//! HTTP/1.1 (or HTTP/1.1 only), records every request it receives and answers from a small set
//! of routes. Its echo answers are how a test sees what actually arrived upstream; `seen()` is
//! how a test proves that something did NOT arrive. It runs on its own runtime so tests can stay
//! synchronous, and it stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::ca::{accept_tls, serve_by_alpn, tls_server, TestCa};

/// The hosts a default mock answers for.
pub const PROVIDER_HOSTS: [&str; 4] = [
    "api.github.com",
    "slack.com",
    "api.linear.app",
    "example.test",
];

/// Size of the chunks `/bytes/{n}` is streamed in.
pub const PATTERN_CHUNK: usize = 64 * 1024;

/// Size of the chunks `/echo-auth` is streamed in: small, so a credential straddles chunks.
pub const ECHO_CHUNK: usize = 7;

/// Which protocols the mock offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1`, like the real providers.
    H2AndHttp1,
    /// `http/1.1` only.
    Http1Only,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The Host header, else the `:authority`.
    pub host: Option<String>,
    /// The TLS SNI the client sent.
    pub sni: Option<String>,
    /// Every header, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
}

impl SeenRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Every header name and value as one text, for "must not contain" checks.
    pub fn headers_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }
}

struct Shared {
    seen: Mutex<Vec<SeenRequest>>,
    connections: AtomicUsize,
}

/// Options for a mock before it starts.
pub struct MockBuilder<'a> {
    ca: &'a TestCa,
    alpn: Alpn,
    names: Vec<String>,
}

impl MockBuilder<'_> {
    pub fn alpn(mut self, alpn: Alpn) -> Self {
        self.alpn = alpn;
        self
    }

    /// DNS names on the leaf, replacing the default provider hosts.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn start(self) -> MockProvider {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let leaf = self.ca.issue(&names);
        let alpn: &[&[u8]] = match self.alpn {
            Alpn::H2AndHttp1 => &[b"h2", b"http/1.1"],
            Alpn::Http1Only => &[b"http/1.1"],
        };
        let (acceptor, runtime, listener, addr) = tls_server(leaf, alpn, "mock-provider");
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        runtime.spawn(accept_loop(listener, acceptor, shared.clone()));
        MockProvider {
            addr,
            shared,
            runtime: Some(runtime),
            alpn: self.alpn,
        }
    }
}

/// A running mock provider. Dropping it stops the server and closes its connections.
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    alpn: Alpn,
}

impl MockProvider {
    /// A mock for the default provider hosts offering `h2` and `http/1.1`.
    pub fn start(ca: &TestCa) -> MockProvider {
        MockProvider::builder(ca).start()
    }

    pub fn builder(ca: &TestCa) -> MockBuilder<'_> {
        MockBuilder {
            ca,
            alpn: Alpn::H2AndHttp1,
            names: PROVIDER_HOSTS.iter().map(|n| n.to_string()).collect(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn alpn(&self) -> Alpn {
        self.alpn
    }

    /// Every request received so far, in order of completion of its body.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// `METHOD path` for each request received so far.
    pub fn seen_lines(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn clear(&self) {
        self.shared.seen.lock().expect("seen lock").clear();
    }

    /// TLS connections accepted (handshake completed) so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits until a received request satisfies `pred`; false on timeout.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&SeenRequest) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.seen().iter().any(&pred) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for MockProvider {
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
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let (_, conn) = tls.get_ref();
            let sni = conn.server_name().map(str::to_owned);
            let svc = service_fn(move |req| handle(req, shared.clone(), sni.clone()));
            serve_by_alpn(tls, svc).await;
        }
    })
    .await;
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    sni: Option<String>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_len += data.len() as u64;
                    hasher.update(data);
                }
            }
            Err(_) => break,
        }
    }
    let body_sha256 = hex::encode(hasher.finalize());

    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_else(|| "/".to_string());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let seen = SeenRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        version: format!("{:?}", parts.version),
        host,
        sni,
        headers,
        body_len,
        body_sha256,
    };
    shared.seen.lock().expect("seen lock").push(seen.clone());

    let route = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let mut resp = route_response(&route, &query, &seen).await;
    if parts.method == http::Method::HEAD {
        // Like a real server: the head a GET would get, and no body.
        *resp.body_mut() = MockBody::Full(None);
    }
    Ok(resp)
}

async fn route_response(route: &str, query: &str, seen: &SeenRequest) -> Response<MockBody> {
    if route == "/echo-auth" {
        return echo_auth(seen, query_flag(query, "fixed"));
    }
    if let Some(n) = route.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/octet-stream")
                .body(MockBody::Pattern {
                    offset: 0,
                    remaining: n,
                })
                .expect("bytes response"),
            Err(_) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad n"}),
            ),
        };
    }
    if route == "/upload" {
        return json(
            StatusCode::OK,
            serde_json::json!({"len": seen.body_len, "sha256": seen.body_sha256}),
        );
    }
    if let Some(ms) = route.strip_prefix("/slow/") {
        let ms = ms.parse::<u64>().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return json(StatusCode::OK, echo_json(seen));
    }
    if let Some(code) = route.strip_prefix("/status/") {
        let code = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = json(code, serde_json::json!({"status": code.as_u16()}));
        if let Some(secs) = query_value(query, "retry-after") {
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        return resp;
    }
    if route == "/rate_limit" {
        return json(StatusCode::OK, rate_limit_json(4999));
    }
    if route == "/ratelimit-spent" {
        let reset = unix_now() + 120;
        let mut resp = json(StatusCode::OK, rate_limit_json(0));
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).expect("reset header"),
        );
        return resp;
    }
    if route == "/api/auth.test" {
        return json(StatusCode::OK, slack_auth_test(seen));
    }
    if route == "/graphql" {
        return json(StatusCode::OK, linear_viewer(seen));
    }
    json(StatusCode::OK, echo_json(seen))
}

/// A Slack token the mock treats as revoked (`auth.test` answers `ok: false`).
pub const SLACK_REVOKED_PREFIX: &str = "xoxb-revoked-";
/// A Linear key the mock treats as revoked (GraphQL answers `errors`).
pub const LINEAR_REVOKED_PREFIX: &str = "lin_api_revoked";

/// Slack-style `auth.test`: HTTP 200 either way, `ok` says whether the token works. The echo
/// fields stay so tests can still see what arrived.
fn slack_auth_test(seen: &SeenRequest) -> serde_json::Value {
    let mut v = echo_json(seen);
    let token = seen
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    match token {
        None => {
            v["ok"] = false.into();
            v["error"] = "not_authed".into();
        }
        Some(t) if t.starts_with(SLACK_REVOKED_PREFIX) => {
            v["ok"] = false.into();
            v["error"] = "invalid_auth".into();
        }
        Some(_) => {
            v["ok"] = true.into();
            v["url"] = "https://mock-workspace.slack.com/".into();
            v["team"] = "Mock Workspace".into();
            v["user"] = "axtary-bot".into();
            v["team_id"] = "T00000001".into();
            v["user_id"] = "U00000001".into();
            v["bot_id"] = "B00000001".into();
        }
    }
    v
}

/// Linear-style GraphQL: `data.viewer` for a key, `errors` without one (or a revoked one).
fn linear_viewer(seen: &SeenRequest) -> serde_json::Value {
    let mut v = echo_json(seen);
    match seen.header("authorization") {
        Some(a)
            if !a.is_empty()
                && !a
                    .trim_start_matches("Bearer ")
                    .starts_with(LINEAR_REVOKED_PREFIX) =>
        {
            v["data"] = serde_json::json!({"viewer": {"id": "mock-viewer-1"}});
        }
        _ => {
            v["errors"] =
                serde_json::json!([{"message": "Authentication required, not authenticated"}]);
        }
    }
    v
}

fn echo_json(seen: &SeenRequest) -> serde_json::Value {
    serde_json::json!({
        "method": seen.method,
        "path": seen.path,
        "version": seen.version,
        "host": seen.host,
        "authorization": seen.header("authorization"),
        "sni": seen.sni,
    })
}

/// Echoes the Authorization value in a header and several times in the body, the body in
/// tiny chunks (or, with `?fixed=1`, as one body with a Content-Length).
fn echo_auth(seen: &SeenRequest, fixed: bool) -> Response<MockBody> {
    let auth = seen.header("authorization").unwrap_or("").to_string();
    let text = format!(
        "{{\"authorization\":\"{auth}\",\"again\":\"{auth}\",\"twice\":\"{auth}{auth}\",\
         \"sentence\":\"the token is {auth}.\"}}\n"
    );
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json");
    if let Ok(v) = HeaderValue::from_str(&auth) {
        builder = builder.header("x-echo-authorization", v);
    }
    let body = if fixed {
        MockBody::full(text)
    } else {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let bytes = Bytes::from(text);
        tokio::spawn(async move {
            for chunk in bytes.chunks(ECHO_CHUNK) {
                if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                    return;
                }
                // Separate writes on the wire, so the chunks do not coalesce.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        MockBody::Channel(rx)
    };
    builder.body(body).expect("echo-auth response")
}

fn rate_limit_json(remaining: u64) -> serde_json::Value {
    let reset = unix_now() + 3600;
    let used = 5000 - remaining;
    let core = serde_json::json!({
        "limit": 5000, "used": used, "remaining": remaining, "reset": reset
    });
    serde_json::json!({
        "resources": {
            "core": core,
            "search": {"limit": 30, "used": 0, "remaining": 30, "reset": reset},
            "graphql": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
        },
        "rate": core,
    })
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(MockBody::full(value.to_string()))
        .expect("json response")
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_string())
    })
}

fn query_flag(query: &str, key: &str) -> bool {
    matches!(query_value(query, key).as_deref(), Some("1" | "true" | ""))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The response bodies the mock sends.
pub enum MockBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
    Pattern { offset: u64, remaining: u64 },
}

impl MockBody {
    fn full(data: impl Into<Bytes>) -> MockBody {
        MockBody::Full(Some(data.into()))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            MockBody::Channel(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            MockBody::Pattern { offset, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let len = (*remaining).min(PATTERN_CHUNK as u64);
                let chunk = pattern_range(*offset, len as usize);
                *offset += len;
                *remaining -= len;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(data) => data.is_none(),
            MockBody::Channel(_) => false,
            MockBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Channel(_) => SizeHint::new(),
            MockBody::Pattern { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Bytes `offset..offset+len` of the deterministic pattern served by `/bytes/{n}`.
pub fn pattern_range(offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut block = offset / 8;
    let skip = (offset % 8) as usize;
    let first = splitmix64(block).to_le_bytes();
    out.extend_from_slice(&first[skip..]);
    while out.len() < len {
        block += 1;
        out.extend_from_slice(&splitmix64(block).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The first `n` bytes of the pattern: exactly what `/bytes/{n}` sends.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    pattern_range(0, n)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
