//! The upstream side of the proxy: the pooled clients from `outbound`, and the one entry
//! point that sends an injected request (`Prepared`, which only `inject` can build).

use hyper::body::Incoming;

use crate::config::UpstreamSettings;
use crate::error::{ErrorCode, ProxyError};
pub use crate::outbound::{box_error, resolve_tcp, BoxError, ProxyBody};
use crate::outbound::{
    describe_client_error, https_client, plain_client, HttpsClient, PlainClient,
};

/// Pooled outbound clients.
#[derive(Clone)]
pub struct Upstream {
    https: HttpsClient<ProxyBody>,
    plain: PlainClient<ProxyBody>,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, String> {
        Ok(Upstream {
            https: https_client(settings)?,
            plain: plain_client(settings),
        })
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

fn upstream_error(e: hyper_util::client::legacy::Error) -> ProxyError {
    let what = if e.is_connect() {
        "cannot connect to the upstream over verified TLS"
    } else {
        "the upstream connection failed"
    };
    ProxyError::new(
        ErrorCode::UpstreamUnreachable,
        format!(
            "{what} ({}); check the network, or `upstream.resolve`/`upstream.caFile` if set",
            describe_client_error(&e)
        ),
    )
}
