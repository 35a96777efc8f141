//! The OS keychain path against a real Secret Service (gnome-keyring in a private D-Bus
//! session): the token round-trips through the keychain, never touches `credentials.json`,
//! survives a rotating refresh, is injected by the proxy, and is removed by `disconnect`.
//! Without a keychain, `auto` falls back to the 0600 file and `keyring` refuses up front.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::keyring::SecretService;
use common::oauth::{ConnectRun, OauthStack};

fn keychain_item(stack: &OauthStack) -> Vec<(&'static str, String)> {
    vec![
        ("service", "axtary".to_string()),
        (
            "username",
            format!("linear@{}", stack.home.path().display()),
        ),
    ]
}

#[test]
fn token_round_trips_through_the_secret_service_and_never_the_file() {
    let ss = SecretService::start();
    let stack = OauthStack::start();
    stack.mock.set(|k| k.code_expires_in = Some(30));

    let mut cmd = stack.connect_command("linear", &[]);
    cmd.env("AXTARY_CREDENTIAL_STORE", "keyring");
    ss.apply(&mut cmd);
    let mut run = ConnectRun::start(cmd);
    let url = run.authorize_url();
    assert_eq!(stack.browser().authorize(&url, true).status, 200);
    let out = run.finish();
    out.assert_code(0);
    assert!(out.stdout().contains("OS keychain"), "{}", out.stdout());
    let first = stack.mock.issued()[0].clone();

    // The file has the metadata and says `keyring`; no token is in it.
    let text = stack.credentials_text();
    let entry = &stack.credentials()["connections"]["linear"];
    assert_eq!(entry["storage"], "keyring");
    assert!(
        entry.get("accessToken").is_none() && entry.get("refreshToken").is_none(),
        "{text}"
    );
    assert!(!text.contains(&first));
    for r in stack.mock.refresh_tokens() {
        assert!(!text.contains(&r));
    }

    // The Secret Service holds it, as any other client of it sees.
    let attrs = keychain_item(&stack);
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let item = ss.lookup(&attrs).expect("the keychain item exists");
    assert!(
        item.contains(&first),
        "the access token is in the keychain item"
    );

    // `connections` reads only the file and reports the storage.
    let list = stack.home.run(["connections", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["connections"][0]["storage"], "keyring");

    // The proxy reads the keychain; the token is inside the refresh margin, so the first
    // request refreshes it, and the rotated pair goes back into the keychain.
    let mut proxy = stack.proxy().env("AXTARY_CREDENTIAL_STORE", "auto");
    proxy = proxy.env("DBUS_SESSION_BUS_ADDRESS", ss.bus());
    let proxy = proxy.start();
    let resp = proxy.curl([
        "-s",
        "https://api.linear.app/graphql",
        "-d",
        "{\"query\":\"{ viewer { id } }\"}",
    ]);
    assert_eq!(
        resp.status,
        200,
        "{}\n{}",
        resp.describe(),
        proxy.describe()
    );
    assert_eq!(stack.mock.refreshes(), 1);
    let second = stack.mock.issued()[1].clone();
    assert_eq!(
        stack
            .mock
            .api_requests()
            .last()
            .and_then(|r| r.authorization.clone()),
        Some(format!("Bearer {second}"))
    );
    let item = ss.lookup(&attrs).expect("the keychain item still exists");
    assert!(
        item.contains(&second) && !item.contains(&first),
        "the keychain holds the new pair"
    );
    assert!(!stack.credentials_text().contains(&second));
    assert_eq!(
        stack.credentials()["connections"]["linear"]["storage"],
        "keyring"
    );
    drop(proxy);

    // disconnect removes the keychain item and the file entry.
    let mut cmd = stack.home.command(["disconnect", "linear"]);
    cmd.env("AXTARY_CREDENTIAL_STORE", "auto");
    ss.apply(&mut cmd);
    common::run_bounded(cmd, Duration::from_secs(20)).assert_code(0);
    assert!(ss.lookup(&attrs).is_none(), "the keychain item is gone");
    assert!(stack.credentials()["connections"]["linear"].is_null());
}

#[test]
fn without_a_keychain_auto_uses_the_file_and_keyring_refuses() {
    let stack = OauthStack::start();
    let mut cmd = stack.connect_command("linear", &[]);
    cmd.env("AXTARY_CREDENTIAL_STORE", "keyring")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_RUNTIME_DIR");
    let out = common::run_bounded(cmd, Duration::from_secs(20));
    out.assert_code(1);
    assert!(
        out.stderr().contains("AXTARY_CREDENTIAL_STORE=keyring"),
        "{}",
        out.stderr()
    );
    assert!(
        !out.stderr().contains("oauth/authorize"),
        "refused before the sign-in"
    );
    assert!(stack.credentials_text().is_empty());

    let mut cmd = stack.connect_command("linear", &[]);
    cmd.env("AXTARY_CREDENTIAL_STORE", "auto")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_RUNTIME_DIR");
    let mut run = ConnectRun::start(cmd);
    let url = run.authorize_url();
    assert_eq!(stack.browser().authorize(&url, true).status, 200);
    let out = run.finish();
    out.assert_code(0);
    let entry = &stack.credentials()["connections"]["linear"];
    assert_eq!(entry["storage"], "file");
    assert_eq!(entry["accessToken"], stack.mock.issued()[0].as_str());
    let path = stack.home.path().join("credentials.json");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(stack.home.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}
