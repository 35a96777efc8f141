//! Responses Axtary makes itself: the SPEC 4 error shape (`x-axtary-error` plus a JSON body)
//! and the few plain answers (healthz, dry runs).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::forward::ProxyBody;
use crate::error::ProxyError;

pub const X_AXTARY_ERROR: HeaderName = HeaderName::from_static("x-axtary-error");

/// A body of bytes made locally.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// Upper bound on a request body read and discarded before a local answer.
const DRAIN_LIMIT: usize = 16 << 20;
/// And on the time spent doing it.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards the body of a request the proxy answers itself. Answering without
/// reading it makes HTTP/2 end the stream with RST_STREAM(NO_ERROR), which is legal but which
/// common clients (curl among them) report as a failure; a bounded drain gives them a clean
/// end of stream. Past the bounds the stream is simply reset.
pub async fn drain(mut body: ProxyBody) {
    if http_body::Body::is_end_stream(&body) {
        return;
    }
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

/// The JSON error response for `err`.
pub fn error(err: &ProxyError) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": {
            "code": err.code.as_str(),
            "message": err.message,
            "connector": err.connector,
        }
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = err.code.status();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(X_AXTARY_ERROR, HeaderValue::from_static(err.code.as_str()));
    if let Some(secs) = err.retry_after_secs {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if err.code == crate::error::ErrorCode::ProxyAuthRequired {
        h.insert(
            http::header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"axtary\""),
        );
    }
    resp
}

/// A small JSON response.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
