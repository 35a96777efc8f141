//! `Secret`: the one type that holds a credential, key or token in memory.
//!
//! Its `Debug` and `Display` print `[redacted]`, so a secret that slips into a log line, an
//! error message or a `{:?}` shows nothing. The value is reachable only through `expose()`,
//! which makes every use greppable.

use std::fmt;
use std::sync::Arc;

/// A secret string. Cheap to clone (shared), never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value. Leading and trailing whitespace (a pasted newline) is removed.
    pub fn new(value: impl AsRef<str>) -> Self {
        Secret(Arc::from(value.as_ref().trim()))
    }

    /// The secret value. Call sites are the places a secret leaves this type: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty (an env var set to "").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("ghp_canary_value\n");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "ghp_canary_value");
    }
}
