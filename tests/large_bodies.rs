//! 50 MB bodies each way arrive byte-for-byte (SPEC 4: bodies stream both ways), and the
//! proxy's peak memory shows they were streamed, not buffered whole.

mod common;

use common::{pattern_bytes, sha256_hex, Stack};

const SIZE: usize = 50 * 1024 * 1024;

/// Largest growth of the proxy's resident memory tolerated while moving `SIZE` bytes: well
/// under the body size, so buffering a whole body fails.
const MAX_GROWTH_KIB: u64 = 40 * 1024;

/// A `/proc/PID/status` field in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn assert_streamed(stack: &Stack, rss_before: u64) {
    let peak = proc_kib(stack.proxy.pid(), "VmHWM");
    eprintln!("proxy memory: {rss_before} KiB before, peak {peak} KiB");
    assert!(
        peak.saturating_sub(rss_before) < MAX_GROWTH_KIB,
        "proxy memory grew from {rss_before} KiB to a peak of {peak} KiB moving {SIZE} bytes"
    );
}

#[test]
fn fifty_megabyte_upload_arrives_intact() {
    let stack = Stack::start();
    let data = pattern_bytes(SIZE);
    let expected = sha256_hex(&data);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &data).expect("write upload file");
    drop(data);

    // Warm up so the baseline includes the connection machinery.
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    let rss_before = proc_kib(stack.proxy.pid(), "VmRSS");
    let out = stack.curl([
        "--data-binary".to_string(),
        format!("@{}", file.display()),
        "-H".to_string(),
        "Content-Type: application/octet-stream".to_string(),
        "https://api.github.com/upload".to_string(),
    ]);
    out.assert_status(200);
    let echo = out.json();
    assert_eq!(echo["len"], SIZE as u64);
    assert_eq!(echo["sha256"], expected);
    let seen = stack.mock.seen();
    let upload = seen
        .iter()
        .find(|r| r.path == "/upload")
        .expect("upload seen");
    assert_eq!(upload.body_len, SIZE as u64);
    assert_eq!(upload.body_sha256, expected);
    assert_streamed(&stack, rss_before);
}

#[test]
fn fifty_megabyte_download_arrives_intact() {
    let stack = Stack::start();
    let expected = sha256_hex(&pattern_bytes(SIZE));
    stack
        .curl(["https://api.github.com/user"])
        .assert_status(200);
    let rss_before = proc_kib(stack.proxy.pid(), "VmRSS");
    let out = stack.curl([format!("https://api.github.com/bytes/{SIZE}")]);
    out.assert_status(200);
    assert_eq!(out.body.len(), SIZE);
    assert_eq!(sha256_hex(&out.body), expected);
    assert_streamed(&stack, rss_before);
}
