//! The errors Axtary answers on the wire, and the CLI's exit codes.
//!
//! `ProxyError` is what the proxy pipeline produces; each variant maps to one code of the
//! SPEC 4 table, an HTTP status and a message that says what to do. `respond` turns it into
//! the JSON body with `x-axtary-error`.

use http::StatusCode;

/// A stable error code sent in `x-axtary-error` and the JSON body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    ProxyAuthRequired,
    BadRequest,
    NotFound,
    UnmatchedHost,
    PolicyDenied,
    HostMismatch,
    RateLimited,
    CredentialUnavailable,
    UpstreamUnreachable,
    UpstreamTimeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProxyAuthRequired => "proxy_auth_required",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnmatchedHost => "unmatched_host",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::HostMismatch => "host_mismatch",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::CredentialUnavailable => "credential_unavailable",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::UnmatchedHost | ErrorCode::PolicyDenied => StatusCode::FORBIDDEN,
            ErrorCode::HostMismatch => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::CredentialUnavailable | ErrorCode::UpstreamUnreachable => {
                StatusCode::BAD_GATEWAY
            }
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// An error answered by the proxy itself. The message must never hold a secret: it is sent
/// to the agent.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub code: ErrorCode,
    pub message: String,
    pub connector: Option<String>,
    /// For `rate_limited`: whole seconds until a retry can succeed (never 0).
    pub retry_after_secs: Option<u64>,
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProxyError {
            code,
            message: message.into(),
            connector: None,
            retry_after_secs: None,
        }
    }

    pub fn for_connector(mut self, connector: &str) -> Self {
        self.connector = Some(connector.to_string());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ProxyError {}

/// A CLI failure: the message main prints, and the exit code it picks (SPEC 5).
#[derive(Debug)]
pub enum CliError {
    /// Exit 2: usage or config error.
    Usage(String),
    /// Exit 1: a check or the operation failed.
    Failed(String),
    /// Exit with this code and print nothing (`axtary run` passing on its command's status).
    Exit(i32),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Exit(code) => *code,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Exit(_) => Ok(()),
        }
    }
}

impl std::error::Error for CliError {}
