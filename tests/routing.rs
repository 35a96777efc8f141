//! What the proxy does with traffic that is not an intercepted connector request (SPEC 4):
//! cleartext `http://` to a connector host is refused, other hosts are tunneled blindly or
//! denied according to `proxy.unmatched`, and a tunnel never injects anything.

mod common;

use common::{assert_axtary_error, curl, raw_exchange, Stack};

#[test]
fn cleartext_http_to_connector_host_is_400() {
    let stack = Stack::start();
    for url in [
        "http://api.github.com/user",
        "http://slack.com/api/auth.test",
    ] {
        let out = curl(["-x", stack.proxy.proxy_url().as_str(), url]);
        assert_axtary_error(&out, 400, "bad_request");
        let message = out.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            message.contains("https"),
            "message should say to use https: {message}"
        );
    }
    assert!(
        stack.mock.seen().is_empty(),
        "{:?}",
        stack.mock.seen_lines()
    );
    assert_eq!(stack.mock.connections(), 0);
}

#[test]
fn cleartext_http_to_other_host_is_403_when_unmatched_is_deny() {
    let stack = Stack::builder().config(|c| c.unmatched_deny()).start();
    let out = curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "http://example.test/",
    ]);
    assert_axtary_error(&out, 403, "unmatched_host");
    assert_eq!(stack.mock.connections(), 0);
}

#[test]
fn connect_to_other_host_is_403_when_unmatched_is_deny() {
    let stack = Stack::builder().config(|c| c.unmatched_deny()).start();
    let resp = raw_exchange(
        stack.proxy.addr(),
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    );
    assert_eq!(resp.status, 403, "{}", resp.head);
    assert_eq!(
        resp.header("x-axtary-error"),
        Some("unmatched_host"),
        "{}",
        resp.head
    );
    let body: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("403 body is not JSON ({e}): {:?}", resp.body));
    assert_eq!(body["error"]["code"], "unmatched_host");

    // The same through curl, trusting the upstream CA as a tunnel would need.
    let out = curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "--cacert",
        &stack.ca.pem_path().to_string_lossy(),
        "https://example.test/",
    ]);
    assert_ne!(out.exit, 0, "{}", out.describe());
    assert_eq!(out.connect_status, 403, "{}", out.describe());
    assert_eq!(stack.mock.connections(), 0);
}

fn assert_blind_tunnel(stack: &Stack) {
    // Trusting only the mock's CA: this succeeds only if the client saw the mock's own
    // certificate, i.e. the proxy did not intercept.
    let agent_auth = "Authorization: Bearer agents-own-credential";
    let out = curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "--cacert",
        &stack.ca.pem_path().to_string_lossy(),
        "https://example.test/plain",
    ]);
    out.assert_status(200);
    assert!(
        out.header("x-axtary-connector").is_none(),
        "{}",
        out.describe()
    );
    let out = curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "--cacert",
        &stack.ca.pem_path().to_string_lossy(),
        "-H",
        agent_auth,
        "https://example.test/own",
    ]);
    out.assert_status(200);

    let seen = stack.mock.seen();
    assert_eq!(seen.len(), 2, "{:?}", stack.mock.seen_lines());
    assert_eq!(seen[0].path, "/plain");
    assert_eq!(seen[0].sni.as_deref(), Some("example.test"));
    assert!(!seen[0].has_header("authorization"), "{:?}", seen[0]);
    assert_eq!(
        seen[1].header("authorization"),
        Some("Bearer agents-own-credential")
    );
    for req in &seen {
        for secret in stack.secrets() {
            assert!(!req.headers_text().contains(&secret), "{req:?}");
        }
    }
}

#[test]
fn connect_to_other_host_is_tunneled_blindly_by_default() {
    let stack = Stack::start();
    assert_blind_tunnel(&stack);
}

#[test]
fn connect_to_other_host_is_tunneled_blindly_with_unmatched_tunnel() {
    let stack = Stack::builder().config(|c| c.unmatched_tunnel()).start();
    assert_blind_tunnel(&stack);
}

#[test]
fn intercepted_host_is_not_trusted_with_the_upstream_ca_alone() {
    // The other side of the tunnel check: a connector host IS intercepted, so a client
    // trusting only the upstream CA must reject the proxy's leaf.
    let stack = Stack::start();
    let out = curl([
        "-x",
        stack.proxy.proxy_url().as_str(),
        "--cacert",
        &stack.ca.pem_path().to_string_lossy(),
        "https://api.github.com/user",
    ]);
    assert_eq!(
        out.exit,
        60,
        "expected a certificate failure\n{}",
        out.describe()
    );
    assert!(stack.mock.seen().is_empty());
}
