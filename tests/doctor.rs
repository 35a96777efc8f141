//! `axtary doctor`: readiness per connector with its source (`env`, `broker`, `github-app`),
//! the plaintext-storage warning, the fix for a missing credential and the exit codes; the CA,
//! the listen port (free, held by axtary, held by something else), clock skew against the
//! mock's `Date`, and whether this shell's env routes an agent through the proxy.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ca::TestCa;
use common::config::ConfigBuilder;
use common::github_app::{app_key, GithubAppMock, APP_ID, APP_ID_ENV, PRIVATE_KEY_ENV};
use common::mock::MockProvider;
use common::oauth::OauthStack;
use common::{
    canary_github, canary_linear, canary_slack, run_bounded, Home, RunOutput, GITHUB_ENV,
    LINEAR_ENV, SLACK_ENV,
};

struct Setup {
    ca: TestCa,
    mock: MockProvider,
    home: Home,
}

fn setup() -> Setup {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    Setup {
        ca,
        mock,
        home: Home::new(),
    }
}

impl Setup {
    fn config(&self, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> PathBuf {
        self.home
            .write_config(&f(ConfigBuilder::new(&self.ca, &self.mock)).build())
    }
}

fn all_tokens() -> Vec<(&'static str, String)> {
    vec![
        (GITHUB_ENV, canary_github()),
        (SLACK_ENV, canary_slack()),
        (LINEAR_ENV, canary_linear()),
    ]
}

/// `axtary doctor --json` (or human, with `json` false) on `home` and `config`, with `env`.
fn doctor(home: &Home, config: &Path, env: &[(&str, String)], json: bool) -> RunOutput {
    let mut cmd = home.command(["doctor", "--config"]);
    cmd.arg(config);
    if json {
        cmd.arg("--json");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_bounded(cmd, Duration::from_secs(30));
    for (k, v) in env {
        if k.ends_with("_TOKEN") || k.ends_with("_KEY") {
            assert!(!out.stdout().contains(v.as_str()), "{}", out.stdout());
            assert!(!out.stderr().contains(v.as_str()), "{}", out.stderr());
        }
    }
    out
}

fn parse(out: &RunOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("doctor --json printed one document ({e}): {}", out.stdout()))
}

fn connector<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["connectors"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

#[test]
fn env_tokens_make_every_connector_ready_and_exit_0() {
    let s = setup();
    let config = s.config(|c| c);
    s.home.run(["ca", "init"]).assert_code(0);
    let out = doctor(&s.home, &config, &all_tokens(), true);
    out.assert_code(0);
    let doc = parse(&out);
    assert_eq!(doc["ok"], true, "{doc}");
    for name in ["github", "slack", "linear"] {
        let c = connector(&doc, name);
        assert_eq!(c["ready"], true, "{doc}");
        assert_eq!(c["source"], "env", "{doc}");
        assert!(c["fix"].is_null(), "{doc}");
    }
    let ca = &doc["checks"]["ca"];
    assert_eq!(ca["ok"], true, "{doc}");
    assert_eq!(ca["keyMode"], "600", "{doc}");
    assert!(ca["expiresAt"].is_string(), "{doc}");
    // The mock's Date header, fetched through the configured resolve and CA.
    let clock = &doc["checks"]["clock"];
    let skew = clock["skewSecs"]
        .as_i64()
        .unwrap_or_else(|| panic!("{doc}"));
    assert!(skew.abs() <= 5, "{doc}");
    assert!(
        s.mock.seen().iter().any(|r| r.method == "HEAD"),
        "{:?}",
        s.mock.seen_lines()
    );
}

#[test]
fn missing_credential_exits_1_and_names_the_env_var_and_connect() {
    let s = setup();
    let config = s.config(|c| c);
    let env: Vec<_> = all_tokens()
        .into_iter()
        .filter(|(k, _)| *k != LINEAR_ENV)
        .collect();
    let out = doctor(&s.home, &config, &env, true);
    out.assert_code(1);
    let doc = parse(&out);
    assert_eq!(doc["ok"], false, "{doc}");
    let linear = connector(&doc, "linear");
    assert_eq!(linear["ready"], false, "{doc}");
    assert_eq!(linear["fix"], "axtary connect linear", "{doc}");
    assert!(
        linear["problem"]
            .as_str()
            .unwrap_or("")
            .contains(LINEAR_ENV),
        "{doc}"
    );
    assert_eq!(connector(&doc, "github")["ready"], true, "{doc}");

    let human = doctor(&s.home, &config, &env, false);
    human.assert_code(1);
    let text = human.stdout();
    assert!(text.contains("connector linear: NOT READY"), "{text}");
    assert!(text.contains("fix: axtary connect linear"), "{text}");
    assert!(
        text.contains("connector github: ready (source env)"),
        "{text}"
    );
    assert!(human.stderr().contains("not ready"), "{}", human.stderr());
}

#[test]
fn broker_connection_in_the_file_store_is_ready_with_a_plaintext_warning() {
    let stack = OauthStack::start();
    stack.connect_linear().assert_code(0);
    let env = vec![(GITHUB_ENV, canary_github()), (SLACK_ENV, canary_slack())];
    let out = doctor(&stack.home, &stack.config, &env, true);
    out.assert_code(0);
    let doc = parse(&out);
    let linear = connector(&doc, "linear");
    assert_eq!(linear["ready"], true, "{doc}");
    assert_eq!(linear["source"], "broker", "{doc}");
    assert_eq!(linear["storage"], "file", "{doc}");
    assert_eq!(linear["plaintext"], true, "{doc}");
    assert!(linear["expiresAt"].is_string(), "{doc}");
    assert!(
        linear["warning"]
            .as_str()
            .unwrap_or("")
            .contains("plaintext"),
        "{doc}"
    );
    let issued = stack.mock.issued();
    for token in &issued {
        assert!(!out.stdout().contains(token.as_str()), "{}", out.stdout());
    }

    let human = doctor(&stack.home, &stack.config, &env, false);
    human.assert_code(0);
    let text = human.stdout();
    assert!(
        text.contains("source broker, stored in a PLAINTEXT file"),
        "{text}"
    );
    assert!(
        text.contains("warning: the token is stored in a plaintext file"),
        "{text}"
    );
}

#[test]
fn github_app_source_is_reported() {
    let s = setup();
    let yaml = format!(
        "version: 1\nproxy:\n  listen: \"127.0.0.1:0\"\nupstream:\n  caFile: {}\n  resolve:\n    \"api.github.com:443\": \"{}\"\n  timeoutSecs: 10\nconnectors:\n  github:\n    provider: github\n    mode: app\n    appIdEnv: {APP_ID_ENV}\n    privateKeyEnv: {PRIVATE_KEY_ENV}\n",
        serde_json::to_string(&s.ca.pem_path().to_string_lossy()).unwrap_or_default(),
        s.mock.addr()
    );
    let config = s.home.write_config(&yaml);
    let env = vec![
        (APP_ID_ENV, APP_ID.to_string()),
        (PRIVATE_KEY_ENV, app_key().pkcs1.clone()),
    ];
    let out = doctor(&s.home, &config, &env, true);
    out.assert_code(0);
    let doc = parse(&out);
    let github = connector(&doc, "github");
    assert_eq!(github["source"], "github-app", "{doc}");
    assert_eq!(github["ready"], true, "{doc}");
    assert!(!out.stdout().contains("PRIVATE KEY"), "{}", out.stdout());

    // Without the key: not ready, and the fix names the App settings.
    let out = doctor(&s.home, &config, &env[..1], true);
    out.assert_code(1);
    let doc = parse(&out);
    let github = connector(&doc, "github");
    assert_eq!(github["ready"], false, "{doc}");
    assert!(
        github["fix"]
            .as_str()
            .unwrap_or("")
            .contains(PRIVATE_KEY_ENV),
        "{doc}"
    );
}

#[test]
fn clock_skew_against_the_providers_date_is_measured_and_warned() {
    let ca = TestCa::new();
    // A GitHub whose clock runs ten minutes ahead of ours.
    let mock = GithubAppMock::builder(&ca).clock_offset_secs(600).start();
    let home = Home::new();
    let yaml = format!(
        "version: 1\nproxy:\n  listen: \"127.0.0.1:0\"\nupstream:\n  caFile: {}\n  resolve:\n    \"api.github.com:443\": \"{}\"\n  timeoutSecs: 10\nconnectors:\n  github:\n    provider: github\n    mode: app\n    appIdEnv: {APP_ID_ENV}\n    privateKeyEnv: {PRIVATE_KEY_ENV}\n",
        serde_json::to_string(&ca.pem_path().to_string_lossy()).unwrap_or_default(),
        mock.addr()
    );
    let config = home.write_config(&yaml);
    let env = vec![
        (APP_ID_ENV, APP_ID.to_string()),
        (PRIVATE_KEY_ENV, app_key().pkcs1.clone()),
    ];
    let out = doctor(&home, &config, &env, true);
    // Skew warns; readiness alone decides the exit code.
    out.assert_code(0);
    let doc = parse(&out);
    let clock = &doc["checks"]["clock"];
    assert_eq!(clock["ok"], false, "{doc}");
    let skew = clock["skewSecs"]
        .as_i64()
        .unwrap_or_else(|| panic!("{doc}"));
    assert!((595..=605).contains(&skew), "{doc}");
    assert!(clock["fix"].is_string(), "{doc}");

    // Unreachable: a note, not a failure.
    let unreachable = yaml.replace(
        &mock.addr().to_string(),
        &format!("127.0.0.1:{}", common::closed_port()),
    );
    let config = home.write_config(&unreachable);
    let doc = parse(&doctor(&home, &config, &env, true));
    let clock = &doc["checks"]["clock"];
    assert_eq!(clock["ok"], true, "{doc}");
    assert!(clock["skewSecs"].is_null(), "{doc}");
    assert!(
        clock["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("skipped"),
        "{doc}"
    );
}

#[test]
fn listen_port_free_held_by_axtary_or_by_another_program() {
    let s = setup();
    // Held by something that is not axtary.
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = other.local_addr().expect("addr");
    let config = s.config(|c| c.listen(&held.to_string()));
    let doc = parse(&doctor(&s.home, &config, &all_tokens(), true));
    assert_eq!(doc["checks"]["listen"]["state"], "other", "{doc}");
    assert_eq!(doc["checks"]["listen"]["ok"], false, "{doc}");
    drop(other);

    // Free.
    let doc = parse(&doctor(&s.home, &config, &all_tokens(), true));
    assert_eq!(doc["checks"]["listen"]["state"], "free", "{doc}");

    // Held by a running axtary.
    let proxy_config = s.config(|c| c);
    let proxy = s.home.proxy(&proxy_config).start();
    let at_proxy = s.home.path().join("at-proxy.yml");
    std::fs::write(
        &at_proxy,
        ConfigBuilder::new(&s.ca, &s.mock)
            .listen(&proxy.addr().to_string())
            .build(),
    )
    .expect("write config");
    let out = doctor(&s.home, &at_proxy, &all_tokens(), false);
    out.assert_code(0);
    assert!(
        out.stdout().contains("is held by a running axtary proxy"),
        "{}",
        out.stdout()
    );
}

#[test]
fn shell_env_check_says_whether_an_agent_would_go_through_the_proxy() {
    let s = setup();
    let port = common::closed_port();
    let config = s.config(|c| c.listen(&format!("127.0.0.1:{port}")));
    let out = doctor(&s.home, &config, &all_tokens(), true);
    let doc = parse(&out);
    assert_eq!(doc["checks"]["shell"]["routesThroughProxy"], false, "{doc}");
    assert_eq!(doc["checks"]["shell"]["httpsProxySet"], false, "{doc}");

    // The lines `axtary env` prints, as a user would eval them.
    let env_out = {
        let mut cmd = s.home.command(["env", "--json", "--config"]);
        cmd.arg(&config);
        run_bounded(cmd, Duration::from_secs(20))
    };
    env_out.assert_code(0);
    let vars: serde_json::Value = serde_json::from_str(&env_out.stdout()).expect("env json");
    let mut env = all_tokens();
    for k in ["HTTPS_PROXY", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"] {
        env.push((k, vars[k].as_str().unwrap_or_default().to_string()));
    }
    let doc = parse(&doctor(&s.home, &config, &env, true));
    let shell = &doc["checks"]["shell"];
    assert_eq!(shell["routesThroughProxy"], true, "{doc}");
    assert_eq!(
        shell["caVars"]["SSL_CERT_FILE"]["holdsAxtaryCa"], true,
        "{doc}"
    );

    // A proxy elsewhere does not count.
    env.retain(|(k, _)| *k != "HTTPS_PROXY");
    env.push(("HTTPS_PROXY", "http://127.0.0.1:1".to_string()));
    let doc = parse(&doctor(&s.home, &config, &env, true));
    assert_eq!(doc["checks"]["shell"]["httpsProxyMatches"], false, "{doc}");
}
