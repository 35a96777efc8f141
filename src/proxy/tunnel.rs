//! Traffic Axtary does not intercept: blind CONNECT tunnels and cleartext forwarding for
//! non-connector hosts. No credential is ever involved here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::forward::{resolve_tcp, ProxyBody};
use super::inject::strip_hop_by_hop;
use super::{respond, State};
use crate::error::{ErrorCode, ProxyError};
use crate::ledger::{Decision, Entry};

const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `host:port` (honouring `upstream.resolve`) before the client is told 200.
pub async fn open(state: &State, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
    let unreachable = |why: String| {
        ProxyError::new(
            ErrorCode::UpstreamUnreachable,
            format!("cannot reach {host}:{port}: {why}"),
        )
    };
    let addrs = resolve_tcp(&state.upstream_settings, host, port)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut last = "no address found".to_string();
    for addr in addrs {
        match tokio::time::timeout(TUNNEL_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timed out".to_string(),
        }
    }
    Err(unreachable(last))
}

/// Splices the client and the upstream until either side closes; one ledger line at the end.
pub async fn splice(
    state: Arc<State>,
    host: String,
    port: u16,
    upgraded: Upgraded,
    mut upstream: TcpStream,
) {
    let started = Instant::now();
    let mut client = TokioIo::new(upgraded);
    let (bytes_in, bytes_out) = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r.unwrap_or((0, 0)),
        // Tunnels carry opaque traffic with no request boundaries: at shutdown they end when
        // the grace period does.
        _ = async { state.shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(3600)).await } => (0, 0),
    };
    state.metrics.request(None, Decision::Tunneled);
    state.ledger.record(Entry {
        connector: None,
        method: "CONNECT".to_string(),
        host: format!("{host}:{port}"),
        path: String::new(),
        status: 200,
        duration_ms: started.elapsed().as_millis() as u64,
        decision: Decision::Tunneled,
        credential_source: None,
        bytes_in,
        bytes_out,
    });
}

/// Forwards an absolute-form `http://` request to a non-connector host as a plain proxy.
pub async fn forward_plain(state: &State, req: Request<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = body.map_err(|e| Box::new(e) as _).boxed();
    match tokio::time::timeout(
        state.timeout,
        state.upstream.send_plain(Request::from_parts(parts, body)),
    )
    .await
    {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(|e| Box::new(e) as _).boxed())
        }
        Ok(Err(e)) => respond::error(&e),
        Err(_) => respond::error(&ProxyError::new(
            ErrorCode::UpstreamTimeout,
            format!("no response within {} s", state.timeout.as_secs()),
        )),
    }
}
