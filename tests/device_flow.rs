//! `axtary connect --device` (RFC 8628) against the mock: the user code and verification URL
//! are printed, polling honours `interval`, `authorization_pending` and `slow_down` (5 s
//! more), and `access_denied` / `expired_token` end the flow with exit 1 and nothing stored.

mod common;

use std::time::Duration;

use common::oauth::{DeviceStep, OauthStack};

fn device_stack() -> OauthStack {
    OauthStack::with_config(|c| {
        c.connector_yaml(
            "linear",
            "oauth:\n  deviceAuthorizationUrl: https://api.linear.app/oauth/device/code\n",
        )
    })
}

#[test]
fn device_grant_waits_through_pending_and_slow_down_then_stores() {
    let stack = device_stack();
    stack.mock.set(|k| {
        k.device_interval = 1;
        k.device_script = vec![
            DeviceStep::Pending,
            DeviceStep::SlowDown,
            DeviceStep::Approve,
        ];
    });
    let out = common::run_bounded(
        stack.connect_command("linear", &["--device", "--json"]),
        Duration::from_secs(30),
    );
    out.assert_code(0);
    let err = out.stderr();
    assert!(err.contains("WDJB-MJHT"), "the user code is printed: {err}");
    assert!(
        err.contains("https://linear.app/device"),
        "the verification URL is printed: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["connector"], "linear");
    assert_eq!(v["storage"], "file");

    let polls = stack.mock.device_polls();
    assert_eq!(polls.len(), 3, "pending, slow_down, approved");
    assert_eq!(
        stack.mock.device_too_fast(),
        0,
        "no poll came sooner than the interval"
    );
    assert!(
        polls[1] - polls[0] >= Duration::from_millis(900),
        "interval honoured"
    );
    assert!(
        polls[2] - polls[1] >= Duration::from_millis(5900),
        "slow_down adds 5 s: {:?}",
        polls[2] - polls[1]
    );
    let token = stack.mock.issued()[0].clone();
    assert!(stack.credentials_text().contains(&token));
    assert!(!out.stdout().contains(&token) && !err.contains(&token));
}

#[test]
fn device_grant_denied_or_expired_exits_1_and_stores_nothing() {
    for (step, word) in [
        (DeviceStep::Deny, "access_denied"),
        (DeviceStep::Expire, "expired_token"),
    ] {
        let stack = device_stack();
        stack.mock.set(|k| k.device_script = vec![step]);
        let out = common::run_bounded(
            stack.connect_command("linear", &["--device"]),
            Duration::from_secs(30),
        );
        out.assert_code(1);
        assert!(out.stderr().contains(word), "{}", out.stderr());
        assert!(
            out.stderr().contains("nothing was stored"),
            "{}",
            out.stderr()
        );
        assert!(!stack.credentials_text().contains("accessToken"));
    }
}

#[test]
fn device_flag_needs_a_device_authorization_url() {
    let stack = OauthStack::start();
    let out = common::run_bounded(
        stack.connect_command("linear", &["--device"]),
        Duration::from_secs(20),
    );
    out.assert_code(2);
    assert!(
        out.stderr().contains("deviceAuthorizationUrl"),
        "{}",
        out.stderr()
    );
}
