//! Real clients under `axtary run`, against the mock providers, with nothing set by the test
//! but what `run` sets (plus each client's own placeholder token where it insists on one):
//! Python `requests`, Python `slack_sdk`, Node 20's built-in `fetch` with undici's env-proxy
//! agent preloaded, and the `gh` CLI. Each reaches the mock with the injected credential. A
//! missing client fails its test: `scripts/test.sh` installs all of them.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::cli::CliSetup;
use common::{run_bounded, RunOutput, GITHUB_ENV, SLACK_ENV};

fn setup() -> CliSetup {
    CliSetup::new()
}

impl CliSetup {
    /// `axtary run -- ARGS` with the connector tokens in axtary's environment only.
    fn run(&self, args: &[&str], extra_env: &[(&str, String)]) -> RunOutput {
        let mut all = vec!["--"];
        all.extend_from_slice(args);
        self.axtary("run", &all, extra_env, Duration::from_secs(60))
    }

    /// The Authorization the mock saw on the last request to `path`.
    fn auth_seen(&self, path: &str) -> Option<String> {
        self.mock
            .seen()
            .iter()
            .rev()
            .find(|r| r.path == path)
            .and_then(|r| r.header("authorization").map(str::to_owned))
    }
}

/// Panics (never skips) when `program` is not on PATH.
fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()));
    assert!(
        found,
        "`{program}` is required by this test ({package}; scripts/test.sh installs it)"
    );
}

/// Panics when the Python module is not importable.
fn require_python_module(module: &str) {
    require("python3", "Debian package python3");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &format!("import {module}")]);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(
        out.code(),
        Some(0),
        "the Python module `{module}` is required by this test (pip install {module}; scripts/test.sh installs it): {}",
        out.stderr()
    );
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("node")
}

#[test]
fn python_requests_under_run_reaches_github_with_the_injected_token() {
    require_python_module("requests");
    let s = setup();
    let script = "import requests\n\
                  r = requests.get('https://api.github.com/user', timeout=30)\n\
                  print(r.status_code, r.json()['host'])\n";
    let out = s.run(&["python3", "-c", script], &[]);
    out.assert_code(0);
    assert_eq!(
        out.stdout().trim(),
        "200 api.github.com",
        "{}",
        out.stderr()
    );
    assert_eq!(
        s.auth_seen("/user"),
        Some(format!("Bearer {}", s.token(GITHUB_ENV)))
    );
}

#[test]
fn python_slack_sdk_auth_test_under_run_succeeds_with_the_injected_token() {
    require_python_module("slack_sdk");
    let s = setup();
    let script = "from slack_sdk import WebClient\n\
                  r = WebClient(token='placeholder', timeout=30).auth_test()\n\
                  print(r['ok'], r['team'])\n";
    let out = s.run(&["python3", "-c", script], &[]);
    out.assert_code(0);
    assert_eq!(
        out.stdout().trim(),
        "True Mock Workspace",
        "{}",
        out.stderr()
    );
    assert_eq!(
        s.auth_seen("/api/auth.test"),
        Some(format!("Bearer {}", s.token(SLACK_ENV)))
    );
}

#[test]
fn node20_fetch_with_undici_env_proxy_agent_under_run_reaches_github() {
    require("node", "Debian package nodejs");
    let preload = node_dir().join("env-proxy.cjs");
    let script = node_dir().join("fetch-github-user.mjs");
    assert!(
        node_dir().join("node_modules").join("undici").is_dir(),
        "the npm package undici is required by this test (npm ci in tests/node; scripts/test.sh runs it)"
    );
    let s = setup();
    let out = s.run(
        &[
            "node",
            "--require",
            &preload.to_string_lossy(),
            &script.to_string_lossy(),
        ],
        &[],
    );
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(out.stdout().trim()).unwrap_or_else(|e| {
        panic!(
            "node printed JSON ({e}): {}\n{}",
            out.stdout(),
            out.stderr()
        )
    });
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["host"], "api.github.com", "{v}");
    assert_eq!(
        s.auth_seen("/user"),
        Some(format!("Bearer {}", s.token(GITHUB_ENV)))
    );
}

#[test]
fn gh_api_rate_limit_under_run_reaches_github_with_the_injected_token() {
    require("gh", "Debian package gh");
    let s = setup();
    // gh's own state goes to a throwaway home; its token is a placeholder the proxy replaces.
    let gh_home = tempfile::tempdir().expect("temp home for gh");
    let p = |sub: &str| gh_home.path().join(sub).to_string_lossy().into_owned();
    let env = [
        ("HOME", p("")),
        ("XDG_CONFIG_HOME", p("config")),
        ("XDG_CACHE_HOME", p("cache")),
        ("XDG_STATE_HOME", p("state")),
        ("XDG_DATA_HOME", p("data")),
        ("GH_TOKEN", "placeholder".to_string()),
        ("GH_NO_UPDATE_NOTIFIER", "1".to_string()),
        ("GH_PROMPT_DISABLED", "1".to_string()),
        ("NO_COLOR", "1".to_string()),
    ];
    let out = s.run(&["gh", "api", "/rate_limit"], &env);
    out.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout())
        .unwrap_or_else(|e| panic!("gh printed JSON ({e}): {}\n{}", out.stdout(), out.stderr()));
    assert!(v["resources"]["core"]["remaining"].is_u64(), "{v}");
    assert_eq!(
        s.auth_seen("/rate_limit").map(|a| a.to_ascii_lowercase()),
        Some(format!("bearer {}", s.token(GITHUB_ENV)).to_ascii_lowercase())
    );
}
