//! A real Secret Service for keychain tests: Debian's gnome-keyring in a private D-Bus
//! session, unlocked with a known password, with its keyrings under a temp `HOME`.
//!
//! `dbus-run-session` runs a small shell script that starts `gnome-keyring-daemon --unlock`
//! (which reads the password on stdin and creates the login keyring), prints the bus address,
//! and waits for its own stdin to close. Dropping the handle closes that stdin, so the script
//! stops the daemon and `dbus-run-session` tears the bus down; the whole process group is
//! killed if anything lingers. A missing tool fails the test: it is never skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SCRIPT: &str = r#"
IFS= read -r pw
printf '%s' "$pw" | gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>&1 &
kpid=$!
echo "BUS=$DBUS_SESSION_BUS_ADDRESS"
cat >/dev/null
kill "$kpid" 2>/dev/null
wait "$kpid" 2>/dev/null
"#;

/// A running private D-Bus session with an unlocked gnome-keyring.
pub struct SecretService {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    bus: String,
    home: TempDir,
}

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: the keychain tests need Debian's gnome-keyring, dbus and libsecret-tools (scripts/test.sh installs them)"
    );
}

impl SecretService {
    pub fn start() -> SecretService {
        for tool in [
            "dbus-run-session",
            "gnome-keyring-daemon",
            "dbus-send",
            "secret-tool",
        ] {
            require(tool);
        }
        let home = tempfile::Builder::new()
            .prefix("axtary-test-keyring")
            .tempdir()
            .expect("keyring home");
        let mut child = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", SCRIPT])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbus-run-session: {e}"));
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "axtary-test-keyring-password").expect("send the keyring password");
        stdin.flush().expect("flush");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut service = SecretService {
            child: Some(child),
            stdin: Some(stdin),
            bus: String::new(),
            home,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("dbus-run-session printed no bus address"));
        service.bus = line
            .strip_prefix("BUS=")
            .unwrap_or_else(|| panic!("unexpected line from the session script: {line}"))
            .to_string();
        assert!(!service.bus.is_empty(), "empty bus address");
        service.wait_for_secrets();
        service
    }

    /// Polls until `org.freedesktop.secrets` has an owner (without activating anything).
    fn wait_for_secrets(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
                .output()
                .expect("run dbus-send");
            if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring did not register org.freedesktop.secrets within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The session's `DBUS_SESSION_BUS_ADDRESS`.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// Points `cmd` at this session.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env_remove("XDG_RUNTIME_DIR");
    }

    /// `secret-tool lookup ATTR VALUE ...`: the stored secret, or None.
    pub fn lookup(&self, attrs: &[(&str, &str)]) -> Option<String> {
        let mut cmd = Command::new("secret-tool");
        cmd.arg("lookup");
        for (k, v) in attrs {
            cmd.arg(k).arg(v);
        }
        let out = cmd
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("HOME", self.home.path())
            .output()
            .expect("run secret-tool");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            .filter(|s| !s.is_empty())
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        // Closing stdin ends the script, which stops the daemon; then the bus goes.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            if super::wait_bounded(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Anything left in the session's process group (the daemon, the bus).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
