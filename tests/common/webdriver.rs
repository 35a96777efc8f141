//! Real headless Chromium driven over the W3C WebDriver protocol by Debian's `chromedriver`.
//!
//! WebDriver is plain HTTP with JSON bodies, so a few lines over `TcpStream` drive it: no
//! WebSocket framing (the DevTools protocol's transport) to write and no extra crate, and
//! chromedriver owns Chromium's lifetime (it starts and ends the browser with the session).
//! Both run in a process group of their own, killed whole on drop. A missing `chromium` or
//! `chromedriver` fails the test: it is never skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process.
pub struct Chromedriver {
    child: Option<Child>,
    addr: SocketAddr,
}

/// One browser session.
pub struct Session<'a> {
    driver: &'a Chromedriver,
    id: String,
    _profile: TempDir,
}

fn find_tool(names: &[&str]) -> String {
    for name in names {
        if let Some(path) = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        }) {
            return path.to_string_lossy().into_owned();
        }
    }
    panic!(
        "none of {names:?} is installed: the browser test needs Debian's chromium and chromium-driver (scripts/test.sh installs them)"
    );
}

impl Chromedriver {
    pub fn start() -> Chromedriver {
        let bin = find_tool(&["chromedriver"]);
        let port = super::closed_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let driver = Chromedriver {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, v)) = driver.try_call("GET", "/status", None) {
                if v["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.addr,
            payload.len()
        )?;
        // chromedriver may keep the connection open: read the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other(
                    "connection closed before a response head",
                ));
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        let mut body = raw[head_end..].to_vec();
        while length.is_none_or(|len| body.len() < len) {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let (status, v) = self
            .try_call(method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert_eq!(
            status, 200,
            "WebDriver {method} {path} answered {status}: {v}"
        );
        v["value"].clone()
    }

    /// A new headless Chromium with a fresh profile; `extra` are more command-line flags.
    pub fn session(&self, extra: &[String]) -> Session<'_> {
        let binary = find_tool(&["chromium", "chromium-browser"]);
        let profile = tempfile::Builder::new()
            .prefix("axtary-test-chromium")
            .tempdir()
            .expect("profile dir");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-breakpad",
            "--disable-crash-reporter",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        let v = self.call(
            "POST",
            "/session",
            Some(serde_json::json!({
                "capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": binary, "args": args},
                }}
            })),
        );
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        Session {
            driver: self,
            id,
            _profile: profile,
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            // Chromium and its helpers were started by chromedriver, in its group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Session<'_> {
    pub fn goto(&self, url: &str) {
        self.driver.call(
            "POST",
            &format!("/session/{}/url", self.id),
            Some(serde_json::json!({ "url": url })),
        );
    }

    pub fn url(&self) -> String {
        self.driver
            .call("GET", &format!("/session/{}/url", self.id), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element matching a CSS selector.
    pub fn find(&self, css: &str) -> String {
        let v = self.driver.call(
            "POST",
            &format!("/session/{}/element", self.id),
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    pub fn click(&self, element: &str) {
        self.driver.call(
            "POST",
            &format!("/session/{}/element/{element}/click", self.id),
            Some(serde_json::json!({})),
        );
    }

    pub fn text(&self, element: &str) -> String {
        self.driver
            .call(
                "GET",
                &format!("/session/{}/element/{element}/text", self.id),
                None,
            )
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn source(&self) -> String {
        self.driver
            .call("GET", &format!("/session/{}/source", self.id), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .try_call("DELETE", &format!("/session/{}", self.id), None);
    }
}
