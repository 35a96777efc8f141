//! `axtary smoke`: one harmless call per connector through the injection path, against the
//! mock providers. Passes exit 0; a Slack `ok: false`, a Linear GraphQL error or a missing
//! credential fails that connector and exits 1; the output never holds a token.

mod common;

use std::time::Duration;

use common::cli::CliSetup;
use common::mock::{LINEAR_REVOKED_PREFIX, SLACK_REVOKED_PREFIX};
use common::{canary_linear, canary_slack, RunOutput, GITHUB_ENV, LINEAR_ENV, SLACK_ENV};

fn setup() -> CliSetup {
    CliSetup::new()
}

impl CliSetup {
    fn smoke(&self, extra: &[&str]) -> RunOutput {
        self.axtary("smoke", extra, &[], Duration::from_secs(30))
    }

    fn smoke_json(&self, extra: &[&str]) -> (RunOutput, serde_json::Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.smoke(&args);
        let doc = serde_json::from_str(&out.stdout()).unwrap_or_else(|e| {
            panic!("smoke --json printed one document ({e}): {}", out.stdout())
        });
        (out, doc)
    }
}

fn connector<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["connectors"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

#[test]
fn smoke_passes_for_every_provider_with_injected_credentials() {
    let s = setup();
    let (out, doc) = s.smoke_json(&[]);
    out.assert_code(0);
    assert_eq!(doc["ok"], true, "{doc}");
    for (name, call) in [
        ("github", "GET /rate_limit"),
        ("slack", "POST /api/auth.test"),
        ("linear", "POST /graphql"),
    ] {
        let c = connector(&doc, name);
        assert_eq!(c["ok"], true, "{doc}");
        assert_eq!(c["status"], 200, "{doc}");
        assert_eq!(c["call"], call, "{doc}");
        assert!(c["latencyMs"].is_u64(), "{doc}");
    }
    let seen = s.mock.seen();
    let auth_for = |path: &str| {
        seen.iter()
            .find(|r| r.path == path)
            .and_then(|r| r.header("authorization").map(str::to_owned))
    };
    assert_eq!(
        auth_for("/rate_limit"),
        Some(format!("Bearer {}", s.tokens[0].1))
    );
    assert_eq!(
        auth_for("/api/auth.test"),
        Some(format!("Bearer {}", s.tokens[1].1))
    );
    // Linear personal keys go without `Bearer`.
    assert_eq!(auth_for("/graphql"), Some(s.tokens[2].1.clone()));
    let linear = seen
        .iter()
        .find(|r| r.path == "/graphql")
        .expect("graphql call");
    assert_eq!(linear.method, "POST");
    assert!(linear.body_len > 0);
}

#[test]
fn human_output_names_each_connector_with_pass_status_and_latency() {
    let s = setup();
    let out = s.smoke(&["github"]);
    out.assert_code(0);
    let text = out.stdout();
    assert!(
        text.contains("github") && text.contains("PASS") && text.contains("200"),
        "{text}"
    );
    assert!(text.contains(" ms"), "{text}");
    assert!(
        !text.contains("slack"),
        "only the named connector runs: {text}"
    );
    assert_eq!(s.mock.seen_lines(), ["GET /rate_limit"]);
}

#[test]
fn slack_ok_false_on_http_200_is_a_failure() {
    let mut s = setup();
    s.set(
        SLACK_ENV,
        format!("{SLACK_REVOKED_PREFIX}{}", canary_slack()),
    );
    let (out, doc) = s.smoke_json(&["slack", "github"]);
    out.assert_code(1);
    assert_eq!(doc["ok"], false, "{doc}");
    let slack = connector(&doc, "slack");
    assert_eq!(slack["ok"], false, "{doc}");
    assert_eq!(slack["status"], 200, "{doc}");
    let problem = slack["problem"].as_str().unwrap_or("");
    assert!(
        problem.contains("ok:false") && problem.contains("invalid_auth"),
        "{doc}"
    );
    assert_eq!(connector(&doc, "github")["ok"], true, "{doc}");
}

#[test]
fn linear_graphql_errors_are_a_failure() {
    let mut s = setup();
    s.set(
        LINEAR_ENV,
        format!("{LINEAR_REVOKED_PREFIX}{}", canary_linear()),
    );
    let out = s.smoke(&["linear"]);
    out.assert_code(1);
    let text = out.stdout();
    assert!(text.contains("linear") && text.contains("FAIL"), "{text}");
    assert!(text.contains("Authentication required"), "{text}");
}

#[test]
fn missing_credential_fails_that_connector_without_calling_upstream() {
    let mut s = setup();
    s.unset(GITHUB_ENV);
    let (out, doc) = s.smoke_json(&["github"]);
    out.assert_code(1);
    let github = connector(&doc, "github");
    assert_eq!(github["ok"], false, "{doc}");
    let problem = github["problem"].as_str().unwrap_or("");
    assert!(
        problem.contains(GITHUB_ENV),
        "the fix names the env var: {doc}"
    );
    assert!(s.mock.seen().is_empty(), "{:?}", s.mock.seen_lines());
}

#[test]
fn unknown_connector_is_a_usage_error() {
    let s = setup();
    let out = s.smoke(&["jira"]);
    out.assert_code(2);
    assert!(
        out.stderr().contains("jira") && out.stderr().contains("github"),
        "{}",
        out.stderr()
    );
}
