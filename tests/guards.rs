//! Per-connector guards (SPEC 7): deny and allow rules with `*` and `**`, `writes: deny` and
//! `dry-run`, GraphQL queries counted as reads and mutations as writes, the local rate limit,
//! and a spent upstream quota answered locally. A refused request never reaches the upstream.

mod common;

use common::{assert_axtary_error, CurlOutput, Stack};

fn retry_after_secs(out: &CurlOutput) -> u64 {
    out.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("Retry-After in whole seconds expected\n{}", out.describe()))
}

#[test]
fn deny_rule_refuses_with_policy_denied() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", r#"deny: ["DELETE /**"]"#))
        .start();
    let out = stack.curl(["-X", "DELETE", "https://api.github.com/repos/acme/web"]);
    assert_axtary_error(&out, 403, "policy_denied");
    assert_eq!(out.json()["error"]["connector"], "github");
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );

    // Other methods, and other connectors, are unaffected.
    stack
        .curl(["https://api.github.com/repos/acme/web"])
        .assert_status(200);
    stack
        .curl(["-X", "DELETE", "https://slack.com/api/x"])
        .assert_status(200);
    assert_eq!(
        stack.mock.seen_lines(),
        ["GET /repos/acme/web", "DELETE /api/x"]
    );
}

#[test]
fn deny_rule_applies_to_gateway_requests() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", r#"deny: ["DELETE /**"]"#))
        .start();
    let url = stack.proxy.url("/github/repos/acme/web");
    let out = common::curl(["-X", "DELETE", url.as_str()]);
    assert_axtary_error(&out, 403, "policy_denied");
    assert!(stack.mock.seen().is_empty());
}

#[test]
fn allow_list_refuses_unlisted_requests() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", r#"allow: ["GET /repos/acme/**"]"#))
        .start();
    stack
        .curl(["https://api.github.com/repos/acme/web/issues"])
        .assert_status(200);
    let out = stack.curl(["https://api.github.com/repos/other/web"]);
    assert_axtary_error(&out, 403, "policy_denied");
    let out = stack.curl(["-X", "POST", "https://api.github.com/repos/acme/web/issues"]);
    assert_axtary_error(&out, 403, "policy_denied");
    assert_eq!(stack.mock.seen_lines(), ["GET /repos/acme/web/issues"]);
}

#[test]
fn single_star_matches_exactly_one_segment() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", r#"allow: ["POST /repos/acme/*/pulls/*/reviews"]"#))
        .start();
    stack
        .curl([
            "-X",
            "POST",
            "https://api.github.com/repos/acme/web/pulls/7/reviews",
        ])
        .assert_status(200);
    let out = stack.curl([
        "-X",
        "POST",
        "https://api.github.com/repos/acme/web/extra/pulls/7/reviews",
    ]);
    assert_axtary_error(&out, 403, "policy_denied");
    let out = stack.curl([
        "-X",
        "POST",
        "https://api.github.com/repos/acme/web/pulls/7",
    ]);
    assert_axtary_error(&out, 403, "policy_denied");
    assert_eq!(
        stack.mock.seen_lines(),
        ["POST /repos/acme/web/pulls/7/reviews"]
    );
}

#[test]
fn writes_deny_refuses_writes_and_allows_reads() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", "writes: deny"))
        .start();
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    stack
        .curl(["-I", "https://api.github.com/user"])
        .assert_status(200);
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let out = stack.curl(["-X", method, "https://api.github.com/repos/acme/web"]);
        assert_axtary_error(&out, 403, "policy_denied");
    }
    assert_eq!(stack.mock.seen_lines(), ["GET /user", "HEAD /user"]);
}

#[test]
fn dry_run_write_is_answered_locally_and_never_sent() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", "writes: dry-run"))
        .start();
    // HTTP/1.1: a local answer to an HTTP/2 request with a body is guarded in http2.rs.
    let out = stack.curl([
        "--http1.1",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"title":"dry"}"#,
        "https://api.github.com/repos/acme/web/issues",
    ]);
    assert_eq!(out.exit, 0, "{}", out.describe());
    assert!((200..300).contains(&out.status), "{}", out.describe());
    let body = out.json();
    assert!(body.is_object(), "{}", out.describe());
    assert!(
        out.body_text().to_ascii_lowercase().contains("dry"),
        "the answer should say it was a dry run\n{}",
        out.describe()
    );
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );

    // Reads still go upstream.
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    assert_eq!(stack.mock.seen_lines(), ["GET /user"]);
}

#[test]
fn graphql_query_is_a_read_and_mutation_is_a_write() {
    let stack = Stack::builder()
        .config(|c| {
            c.connector_yaml("linear", "writes: deny")
                .connector_yaml("github", "writes: deny")
        })
        .start();
    for url in [
        "https://api.linear.app/graphql",
        "https://api.github.com/graphql",
    ] {
        let out = stack.curl([
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"query":"query Me { viewer { id name } }"}"#,
            url,
        ]);
        out.assert_status(200);
        let out = stack.curl([
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"query":"mutation { issueCreate(input: {title: \"x\"}) { success } }"}"#,
            url,
        ]);
        assert_axtary_error(&out, 403, "policy_denied");
    }
    assert_eq!(stack.mock.seen_lines(), ["POST /graphql", "POST /graphql"]);
}

#[test]
fn local_rate_limit_answers_429_with_retry_after() {
    let stack = Stack::builder()
        .config(|c| c.connector_yaml("github", "rateLimit: { perMinute: 60, burst: 2 }"))
        .start();
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 429, "rate_limited");
    assert!(retry_after_secs(&out) >= 1, "{}", out.describe());
    assert_eq!(stack.mock.seen().len(), 2);

    // The limit is per connector.
    stack
        .curl(["-X", "POST", "https://slack.com/api/auth.test"])
        .assert_status(200);
}

#[test]
fn spent_upstream_quota_is_answered_locally_until_reset() {
    let stack = Stack::start();
    // The upstream answers normally but says the quota is spent.
    stack
        .curl(["https://api.github.com/ratelimit-spent"])
        .assert_status(200);
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 429, "rate_limited");
    assert!(retry_after_secs(&out) >= 1, "{}", out.describe());
    assert_eq!(stack.mock.seen_lines(), ["GET /ratelimit-spent"]);
}

#[test]
fn upstream_429_with_retry_after_is_answered_locally_afterwards() {
    let stack = Stack::start();
    let out = stack.curl(["https://api.github.com/status/429?retry-after=30"]);
    assert_eq!(out.status, 429, "{}", out.describe());
    let out = stack.curl(["https://api.github.com/user"]);
    assert_axtary_error(&out, 429, "rate_limited");
    let secs = retry_after_secs(&out);
    assert!((1..=30).contains(&secs), "{}", out.describe());
    assert_eq!(stack.mock.seen_lines(), ["GET /status/429?retry-after=30"]);
}
