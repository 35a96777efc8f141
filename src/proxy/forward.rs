//! The upstream side: one pooled HTTPS client that verifies the real host name, speaks
//! HTTP/2 when the upstream offers it over ALPN, and honours `upstream.resolve` and
//! `upstream.caFile` for every connection the binary makes.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::UpstreamSettings;
use crate::error::{ErrorCode, ProxyError};

/// Boxed error for streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request or response body flowing through the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP connect bound; the whole exchange is bounded by `timeoutSecs` too.
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

type HttpsClient = Client<HttpsConnector<HttpConnector<OverrideResolver>>, ProxyBody>;
type PlainClient = Client<HttpConnector<OverrideResolver>, ProxyBody>;

/// Pooled outbound clients.
#[derive(Clone)]
pub struct Upstream {
    https: HttpsClient,
    plain: PlainClient,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, String> {
        let tls = client_tls_config(settings)?;
        let mut http =
            HttpConnector::new_with_resolver(OverrideResolver::new(&settings.resolve, 443));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let https = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);

        let mut plain_conn =
            HttpConnector::new_with_resolver(OverrideResolver::new(&settings.resolve, 80));
        plain_conn.set_nodelay(true);
        plain_conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let plain = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(plain_conn);
        Ok(Upstream { https, plain })
    }

    /// Sends an injected request (only `inject` can build a `Prepared`).
    pub async fn send(
        &self,
        req: super::inject::Prepared,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        self.https
            .request(req.into_inner())
            .await
            .map_err(upstream_error)
    }

    /// Sends a cleartext request to a non-connector host (no credential involved).
    pub async fn send_plain(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        self.plain.request(req).await.map_err(upstream_error)
    }
}

/// hyper-util's error shows only "client error (Connect)": walk the chain for the cause.
fn upstream_error(e: hyper_util::client::legacy::Error) -> ProxyError {
    let mut msg = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(&e);
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
    let what = if e.is_connect() {
        "cannot connect to the upstream over verified TLS"
    } else {
        "the upstream connection failed"
    };
    ProxyError::new(
        ErrorCode::UpstreamUnreachable,
        format!(
            "{what} ({msg}); check the network, or `upstream.resolve`/`upstream.caFile` if set"
        ),
    )
}

/// Boxes a body error (a named function, not a closure: closures returning the boxed trait
/// object confuse auto-trait inference in the server's generic futures).
pub fn box_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> BoxError {
    Box::new(e)
}
