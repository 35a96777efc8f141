//! Shared end-to-end harness: a test CA, mock providers on 127.0.0.1, a temp `AXTARY_HOME`,
//! a config builder, the `axtary` binary run as a child process, and a curl wrapper.
//!
//! Everything here is synchronous from the test's point of view: the mock runs on its own
//! runtime and the product and curl are child processes. Every process and port a helper opens
//! is closed when the helper is dropped.

#![allow(dead_code, unused_imports)]

pub mod ca;
pub mod cli;
pub mod config;
pub mod curl;
pub mod github_app;
pub mod keyring;
pub mod mock;
pub mod oauth;
pub mod proxy;
pub mod stack;
pub mod webdriver;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use tempfile::TempDir;

pub use ca::TestCa;
pub use config::ConfigBuilder;
pub use curl::{curl, CurlOutput};
pub use mock::{pattern_bytes, sha256_hex, Alpn, MockProvider, SeenRequest};
pub use proxy::{Proxy, ProxyBuilder};
pub use stack::{Stack, StackBuilder};

/// Path of the binary under test.
pub const AXTARY: &str = env!("CARGO_BIN_EXE_axtary");

/// Env vars the connectors read in the default test config.
pub const GITHUB_ENV: &str = "AXTARY_GITHUB_TOKEN";
pub const SLACK_ENV: &str = "AXTARY_SLACK_BOT_TOKEN";
pub const LINEAR_ENV: &str = "AXTARY_LINEAR_API_KEY";
pub const PROXY_TOKEN_ENV: &str = "AXTARY_PROXY_TOKEN";

/// Removes inherited variables that could change what the child does: Axtary's own settings,
/// anything that looks like a credential, outbound proxies and CA overrides.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let upper = key.to_ascii_uppercase();
        let drop = upper.starts_with("AXTARY_")
            || upper.ends_with("_TOKEN")
            || upper.ends_with("_API_KEY")
            || upper.ends_with("_SECRET")
            || matches!(
                upper.as_str(),
                "HTTP_PROXY"
                    | "HTTPS_PROXY"
                    | "ALL_PROXY"
                    | "NO_PROXY"
                    | "RUST_LOG"
                    | "SSL_CERT_FILE"
                    | "SSL_CERT_DIR"
                    | "CURL_CA_BUNDLE"
                    | "CURL_HOME"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
}

/// What a finished child process left behind.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// A byte buffer filled by a background thread draining a pipe.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("capture lock").clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Starts draining `pipe`; `on_line` sees each complete line as it arrives.
    pub fn drain<R: Read + Send + 'static>(
        &self,
        mut pipe: R,
        on_line: Option<std::sync::mpsc::Sender<String>>,
    ) -> JoinHandle<()> {
        let buf = self.0.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            let mut line = Vec::new();
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.lock()
                            .expect("capture lock")
                            .extend_from_slice(&chunk[..n]);
                        if let Some(tx) = &on_line {
                            for &b in &chunk[..n] {
                                if b == b'\n' {
                                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                                    line.clear();
                                } else {
                                    line.push(b);
                                }
                            }
                        }
                    }
                }
            }
            if let Some(tx) = &on_line {
                if !line.is_empty() {
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                }
            }
        })
    }
}

/// Runs `cmd` to completion, capturing both streams; kills it and panics after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> RunOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("cannot run {:?}: {e}", cmd.get_program()),
    };
    let out = Captured::default();
    let err = Captured::default();
    let t1 = out.drain(child.stdout.take().expect("stdout pipe"), None);
    let t2 = err.drain(child.stderr.take().expect("stderr pipe"), None);
    let status = wait_bounded(&mut child, timeout);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = t1.join();
        let _ = t2.join();
        panic!(
            "{:?} did not finish within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
            cmd.get_program(),
            out.text(),
            err.text()
        );
    };
    let _ = t1.join();
    let _ = t2.join();
    RunOutput {
        status,
        stdout: out.bytes(),
        stderr: err.bytes(),
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `pid` with the system `kill`; panics when `kill` cannot be run.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = status {
        panic!("cannot run `kill -TERM {pid}`: {e}");
    }
}

/// A temporary `AXTARY_HOME` (mode 0700), removed when dropped.
pub struct Home {
    dir: TempDir,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("axtary-test-home")
            .tempdir()
            .expect("temp AXTARY_HOME");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700 AXTARY_HOME");
        Home { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the proxy keeps its CA certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.path().join("ca").join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.path().join("ca").join("ca-key.pem")
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.path().join("ledger.jsonl")
    }

    /// The ledger's raw bytes (empty when there is none yet).
    pub fn ledger_bytes(&self) -> Vec<u8> {
        std::fs::read(self.ledger_path()).unwrap_or_default()
    }

    /// The ledger's lines parsed as JSON; panics on a line that is not JSON.
    pub fn ledger_entries(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.ledger_bytes())
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ledger line {l:?}: {e}")))
            .collect()
    }

    /// Writes `axtary.yml` into the home and returns its path.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.path().join("axtary.yml");
        std::fs::write(&path, yaml).expect("write axtary.yml");
        path
    }

    /// A proxy run with this home and `config`.
    pub fn proxy(&self, config: &Path) -> ProxyBuilder {
        ProxyBuilder::new(self.path().to_path_buf(), config.to_path_buf())
    }

    /// A clean command for the binary with `AXTARY_HOME` set to this home.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(AXTARY);
        scrub_env(&mut cmd);
        cmd.env("AXTARY_HOME", self.path())
            .env("AXTARY_CREDENTIAL_STORE", "file")
            .current_dir(self.path())
            .args(args);
        cmd
    }

    /// Runs the binary with `args` to completion (bounded).
    pub fn run<I, S>(&self, args: I) -> RunOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_bounded(self.command(args), Duration::from_secs(20))
    }
}

impl Default for Home {
    fn default() -> Self {
        Home::new()
    }
}

/// Random letters and digits.
pub fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// A GitHub-shaped canary credential, random per call.
pub fn canary_github() -> String {
    format!("ghp_{}", random_alnum(36))
}

/// A Slack-bot-shaped canary credential, random per call.
pub fn canary_slack() -> String {
    let mut rng = rand::rng();
    format!(
        "xoxb-{}-{}-{}",
        rng.random_range(100_000_000_000u64..999_999_999_999),
        rng.random_range(100_000_000_000u64..999_999_999_999),
        random_alnum(24)
    )
}

/// A Linear-personal-key-shaped canary credential, random per call.
pub fn canary_linear() -> String {
    format!("lin_api_{}", random_alnum(40))
}

/// A proxy token, random per call.
pub fn canary_proxy_token() -> String {
    format!("axtproxy{}", random_alnum(32))
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    let port = l.local_addr().expect("probe addr").port();
    drop(l);
    port
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` to `addr` and reads one response (head, then a Content-Length body or
/// until the peer closes), bounded by a few seconds.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.write_all(request).expect("write raw request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "no response head: {e}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    loop {
        if length.is_some_and(|len| body.len() >= len) {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    RawResponse {
        status,
        head,
        headers,
        body,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// True when `needle` occurs anywhere in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && find(hay, needle.as_bytes()).is_some()
}

/// Asserts that the JSON error body and header carry `code`.
pub fn assert_axtary_error(out: &CurlOutput, status: u16, code: &str) {
    assert_eq!(
        out.status,
        status,
        "expected {status} {code}, got {}\n{}",
        out.status,
        out.describe()
    );
    assert_eq!(
        out.header("x-axtary-error"),
        Some(code),
        "x-axtary-error header\n{}",
        out.describe()
    );
    let body = out.json();
    assert_eq!(
        body["error"]["code"].as_str(),
        Some(code),
        "error.code in body\n{}",
        out.describe()
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message must be a non-empty string\n{}",
        out.describe()
    );
}
