//! Gateway mode (SPEC 4): a plain `http://PROXY/<connector>/<path>` request, for SDKs with a
//! base-URL setting and no CA, goes to the connector's first host with injection; and
//! `GET /healthz` answers 200.

mod common;

use common::{curl, Stack};

#[test]
fn gateway_path_goes_upstream_with_injected_token() {
    let stack = Stack::start();
    let out = curl([stack.proxy.url("/github/rate_limit")]);
    out.assert_status(200);
    assert_eq!(out.header("x-axtary-connector"), Some("github"));
    assert!(
        out.json()["resources"]["core"].is_object(),
        "{}",
        out.describe()
    );
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/rate_limit");
    assert_eq!(seen[0].sni.as_deref(), Some("api.github.com"));
    assert_eq!(seen[0].host.as_deref(), Some("api.github.com"));
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[test]
fn gateway_keeps_method_body_and_query_string() {
    let stack = Stack::start();
    let out = curl([
        "-X".to_string(),
        "PUT".to_string(),
        "--data".to_string(),
        "hello".to_string(),
        stack.proxy.url("/github/search/issues?q=is%3Aopen&page=2"),
    ]);
    out.assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/search/issues?q=is%3Aopen&page=2");
    assert_eq!(seen[0].body_len, 5);
}

#[test]
fn gateway_serves_slack_and_linear_in_their_formats() {
    let stack = Stack::start();
    curl([
        "-X".to_string(),
        "POST".to_string(),
        stack.proxy.url("/slack/api/auth.test"),
    ])
    .assert_status(200);
    curl([
        "--data".to_string(),
        r#"{"query":"{ viewer { id } }"}"#.to_string(),
        stack.proxy.url("/linear/graphql"),
    ])
    .assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/api/auth.test");
    assert_eq!(seen[0].sni.as_deref(), Some("slack.com"));
    let slack = format!("Bearer {}", stack.slack_token());
    assert_eq!(seen[0].header("authorization"), Some(slack.as_str()));
    assert_eq!(seen[1].path, "/graphql");
    assert_eq!(seen[1].sni.as_deref(), Some("api.linear.app"));
    assert_eq!(seen[1].header("authorization"), Some(stack.linear_token()));
}

#[test]
fn gateway_replaces_client_authorization() {
    let stack = Stack::start();
    curl([
        "-H".to_string(),
        "Authorization: Bearer placeholder".to_string(),
        stack.proxy.url("/github/user"),
    ])
    .assert_status(200);
    let seen = stack.mock.seen();
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
    assert!(!seen[0].headers_text().contains("placeholder"));
}

#[test]
fn healthz_answers_200() {
    let stack = Stack::start();
    let out = curl([stack.proxy.url("/healthz")]);
    out.assert_status(200);
    assert!(stack.mock.seen().is_empty());
}
