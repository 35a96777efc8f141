//! Refreshing a stored OAuth token when it is expired (or within 60 s of expiry): once for
//! many concurrent requests, once across two proxies sharing `AXTARY_HOME`, the rotated pair
//! persisted, and the env var used when the refresh fails or cannot happen.
//!
//! The mock rotates refresh tokens and refuses a used one, so a second refresh anywhere would
//! show up as a rejection (and lose the connection, as it would with Linear or Slack).

mod common;

use std::time::Duration;

use common::oauth::OauthStack;
use common::{canary_linear, Proxy, LINEAR_ENV};

const QUERY: &str = "{\"query\":\"{ viewer { id } }\"}";

/// A stack whose connected Linear token expires in 30 s: inside the 60 s margin, so the
/// first proxied request must refresh it.
fn connected_expiring() -> OauthStack {
    let stack = OauthStack::start();
    stack.mock.set(|k| {
        k.code_expires_in = Some(30);
        k.refresh_delay = Duration::from_millis(400);
    });
    stack.connect_linear().assert_code(0);
    assert_eq!(stack.mock.issued().len(), 1);
    stack
}

/// The proxy's stdout once it holds `needle` (start-up lines follow the address line).
fn wait_for_line(proxy: &Proxy, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !proxy.stdout().contains(needle) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.stdout()
}

fn hammer(proxies: &[&Proxy], per_proxy: usize) -> Vec<u16> {
    std::thread::scope(|s| {
        let handles: Vec<_> = proxies
            .iter()
            .flat_map(|p| std::iter::repeat_n(*p, per_proxy))
            .map(|p| {
                s.spawn(move || {
                    p.curl(["-s", "https://api.linear.app/graphql", "-d", QUERY])
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn twenty_concurrent_requests_on_an_expired_token_cause_one_refresh() {
    let stack = connected_expiring();
    let old = stack.mock.issued()[0].clone();
    let proxy = stack.proxy().rust_log("trace").start();
    assert!(
        wait_for_line(&proxy, "connector linear:").contains("connector linear: ready (broker)"),
        "{}",
        proxy.stdout()
    );
    let statuses = hammer(&[&proxy], 20);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        proxy.describe()
    );
    assert_eq!(stack.mock.refreshes(), 1, "exactly one refresh");
    assert_eq!(
        stack.mock.refresh_rejections(),
        0,
        "no refresh token was reused"
    );
    let fresh = stack.mock.issued()[1].clone();
    let api = stack.mock.api_requests();
    assert_eq!(api.len(), 20);
    for r in &api {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {fresh}").as_str())
        );
    }
    // The rotated pair was persisted: the file holds the new tokens, not the old ones.
    let text = stack.credentials_text();
    assert!(text.contains(&fresh));
    assert!(!text.contains(&old));
    let live: Vec<String> = stack.mock.refresh_tokens();
    let stored = stack.credentials()["connections"]["linear"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(live.contains(&stored));
    // Neither token reached the proxy's output.
    for t in [&old, &fresh, &stored] {
        assert!(!proxy.stdout().contains(t.as_str()));
        assert!(!proxy.stderr().contains(t.as_str()));
    }
}

#[test]
fn two_proxies_sharing_a_home_refresh_once() {
    let stack = connected_expiring();
    let a = stack.proxy().start();
    let b = stack.proxy().start();
    let statuses = hammer(&[&a, &b], 8);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}\n{}",
        a.describe(),
        b.describe()
    );
    assert_eq!(
        stack.mock.refreshes(),
        1,
        "one refresh across both processes"
    );
    assert_eq!(stack.mock.refresh_rejections(), 0);
    let fresh = stack.mock.issued()[1].clone();
    for r in stack.mock.api_requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {fresh}").as_str())
        );
    }
}

#[test]
fn failed_refresh_falls_back_to_the_env_var() {
    let stack = connected_expiring();
    let env_key = canary_linear();
    // A wrong client secret: the provider refuses the refresh (invalid_client).
    let proxy = stack
        .home
        .proxy(&stack.config)
        .env("AXTARY_LINEAR_CLIENT_ID", stack.mock.client_id())
        .env("AXTARY_LINEAR_CLIENT_SECRET", "not-the-secret")
        .env(LINEAR_ENV, &env_key)
        .start();
    let out = proxy.curl(["-s", "https://api.linear.app/graphql", "-d", QUERY]);
    assert_eq!(out.status, 200, "{}", out.describe());
    assert_eq!(stack.mock.refreshes(), 0);
    let seen = stack.mock.api_requests();
    assert_eq!(
        seen.last().and_then(|r| r.authorization.clone()),
        Some(env_key.clone())
    );
    assert!(!proxy.stderr().contains(&env_key));
}

#[test]
fn no_way_to_refresh_and_no_env_var_is_credential_unavailable() {
    let stack = connected_expiring();
    // No client id or secret in the proxy's environment, and no LINEAR env var.
    let proxy = stack.home.proxy(&stack.config).start();
    let out = proxy.curl(["-s", "https://api.linear.app/graphql", "-d", QUERY]);
    common::assert_axtary_error(&out, 502, "credential_unavailable");
    let msg = out.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("AXTARY_LINEAR_CLIENT_ID"), "{msg}");
    assert!(msg.contains("axtary connect linear"), "{msg}");
    assert!(msg.contains(LINEAR_ENV), "{msg}");
    assert_eq!(stack.mock.refreshes(), 0);
    assert!(
        stack.mock.api_requests().is_empty(),
        "nothing may be sent upstream"
    );
}

#[test]
fn expired_token_without_refresh_token_uses_the_env_var() {
    let stack = OauthStack::start();
    let expired = common::random_alnum(40);
    let doc = serde_json::json!({
        "version": 1,
        "connections": {"linear": {
            "provider": "linear", "source": "manual", "scopes": [],
            "createdAt": "2025-01-01T00:00:00Z", "expiresAt": "2025-01-02T00:00:00Z",
            "storage": "file", "accessToken": format!("lin_oauth_{expired}"),
        }}
    });
    let path = stack.home.path().join("credentials.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let env_key = canary_linear();
    let proxy = stack
        .home
        .proxy(&stack.config)
        .env(LINEAR_ENV, &env_key)
        .start();
    assert!(
        wait_for_line(&proxy, "connector linear:").contains("connector linear: ready (env)"),
        "{}",
        proxy.stdout()
    );
    let out = proxy.curl(["-s", "https://api.linear.app/graphql", "-d", QUERY]);
    assert_eq!(out.status, 200, "{}", out.describe());
    assert_eq!(
        stack
            .mock
            .api_requests()
            .last()
            .and_then(|r| r.authorization.clone()),
        Some(env_key)
    );
    assert_eq!(stack.mock.token_calls().len(), 0, "nothing to refresh with");
}
