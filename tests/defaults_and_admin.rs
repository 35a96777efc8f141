//! Which config a bare `axtary proxy` runs on (./axtary.yml, else the embedded default), and
//! the admin listener's `/healthz` and `/metrics`.

mod common;

use std::path::Path;

use common::ca::TestCa;
use common::config::ConfigBuilder;
use common::curl::curl;
use common::mock::MockProvider;
use common::{canary_github, closed_port, Home, Stack, GITHUB_ENV};

/// The start-up text, once its last line (the env block) is out; bounded.
fn stdout_when_announced(proxy: &common::proxy::Proxy) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = proxy.stdout();
        if out.contains("GIT_SSL_CAINFO") || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn bare_proxy_runs_on_the_embedded_default_config() {
    let home = Home::new();
    // No --config and no ./axtary.yml in the working directory (the home).
    let proxy = home
        .proxy(Path::new("unused"))
        .without_config()
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env(GITHUB_ENV, canary_github())
        .start();
    let out = stdout_when_announced(&proxy);
    assert!(out.contains("config: built-in default"), "{out}");
    assert!(out.contains("connector github: ready (env)"), "{out}");
    assert!(out.contains("connector slack: NOT READY"), "{out}");
    assert!(out.contains("connector linear: NOT READY"), "{out}");
    assert!(
        out.contains("export HTTPS_PROXY=http://127.0.0.1:"),
        "{out}"
    );
    let health = curl([proxy.url("/healthz")]);
    assert_eq!(health.status, 200, "{}", health.describe());
}

#[test]
fn bare_proxy_prefers_axtary_yml_in_the_working_directory() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let home = Home::new();
    let token = canary_github();
    // write_config puts axtary.yml in the home, which is the proxy's working directory.
    home.write_config(&ConfigBuilder::new(&ca, &mock).build());
    let proxy = home
        .proxy(Path::new("unused"))
        .without_config()
        .env(GITHUB_ENV, &token)
        .start();
    let announced = stdout_when_announced(&proxy);
    assert!(announced.contains("config: axtary.yml"), "{announced}");
    let out = proxy.curl(["https://api.github.com/rate_limit"]);
    assert_eq!(out.status, 200, "{}", out.describe());
    let seen = mock.seen();
    let last = seen.last().expect("the mock got the request");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

#[test]
fn admin_listener_serves_health_and_prometheus_metrics() {
    let admin = format!("127.0.0.1:{}", closed_port());
    let a = admin.clone();
    let stack = Stack::builder().config(move |c| c.admin(&a)).start();
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    stack
        .curl(["-X", "DELETE", "https://api.github.com/user"])
        .assert_status(200);
    let health = curl([format!("http://{admin}/healthz")]);
    assert_eq!(health.status, 200, "{}", health.describe());
    let metrics = curl([format!("http://{admin}/metrics")]);
    assert_eq!(metrics.status, 200, "{}", metrics.describe());
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains("axtary_requests_total{connector=\"github\",decision=\"injected\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE axtary_connections_open gauge"),
        "{text}"
    );
}

#[test]
fn json_output_into_a_closed_pipe_is_not_a_panic() {
    let home = Home::new();
    let mut cmd = home.command(["env", "--json"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start axtary env");
    // Close the reading end before the command gets to write (`axtary env --json | head -c0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("axtary env finished");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
