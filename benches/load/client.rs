//! The load client: what an agent does, reduced to the parts that cost time.
//!
//! Via the proxy it opens TCP to the proxy, sends `CONNECT api.github.com:443`, then speaks TLS
//! (trusting the proxy's CA) and HTTP inside the tunnel; directly it opens TCP and TLS to the
//! upstream (trusting the bench CA). Both send the same request and apply the same check to
//! every answer: status 200 and the hash of the real credential in the body.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::upstream::AUTH_HASH_KEY;

pub const HOST_NAME: &str = "api.github.com";
pub const PATH: &str = "/repos/acme/widgets/pulls";
/// What the client sends through the proxy: the proxy must replace it.
const PLACEHOLDER: &str = "Bearer placeholder";
/// The header on every answer from an injected route.
const CONNECTOR_HEADER: &str = "x-axtary-connector";
/// Longest CONNECT answer head we accept.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

type Tls = TlsStream<TcpStream>;
pub type ReqBody = Empty<Bytes>;

/// Direct to the upstream, or through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Direct,
    Proxy,
}

/// Which application protocol to offer in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// Everything needed to reach the upstream one way, cheap to clone into worker tasks.
#[derive(Clone)]
pub struct Client {
    route: Route,
    addr: SocketAddr,
    tls: TlsConnector,
    authorization: HeaderValue,
    /// `"authSha256":"<hex>"`: the body must contain exactly this.
    marker: Arc<[u8]>,
}

/// A TLS client config trusting only `root`, offering `proto`, with or without a shared
/// session cache.
pub fn tls_config(root: &CertificateDer<'static>, proto: Proto, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(root.clone())
        .expect("the CA certificate is a valid root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("client TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match proto {
        Proto::Http1 => vec![b"http/1.1".to_vec()],
        Proto::Http2 => vec![b"h2".to_vec()],
    };
    config.resumption = if resume {
        // One cache per config, shared by every connection made with it.
        Resumption::in_memory_sessions(256)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

/// `"authSha256":"<sha256 of the Authorization value the upstream must see>"`.
pub fn expected_marker(token: &str) -> Arc<[u8]> {
    let digest = hex::encode(Sha256::digest(format!("Bearer {token}").as_bytes()));
    format!("\"{AUTH_HASH_KEY}\":\"{digest}\"")
        .into_bytes()
        .into()
}

/// A live HTTP/1.1 connection.
pub struct H1 {
    sender: http1::SendRequest<ReqBody>,
}

impl Client {
    /// `addr` is the upstream for `Direct` and the proxy for `Proxy`; `token` is the real
    /// credential, which only the direct route sends itself.
    pub fn new(
        route: Route,
        addr: SocketAddr,
        tls: Arc<ClientConfig>,
        token: &str,
        marker: Arc<[u8]>,
    ) -> Client {
        let auth = match route {
            Route::Direct => format!("Bearer {token}"),
            Route::Proxy => PLACEHOLDER.to_string(),
        };
        Client {
            route,
            addr,
            tls: TlsConnector::from(tls),
            authorization: HeaderValue::from_str(&auth).expect("token is header-safe"),
            marker,
        }
    }

    /// TCP (+ CONNECT via the proxy) + TLS. Also says whether TLS resumed a session.
    pub async fn connect(&self) -> Result<(Tls, bool), String> {
        let mut tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("TCP connect to {} failed: {e}", self.addr))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        if self.route == Route::Proxy {
            connect_tunnel(&mut tcp).await?;
        }
        let name = ServerName::try_from(HOST_NAME).expect("static host name is valid");
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake ({:?}) failed: {e}", self.route))?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        Ok((tls, resumed))
    }

    /// A new HTTP/1.1 connection; its driver runs in its own task until the sender drops.
    pub async fn open_h1(&self) -> Result<(H1, bool), String> {
        let (tls, resumed) = self.connect().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake failed: {e}"))?;
        tokio::spawn(conn);
        Ok((H1 { sender }, resumed))
    }

    /// A new HTTP/2 connection; clone the sender to run streams concurrently.
    pub async fn open_h2(&self) -> Result<http2::SendRequest<ReqBody>, String> {
        let (tls, _) = self.connect().await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2".as_slice()) {
            return Err(format!(
                "{:?}: server did not agree to h2 (ALPN {:?})",
                self.route,
                alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
            ));
        }
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One request on an HTTP/1.1 connection, answer checked.
    pub async fn get_h1(&self, conn: &mut H1) -> Result<(), String> {
        conn.sender
            .ready()
            .await
            .map_err(|e| format!("HTTP/1.1 connection closed: {e}"))?;
        let resp = conn
            .sender
            .send_request(self.request(Proto::Http1))
            .await
            .map_err(|e| format!("HTTP/1.1 request failed: {e}"))?;
        self.check(resp).await
    }

    /// One stream on an HTTP/2 connection, answer checked.
    pub async fn get_h2(&self, sender: &mut http2::SendRequest<ReqBody>) -> Result<(), String> {
        sender
            .ready()
            .await
            .map_err(|e| format!("HTTP/2 connection closed: {e}"))?;
        let resp = sender
            .send_request(self.request(Proto::Http2))
            .await
            .map_err(|e| format!("HTTP/2 request failed: {e}"))?;
        self.check(resp).await
    }

    /// Connect, one checked request, and keep only the TCP socket: the server side stays a
    /// real keep-alive connection that has served a request, while this side holds no TLS or
    /// HTTP buffers, so thousands of them cost the client little. Says whether TLS resumed.
    pub async fn open_idle(&self) -> Result<(TcpStream, bool), String> {
        let (tls, resumed) = self.connect().await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake failed: {e}"))?;
        // Without shutdown: when the sender is dropped the driver hands the stream back
        // instead of sending close_notify and FIN.
        let driver = tokio::spawn(conn.without_shutdown());
        let resp = sender
            .send_request(self.request(Proto::Http1))
            .await
            .map_err(|e| format!("HTTP/1.1 request failed: {e}"))?;
        self.check(resp).await?;
        drop(sender);
        let parts = driver
            .await
            .map_err(|e| format!("connection driver panicked: {e}"))?
            .map_err(|e| format!("HTTP/1.1 connection failed: {e}"))?;
        let (tcp, _tls_state) = parts.io.into_inner().into_inner();
        Ok((tcp, resumed))
    }

    fn request(&self, proto: Proto) -> Request<ReqBody> {
        let builder = match proto {
            // HTTP/2 carries the host in :authority, which needs an absolute URI.
            Proto::Http2 => Request::get(format!("https://{HOST_NAME}{PATH}")),
            Proto::Http1 => Request::get(PATH).header(HOST, HOST_NAME),
        };
        builder
            .header("user-agent", "axtary-load-bench")
            .header("accept", "application/vnd.github+json")
            .header(AUTHORIZATION, self.authorization.clone())
            .body(Empty::new())
            .expect("static request parts are valid")
    }

    async fn check(&self, resp: Response<Incoming>) -> Result<(), String> {
        let status = resp.status();
        let via_connector = resp.headers().contains_key(CONNECTOR_HEADER);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the response body failed: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{:?}: status {status}: {}",
                self.route,
                String::from_utf8_lossy(&body)
            ));
        }
        if self.route == Route::Proxy && !via_connector {
            return Err(format!(
                "proxied answer lacks `{CONNECTOR_HEADER}`: it did not come through the injection path"
            ));
        }
        if !contains(&body, &self.marker) {
            return Err(format!(
                "{:?}: the upstream did not receive the configured credential: {}",
                self.route,
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }
}

/// Sends CONNECT and reads the proxy's answer head, which must be a 200. The proxy sends
/// nothing after the head until the client speaks TLS, so reading in chunks cannot swallow
/// tunnel bytes; anything after the head is still treated as an error.
async fn connect_tunnel(tcp: &mut TcpStream) -> Result<(), String> {
    let head = format!("CONNECT {HOST_NAME}:443 HTTP/1.1\r\nHost: {HOST_NAME}:443\r\n\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT failed: {e}"))?;
    let mut answer = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    let end = loop {
        let n = tcp
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the CONNECT answer failed: {e}"))?;
        if n == 0 {
            return Err("the proxy closed the connection before answering CONNECT".to_string());
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(pos) = find(&answer, b"\r\n\r\n") {
            break pos + 4;
        }
        if answer.len() > MAX_CONNECT_HEAD {
            return Err("the CONNECT answer head is too long".to_string());
        }
    };
    let text = String::from_utf8_lossy(&answer[..end]);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("CONNECT refused: {}", text.trim_end()));
    }
    if end != answer.len() {
        return Err("the proxy sent bytes after the CONNECT answer head".to_string());
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
