//! Runs `axtary proxy` as a child process for a test.
//!
//! The child gets a clean environment (inherited Axtary settings, credentials and proxy
//! variables removed), its own `AXTARY_HOME`, and only the env vars the test names. Both output
//! streams are captured whole so a test can grep every byte afterwards. Start-up waits for the
//! "listening on http://ADDR" line; drop sends SIGTERM, then kills if the child lingers.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::curl::{curl, CurlOutput};
use super::{run_bounded, scrub_env, wait_bounded, Captured, RunOutput, AXTARY};

/// What the proxy prints once it accepts connections.
pub const LISTENING_MARKER: &str = "listening on http://";

/// How long a proxy may take to print its address.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping proxy may take: its grace period plus slack.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A proxy run being set up.
pub struct ProxyBuilder {
    home: PathBuf,
    /// `None`: no `--config`, so the proxy picks `./axtary.yml` or its built-in default.
    config: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    rust_log: Option<String>,
}

impl ProxyBuilder {
    pub fn new(home: PathBuf, config: PathBuf) -> ProxyBuilder {
        ProxyBuilder {
            home,
            config: Some(config),
            args: Vec::new(),
            envs: Vec::new(),
            rust_log: None,
        }
    }

    /// Runs `axtary proxy` without `--config`.
    pub fn without_config(mut self) -> Self {
        self.config = None;
        self
    }

    /// An extra argument after `proxy --config FILE`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = Some(filter.to_string());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(AXTARY);
        scrub_env(&mut cmd);
        cmd.env("AXTARY_HOME", &self.home)
            .env("AXTARY_CREDENTIAL_STORE", "file")
            .current_dir(&self.home)
            .arg("proxy");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(&self.args);
        if let Some(filter) = &self.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a proxy that is expected to refuse to start; returns how it exited.
    pub fn run_to_exit(self) -> RunOutput {
        run_bounded(self.command(), READY_TIMEOUT)
    }

    /// Starts the proxy and waits until it prints its address.
    pub fn start(self) -> Proxy {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {AXTARY}: {e}"));
        let stdout = Captured::default();
        let stderr = Captured::default();
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            stdout.drain(child.stdout.take().expect("stdout pipe"), Some(tx.clone())),
            stderr.drain(child.stderr.take().expect("stderr pipe"), Some(tx)),
        ];
        let mut proxy = Proxy {
            pid: child.id(),
            child: Some(child),
            addr: None,
            home: self.home,
            stdout,
            stderr,
            readers,
            exit: None,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                proxy.kill_now();
                panic!(
                    "proxy printed no `{LISTENING_MARKER}` line within {READY_TIMEOUT:?}\n{}",
                    proxy.describe()
                );
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        proxy.addr = Some(addr);
                        return proxy;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = proxy.try_exit() {
                        proxy.join_readers();
                        panic!(
                            "proxy exited before listening: {status:?}\n{}",
                            proxy.describe()
                        );
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = proxy
                        .child
                        .as_mut()
                        .and_then(|c| wait_bounded(c, Duration::from_secs(5)));
                    proxy.join_readers();
                    panic!(
                        "proxy exited before listening: {status:?}\n{}",
                        proxy.describe()
                    );
                }
            }
        }
    }
}

/// Parses `... listening on http://127.0.0.1:PORT ...` into the address.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(LISTENING_MARKER)? + LISTENING_MARKER.len()..];
    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next()?;
    addr.parse().ok()
}

/// A running `axtary proxy`.
pub struct Proxy {
    child: Option<Child>,
    pid: u32,
    addr: Option<SocketAddr>,
    home: PathBuf,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Proxy {
    /// The address the proxy printed.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("proxy address")
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The `-x` value for curl.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The proxy's CA certificate under its `AXTARY_HOME`.
    pub fn ca_pem(&self) -> PathBuf {
        self.home.join("ca").join("ca.pem")
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.bytes()
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        self.stderr.bytes()
    }

    /// Both streams, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- proxy stdout\n{}\n--- proxy stderr\n{}",
            self.stdout(),
            tail(&self.stderr(), 6000)
        )
    }

    /// Runs curl through this proxy, trusting the proxy's CA: `-x http://ADDR --cacert CA`.
    pub fn curl<I, S>(&self, args: I) -> CurlOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = vec![
            "-x".into(),
            self.proxy_url().into(),
            "--cacert".into(),
            self.ca_pem().into_os_string(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        curl(all)
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Graceful stop: SIGTERM, wait for the exit (bounded), return its status. Output is
    /// complete afterwards.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        if let Some(status) = self.try_exit() {
            self.join_readers();
            return status;
        }
        super::sigterm(self.pid);
        let status = self
            .child
            .as_mut()
            .and_then(|c| wait_bounded(c, STOP_TIMEOUT));
        match status {
            Some(status) => {
                self.exit = Some(status);
                self.join_readers();
                status
            }
            None => {
                self.kill_now();
                panic!(
                    "proxy did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.describe()
                );
            }
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        self.exit = status;
        status
    }

    fn kill_now(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = child.kill();
                self.exit = child.wait().ok();
            }
        }
        self.join_readers();
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- axtary proxy stderr\n{}", self.stderr());
        }
        if self.try_exit().is_none() {
            // No panics here: this also runs while a failed test unwinds.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let status = self
                .child
                .as_mut()
                .and_then(|c| wait_bounded(c, Duration::from_secs(5)));
            if status.is_none() {
                self.kill_now();
            } else {
                self.exit = status;
            }
        }
        self.join_readers();
    }
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
