//! GitHub App mode end to end: the proxy signs JWTs with the app's key, finds installations,
//! mints, caches and narrows installation tokens against a mock GitHub on loopback TLS, and
//! injects them into agents' requests (curl and the real `gh` CLI).

mod common;

use std::time::{Duration, Instant};

use common::github_app::{
    app_key, AppStack, KeyForm, MintReply, APP_ID_ENV, CLIENT_ID_ENV, INSTALLATION_ID_ENV,
};

fn installation_of(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("installation")?
        .as_u64()
}

#[test]
fn fifty_concurrent_first_requests_cause_one_lookup_and_one_mint() {
    let stack = AppStack::builder().start();
    let results = stack.get_parallel("/repos/acme/widgets", 50);
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}\n{}", stack.proxy.describe());
        assert_eq!(installation_of(body), Some(101), "{body}");
    }
    assert_eq!(stack.mock.mints(), 1, "exactly one mint");
    assert_eq!(stack.mock.mint_attempts(), 1);
    assert_eq!(stack.mock.lookups(), vec!["acme".to_string()]);
    assert!(
        stack.mock.jwt_problems().is_empty(),
        "{:?}",
        stack.mock.jwt_problems()
    );
    // The agent's placeholder never went upstream; the minted token did.
    let api = stack.mock.api_requests();
    assert_eq!(api.len(), 50);
    assert!(api.iter().all(|r| r.installation == Some(101)));
    assert!(api.iter().all(|r| !r
        .authorization
        .as_deref()
        .unwrap_or("")
        .contains("placeholder")));
}

#[test]
fn token_close_to_expiry_is_reminted_once() {
    // The first token expires 5 min + 4 s after minting: usable for 3 to 4 s (whole seconds).
    let stack = AppStack::builder()
        .mock(|m| m.script(&[MintReply::Created(Duration::from_secs(304))]))
        .start();
    let first = Instant::now();
    stack.get("/repos/acme/widgets").assert_status(200);
    // The token was minted between `first` and now, so it is due by `minted` + 4 s.
    let minted = Instant::now();
    stack.get("/repos/acme/widgets").assert_status(200);
    assert!(
        first.elapsed() < Duration::from_millis(2500),
        "the test host is too slow"
    );
    assert_eq!(
        stack.mock.mints(),
        1,
        "reused while outside the 5 min margin"
    );

    std::thread::sleep(Duration::from_millis(4300).saturating_sub(minted.elapsed()));
    for (status, body) in stack.get_parallel("/repos/acme/widgets/issues", 10) {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        stack.mock.mints(),
        2,
        "re-minted once for ten concurrent requests"
    );
    stack.get("/repos/acme/widgets").assert_status(200);
    assert_eq!(stack.mock.mints(), 2, "the new token lasts an hour");
    // Both tokens were used, each for its own requests.
    let tokens: std::collections::HashSet<String> = stack
        .mock
        .api_requests()
        .iter()
        .filter_map(|r| r.authorization.clone())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        stack.mock.lookups().len(),
        1,
        "the owner's installation stays cached"
    );
}

#[test]
fn two_owners_get_their_own_tokens_on_their_own_requests() {
    let stack = AppStack::builder().key(KeyForm::Pkcs8File).start();
    for path in [
        "/repos/acme/widgets",
        "/repos/globex/gadgets",
        "/repos/Acme/sprockets/pulls",
        "/repos/globex/gadgets/issues/1",
    ] {
        let out = stack.get(path);
        out.assert_status(200);
        let want = if path.to_ascii_lowercase().contains("acme") {
            101
        } else {
            202
        };
        assert_eq!(installation_of(&out.body_text()), Some(want), "{path}");
        assert_eq!(out.header("x-axtary-connector"), Some("github"));
    }
    assert_eq!(stack.mock.mints_for(101), 1);
    assert_eq!(stack.mock.mints_for(202), 1);
    assert_eq!(stack.mock.lookups(), vec!["acme", "globex"]);
    let api = stack.mock.api_requests();
    let token_of = |inst: u64| {
        api.iter()
            .filter(|r| r.installation == Some(inst))
            .filter_map(|r| r.authorization.clone())
            .collect::<std::collections::HashSet<_>>()
    };
    assert_eq!(token_of(101).len(), 1);
    assert_eq!(token_of(202).len(), 1);
    assert!(token_of(101).is_disjoint(&token_of(202)));
    // The ledger names the source, never the token.
    let ledger = String::from_utf8_lossy(&stack.home.ledger_bytes()).into_owned();
    assert!(
        ledger.contains("\"credentialSource\":\"github-app\""),
        "{ledger}"
    );
    for token in stack.mock.tokens() {
        assert!(!ledger.contains(&token));
    }
}

#[test]
fn narrowed_token_request_carries_repositories_and_permissions() {
    let stack = AppStack::builder()
        .connector_yaml(
            "repositories: [widgets, gadgets]\npermissions:\n  contents: read\n  issues: write\n",
        )
        .env(CLIENT_ID_ENV, "Iv23liExampleClient")
        .mock(|m| m.issuer("Iv23liExampleClient"))
        .start();
    stack.get("/repos/acme/widgets").assert_status(200);
    assert_eq!(
        stack.mock.mint_bodies(),
        vec![serde_json::json!({
            "repositories": ["widgets", "gadgets"],
            "permissions": {"contents": "read", "issues": "write"},
        })]
    );
    assert!(
        stack.mock.jwt_problems().is_empty(),
        "client id is the issuer"
    );
}

#[test]
fn mint_500_then_201_succeeds_after_a_retry() {
    let stack = AppStack::builder()
        .mock(|m| {
            m.script(&[MintReply::Status(
                500,
                serde_json::json!({"message": "Server Error"}),
            )])
        })
        .start();
    let out = stack.get("/repos/acme/widgets");
    out.assert_status(200);
    assert_eq!(installation_of(&out.body_text()), Some(101));
    assert_eq!(stack.mock.mint_attempts(), 2);
    assert_eq!(stack.mock.mints(), 1);
}

#[test]
fn mint_failing_with_5xx_every_time_gives_up_after_bounded_retries() {
    let err = MintReply::Status(503, serde_json::json!({"message": "Service Unavailable"}));
    let stack = AppStack::builder()
        .mock(move |m| m.script(&vec![err; 10]))
        .start();
    let started = Instant::now();
    let out = stack.get("/repos/acme/widgets");
    out.assert_status(502);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.header("x-axtary-error"), Some("credential_unavailable"));
    assert_eq!(stack.mock.mint_attempts(), 4);
    assert!(out.body_text().contains("503"), "{}", out.body_text());
}

#[test]
fn mint_401_gives_credential_unavailable_with_no_jwt_in_body_logs_or_ledger() {
    let refusal = MintReply::Status(
        401,
        serde_json::json!({
            "message": "A JSON web token could not be decoded",
            "documentation_url": "https://docs.github.com/rest",
        }),
    );
    let mut stack = AppStack::builder()
        .rust_log("trace")
        .mock(move |m| m.script(&[refusal]))
        .start();
    let out = stack.get("/repos/acme/widgets");
    assert_eq!(out.status, 502, "{}", out.describe());
    assert_eq!(out.header("x-axtary-error"), Some("credential_unavailable"));
    let body = out.json();
    assert_eq!(body["error"]["code"], "credential_unavailable");
    assert_eq!(body["error"]["connector"], "github");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("A JSON web token could not be decoded"),
        "{message}"
    );
    assert!(
        message.contains(APP_ID_ENV),
        "says what to check: {message}"
    );
    assert_eq!(stack.mock.mint_attempts(), 1, "a 4xx is not retried");
    assert!(
        stack.mock.api_requests().is_empty(),
        "nothing was forwarded"
    );

    stack.proxy.stop();
    let jwts = stack.mock.jwts();
    assert!(!jwts.is_empty());
    let places = [
        ("response body", out.body_text()),
        ("response headers", out.head_raw.clone()),
        ("proxy stdout", stack.proxy.stdout()),
        ("proxy stderr", stack.proxy.stderr()),
        (
            "ledger",
            String::from_utf8_lossy(&stack.home.ledger_bytes()).into_owned(),
        ),
    ];
    assert!(stack.proxy.stderr().contains("TRACE"), "ran at trace level");
    let key_line = app_key()
        .pkcs1
        .lines()
        .nth(3)
        .expect("a line of the key")
        .to_string();
    for (place, text) in &places {
        for jwt in &jwts {
            assert!(
                !text.contains(jwt.as_str()),
                "a JWT leaked into the {place}"
            );
            // Its signature alone would be enough to replay it.
            let sig = jwt.rsplit('.').next().unwrap_or_default();
            assert!(
                !text.contains(sig),
                "a JWT signature leaked into the {place}"
            );
        }
        assert!(
            !text.contains("eyJhbGciOiJSUzI1NiI"),
            "a JWT header in the {place}"
        );
        assert!(
            !text.contains(&key_line),
            "the private key leaked into the {place}"
        );
    }
}

#[test]
fn the_real_gh_cli_gets_its_response_through_the_proxy() {
    let stack = AppStack::builder().start();
    let out = stack.gh(&["api", "/repos/acme/widgets"]);
    out.assert_code(0);
    let body: serde_json::Value = serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("gh printed no JSON ({e}): {}", out.stdout()));
    assert_eq!(body["full_name"], "acme/widgets");
    assert_eq!(body["installation"], 101);
    assert_eq!(stack.mock.mints(), 1);
    let api = stack.mock.api_requests();
    assert_eq!(api.len(), 1, "{api:?}");
    assert!(!api[0]
        .authorization
        .as_deref()
        .unwrap_or("")
        .contains("placeholder"));
}

#[test]
fn non_repository_paths_use_the_only_installation() {
    let stack = AppStack::builder()
        .mock(|m| m.installations(&[(303, "initech")]))
        .start();
    let out = stack.get("/rate_limit");
    out.assert_status(200);
    assert_eq!(installation_of(&out.body_text()), Some(303));
    stack.get("/graphql").assert_status(200);
    assert_eq!(
        stack.mock.list_calls(),
        1,
        "the sole installation is cached"
    );
    assert_eq!(stack.mock.mints(), 1);
}

#[test]
fn several_installations_and_no_repository_asks_for_the_installation_id() {
    let stack = AppStack::builder().start();
    let out = stack.get("/rate_limit");
    out.assert_status(502);
    assert_eq!(out.header("x-axtary-error"), Some("credential_unavailable"));
    let message = out.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(INSTALLATION_ID_ENV), "{message}");
    assert_eq!(stack.mock.mints(), 0);
    // Repository requests still work: the owner picks the installation.
    stack.get("/repos/globex/gadgets").assert_status(200);
}

#[test]
fn installation_id_env_skips_discovery() {
    let stack = AppStack::builder().env(INSTALLATION_ID_ENV, "202").start();
    for path in ["/rate_limit", "/repos/acme/widgets"] {
        let out = stack.get(path);
        out.assert_status(200);
        assert_eq!(installation_of(&out.body_text()), Some(202), "{path}");
    }
    assert!(stack.mock.lookups().is_empty());
    assert_eq!(stack.mock.list_calls(), 0);
    assert_eq!(stack.mock.mints(), 1);
}

#[test]
fn owner_without_the_app_says_to_install_it() {
    let stack = AppStack::builder().start();
    let out = stack.get("/repos/initech/tps-reports");
    out.assert_status(502);
    let message = out.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("not installed on initech/tps-reports"),
        "{message}"
    );
    assert_eq!(stack.mock.mints(), 0);
}

#[test]
fn a_clock_twenty_minutes_off_is_corrected_from_githubs_date() {
    let stack = AppStack::builder()
        .mock(|m| m.clock_offset_secs(20 * 60))
        .start();
    let out = stack.get("/repos/acme/widgets");
    out.assert_status(200);
    assert_eq!(installation_of(&out.body_text()), Some(101));
    assert_eq!(
        stack.mock.jwt_problems().len(),
        1,
        "only the first JWT was off"
    );
    stack.get("/repos/acme/widgets").assert_status(200);
    assert_eq!(stack.mock.mints(), 1, "expiry judged on GitHub's clock");
}

#[test]
fn missing_app_settings_are_reported_at_start_and_on_requests() {
    let stack = AppStack::builder().without_env(APP_ID_ENV).start();
    let out = stack.get("/repos/acme/widgets");
    out.assert_status(502);
    let message = out.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(APP_ID_ENV), "{message}");
    assert!(stack.mock.jwts().is_empty());
}

#[test]
fn gateway_requests_pick_the_installation_from_the_inner_path() {
    let stack = AppStack::builder().start();
    let out = common::curl([stack.proxy.url("/github/repos/globex/gadgets/pulls")]);
    out.assert_status(200);
    assert_eq!(installation_of(&out.body_text()), Some(202));
    assert_eq!(stack.mock.lookups(), vec!["globex"]);
}
