//! `axtary connect`, `connections` and `disconnect` end to end against the mock OAuth
//! provider: the browser flow with PKCE and state, the stored metadata and its file modes, the
//! proxy injecting the stored token with no env var set, and every way the flow can fail
//! (each with its message, its exit code, and nothing stored).

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::oauth::{ConnectRun, OauthStack};
use common::{contains_bytes, RunOutput};

fn assert_nothing_stored(stack: &OauthStack) {
    let text = stack.credentials_text();
    assert!(
        text.is_empty() || !text.contains("accessToken"),
        "nothing may be stored, got:\n{text}"
    );
    for t in stack.mock.issued() {
        assert!(!text.contains(&t));
    }
}

fn assert_no_token_in(out: &RunOutput, stack: &OauthStack) {
    for t in stack
        .mock
        .issued()
        .iter()
        .chain(stack.mock.refresh_tokens().iter())
    {
        assert!(!contains_bytes(&out.stdout, t), "token on stdout");
        assert!(!contains_bytes(&out.stderr, t), "token on stderr");
    }
    assert!(!contains_bytes(&out.stdout, stack.mock.client_secret()));
    assert!(!contains_bytes(&out.stderr, stack.mock.client_secret()));
}

#[test]
fn connect_linear_then_the_proxy_injects_it_with_no_env_var() {
    let stack = OauthStack::start();
    let out = stack.connect_linear();
    out.assert_code(0);
    assert_eq!(stack.mock.code_exchanges(), 1);
    assert_eq!(stack.mock.pkce_failures(), 0);
    let token = stack.mock.issued()[0].clone();
    assert!(
        out.stdout().contains("connected linear"),
        "{}",
        out.stdout()
    );
    assert_no_token_in(&out, &stack);

    // credentials.json: 0600 in a 0700 home, metadata and (file store) the token.
    let path = stack.home.path().join("credentials.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let creds = stack.credentials();
    let entry = &creds["connections"]["linear"];
    assert_eq!(entry["provider"], "linear");
    assert_eq!(entry["source"], "oauth");
    assert_eq!(entry["storage"], "file");
    assert_eq!(entry["accessToken"], token.as_str());
    assert!(entry["expiresAt"].is_string());
    assert!(entry["createdAt"].is_string());

    // `connections --json`: metadata and storage, never the token.
    let list = stack.home.run(["connections", "--json"]);
    list.assert_code(0);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("one JSON document");
    let c = &v["connections"][0];
    assert_eq!(c["connector"], "linear");
    assert_eq!(c["storage"], "file");
    assert_eq!(c["scopes"], serde_json::json!(["read", "write"]));
    assert_eq!(c["expired"], false);
    assert_no_token_in(&list, &stack);
    let human = stack.home.run(["connections"]);
    human.assert_code(0);
    assert!(human.stdout().contains("linear"), "{}", human.stdout());
    assert_no_token_in(&human, &stack);

    // The proxy, with no LINEAR env var, injects the stored token.
    let proxy = stack.proxy().start();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.stdout().contains("connector linear:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        proxy.stdout().contains("connector linear: ready (broker)"),
        "{}",
        proxy.stdout()
    );
    let resp = proxy.curl([
        "-s",
        "https://api.linear.app/graphql",
        "-d",
        "{\"query\":\"{ viewer { id } }\"}",
    ]);
    assert_eq!(resp.status, 200, "{}", resp.describe());
    assert!(
        !resp.body_text().contains(&token),
        "echoed token must be scrubbed"
    );
    let api = stack.mock.api_requests();
    let seen = api.last().expect("the API call reached the mock");
    assert_eq!(seen.host, "api.linear.app");
    assert_eq!(
        seen.authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(stack.mock.refreshes(), 0);
    drop(proxy);

    // disconnect removes it; a second disconnect has nothing to remove.
    let gone = stack.home.run(["disconnect", "linear"]);
    gone.assert_code(0);
    assert!(!stack.credentials_text().contains(&token));
    assert!(stack.credentials()["connections"]["linear"].is_null());
    let again = stack.home.run([
        "disconnect",
        "linear",
        "--config",
        stack.config.to_str().unwrap(),
    ]);
    again.assert_code(1);
    assert!(
        again.stderr().contains("not connected"),
        "{}",
        again.stderr()
    );
}

#[test]
fn wrong_state_is_refused_and_nothing_is_stored() {
    let stack = OauthStack::start();
    stack.mock.set(|k| k.wrong_state = true);
    let mut run = ConnectRun::start(stack.connect_command("linear", &[]));
    let url = run.authorize_url();
    let page = stack.browser().authorize(&url, true);
    assert_eq!(page.status, 400, "{}", page.body);
    let out = run.finish();
    out.assert_code(1);
    assert!(
        out.stderr().contains("`state` does not match"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stderr().contains("nothing was stored"),
        "{}",
        out.stderr()
    );
    assert_eq!(
        stack.mock.code_exchanges(),
        0,
        "the code must not be exchanged"
    );
    assert_nothing_stored(&stack);
}

#[test]
fn provider_error_parameter_is_refused_and_nothing_is_stored() {
    let stack = OauthStack::start();
    let mut run = ConnectRun::start(stack.connect_command("linear", &[]));
    let url = run.authorize_url();
    let page = stack.browser().authorize(&url, false);
    assert_eq!(page.status, 400);
    assert!(page.body.contains("access_denied"), "{}", page.body);
    let out = run.finish();
    out.assert_code(1);
    assert!(out.stderr().contains("access_denied"), "{}", out.stderr());
    assert_nothing_stored(&stack);
}

#[test]
fn token_endpoint_error_is_reported_and_nothing_is_stored() {
    let stack = OauthStack::start();
    stack
        .mock
        .set(|k| k.token_error = Some("invalid_grant".to_string()));
    let mut run = ConnectRun::start(stack.connect_command("linear", &[]));
    let url = run.authorize_url();
    let page = stack.browser().authorize(&url, true);
    assert_eq!(page.status, 400);
    let out = run.finish();
    out.assert_code(1);
    assert!(
        out.stderr().contains("linear refused: invalid_grant"),
        "{}",
        out.stderr()
    );
    assert_nothing_stored(&stack);
    assert_no_token_in(&out, &stack);
}

#[test]
fn timeout_exits_1_and_stores_nothing() {
    let stack = OauthStack::start();
    let started = Instant::now();
    let out = common::run_bounded(
        stack.connect_command("linear", &["--timeout-secs", "1"]),
        Duration::from_secs(20),
    );
    out.assert_code(1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        out.stderr().contains("no redirect arrived within 1 s"),
        "{}",
        out.stderr()
    );
    // The URL is always printed, browser or not.
    assert!(
        out.stderr().contains("https://linear.app/oauth/authorize?"),
        "{}",
        out.stderr()
    );
    assert_nothing_stored(&stack);
}

#[test]
fn busy_redirect_port_exits_2_before_anything_else() {
    let stack = OauthStack::start();
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let out = common::run_bounded(
        stack.connect_command("linear", &["--redirect-port", &port]),
        Duration::from_secs(20),
    );
    out.assert_code(2);
    assert!(
        out.stderr()
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("--redirect-port"), "{}", out.stderr());
    assert!(
        !out.stderr().contains("https://linear.app/oauth/authorize"),
        "no URL before binding"
    );
    assert_nothing_stored(&stack);
}

#[test]
fn missing_client_id_or_secret_exits_2_naming_the_variable() {
    let stack = OauthStack::start();
    let mut cmd = stack
        .home
        .command(["connect", "linear", "--no-browser", "--config"]);
    cmd.arg(&stack.config);
    let out = common::run_bounded(cmd, Duration::from_secs(20));
    out.assert_code(2);
    assert!(
        out.stderr().contains("AXTARY_LINEAR_CLIENT_ID"),
        "{}",
        out.stderr()
    );

    let mut cmd = stack
        .home
        .command(["connect", "linear", "--no-browser", "--config"]);
    cmd.arg(&stack.config)
        .env("AXTARY_LINEAR_CLIENT_ID", "some-id");
    let out = common::run_bounded(cmd, Duration::from_secs(20));
    out.assert_code(2);
    assert!(
        out.stderr().contains("AXTARY_LINEAR_CLIENT_SECRET"),
        "{}",
        out.stderr()
    );

    let mut cmd = stack.home.command([
        "connect",
        "linear",
        "--no-browser",
        "--client-id-env",
        "MY_LINEAR_ID",
        "--client-secret-env",
        "MY_LINEAR_SECRET",
        "--config",
    ]);
    cmd.arg(&stack.config).env("MY_LINEAR_ID", "x");
    let out = common::run_bounded(cmd, Duration::from_secs(20));
    out.assert_code(2);
    assert!(
        out.stderr().contains("MY_LINEAR_SECRET"),
        "{}",
        out.stderr()
    );

    for (provider, msg) in [
        ("github", "no `connect github`"),
        ("jira", "not a provider"),
    ] {
        let mut cmd = stack.home.command(["connect", provider, "--config"]);
        cmd.arg(&stack.config);
        let out = common::run_bounded(cmd, Duration::from_secs(20));
        out.assert_code(2);
        assert!(out.stderr().contains(msg), "{}", out.stderr());
    }
    assert_nothing_stored(&stack);
}

#[test]
fn slack_without_https_redirect_fails_fast_with_both_options() {
    let stack = OauthStack::start();
    // The default port is held: if connect bound anything first it would complain about it.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    for extra in [
        vec![],
        vec!["--redirect-uri", "http://127.0.0.1:7878/callback"],
    ] {
        let mut args = vec!["--redirect-port", port.as_str()];
        args.extend(extra);
        let out = common::run_bounded(
            stack.connect_command("slack", &args),
            Duration::from_secs(20),
        );
        out.assert_code(2);
        let err = out.stderr();
        assert!(err.contains("--redirect-uri https://"), "{err}");
        assert!(err.contains("tunnel"), "{err}");
        assert!(err.contains("AXTARY_SLACK_BOT_TOKEN"), "{err}");
        assert!(!err.contains("cannot listen"), "{err}");
        assert!(!err.contains("oauth/v2/authorize"), "{err}");
    }
    assert_nothing_stored(&stack);
}

/// Plays an https tunnel: the provider redirects to https://tunnel/callback?..., which the
/// tunnel forwards to the loopback listener.
fn slack_flow(stack: &OauthStack, run: &mut ConnectRun) -> common::oauth::BrowserResult {
    let url = run.authorize_url();
    assert!(
        url.starts_with("https://slack.com/oauth/v2/authorize?"),
        "{url}"
    );
    assert!(url.contains("scope=chat%3Awrite"), "{url}");
    let location = stack.browser().consent(&url, true);
    assert!(
        location.starts_with("https://tunnel.example.test/callback?"),
        "{location}"
    );
    let base = run.callback_base();
    let query = &location[location.find('?').unwrap()..];
    stack.browser().callback(&format!("{base}{query}"))
}

#[test]
fn slack_with_https_redirect_connects_and_the_proxy_injects() {
    let stack = OauthStack::start();
    let mut run = ConnectRun::start(stack.connect_command(
        "slack",
        &[
            "--redirect-uri",
            "https://tunnel.example.test/callback",
            "--json",
        ],
    ));
    let page = slack_flow(&stack, &mut run);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Connected"), "{}", page.body);
    let out = run.finish();
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["connector"], "slack");
    assert_eq!(v["storage"], "file");
    assert_eq!(v["scopes"], serde_json::json!(["chat:write"]));
    assert_no_token_in(&out, &stack);
    let token = stack.mock.issued()[0].clone();
    assert!(token.starts_with("xoxe.xoxb-"));

    let proxy = stack.proxy().start();
    let resp = proxy.curl(["-s", "-X", "POST", "https://slack.com/api/auth.test"]);
    assert_eq!(resp.status, 200, "{}", resp.describe());
    let seen = stack.mock.api_requests();
    assert_eq!(
        seen.last().and_then(|r| r.authorization.clone()),
        Some(format!("Bearer {token}"))
    );
}

#[test]
fn slack_ok_false_error_is_reported_and_nothing_is_stored() {
    let stack = OauthStack::start();
    stack
        .mock
        .set(|k| k.token_error = Some("invalid_code".to_string()));
    let mut run = ConnectRun::start(stack.connect_command(
        "slack",
        &["--redirect-uri", "https://tunnel.example.test/callback"],
    ));
    let page = slack_flow(&stack, &mut run);
    assert_eq!(page.status, 400);
    let out = run.finish();
    out.assert_code(1);
    assert!(
        out.stderr().contains("slack refused: invalid_code"),
        "{}",
        out.stderr()
    );
    assert_nothing_stored(&stack);
}

#[test]
fn connector_oauth_keys_override_the_provider_defaults() {
    let stack = OauthStack::with_config(|c| {
        c.connector_yaml(
            "linear",
            "oauth:\n  authorizeUrl: https://example.test/oauth/authorize\n  tokenUrl: https://example.test/oauth/token\n  scopes: [read, issues:create]\n  clientIdEnv: MY_LINEAR_APP_ID\n  clientSecretEnv: MY_LINEAR_APP_SECRET\n",
        )
    });
    let mut cmd = stack.home.command([
        "connect",
        "linear",
        "--no-browser",
        "--redirect-port",
        "0",
        "--config",
    ]);
    cmd.arg(&stack.config)
        .env("MY_LINEAR_APP_ID", stack.mock.client_id())
        .env("MY_LINEAR_APP_SECRET", stack.mock.client_secret());
    let mut run = ConnectRun::start(cmd);
    let url = run.authorize_url();
    assert!(
        url.starts_with("https://example.test/oauth/authorize?"),
        "{url}"
    );
    assert!(url.contains("scope=read%2Cissues%3Acreate"), "{url}");
    let page = stack.browser().authorize(&url, true);
    assert_eq!(page.status, 200, "{}", page.body);
    run.finish().assert_code(0);
    let entry = &stack.credentials()["connections"]["linear"];
    assert_eq!(entry["clientIdEnv"], "MY_LINEAR_APP_ID");
    assert_eq!(
        entry["scopes"],
        serde_json::json!(["read", "issues:create"])
    );
}

#[test]
fn two_concurrent_connects_for_different_providers_both_persist() {
    let stack = OauthStack::start();
    let mut linear = ConnectRun::start(stack.connect_command("linear", &[]));
    let mut slack = ConnectRun::start(stack.connect_command(
        "slack",
        &["--redirect-uri", "https://tunnel.example.test/callback"],
    ));
    let linear_url = linear.authorize_url();
    let slack_url = slack.authorize_url();
    let slack_location = stack.browser().consent(&slack_url, true);
    let linear_location = stack.browser().consent(&linear_url, true);
    let slack_base = slack.callback_base();
    let slack_cb = format!(
        "{slack_base}{}",
        &slack_location[slack_location.find('?').unwrap()..]
    );
    // Both callbacks at once, so both stores race for the lock.
    let browser_a = stack.browser();
    let browser_b = stack.browser();
    let t1 = std::thread::spawn(move || browser_a.callback(&linear_location));
    let t2 = std::thread::spawn(move || browser_b.callback(&slack_cb));
    assert_eq!(t1.join().unwrap().status, 200);
    assert_eq!(t2.join().unwrap().status, 200);
    linear.finish().assert_code(0);
    slack.finish().assert_code(0);
    let creds = stack.credentials();
    assert_eq!(creds["connections"]["linear"]["provider"], "linear");
    assert_eq!(creds["connections"]["slack"]["provider"], "slack");
    let list = stack.home.run(["connections", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["connections"].as_array().map(Vec::len), Some(2));
}

#[test]
fn unsafe_or_unparseable_credentials_file_is_refused_and_never_overwritten() {
    let stack = OauthStack::start();
    let path = stack.home.path().join("credentials.json");
    let broken = "{\n  \"version\": 1,\n  \"connections\": {\n    \"linear\": nope\n  }\n}\n";
    std::fs::write(&path, broken).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = stack.home.run(["connections"]);
    out.assert_code(1);
    assert!(
        out.stderr().contains("readable by group or others"),
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("chmod 600"), "{}", out.stderr());
    let proxy = stack.proxy().run_to_exit();
    proxy.assert_code(1);
    assert!(proxy.stderr().contains("chmod 600"), "{}", proxy.stderr());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = common::run_bounded(
        stack.connect_command("linear", &[]),
        Duration::from_secs(20),
    );
    out.assert_code(1);
    let err = out.stderr();
    assert!(err.contains("credentials.json:4:"), "{err}");
    assert!(err.contains("will not overwrite"), "{err}");
    let proxy = stack.proxy().run_to_exit();
    proxy.assert_code(1);
    assert!(
        proxy.stderr().contains("credentials.json:4:"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
}
