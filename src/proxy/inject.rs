//! Upstream request preparation, in one place: strip what must not travel (hop-by-hop
//! headers, the client's Authorization and Proxy-Authorization), set the real credential,
//! and aim the request at the connector's host over https.
//!
//! `Prepared` has a private constructor and `Upstream::send` takes only a `Prepared`, and
//! `prepare` takes an `Admitted`, which only the pipeline makes after the guard said yes:
//! no code path can send a request upstream unchecked or without this preparation.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};

use super::forward::ProxyBody;
use crate::broker::Credential;
use crate::error::{ErrorCode, ProxyError};

/// Proof that the guard admitted a request. Made only by the pipeline.
pub struct Admitted(pub(super) ());

/// A request ready to go upstream with its credential set.
pub struct Prepared(Request<ProxyBody>);

impl Prepared {
    pub(super) fn into_inner(self) -> Request<ProxyBody> {
        self.0
    }

    /// Read-only view (benches and tests inspect what would be sent).
    pub fn request(&self) -> &Request<ProxyBody> {
        &self.0
    }
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 7.6.1), plus the
/// proxy's own credentials header.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop too; collect them before removing it.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    // Transfer-Encoding is per hop as well; hyper re-frames the body itself.
    headers.remove(header::TRANSFER_ENCODING);
}

/// Builds the upstream request: `https://{authority}{path}`, cleaned headers, the credential.
pub fn prepare(
    _admitted: Admitted,
    mut parts: http::request::Parts,
    body: ProxyBody,
    authority: &Authority,
    credential: &Credential,
) -> Result<Prepared, ProxyError> {
    // Reuse the parsed path (shared bytes) and the route's pre-parsed authority: no string
    // is built or re-parsed per request.
    let mut target = std::mem::take(&mut parts.uri).into_parts();
    target.scheme = Some(Scheme::HTTPS);
    target.authority = Some(authority.clone());
    if target.path_and_query.is_none() {
        target.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    let uri = Uri::from_parts(target)
        .map_err(|e| ProxyError::new(ErrorCode::BadRequest, format!("bad request target: {e}")))?;
    strip_hop_by_hop(&mut parts.headers);
    // SECURITY: the agent's own Authorization (often a placeholder) never travels, and Host
    // is derived from the URI so it always names the host the credential belongs to.
    parts.headers.remove(header::HOST);
    parts
        .headers
        .insert(header::AUTHORIZATION, credential.header.clone());
    // SECURITY: the response is scanned for the credential as it streams; a compressed body
    // would hide it, so injected routes ask the upstream for an uncompressed one.
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    parts.uri = uri;
    // The pooled connection decides h1 or h2 by ALPN; a request that arrived over h2 must not
    // insist on h2 (an h1-only upstream would refuse it).
    parts.version = Version::HTTP_11;
    Ok(Prepared(Request::from_parts(parts, body)))
}

/// Cleans an upstream response's headers for the client: hop-by-hop headers removed, every
/// occurrence of the credential replaced, and the connector named.
pub fn prepare_response_headers(
    headers: &mut HeaderMap,
    credential: &Credential,
    connector_header: &HeaderValue,
) {
    strip_hop_by_hop(headers);
    // SECURITY: an upstream that echoes the credential in a header must not hand it over.
    crate::redact::redact_headers(&credential.redactor, headers);
    headers.insert(
        HeaderName::from_static("x-axtary-connector"),
        connector_header.clone(),
    );
}
