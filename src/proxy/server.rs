//! The accept loop and the outer (client -> proxy) HTTP/1.1 connection: CONNECT,
//! absolute-form requests, gateway mode and `/healthz`.
//!
//! Shutdown follows the usual shape: the accept loop selects against a cancellation token,
//! every connection task is tracked, and `Running::shutdown` waits for them up to a grace
//! period. Per-connection errors are logged in the connection's task and never reach the
//! accept loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::forward::ProxyBody;
use super::{intercept, pipeline, respond, tunnel, State};
use crate::config::Unmatched;
use crate::error::{ErrorCode, ProxyError};
use crate::ledger::{Decision, Entry};

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after an accept error (out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A running proxy.
pub struct Running {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight work finish within `grace`, and reports whether
    /// everything finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.state.shutdown.cancel();
        let _ = self.accept.await;
        self.state.tasks.close();
        let done = tokio::time::timeout(grace, self.state.tasks.wait())
            .await
            .is_ok();
        self.state.ledger.flush();
        done
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }
}

/// Binds `listen` and starts serving.
pub async fn start(state: Arc<State>, listen: SocketAddr) -> std::io::Result<Running> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let st = state.clone();
    let accept = tokio::spawn(async move { accept_loop(st, listener).await });
    Ok(Running {
        addr,
        state,
        accept,
    })
}

async fn accept_loop(state: Arc<State>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let st = state.clone();
                state
                    .tasks
                    .spawn(async move { serve_client(st, stream, peer).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve_client(state: Arc<State>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    state
        .metrics
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let _open = OpenConnection(&state);
    let st = state.clone();
    let svc = service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(outer(st, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Decrements the open-connections gauge however the connection ends.
struct OpenConnection<'a>(&'a State);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves the admin listener: `GET /healthz` and `GET /metrics`.
pub async fn start_admin(state: Arc<State>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok((s, _)) => s,
                    Err(_) => { tokio::time::sleep(ACCEPT_BACKOFF).await; continue; }
                },
            };
            let st = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let st = st.clone();
                    async move {
                        let resp = match (req.method(), req.uri().path()) {
                            (&Method::GET, "/healthz") => {
                                respond::json(StatusCode::OK, serde_json::json!({"status": "ok"}))
                            }
                            (&Method::GET, "/metrics") => {
                                let mut r = Response::new(respond::full(st.metrics.render()));
                                r.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                                );
                                r
                            }
                            _ => respond::error(&ProxyError::new(
                                ErrorCode::NotFound,
                                "the admin listener serves GET /healthz and GET /metrics",
                            )),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// Dispatches one request on the outer connection.
async fn outer(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        return connect(state, req).await;
    }
    if req.uri().authority().is_some() {
        return absolute_form(state, req).await;
    }
    let path = req.uri().path();
    if path == "/healthz" && req.method() == Method::GET {
        return respond::json(StatusCode::OK, serde_json::json!({"status": "ok"}));
    }
    gateway(state, req).await
}

fn auth_error(state: &State, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let auth = state.auth.as_ref()?;
    if auth.allows(req.headers()) {
        return None;
    }
    Some(respond::error(&ProxyError::new(
        ErrorCode::ProxyAuthRequired,
        "this proxy needs its token: send `Proxy-Authorization: Bearer <token>`, or put it in the proxy URL as http://axtary:<token>@host:port",
    )))
}

/// `CONNECT host:port`: intercept connector hosts, tunnel or refuse the rest.
async fn connect(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    if let Some(resp) = auth_error(&state, &req) {
        return resp;
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return respond::error(&ProxyError::new(
            ErrorCode::BadRequest,
            "CONNECT needs a host:port target",
        ));
    };
    let host = bare_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);

    if let Some(route) = state.connector_for(&host, port) {
        let st = state.clone();
        state.tasks.spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => intercept::serve(st, route, upgraded).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(respond::empty());
    }

    match state.unmatched {
        Unmatched::Deny => {
            record_local(
                &state,
                None,
                "CONNECT",
                &host,
                "",
                StatusCode::FORBIDDEN,
                Decision::Denied,
            );
            respond::error(&ProxyError::new(
                ErrorCode::UnmatchedHost,
                format!("{host}:{port} is not a connector host and this proxy is set to `unmatched: deny`"),
            ))
        }
        Unmatched::Tunnel => match tunnel::open(&state, &host, port).await {
            Ok(upstream) => {
                let st = state.clone();
                state.tasks.spawn(async move {
                    match hyper::upgrade::on(req).await {
                        Ok(upgraded) => tunnel::splice(st, host, port, upgraded, upstream).await,
                        Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                    }
                });
                Response::new(respond::empty())
            }
            Err(e) => {
                record_local(
                    &state,
                    None,
                    "CONNECT",
                    &host,
                    "",
                    StatusCode::BAD_GATEWAY,
                    Decision::Error,
                );
                respond::error(&e)
            }
        },
    }
}

/// `GET http://host/...` sent to the proxy: never injected (that hop is cleartext).
async fn absolute_form(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    if let Some(resp) = auth_error(&state, &req) {
        return resp;
    }
    let uri = req.uri().clone();
    let host = uri.host().map(bare_host).unwrap_or_default();
    let is_connector = state.host_index.contains_key(&host);
    if is_connector || uri.scheme_str() != Some("http") {
        return respond::error(&ProxyError::new(
            ErrorCode::BadRequest,
            format!(
                "requests to {host} must use https:// through the proxy (CONNECT); Axtary never sends a credential over a cleartext hop"
            ),
        ));
    }
    match state.unmatched {
        Unmatched::Deny => {
            record_local(
                &state,
                None,
                req.method().as_str(),
                &host,
                uri.path(),
                StatusCode::FORBIDDEN,
                Decision::Denied,
            );
            respond::error(&ProxyError::new(
                ErrorCode::UnmatchedHost,
                format!(
                    "{host} is not a connector host and this proxy is set to `unmatched: deny`"
                ),
            ))
        }
        Unmatched::Tunnel => tunnel::forward_plain(&state, req).await,
    }
}

/// `/<connector>/<path>` on the proxy itself: for SDKs that take a base URL but no proxy.
async fn gateway(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path();
    let rest = path.trim_start_matches('/');
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(index) = state.connectors.iter().position(|c| c.name == name) else {
        let names: Vec<&str> = state.connectors.iter().map(|c| c.name.as_str()).collect();
        return respond::error(&ProxyError::new(
            ErrorCode::NotFound,
            format!(
                "no connector named `{name}`: gateway paths are /<connector>/<api path>, with connectors {}",
                names.join(", ")
            ),
        ));
    };
    // SDKs in gateway mode often cannot send Proxy-Authorization, but they do send their
    // configured API token: the proxy token is accepted there too (it is then removed).
    if let Some(auth) = &state.auth {
        let mut h = http::HeaderMap::new();
        if let Some(v) = req
            .headers()
            .get(http::header::PROXY_AUTHORIZATION)
            .or_else(|| req.headers().get(http::header::AUTHORIZATION))
        {
            h.insert(http::header::PROXY_AUTHORIZATION, v.clone());
        }
        if !auth.allows(&h) {
            return respond::error(&ProxyError::new(
                ErrorCode::ProxyAuthRequired,
                "gateway requests need the proxy token: send it as `Proxy-Authorization: Bearer <token>` or as the API token (`Authorization: Bearer <token>`)",
            ));
        }
    }
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let target = format!("/{tail}{query}");
    let (mut parts, body) = req.into_parts();
    parts.uri = match target.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => {
            return respond::error(&ProxyError::new(
                ErrorCode::BadRequest,
                format!("bad gateway path: {e}"),
            ))
        }
    };
    let route = state.connectors[index].gateway_route.clone();
    pipeline::handle(&state, &route, Request::from_parts(parts, body)).await
}

/// Lower-cases a host and strips IPv6 brackets.
pub fn bare_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// A ledger line for something answered without an upstream exchange.
pub(super) fn record_local(
    state: &State,
    connector: Option<&str>,
    method: &str,
    host: &str,
    path: &str,
    status: StatusCode,
    decision: Decision,
) {
    let started = Instant::now();
    let index = connector.and_then(|n| state.connectors.iter().position(|c| c.name == n));
    state.metrics.request(index, decision);
    state.ledger.record(Entry {
        connector: connector.map(str::to_string),
        method: method.to_string(),
        host: host.to_string(),
        path: path.to_string(),
        status: status.as_u16(),
        duration_ms: started.elapsed().as_millis() as u64,
        decision,
        credential_source: None,
        bytes_in: 0,
        bytes_out: 0,
    });
}
