//! Checks the test harness itself, with no proxy in the path: the mock provider's TLS, ALPN,
//! routes and request recording, talking to it with curl directly. If these fail, every other
//! end-to-end result is meaningless.

mod common;

use std::time::{Duration, Instant};

use common::mock::{pattern_range, PROVIDER_HOSTS};
use common::{curl, pattern_bytes, sha256_hex, Alpn, CurlOutput, MockProvider, TestCa};

/// curl straight at the mock for `host`, trusting only the test CA.
fn direct(ca: &TestCa, mock: &MockProvider, host: &str, path: &str, extra: &[&str]) -> CurlOutput {
    let resolve = format!("{host}:{}:127.0.0.1", mock.port());
    let url = format!("https://{host}:{}{path}", mock.port());
    let mut args: Vec<String> = vec![
        "--resolve".into(),
        resolve,
        "--cacert".into(),
        ca.pem_path().to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url);
    curl(args)
}

#[test]
fn mock_echoes_request_over_http1() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let out = direct(
        &ca,
        &mock,
        "api.github.com",
        "/user?x=1",
        &["--http1.1", "-H", "Authorization: Bearer fake-placeholder"],
    );
    out.assert_status(200);
    assert_eq!(out.http_version, "1.1");
    let body = out.json();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/user?x=1");
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["host"], format!("api.github.com:{}", mock.port()));
    assert_eq!(body["authorization"], "Bearer fake-placeholder");
    assert_eq!(body["sni"], "api.github.com");

    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/user?x=1");
    assert_eq!(
        seen[0].header("Authorization"),
        Some("Bearer fake-placeholder")
    );
    assert_eq!(seen[0].body_len, 0);
    assert_eq!(mock.connections(), 1);
}

#[test]
fn mock_echoes_request_over_http2() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let out = direct(
        &ca,
        &mock,
        "slack.com",
        "/api/auth.test",
        &["--http2", "-X", "POST"],
    );
    out.assert_status(200);
    assert_eq!(out.http_version, "2");
    let body = out.json();
    assert_eq!(body["version"], "HTTP/2.0");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["host"], format!("slack.com:{}", mock.port()));
    assert!(body["authorization"].is_null());
    assert_eq!(mock.seen()[0].version, "HTTP/2.0");
}

#[test]
fn mock_http1_only_does_not_offer_h2() {
    let ca = TestCa::new();
    let mock = MockProvider::builder(&ca).alpn(Alpn::Http1Only).start();
    let out = direct(&ca, &mock, "api.linear.app", "/graphql", &["--http2"]);
    out.assert_status(200);
    assert_eq!(out.http_version, "1.1");
    assert_eq!(mock.seen()[0].version, "HTTP/1.1");
}

#[test]
fn mock_leaf_covers_every_provider_host() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    for host in PROVIDER_HOSTS {
        let out = direct(&ca, &mock, host, "/", &[]);
        out.assert_status(200);
        assert_eq!(out.json()["sni"], host);
    }
    let snis: Vec<String> = mock.seen().iter().filter_map(|r| r.sni.clone()).collect();
    assert_eq!(snis, PROVIDER_HOSTS.to_vec());
}

#[test]
fn mock_cert_is_not_trusted_without_the_test_ca() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let other = TestCa::new();
    let out = direct(&other, &mock, "api.github.com", "/", &[]);
    assert_eq!(
        out.exit,
        60,
        "expected a verification failure\n{}",
        out.describe()
    );
    assert!(mock.seen().is_empty());
}

#[test]
fn mock_echo_auth_streams_the_value_in_small_chunks() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let auth = format!("Bearer ghp_{}", common::random_alnum(36));
    let header = format!("Authorization: {auth}");
    for extra in [&["--http1.1"][..], &["--http2"][..]] {
        let mut args = extra.to_vec();
        args.extend(["-H", header.as_str()]);
        let out = direct(&ca, &mock, "api.github.com", "/echo-auth", &args);
        out.assert_status(200);
        assert_eq!(out.header("x-echo-authorization"), Some(auth.as_str()));
        assert!(out.header("content-length").is_none());
        assert_eq!(
            out.body_text().matches(&auth).count(),
            5,
            "{}",
            out.describe()
        );
    }

    let out = direct(
        &ca,
        &mock,
        "api.github.com",
        "/echo-auth?fixed=1",
        &["-H", header.as_str()],
    );
    out.assert_status(200);
    let len: usize = out
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length on the fixed variant");
    assert_eq!(len, out.body.len());
    assert_eq!(out.body_text().matches(&auth).count(), 5);
}

#[test]
fn mock_bytes_route_matches_pattern_helper() {
    assert_eq!(pattern_range(5, 100), pattern_bytes(105)[5..].to_vec());
    assert_eq!(
        pattern_range(65_530, 20),
        pattern_bytes(65_550)[65_530..].to_vec()
    );

    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let n = 3 * 64 * 1024 + 17;
    let out = direct(
        &ca,
        &mock,
        "api.github.com",
        &format!("/bytes/{n}"),
        &["--http2"],
    );
    out.assert_status(200);
    assert_eq!(out.body.len(), n);
    assert_eq!(sha256_hex(&out.body), sha256_hex(&pattern_bytes(n)));
}

#[test]
fn mock_upload_reports_length_and_digest() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("upload.bin");
    let data = pattern_bytes(300_000);
    std::fs::write(&file, &data).expect("write upload file");
    let at = format!("@{}", file.display());
    for version in ["--http1.1", "--http2"] {
        let out = direct(
            &ca,
            &mock,
            "api.github.com",
            "/upload",
            &[version, "--data-binary", at.as_str()],
        );
        out.assert_status(200);
        let body = out.json();
        assert_eq!(body["len"], data.len() as u64);
        assert_eq!(body["sha256"], sha256_hex(&data));
    }
}

#[test]
fn mock_status_rate_limit_and_slow_routes() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let out = direct(&ca, &mock, "api.github.com", "/status/418", &[]);
    assert_eq!(out.status, 418);
    let out = direct(
        &ca,
        &mock,
        "api.github.com",
        "/status/429?retry-after=7",
        &[],
    );
    assert_eq!(out.status, 429);
    assert_eq!(out.header("retry-after"), Some("7"));

    let out = direct(&ca, &mock, "api.github.com", "/rate_limit", &[]);
    out.assert_status(200);
    assert!(out.json()["resources"]["core"]["remaining"].is_u64());

    let out = direct(&ca, &mock, "api.github.com", "/ratelimit-spent", &[]);
    out.assert_status(200);
    assert_eq!(out.header("x-ratelimit-remaining"), Some("0"));

    let started = Instant::now();
    let out = direct(&ca, &mock, "api.github.com", "/slow/300", &[]);
    out.assert_status(200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn mock_stops_listening_when_dropped() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    let port = mock.port();
    direct(&ca, &mock, "api.github.com", "/", &[]).assert_status(200);
    drop(mock);
    let out = curl([
        "--resolve".to_string(),
        format!("api.github.com:{port}:127.0.0.1"),
        "--cacert".to_string(),
        ca.pem_path().to_string_lossy().into_owned(),
        format!("https://api.github.com:{port}/"),
    ]);
    assert_eq!(
        out.exit,
        7,
        "expected connection refused\n{}",
        out.describe()
    );
}

#[test]
fn mock_answers_head_without_a_body() {
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca);
    for version in ["--http2", "--http1.1"] {
        direct(&ca, &mock, "api.github.com", "/user", &[version, "-I"]).assert_status(200);
    }
    assert_eq!(mock.seen_lines(), ["HEAD /user", "HEAD /user"]);
}
