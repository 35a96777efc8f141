//! Response scrubbing (SPEC 9): when an upstream echoes the injected credential back, the
//! agent gets `[redacted]` instead, in headers and in bodies, even when the credential is split
//! across tiny chunks and whatever the body framing.

mod common;

use common::{contains_bytes, curl, CurlOutput, Stack};

const REDACTED: &str = "[redacted]";

/// The agent's view holds no secret and shows the redaction marker in the header and body.
fn assert_scrubbed(out: &CurlOutput, secret: &str) {
    out.assert_status(200);
    assert!(
        !contains_bytes(&out.body, secret),
        "credential leaked in body\n{}",
        out.describe()
    );
    assert!(
        !out.head_raw.contains(secret),
        "credential leaked in headers\n{}",
        out.describe()
    );
    assert!(
        out.body_text().contains(REDACTED),
        "expected {REDACTED} in the body\n{}",
        out.describe()
    );
    let echoed = out.header("x-echo-authorization").unwrap_or("");
    assert!(
        echoed.contains(REDACTED),
        "expected {REDACTED} in x-echo-authorization\n{}",
        out.describe()
    );
    if let Some(len) = out.header("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(out.body.len()),
            "{}",
            out.describe()
        );
    }
}

/// The mock really got the credential, so the scrub check is not vacuous.
fn assert_upstream_saw(stack: &Stack, secret: &str, times: usize) {
    let hits = stack
        .mock
        .seen()
        .iter()
        .filter(|r| {
            r.header("authorization")
                .is_some_and(|a| a.contains(secret))
        })
        .count();
    assert_eq!(
        hits, times,
        "upstream should have received the credential {times} times"
    );
}

#[test]
fn echoed_token_is_redacted_in_chunked_body_and_headers() {
    let stack = Stack::start();
    for version in ["--http1.1", "--http2"] {
        let out = stack.curl([version, "https://api.github.com/echo-auth"]);
        assert_scrubbed(&out, stack.github_token());
    }
    assert_upstream_saw(&stack, stack.github_token(), 2);
}

#[test]
fn echoed_token_is_redacted_in_fixed_length_body() {
    let stack = Stack::start();
    for version in ["--http1.1", "--http2"] {
        let out = stack.curl([version, "https://api.github.com/echo-auth?fixed=1"]);
        assert_scrubbed(&out, stack.github_token());
    }
    assert_upstream_saw(&stack, stack.github_token(), 2);
}

#[test]
fn echoed_slack_and_linear_credentials_are_redacted() {
    let stack = Stack::start();
    let out = stack.curl(["https://slack.com/echo-auth"]);
    assert_scrubbed(&out, stack.slack_token());
    let out = stack.curl(["https://api.linear.app/echo-auth"]);
    assert_scrubbed(&out, stack.linear_token());
    assert_upstream_saw(&stack, stack.slack_token(), 1);
    assert_upstream_saw(&stack, stack.linear_token(), 1);
}

#[test]
fn echoed_token_is_redacted_on_gateway_routes() {
    let stack = Stack::start();
    let out = curl([stack.proxy.url("/github/echo-auth")]);
    assert_scrubbed(&out, stack.github_token());
    let out = curl([stack.proxy.url("/linear/echo-auth?fixed=1")]);
    assert_scrubbed(&out, stack.linear_token());
    assert_upstream_saw(&stack, stack.github_token(), 1);
    assert_upstream_saw(&stack, stack.linear_token(), 1);
}

#[test]
fn echoed_token_is_redacted_from_http1_only_upstream() {
    let stack = Stack::builder().alpn(common::Alpn::Http1Only).start();
    let out = stack.curl(["--http2", "https://api.github.com/echo-auth"]);
    assert_scrubbed(&out, stack.github_token());
    assert_upstream_saw(&stack, stack.github_token(), 1);
}
