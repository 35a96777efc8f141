//! Graceful shutdown (SPEC 4): on SIGTERM the proxy stops accepting, lets in-flight requests
//! finish, and exits 0.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{curl, Stack};

#[test]
fn sigterm_lets_in_flight_request_finish() {
    let mut stack = Stack::start();
    let args = vec![
        "-x".to_string(),
        stack.proxy.proxy_url(),
        "--cacert".to_string(),
        stack.proxy.ca_pem().to_string_lossy().into_owned(),
        "https://api.github.com/slow/1500".to_string(),
    ];
    let request = std::thread::spawn(move || curl(args));
    assert!(
        stack
            .mock
            .wait_for(Duration::from_secs(10), |r| r.path == "/slow/1500"),
        "the slow request never reached the mock\n{}",
        stack.proxy.describe()
    );
    let started = Instant::now();
    let status = stack.proxy.stop();
    let out = request.join().expect("request thread");
    assert_eq!(
        status.code(),
        Some(0),
        "exit {status:?}\n{}",
        stack.proxy.describe()
    );
    out.assert_status(200);
    assert_eq!(out.json()["path"], "/slow/1500");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "the proxy exited before the in-flight request could finish"
    );
}

#[test]
fn sigterm_when_idle_exits_zero_and_stops_listening() {
    let mut stack = Stack::start();
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    let addr = stack.proxy.addr();
    let started = Instant::now();
    let status = stack.proxy.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "exit {status:?}\n{}",
        stack.proxy.describe()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle proxy took {:?} to stop",
        started.elapsed()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still accepting connections after exit"
    );
}
