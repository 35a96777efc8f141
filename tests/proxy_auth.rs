//! `proxy.auth` (SPEC 3, 4): without the proxy token a client gets `407 proxy_auth_required`;
//! Bearer and Basic (token as password) both work; the token never reaches the upstream; and
//! a non-loopback listener refuses to start without auth.

mod common;

use common::{
    assert_axtary_error, canary_proxy_token, curl, raw_exchange, ConfigBuilder, Home, Stack,
    TestCa, PROXY_TOKEN_ENV,
};

fn auth_stack(token: &str) -> Stack {
    let token = token.to_string();
    Stack::builder()
        .config(|c| c.auth(PROXY_TOKEN_ENV))
        .proxy(move |p| p.env(PROXY_TOKEN_ENV, token))
        .start()
}

#[test]
fn connect_without_proxy_token_is_407() {
    let token = canary_proxy_token();
    let stack = auth_stack(&token);
    let out = stack.curl(["https://api.github.com/user"]);
    assert_ne!(out.exit, 0, "{}", out.describe());
    assert_eq!(out.connect_status, 407, "{}", out.describe());

    let resp = raw_exchange(
        stack.proxy.addr(),
        b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n",
    );
    assert_eq!(resp.status, 407, "{}", resp.head);
    assert_eq!(resp.header("x-axtary-error"), Some("proxy_auth_required"));
    assert!(stack.mock.seen().is_empty());
    assert_eq!(stack.mock.connections(), 0);
}

#[test]
fn connect_with_wrong_proxy_token_is_407() {
    let token = canary_proxy_token();
    let stack = auth_stack(&token);
    let resp = raw_exchange(
        stack.proxy.addr(),
        b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\
          Proxy-Authorization: Bearer not-the-token\r\n\r\n",
    );
    assert_eq!(resp.status, 407, "{}", resp.head);
    assert_eq!(resp.header("x-axtary-error"), Some("proxy_auth_required"));
    let out = stack.curl([
        "--proxy-user",
        "agent:not-the-token",
        "https://api.github.com/user",
    ]);
    assert_eq!(out.connect_status, 407, "{}", out.describe());
    assert!(stack.mock.seen().is_empty());
}

#[test]
fn basic_proxy_auth_with_token_as_password_works() {
    let token = canary_proxy_token();
    let stack = auth_stack(&token);
    let user = format!("agent:{token}");
    let out = stack.curl(["--proxy-user", user.as_str(), "https://api.github.com/user"]);
    out.assert_status(200);
    assert_eq!(out.header("x-axtary-connector"), Some("github"));
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].has_header("proxy-authorization"));
    assert!(!seen[0].headers_text().contains(&token));
}

#[test]
fn bearer_proxy_auth_header_works() {
    let token = canary_proxy_token();
    let stack = auth_stack(&token);
    let header = format!("Proxy-Authorization: Bearer {token}");
    let out = stack.curl([
        "--proxy-header",
        header.as_str(),
        "https://api.github.com/user",
    ]);
    out.assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].has_header("proxy-authorization"));
    assert!(!seen[0].headers_text().contains(&token));
    let expected = format!("Bearer {}", stack.github_token());
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[test]
fn gateway_requests_need_the_proxy_token() {
    let token = canary_proxy_token();
    let stack = auth_stack(&token);
    let url = stack.proxy.url("/github/rate_limit");
    let out = curl([url.as_str()]);
    assert_axtary_error(&out, 407, "proxy_auth_required");
    assert!(stack.mock.seen().is_empty());

    let header = format!("Proxy-Authorization: Bearer {token}");
    let out = curl(["-H", header.as_str(), url.as_str()]);
    out.assert_status(200);
    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/rate_limit");
    assert!(!seen[0].has_header("proxy-authorization"));
    assert!(!seen[0].headers_text().contains(&token));
}

#[test]
fn cleartext_request_without_proxy_token_is_407() {
    let token = canary_proxy_token();
    let stack = auth_stack(&token);
    let out = curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "http://example.test/",
    ]);
    assert_axtary_error(&out, 407, "proxy_auth_required");
}

#[test]
fn non_loopback_listen_flag_without_auth_exits_2() {
    let ca = TestCa::new();
    let home = Home::new();
    let config = ConfigBuilder::for_addr(ca.pem_path(), "127.0.0.1:9".parse().expect("addr"));
    let path = home.write_config(&config.build());
    let out = home
        .proxy(&path)
        .arg("--listen")
        .arg("0.0.0.0:0")
        .run_to_exit();
    out.assert_code(2);
    assert!(!out.stdout().contains("listening on"), "{}", out.stdout());
}

#[test]
fn non_loopback_listen_in_config_without_auth_exits_2() {
    let ca = TestCa::new();
    let home = Home::new();
    let config = ConfigBuilder::for_addr(ca.pem_path(), "127.0.0.1:9".parse().expect("addr"))
        .listen("0.0.0.0:0");
    let path = home.write_config(&config.build());
    let out = home.proxy(&path).run_to_exit();
    out.assert_code(2);
    assert!(!out.stdout().contains("listening on"), "{}", out.stdout());
}
