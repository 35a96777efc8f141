//! `axtary run -- CMD`: the command reaches the provider through a proxy of its own with
//! nothing set but what `run` sets, never sees the credential's env var, gets its exit status
//! passed on, and receives forwarded signals.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::cli::CliSetup;
use common::{run_bounded, sigterm, wait_bounded, GITHUB_ENV};

fn setup() -> CliSetup {
    CliSetup::new()
}

impl CliSetup {
    /// `axtary run -- sh -c SCRIPT`, the tokens in axtary's environment only.
    fn run_script(&self, script: &str) -> std::process::Command {
        let mut cmd = self.home.command(["run", "--config"]);
        cmd.arg(&self.config).args(["--", "sh", "-c", script]);
        for (k, v) in &self.tokens {
            cmd.env(k, v);
        }
        cmd
    }
}

#[test]
fn curl_under_run_reaches_the_provider_with_the_injected_token() {
    let s = setup();
    // curl gets its proxy and CA bundle only from the environment `run` sets.
    let script =
        "curl -q -sS --fail https://api.github.com/user -H 'Authorization: Bearer placeholder'";
    let out = run_bounded(s.run_script(script), Duration::from_secs(30));
    out.assert_code(0);
    let seen = s.mock.seen();
    let last = seen.last().expect("the mock saw the request");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {}", s.token(GITHUB_ENV)).as_str())
    );
    assert!(
        !out.stdout().contains(s.token(GITHUB_ENV)),
        "{}",
        out.stdout()
    );
}

#[test]
fn the_command_never_sees_the_credential_env_var() {
    let s = setup();
    let out = run_bounded(s.run_script("env"), Duration::from_secs(30));
    out.assert_code(0);
    let env = out.stdout();
    assert!(env.contains("HTTPS_PROXY=http://127.0.0.1:"), "{env}");
    assert!(env.contains("SSL_CERT_FILE="), "{env}");
    assert!(env.contains("NODE_EXTRA_CA_CERTS="), "{env}");
    assert!(!env.contains(GITHUB_ENV), "{env}");
    assert!(!env.contains(s.token(GITHUB_ENV)), "{env}");
}

#[test]
fn exit_status_of_the_command_is_passed_on() {
    let s = setup();
    let out = run_bounded(s.run_script("exit 7"), Duration::from_secs(30));
    out.assert_code(7);
    let missing = run_bounded(
        {
            let mut c = s.home.command(["run", "--config"]);
            c.arg(&s.config).args(["--", "no-such-command-anywhere"]);
            c
        },
        Duration::from_secs(30),
    );
    missing.assert_code(1);
    assert!(
        missing.stderr().contains("cannot run"),
        "{}",
        missing.stderr()
    );
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let s = setup();
    let mut cmd = s.run_script("trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done");
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start axtary run");
    // Wait until the command has installed its trap.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).expect("the command printed ready");
    sigterm(child.id());
    let status = wait_bounded(&mut child, Duration::from_secs(15));
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("axtary run did not exit after SIGTERM");
        }
    };
    assert_eq!(status.code(), Some(42), "{status:?}");
}
