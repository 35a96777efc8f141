//! HTTP/2 on both hops (SPEC 4): the intercepted side offers `h2` and `http/1.1`, and the
//! upstream side uses HTTP/2 when the server offers it, in every combination.

mod common;

use common::{Alpn, Stack};

#[test]
fn http2_client_and_http2_upstream() {
    let stack = Stack::start();
    let out = stack.curl(["--http2", "https://api.github.com/user"]);
    out.assert_status(200);
    assert_eq!(out.http_version, "2", "{}", out.describe());
    assert_eq!(out.header("x-axtary-connector"), Some("github"));
    let seen = stack.mock.seen();
    assert_eq!(seen[0].version, "HTTP/2.0");
    assert_eq!(seen[0].host.as_deref(), Some("api.github.com"));
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[test]
fn http2_client_and_http1_only_upstream() {
    let stack = Stack::builder().alpn(Alpn::Http1Only).start();
    let out = stack.curl(["--http2", "https://api.github.com/user"]);
    out.assert_status(200);
    assert_eq!(out.http_version, "2", "{}", out.describe());
    let seen = stack.mock.seen();
    assert_eq!(seen[0].version, "HTTP/1.1");
    assert_eq!(seen[0].host.as_deref(), Some("api.github.com"));
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[test]
fn http1_client_and_http2_upstream() {
    let stack = Stack::start();
    let out = stack.curl(["--http1.1", "https://api.github.com/user"]);
    out.assert_status(200);
    assert_eq!(out.http_version, "1.1", "{}", out.describe());
    let seen = stack.mock.seen();
    assert_eq!(seen[0].version, "HTTP/2.0");
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[test]
fn http2_client_post_body_reaches_http1_upstream() {
    let stack = Stack::builder().alpn(Alpn::Http1Only).start();
    let body = common::pattern_bytes(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("body.bin");
    std::fs::write(&file, &body).expect("write body");
    let out = stack.curl([
        "--http2".to_string(),
        "--data-binary".to_string(),
        format!("@{}", file.display()),
        "https://api.github.com/upload".to_string(),
    ]);
    out.assert_status(200);
    assert_eq!(out.json()["sha256"], common::sha256_hex(&body));
}
