//! One end-to-end sign-in in real headless Chromium: `axtary connect linear` prints the
//! authorize URL, Chromium loads the mock provider's consent page (the provider's host is
//! mapped to the mock with `--host-resolver-rules`, and the mock's certificate is accepted by
//! its key pin), clicks Allow, follows the redirect to the loopback callback and shows the
//! "connected" page; then the proxy injects the stored token with no env var set.

mod common;

use std::time::{Duration, Instant};

use common::oauth::{ConnectRun, OauthStack};
use common::webdriver::Chromedriver;

#[test]
fn chromium_signs_in_and_the_proxy_injects_the_stored_token() {
    let stack = OauthStack::start();
    let driver = Chromedriver::start();
    let mock = stack.mock.addr();
    let session = driver.session(&[
        format!(
            "--host-resolver-rules=MAP linear.app 127.0.0.1:{}",
            mock.port()
        ),
        format!(
            "--ignore-certificate-errors-spki-list={}",
            stack.mock.spki_sha256()
        ),
    ]);

    let mut run = ConnectRun::start(stack.connect_command("linear", &[]));
    let url = run.authorize_url();
    session.goto(&url);
    let allow = session.find("#allow");
    assert!(session.text(&allow).contains("Allow"));
    session.click(&allow);

    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        if session.url().starts_with("http://127.0.0.1:") {
            let page = session.source();
            if page.contains("id=\"result\"") {
                break page;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Chromium did not land on the callback; it is at {}",
            session.url()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(result.contains("Connected"), "{result}");
    let landed = session.url();
    assert!(landed.contains("/callback?code="), "{landed}");
    drop(session);

    let out = run.finish();
    out.assert_code(0);
    assert_eq!(stack.mock.code_exchanges(), 1);
    assert_eq!(stack.mock.pkce_failures(), 0);
    let token = stack.mock.issued()[0].clone();

    let proxy = stack.proxy().start();
    let resp = proxy.curl([
        "-s",
        "https://api.linear.app/graphql",
        "-d",
        "{\"query\":\"{ viewer { id } }\"}",
    ]);
    assert_eq!(resp.status, 200, "{}", resp.describe());
    assert_eq!(
        stack
            .mock
            .api_requests()
            .last()
            .and_then(|r| r.authorization.clone()),
        Some(format!("Bearer {token}"))
    );
}
