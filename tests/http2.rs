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

#[test]
fn head_request_over_http2_is_answered_without_a_body() {
    // curl fails the transfer (PROTOCOL_ERROR) when a HEAD response carries body bytes.
    let stack = Stack::builder().without_token("linear").start();
    for version in ["--http2", "--http1.1"] {
        stack
            .curl([version, "-I", "https://api.github.com/user"])
            .assert_status(200);
        // A locally made error answer to HEAD must not carry its JSON body either.
        let out = stack.curl([version, "-I", "https://api.linear.app/graphql"]);
        out.assert_status(502);
        assert_eq!(out.header("x-axtary-error"), Some("credential_unavailable"));
    }
    assert_eq!(stack.mock.seen_lines(), ["HEAD /user", "HEAD /user"]);
}

#[test]
fn local_answer_to_http2_request_with_body_completes() {
    // Answered without going upstream while the client is still sending its body: the
    // exchange must still end cleanly for an HTTP/2 client. curl 7.x fails the transfer when
    // a stream reset (even NO_ERROR) arrives before it has sent the whole body, so the proxy
    // has to take the body in. 2 MiB is more than one flow-control window, so the client is
    // certainly still sending when the answer is ready.
    let stack = Stack::builder()
        .without_token("linear")
        .config(|c| c.connector_yaml("github", "writes: dry-run"))
        .start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("body.json");
    let body = format!(
        "{{\"query\":\"{{ viewer {{ id }} }}\",\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    std::fs::write(&file, body).expect("write body");
    let at = format!("@{}", file.display());

    let out = stack.curl([
        "--http2",
        "--data-binary",
        at.as_str(),
        "https://api.github.com/repos/acme/web/issues",
    ]);
    out.assert_status(200);
    assert_eq!(out.http_version, "2");
    let out = stack.curl([
        "--http2",
        "--data-binary",
        at.as_str(),
        "https://api.linear.app/graphql",
    ]);
    assert_eq!(out.exit, 0, "{}", out.describe());
    common::assert_axtary_error(&out, 502, "credential_unavailable");
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );
}
