//! `axtary run -- CMD`: the command reaches the provider through a proxy of its own with
//! nothing set but what `run` sets, never sees the credential's env var, gets its exit status
//! passed on, and receives forwarded signals.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::ca::TestCa;
use common::config::ConfigBuilder;
use common::mock::MockProvider;
use common::{canary_github, run_bounded, sigterm, wait_bounded, Home, GITHUB_ENV};

struct Setup {
    _ca: TestCa,
    mock: MockProvider,
    home: Home,
    config: std::path::PathBuf,
    token: String,
}

fn setup() -> Setup {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let home = Home::new();
    let config = home.write_config(&ConfigBuilder::new(&ca, &mock).build());
    Setup {
        _ca: ca,
        mock,
        home,
        config,
        token: canary_github(),
    }
}

impl Setup {
    fn run(&self, script: &str) -> std::process::Command {
        let mut cmd = self.home.command(["run", "--config"]);
        cmd.arg(&self.config)
            .args(["--", "sh", "-c", script])
            .env(GITHUB_ENV, &self.token);
        cmd
    }
}

#[test]
fn curl_under_run_reaches_the_provider_with_the_injected_token() {
    let s = setup();
    // curl gets its proxy and CA bundle only from the environment `run` sets.
    let script =
        "curl -q -sS --fail https://api.github.com/user -H 'Authorization: Bearer placeholder'";
    let out = run_bounded(s.run(script), Duration::from_secs(30));
    out.assert_code(0);
    let seen = s.mock.seen();
    let last = seen.last().expect("the mock saw the request");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {}", s.token).as_str())
    );
    assert!(!out.stdout().contains(&s.token), "{}", out.stdout());
}

#[test]
fn the_command_never_sees_the_credential_env_var() {
    let s = setup();
    let out = run_bounded(s.run("env"), Duration::from_secs(30));
    out.assert_code(0);
    let env = out.stdout();
    assert!(env.contains("HTTPS_PROXY=http://127.0.0.1:"), "{env}");
    assert!(env.contains("SSL_CERT_FILE="), "{env}");
    assert!(env.contains("NODE_EXTRA_CA_CERTS="), "{env}");
    assert!(!env.contains(GITHUB_ENV), "{env}");
    assert!(!env.contains(&s.token), "{env}");
}

#[test]
fn exit_status_of_the_command_is_passed_on() {
    let s = setup();
    let out = run_bounded(s.run("exit 7"), Duration::from_secs(30));
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
    let mut cmd = s.run("trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done");
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
