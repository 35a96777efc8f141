//! `proxy.auth`: clients prove they may use the proxy with `Proxy-Authorization`, either
//! `Bearer <token>` or `Basic` with the token as the password (what `curl -U x:token` and
//! `HTTPS_PROXY=http://x:token@host` send).

use base64::Engine;
use http::HeaderMap;

use crate::secret::Secret;

/// The proxy token clients must present.
pub struct ProxyAuth {
    token: Secret,
}

impl ProxyAuth {
    pub fn new(token: Secret) -> ProxyAuth {
        ProxyAuth { token }
    }

    /// True when `headers` carry the right token.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return constant_time_eq(rest.as_bytes(), self.token.expose().as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            // Any user name; the token is the password.
            let password = match decoded.iter().position(|&b| b == b':') {
                Some(i) => &decoded[i + 1..],
                None => return false,
            };
            return constant_time_eq(password, self.token.expose().as_bytes());
        }
        false
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::PROXY_AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_and_basic() {
        let a = ProxyAuth::new(Secret::new("s3cret-token"));
        assert!(a.allows(&headers("Bearer s3cret-token")));
        assert!(a.allows(&headers("bearer  s3cret-token")));
        let basic = base64::engine::general_purpose::STANDARD.encode("x:s3cret-token");
        assert!(a.allows(&headers(&format!("Basic {basic}"))));
        assert!(!a.allows(&headers("Bearer wrong")));
        assert!(!a.allows(&headers("Basic !!!")));
        assert!(!a.allows(&HeaderMap::new()));
    }
}
