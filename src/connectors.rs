//! What Axtary knows about each provider: its API hosts, how its credential goes into the
//! `Authorization` header, which paths are GraphQL endpoints, and its default env names.
//!
//! Everything provider-specific lives here so the proxy pipeline stays provider-agnostic.

use http::HeaderValue;
use serde::Deserialize;

use crate::secret::Secret;

/// A provider Axtary can inject credentials for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Slack,
    Linear,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Slack => "slack",
            Provider::Linear => "linear",
        }
    }

    /// The API hosts a connector of this provider covers unless `hosts` says otherwise.
    pub fn default_hosts(self) -> &'static [&'static str] {
        match self {
            Provider::Github => &["api.github.com"],
            Provider::Slack => &["slack.com"],
            Provider::Linear => &["api.linear.app"],
        }
    }

    /// The env var read for a token when the connector names none.
    pub fn default_token_env(self) -> &'static str {
        match self {
            Provider::Github => "AXTARY_GITHUB_TOKEN",
            Provider::Slack => "AXTARY_SLACK_BOT_TOKEN",
            Provider::Linear => "AXTARY_LINEAR_API_KEY",
        }
    }

    /// Paths that take GraphQL documents, where a POST may be a read (SPEC 7).
    pub fn graphql_paths(self) -> &'static [&'static str] {
        match self {
            Provider::Github | Provider::Linear => &["/graphql"],
            Provider::Slack => &[],
        }
    }

    /// The `Authorization` value for a token, in this provider's format. Linear personal API
    /// keys (`lin_api_...`) go bare; every other token is a Bearer token.
    pub fn authorization(self, token: &Secret) -> Result<HeaderValue, InvalidToken> {
        let raw = token.expose();
        let mut value = if self == Provider::Linear && raw.starts_with("lin_api_") {
            HeaderValue::from_str(raw)
        } else {
            HeaderValue::from_str(&format!("Bearer {raw}"))
        }
        .map_err(|_| InvalidToken)?;
        // SECURITY: marks the value so hyper's HPACK never indexes it and Debug hides it.
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A token that cannot be put in a header (control characters, a pasted newline inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidToken;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_formats() {
        let t = Secret::new("tok123");
        assert_eq!(Provider::Github.authorization(&t).unwrap(), "Bearer tok123");
        assert_eq!(Provider::Slack.authorization(&t).unwrap(), "Bearer tok123");
        assert_eq!(Provider::Linear.authorization(&t).unwrap(), "Bearer tok123");
        let key = Secret::new("lin_api_abc");
        assert_eq!(Provider::Linear.authorization(&key).unwrap(), "lin_api_abc");
        assert_eq!(
            Provider::Github.authorization(&key).unwrap(),
            "Bearer lin_api_abc"
        );
        assert!(Provider::Github.authorization(&t).unwrap().is_sensitive());
        assert_eq!(
            Provider::Github.authorization(&Secret::new("a\u{0}b")),
            Err(InvalidToken)
        );
    }
}
