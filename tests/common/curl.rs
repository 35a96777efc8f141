//! The real curl, as an agent would use it.
//!
//! Tests drive the proxy with the same client agents use, so TLS interception, CONNECT and
//! HTTP/2 are exercised exactly as in the field. curl missing is a test failure, never a skip.
//! Headers and body go to temp files; the status and negotiated HTTP version come from `-w`.

use std::ffi::{OsStr, OsString};
use std::process::Command;
use std::time::Duration;

use super::{run_bounded, scrub_env};

/// What one curl run produced. The headers are those of the final response (after any
/// `CONNECT` or `100 Continue` heads).
#[derive(Debug)]
pub struct CurlOutput {
    /// curl's exit code (0 ok; 56 e.g. for a refused CONNECT).
    pub exit: i32,
    /// `%{http_code}`; 0 when no response came.
    pub status: u16,
    /// `%{http_version}`: `1.1`, `2`, ...
    pub http_version: String,
    /// `%{http_connect}`: the proxy's answer to CONNECT; 0 when there was none.
    pub connect_status: u16,
    /// Final response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Every header block curl saw, as text (includes the proxy's CONNECT answer).
    pub head_raw: String,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlOutput {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with context when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e})\n{}", self.describe()))
    }

    /// A readable summary for assertion messages (the body is truncated).
    pub fn describe(&self) -> String {
        let body = self.body_text();
        let body: String = body.chars().take(2000).collect();
        format!(
            "curl exit {} status {} http/{}\n--- headers\n{}\n--- body\n{}\n--- curl stderr\n{}",
            self.exit, self.status, self.http_version, self.head_raw, body, self.stderr
        )
    }

    /// Asserts curl succeeded and got `status`.
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.exit, 0, "curl failed\n{}", self.describe());
        assert_eq!(
            self.status,
            status,
            "unexpected status\n{}",
            self.describe()
        );
        self
    }
}

/// Runs `curl -q -sS` with `args` (plus header and body capture) and returns what it got.
/// Never panics on an HTTP or transfer error; does panic when curl cannot be run.
pub fn curl<I, S>(args: I) -> CurlOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = tempfile::Builder::new()
        .prefix("axtary-test-curl")
        .tempdir()
        .expect("temp dir for curl output");
    let head_path = dir.path().join("head");
    let body_path = dir.path().join("body");
    let mut cmd = Command::new("/usr/bin/env");
    scrub_env(&mut cmd);
    cmd.arg("curl")
        // `-q` first: ignore any curlrc.
        .arg("-q")
        .args(["-sS", "--max-time", "60", "--connect-timeout", "10"])
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version} %{http_connect}"]);
    let user: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    cmd.args(&user);
    let out = run_bounded(cmd, Duration::from_secs(90));
    let exit = out.code().unwrap_or(-1);
    if exit == 127 {
        panic!(
            "curl is required by the end-to-end tests and could not be run: {}",
            out.stderr()
        );
    }
    let stdout = out.stdout();
    let mut parts = stdout.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = parts.next().unwrap_or("").to_string();
    let connect_status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let head_raw = std::fs::read(&head_path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let body = std::fs::read(&body_path).unwrap_or_default();
    CurlOutput {
        exit,
        status,
        http_version,
        connect_status,
        headers: last_header_block(&head_raw),
        head_raw,
        body,
        stderr: out.stderr(),
    }
}

/// Parses the last `HTTP/...` block of a `-D` dump.
fn last_header_block(raw: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    for line in raw.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            blocks.push(Vec::new());
        } else if let (Some(block), Some((k, v))) = (blocks.last_mut(), line.split_once(':')) {
            block.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    blocks.pop().unwrap_or_default()
}
