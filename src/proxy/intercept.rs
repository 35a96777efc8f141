//! TLS interception for a CONNECT to a connector host.
//!
//! The ClientHello is read first (`LazyConfigAcceptor`) so the SNI can be checked against
//! the CONNECT authority before any certificate is chosen; clients that send no SNI (IP
//! literals) get the CONNECT host's leaf. Then each inner request must name the same host
//! (Host, `:authority`, or an absolute-form target), else `421 host_mismatch` and nothing is
//! forwarded: the credential for one host can never be sent to another through a tunnel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::forward::ProxyBody;
use super::{pipeline, respond, Route, State};
use crate::error::{ErrorCode, ProxyError};

/// Bound on the client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an intercepted HTTP/1.1 connection may sit idle (or take to send a request
/// head) before it is closed; long enough for agents that pause between calls to keep their
/// connection, like the upstream pool does.
const INNER_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What an intercepted tunnel is bound to.
struct Tunnel {
    route: Route,
    /// Set when the ClientHello named another host than the CONNECT did.
    sni_mismatch: Option<String>,
}

/// Terminates TLS on `upgraded` and serves the inner HTTP/1.1 or HTTP/2 connection.
pub async fn serve(state: Arc<State>, route: Route, upgraded: Upgraded) {
    let host = route.host().to_string();
    // The handshake's state (ClientHello parsing, the accepting TLS connection) is large and
    // short-lived: boxing it keeps it out of this task's allocation, which otherwise lives as
    // long as the connection and would carry that size for every idle client.
    let Some((tls, sni_mismatch)) = Box::pin(handshake(&state, &host, upgraded)).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let tunnel = Arc::new(Tunnel {
        route,
        sni_mismatch,
    });
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(inner(st, tunnel, req).await) }
    });
    let io = TokioIo::new(tls);
    let result = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = state.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(INNER_IDLE_TIMEOUT)
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = state.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}

/// Reads the ClientHello, checks SNI against the CONNECT host, and completes the handshake
/// with that host's leaf. Returns the stream and the SNI when it differed from the host.
async fn handshake(
    state: &State,
    host: &str,
    upgraded: Upgraded,
) -> Option<(TlsStream<TokioIo<Upgraded>>, Option<String>)> {
    let io = TokioIo::new(upgraded);
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%host, error = %e, "client TLS hello failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%host, "client TLS hello timed out");
            return None;
        }
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let sni_mismatch = sni.clone().filter(|s| s != host);
    // SECURITY: the certificate is always for the CONNECT host; a different SNI gets that
    // certificate (which an honest client rejects) and every request answers 421.
    let config = match state
        .tls
        .config_for(host, sni.is_some() && sni_mismatch.is_none())
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%host, error = %e, "cannot prepare interception TLS");
            return None;
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(t)) => Some((t, sni_mismatch)),
        Ok(Err(e)) => {
            tracing::debug!(%host, error = %e, "client TLS handshake failed (does the client trust the Axtary CA?)");
            None
        }
        Err(_) => {
            tracing::debug!(%host, "client TLS handshake timed out");
            None
        }
    }
}

async fn inner(
    state: Arc<State>,
    tunnel: Arc<Tunnel>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let host = tunnel.route.host();
    let connector = state.connectors[tunnel.route.index].name.as_str();
    let mismatch = match &tunnel.sni_mismatch {
        Some(sni) => Some(format!(
            "TLS server name `{sni}` differs from the CONNECT host `{}`; nothing was forwarded",
            host
        )),
        None => check_target(host, &req).err(),
    };
    if let Some(msg) = mismatch {
        let (req, body) = req.into_parts();
        respond::drain(body.map_err(super::forward::box_error).boxed()).await;
        let err = ProxyError::new(ErrorCode::HostMismatch, msg).for_connector(connector);
        super::server::record_local(
            &state,
            Some(connector),
            req.method.as_str(),
            host,
            req.uri.path(),
            err.code.status(),
            crate::ledger::Decision::Denied,
        );
        return respond::error(&err);
    }
    let head = req.method() == http::Method::HEAD;
    let resp = pipeline::handle(&state, &tunnel.route, req).await;
    if head {
        // A response to HEAD has no body; HTTP/2 would otherwise send the local JSON one.
        let (parts, _body) = resp.into_parts();
        return Response::from_parts(parts, respond::empty());
    }
    resp
}

/// The request must name the tunnel's host: in its URI authority (HTTP/2 `:authority`,
/// absolute-form targets) and in Host, whichever are present, and at least one must be.
fn check_target(host: &str, req: &Request<Incoming>) -> Result<(), String> {
    let mut named = false;
    if let Some(authority) = req.uri().authority() {
        named = true;
        if let Some(scheme) = req.uri().scheme_str() {
            if scheme != "https" {
                return Err(format!(
                    "request target scheme `{scheme}` inside a TLS tunnel to {host}"
                ));
            }
        }
        if !same_host(host, authority.host(), authority.port_u16()) {
            return Err(format!(
                "request target `{authority}` differs from the CONNECT host `{host}`; nothing was forwarded"
            ));
        }
    }
    if let Some(value) = req.headers().get(http::header::HOST) {
        named = true;
        let parsed = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<http::uri::Authority>().ok());
        match parsed {
            Some(a) if same_host(host, a.host(), a.port_u16()) => {}
            _ => {
                return Err(format!(
                    "Host `{}` differs from the CONNECT host `{host}`; nothing was forwarded",
                    String::from_utf8_lossy(value.as_bytes())
                ))
            }
        }
    }
    if named {
        Ok(())
    } else {
        Err("the request names no host (no Host header or authority)".to_string())
    }
}

fn same_host(expected: &str, host: &str, port: Option<u16>) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case(expected) && matches!(port, None | Some(443))
}
