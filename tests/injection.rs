//! Credential injection through the intercepting proxy (SPEC 3 header formats, SPEC 4).
//!
//! An agent calls a connector host through `CONNECT`, trusting Axtary's CA; the mock sees the
//! real credential in the provider's header format, and never what the agent sent in
//! `Authorization` or `Proxy-Authorization`, nor hop-by-hop headers.

mod common;

use common::{random_alnum, sha256_hex, Alpn, Stack};

#[test]
fn github_request_gets_bearer_token_over_connect() {
    let stack = Stack::start();
    let out = stack.curl(["https://api.github.com/user"]);
    out.assert_status(200);
    assert_eq!(out.header("x-axtary-connector"), Some("github"));
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1, "{:?}", stack.mock.seen_lines());
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/user");
    assert_eq!(seen[0].sni.as_deref(), Some("api.github.com"));
    assert_eq!(seen[0].host.as_deref(), Some("api.github.com"));
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
    // The mock echoes what it got; on its way back the credential is scrubbed.
    assert_eq!(out.json()["authorization"], "Bearer [redacted]");
}

#[test]
fn slack_request_gets_bearer_token() {
    let stack = Stack::start();
    let out = stack.curl(["-X", "POST", "https://slack.com/api/auth.test"]);
    out.assert_status(200);
    assert_eq!(out.header("x-axtary-connector"), Some("slack"));
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/auth.test");
    assert_eq!(seen[0].sni.as_deref(), Some("slack.com"));
    let expected = format!("Bearer {}", stack.slack_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[test]
fn linear_api_key_is_sent_without_bearer() {
    let stack = Stack::start();
    let out = stack.curl([
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"query":"{ viewer { id } }"}"#,
        "https://api.linear.app/graphql",
    ]);
    out.assert_status(200);
    assert_eq!(out.header("x-axtary-connector"), Some("linear"));
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(stack.linear_token()));
}

#[test]
fn linear_oauth_token_is_sent_with_bearer() {
    let token = format!("lin_oauth_{}", random_alnum(40));
    let stack = Stack::builder().token("linear", &token).start();
    let out = stack.curl([
        "--data",
        r#"{"query":"{ viewer { id } }"}"#,
        "https://api.linear.app/graphql",
    ]);
    out.assert_status(200);
    let expected = format!("Bearer {token}");
    assert_eq!(
        stack.mock.seen()[0].header("authorization"),
        Some(expected.as_str())
    );
}

#[test]
fn client_placeholder_authorization_is_replaced() {
    let stack = Stack::start();
    let out = stack.curl([
        "-H",
        "Authorization: Bearer placeholder",
        "https://api.github.com/user",
    ]);
    out.assert_status(200);
    let seen = stack.mock.seen();
    let auths: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(auths, vec![expected.as_str()]);
    assert!(!seen[0].headers_text().contains("placeholder"));
}

#[test]
fn proxy_authorization_inside_tunnel_is_not_forwarded() {
    let stack = Stack::start();
    let leak = format!("leak{}", random_alnum(20));
    let header = format!("Proxy-Authorization: Bearer {leak}");
    for version in ["--http1.1", "--http2"] {
        let out = stack.curl([
            version,
            "-H",
            header.as_str(),
            "https://api.github.com/user",
        ]);
        out.assert_status(200);
    }
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 2);
    for req in seen {
        assert!(!req.has_header("proxy-authorization"), "{req:?}");
        assert!(!req.headers_text().contains(&leak), "{req:?}");
    }
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    // An HTTP/1.1 upstream, where connection-specific headers would survive on the wire.
    let stack = Stack::builder().alpn(Alpn::Http1Only).start();
    let out = stack.curl([
        "--http1.1",
        "-H",
        "Connection: x-foo",
        "-H",
        "x-foo: must-not-pass",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "x-end-to-end: kept",
        "https://api.github.com/user",
    ]);
    out.assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.header("x-end-to-end"), Some("kept"), "{req:?}");
    assert!(!req.has_header("x-foo"), "{req:?}");
    assert!(!req.has_header("keep-alive"), "{req:?}");
    assert!(
        req.header("connection")
            .is_none_or(|v| !v.to_ascii_lowercase().contains("x-foo")),
        "{req:?}"
    );
}

#[test]
fn query_string_and_method_reach_upstream() {
    let stack = Stack::start();
    let out = stack.curl([
        "-X",
        "PATCH",
        "https://api.github.com/search/issues?q=repo%3Aacme%2Fweb&per_page=5",
    ]);
    out.assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(
        seen[0].path,
        "/search/issues?q=repo%3Aacme%2Fweb&per_page=5"
    );
}

#[test]
fn request_body_reaches_upstream_intact() {
    let stack = Stack::start();
    let body = format!("{{\"title\":\"{}\"}}", random_alnum(5000));
    let out = stack.curl([
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body.as_str(),
        "https://api.github.com/upload",
    ]);
    out.assert_status(200);
    let echo = out.json();
    assert_eq!(echo["len"], body.len() as u64);
    assert_eq!(echo["sha256"], sha256_hex(body.as_bytes()));
}

#[test]
fn upstream_status_passes_through_unchanged() {
    let stack = Stack::start();
    for code in [404u16, 500] {
        let out = stack.curl([format!("https://api.github.com/status/{code}")]);
        assert_eq!(out.exit, 0, "{}", out.describe());
        assert_eq!(out.status, code, "{}", out.describe());
        assert!(out.header("x-axtary-error").is_none(), "{}", out.describe());
        assert_eq!(out.json()["status"], code);
    }
}

#[test]
fn upstream_connections_are_pooled() {
    let stack = Stack::start();
    for _ in 0..4 {
        stack
            .curl(["https://api.github.com/user"])
            .assert_status(200);
    }
    assert_eq!(stack.mock.seen().len(), 4);
    assert!(
        stack.mock.connections() < 4,
        "4 sequential requests opened {} upstream connections",
        stack.mock.connections()
    );
}
