//! Every outbound connection the binary makes (proxied requests, token minting, OAuth
//! exchanges, smoke calls) is built here, so all of them honour `upstream.resolve` and
//! `upstream.caFile` and verify TLS against the real host name. There is deliberately no way
//! to turn verification off.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::UpstreamSettings;

/// Boxed error for streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request or response body, streamed.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// The pooled HTTPS client type.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector<OverrideResolver>>, B>;
/// The pooled cleartext client type (only for non-connector hosts).
pub type PlainClient<B> = Client<HttpConnector<OverrideResolver>, B>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP connect bound; whole exchanges are bounded by their callers too.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Maps names to configured addresses (`upstream.resolve`), else the system resolver.
#[derive(Clone)]
pub struct OverrideResolver {
    map: Arc<HashMap<String, SocketAddr>>,
}

impl OverrideResolver {
    /// Entries of `resolve` for `port` (the port the client's URIs imply).
    pub fn new(resolve: &HashMap<(String, u16), SocketAddr>, port: u16) -> OverrideResolver {
        let map = resolve
            .iter()
            .filter(|((_, p), _)| *p == port)
            .map(|((h, _), a)| (h.clone(), *a))
            .collect();
        OverrideResolver { map: Arc::new(map) }
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for OverrideResolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let mapped = self.map.get(name.as_str()).copied();
        let host = name.as_str().to_string();
        Box::pin(async move {
            if let Some(addr) = mapped {
                return Ok(vec![addr].into_iter());
            }
            // Port 0: hyper-util fills in the URI's port.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(addrs.into_iter())
        })
    }
}

/// Resolves `host:port` for a raw TCP connection (tunnels), honouring `upstream.resolve`.
pub async fn resolve_tcp(
    settings: &UpstreamSettings,
    host: &str,
    port: u16,
) -> std::io::Result<Vec<SocketAddr>> {
    if let Some(addr) = settings.resolve.get(&(host.to_ascii_lowercase(), port)) {
        return Ok(vec![*addr]);
    }
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

/// The TLS client config for every outbound connection: the built-in web roots plus
/// `upstream.caFile`. There is deliberately no way to turn verification off.
pub fn client_tls_config(settings: &UpstreamSettings) -> Result<ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "upstream.caFile {} cannot be read: {e}; fix the path or remove the key",
                path.display()
            )
        })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| format!("upstream.caFile {} is not valid PEM: {e}", path.display()))?;
            roots.add(cert).map_err(|e| {
                format!(
                    "upstream.caFile {} holds a certificate that cannot be a root: {e}",
                    path.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "upstream.caFile {} holds no certificate: it must be PEM `-----BEGIN CERTIFICATE-----` blocks",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// A pooled HTTPS client (HTTP/2 when the server offers it) for `settings`.
pub fn https_client<B>(settings: &UpstreamSettings) -> Result<HttpsClient<B>, String>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tls = client_tls_config(settings)?;
    let mut http = HttpConnector::new_with_resolver(OverrideResolver::new(&settings.resolve, 443));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https))
}

/// A pooled cleartext client for `settings` (port-80 entries of `resolve`).
pub fn plain_client<B>(settings: &UpstreamSettings) -> PlainClient<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut conn = HttpConnector::new_with_resolver(OverrideResolver::new(&settings.resolve, 80));
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(conn)
}

/// A whole (small) response: what token endpoints and API checks answer.
#[derive(Debug)]
pub struct Fetched {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends `req` and reads the whole response, bounded by `timeout` and `max_body` bytes. For
/// the broker's own calls (token exchange, minting), never for proxied traffic.
pub async fn fetch(
    client: &HttpsClient<ProxyBody>,
    req: http::Request<ProxyBody>,
    timeout: Duration,
    max_body: usize,
) -> Result<Fetched, String> {
    let host = req.uri().host().unwrap_or_default().to_string();
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| describe_client_error(&e))?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the response failed: {e}"))?
            .to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{host} did not answer within {} s", timeout.as_secs()))?
}

/// A whole body made locally.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// hyper-util's error shows only "client error (Connect)": walk the chain for the cause.
pub fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
        cur = err.source();
    }
    msg
}

/// Boxes a body error (a named function, not a closure: closures returning the boxed trait
/// object confuse auto-trait inference in the server's generic futures).
pub fn box_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> BoxError {
    Box::new(e)
}
