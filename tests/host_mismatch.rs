//! Inside an intercepted tunnel every request must be for the CONNECT host (SPEC 4): a
//! different Host, `:authority` or absolute-form target is refused with `421 host_mismatch`,
//! and nothing reaches any upstream, so a token can never be aimed at another host.

mod common;

use common::{assert_axtary_error, Stack};

#[test]
fn host_header_differing_from_connect_host_is_421_over_http1() {
    let stack = Stack::start();
    let out = stack.curl([
        "--http1.1",
        "-H",
        "Host: slack.com",
        "https://api.github.com/user",
    ]);
    assert_axtary_error(&out, 421, "host_mismatch");
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );
}

#[test]
fn authority_differing_from_connect_host_is_421_over_http2() {
    let stack = Stack::start();
    let out = stack.curl([
        "--http2",
        "-H",
        "Host: slack.com",
        "https://api.github.com/user",
    ]);
    assert_eq!(out.http_version, "2", "{}", out.describe());
    assert_axtary_error(&out, 421, "host_mismatch");
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );
}

#[test]
fn absolute_form_with_other_authority_inside_tunnel_is_421() {
    let stack = Stack::start();
    let out = stack.curl([
        "--http1.1",
        "--request-target",
        "https://slack.com/api/auth.test",
        "https://api.github.com/user",
    ]);
    assert_axtary_error(&out, 421, "host_mismatch");
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );
}

#[test]
fn mismatch_on_one_request_does_not_poison_the_tunnel_host() {
    let stack = Stack::start();
    let out = stack.curl([
        "--http1.1",
        "-H",
        "Host: api.linear.app",
        "https://api.github.com/",
    ]);
    assert_axtary_error(&out, 421, "host_mismatch");
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host.as_deref(), Some("api.github.com"));
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}
