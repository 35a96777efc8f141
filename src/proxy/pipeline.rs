//! One request on a connector route, from guard to ledger:
//! quota -> guard -> credential -> inject -> forward -> scrub -> ledger.
//!
//! Transport (CONNECT, TLS, gateway) is decided before this point; this module only sees a
//! request already bound to a connector and a host.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::body::{Counted, Finish, PendingEntry};
use super::forward::{box_error, ProxyBody};
use super::guard::{Verdict, MAX_GRAPHQL_BODY};
use super::inject::{self, Admitted};
use super::{respond, Route, State};
use crate::error::{ErrorCode, ProxyError};
use crate::ledger::{Decision, Entry};
use crate::redact::RedactBody;

/// Handles one request bound to `route` (a connector and one of its hosts).
pub async fn handle(
    state: &Arc<State>,
    route: &Route,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let index = route.index;
    let host = route.host();
    let started = Instant::now();
    let conn = &state.connectors[index];
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let bytes_in = Arc::new(AtomicU64::new(0));

    // The ledger line is only assembled when there is a ledger to write it to.
    let mut entry = state.ledger.is_on().then(|| Entry {
        connector: Some(conn.name.clone()),
        method: method.as_str().to_string(),
        host: host.to_string(),
        path: path.clone(),
        status: 0,
        duration_ms: 0,
        decision: Decision::Error,
        credential_source: None,
        bytes_in: 0,
        bytes_out: 0,
    });
    let local = |entry: Option<Entry>, decision: Decision, resp: Response<ProxyBody>| {
        finish(
            state,
            index,
            entry,
            decision,
            resp,
            started,
            bytes_in.clone(),
        )
    };
    let (parts, body) = req.into_parts();
    let body = Counted::new(body, bytes_in.clone());

    // The upstream told us its quota is spent: answer locally until its reset.
    if let Some(secs) = conn.quota.blocked_for(SystemTime::now()) {
        let err = ProxyError::new(
            ErrorCode::RateLimited,
            format!(
                "the upstream's rate limit for `{}` is spent; retry after {secs} s",
                conn.name
            ),
        )
        .for_connector(&conn.name)
        .retry_after(secs);
        respond::drain(body.map_err(box_error).boxed()).await;
        return local(entry, Decision::RateLimited, respond::error(&err));
    }

    // A GraphQL POST under a writes rule must be read (bounded) to tell a query from a
    // mutation; everything else streams.
    let (body, guard_body): (ProxyBody, Option<Bytes>) = if conn.guard.needs_body(&method, &path) {
        match Limited::new(body, MAX_GRAPHQL_BODY).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                (respond::full(bytes.clone()), Some(bytes))
            }
            // Too large to inspect: judged a write, and never forwarded (a write under
            // `writes: deny|dry-run` is answered locally), so the rest is drained there.
            Err(e) if e.is::<http_body_util::LengthLimitError>() => (respond::empty(), None),
            Err(e) => {
                let err = ProxyError::new(
                    ErrorCode::BadRequest,
                    format!("could not read the request body: {e}"),
                )
                .for_connector(&conn.name);
                return local(entry, Decision::Error, respond::error(&err));
            }
        }
    } else {
        (body.map_err(box_error).boxed(), None)
    };

    match conn.guard.check(&method, &path, guard_body.as_deref()) {
        Verdict::Allow => {}
        Verdict::Deny { reason } => {
            let err = ProxyError::new(
                ErrorCode::PolicyDenied,
                format!(
                    "{} {} refused by connector `{}`: {reason}",
                    method, path, conn.name
                ),
            )
            .for_connector(&conn.name);
            respond::drain(body).await;
            return local(entry, Decision::Denied, respond::error(&err));
        }
        Verdict::DryRun => {
            let resp = respond::json(
                StatusCode::OK,
                serde_json::json!({
                    "dryRun": true,
                    "connector": conn.name,
                    "method": method.as_str(),
                    "path": path,
                    "message": "writes are in dry-run mode for this connector: the request was logged and not sent",
                }),
            );
            respond::drain(body).await;
            return local(entry, Decision::DryRun, resp);
        }
        Verdict::RateLimited { retry_after_secs } => {
            let err = ProxyError::new(
                ErrorCode::RateLimited,
                format!(
                    "the local rate limit of connector `{}` is spent; retry after {retry_after_secs} s",
                    conn.name
                ),
            )
            .for_connector(&conn.name)
            .retry_after(retry_after_secs);
            respond::drain(body).await;
            return local(entry, Decision::RateLimited, respond::error(&err));
        }
    }

    let credential = match state.broker.cached(index, &path) {
        Some(c) => c,
        None => match state.broker.credential(index, &path).await {
            Ok(c) => c,
            Err(e) => {
                respond::drain(body).await;
                return local(entry, Decision::Error, respond::error(&e));
            }
        },
    };
    if let Some(e) = entry.as_mut() {
        e.credential_source = Some(credential.source.as_str().to_string());
    }

    let prepared = match inject::prepare(Admitted(()), parts, body, &route.authority, &credential) {
        Ok(p) => p,
        Err(e) => {
            return local(
                entry,
                Decision::Error,
                respond::error(&e.for_connector(&conn.name)),
            )
        }
    };

    let sent = tokio::time::timeout(state.timeout, state.upstream.send(prepared)).await;
    let upstream = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::warn!(connector = %conn.name, error = %e, "upstream request failed");
            return local(
                entry,
                Decision::Error,
                respond::error(&e.for_connector(&conn.name)),
            );
        }
        Err(_) => {
            let err = ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "{host} did not answer within {} s (upstream.timeoutSecs)",
                    state.timeout.as_secs()
                ),
            )
            .for_connector(&conn.name);
            return local(entry, Decision::Error, respond::error(&err));
        }
    };

    conn.quota
        .observe(upstream.status(), upstream.headers(), SystemTime::now());
    let (mut parts, body) = upstream.into_parts();
    inject::prepare_response_headers(&mut parts.headers, &credential, &conn.name_header);
    if method != Method::HEAD {
        // Scrubbing can change the body's length, so let hyper frame it (chunked on h1).
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    // SECURITY: the upstream may echo the credential back; scrub it as the body streams.
    let body = RedactBody::new(body, Some(credential.redactor.clone()))
        .map_err(box_error)
        .boxed();
    let resp = Response::from_parts(parts, body);
    finish(
        state,
        index,
        entry,
        Decision::Injected,
        resp,
        started,
        bytes_in,
    )
}

/// Counts the request and attaches its ledger line (when the ledger is on) to the response;
/// the line is written when the body ends.
fn finish(
    state: &Arc<State>,
    index: usize,
    entry: Option<Entry>,
    decision: Decision,
    resp: Response<ProxyBody>,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
) -> Response<ProxyBody> {
    state.metrics.request(Some(index), decision);
    let Some(mut entry) = entry else {
        return resp;
    };
    entry.status = resp.status().as_u16();
    entry.decision = decision;
    let pending = PendingEntry {
        ledger: state.ledger.clone(),
        entry,
        started,
        bytes_in,
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Finish::new(body, pending).boxed())
}

/// The per-request decision path with no I/O, as `handle` runs it for a streamed body:
/// classify `host`, run the guard, take the ready credential and prepare the upstream
/// request. Benchmarks measure this; it never sends anything.
pub fn prepare_ready(
    state: &State,
    host: &str,
    parts: http::request::Parts,
    body: ProxyBody,
) -> Result<inject::Prepared, ProxyError> {
    let route = state.connector_for(host, 443).ok_or_else(|| {
        ProxyError::new(
            ErrorCode::BadRequest,
            format!("{host} is not a connector host"),
        )
    })?;
    let index = route.index;
    let conn = &state.connectors[index];
    match conn.guard.check(&parts.method, parts.uri.path(), None) {
        Verdict::Allow => {}
        _ => {
            return Err(
                ProxyError::new(ErrorCode::PolicyDenied, "refused by the guard")
                    .for_connector(&conn.name),
            )
        }
    }
    let credential = state
        .broker
        .cached(index, parts.uri.path())
        .ok_or_else(|| {
            ProxyError::new(ErrorCode::CredentialUnavailable, "no ready credential")
                .for_connector(&conn.name)
        })?;
    inject::prepare(Admitted(()), parts, body, &route.authority, &credential)
}
