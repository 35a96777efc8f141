//! Errors Axtary makes on the way upstream (SPEC 4 table): a missing credential, an
//! unreachable or untrusted upstream, and a slow one. Each answers with `x-axtary-error` and
//! the JSON error body, and a credential is never sent to a server whose certificate does not
//! verify for the real host name.

mod common;

use std::time::{Duration, Instant};

use common::{assert_axtary_error, closed_port, Stack, GITHUB_ENV, LINEAR_ENV};

#[test]
fn unset_token_env_is_credential_unavailable_naming_the_variable() {
    let stack = Stack::builder().without_token("github").start();
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 502, "credential_unavailable");
    let body = out.json();
    assert_eq!(body["error"]["connector"], "github", "{}", out.describe());
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(GITHUB_ENV),
        "message should name {GITHUB_ENV}: {message}"
    );
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );

    // Other connectors keep working.
    stack
        .curl(["-X", "POST", "https://slack.com/api/auth.test"])
        .assert_status(200);
}

#[test]
fn unset_linear_key_via_gateway_is_credential_unavailable() {
    let stack = Stack::builder().without_token("linear").start();
    let url = stack.proxy.url("/linear/graphql");
    let out = common::curl(["--data", r#"{"query":"{ viewer { id } }"}"#, url.as_str()]);
    assert_axtary_error(&out, 502, "credential_unavailable");
    assert_eq!(out.json()["error"]["connector"], "linear");
    let message = out.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains(LINEAR_ENV), "{message}");
    assert!(stack.mock.seen().is_empty());
}

#[test]
fn closed_upstream_port_is_upstream_unreachable() {
    let port = closed_port();
    let stack = Stack::builder()
        .config(move |c| c.resolve("api.github.com:443", &format!("127.0.0.1:{port}")))
        .start();
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 502, "upstream_unreachable");
    assert_eq!(out.json()["error"]["connector"], "github");
}

#[test]
fn untrusted_upstream_certificate_is_upstream_unreachable() {
    // Without `upstream.caFile` the mock's certificate chains to nothing the proxy trusts.
    let stack = Stack::builder().config(|c| c.without_ca_file()).start();
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 502, "upstream_unreachable");
    assert!(
        stack.mock.seen().is_empty(),
        "a request was sent over unverified TLS"
    );
}

#[test]
fn upstream_certificate_for_another_name_is_upstream_unreachable() {
    // Trusted CA, wrong name: verification must check the real host name.
    let stack = Stack::builder().mock_names(&["not-github.test"]).start();
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 502, "upstream_unreachable");
    assert!(
        stack.mock.seen().is_empty(),
        "a request was sent to a mis-named server"
    );
}

#[test]
fn slow_upstream_is_upstream_timeout() {
    let stack = Stack::builder().config(|c| c.timeout_secs(Some(1))).start();
    let started = Instant::now();
    let out = stack.curl(["https://api.github.com/slow/3000"]);
    let took = started.elapsed();
    assert_axtary_error(&out, 504, "upstream_timeout");
    assert!(
        took < Duration::from_millis(2900),
        "answered after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
}
