//! The proxy under test: the real `axtary` binary run as a child process with a throwaway
//! home and config, plus the readings taken from `/proc` (memory, CPU time, open
//! descriptors, open-file limit).
//!
//! A separate process, not the library in-process, so the numbers include everything a user
//! pays for (its own runtime, logging, allocator) and the memory readings are the proxy's
//! alone.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

/// The env var the bench config names as the GitHub connector's `tokenEnv`.
pub const TOKEN_ENV: &str = "BENCH_GITHUB_TOKEN";

/// How long the proxy may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The line the proxy prints once it is bound.
const LISTENING_PREFIX: &str = "axtary proxy listening on http://";

/// A running proxy; killed and reaped on drop, also when the bench panics.
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The proxy's own CA: what a client of the proxy must trust.
    pub ca_pem: PathBuf,
    stderr_path: PathBuf,
    // Dropped after the child is gone (fields drop in declaration order after `drop`).
    _dir: TempDir,
}

/// Memory figures of a process, in KiB as `/proc` reports them.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl ProxyProcess {
    /// Writes the config, starts the binary at `exe`, and waits for its listening line.
    pub fn start(
        exe: &Path,
        upstream: SocketAddr,
        upstream_ca_pem: &str,
        token: &str,
    ) -> Result<ProxyProcess, String> {
        let dir = tempfile::Builder::new()
            .prefix("axtary-load")
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let home = dir.path().join("home");
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, upstream_ca_pem)
            .map_err(|e| format!("cannot write {}: {e}", ca_file.display()))?;
        let config_path = dir.path().join("axtary.yml");
        let config = format!(
            "version: 1\n\
             proxy:\n  listen: 127.0.0.1:0\n\
             upstream:\n  caFile: {ca}\n  resolve:\n    api.github.com:443: {upstream}\n\
             ledger:\n  path: off\n\
             connectors:\n  github:\n    provider: github\n    tokenEnv: {TOKEN_ENV}\n",
            ca = serde_json::to_string(&ca_file.display().to_string())
                .map_err(|e| format!("cannot quote a path: {e}"))?,
        );
        std::fs::write(&config_path, config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let stderr_path = dir.path().join("proxy.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;

        let mut child = Command::new(exe)
            .arg("proxy")
            .arg("--config")
            .arg(&config_path)
            .env("AXTARY_HOME", &home)
            .env(TOKEN_ENV, token)
            // The proxy's default log level is what a user runs with; an inherited filter
            // would measure logging instead.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;

        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after the first line so the proxy never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(LISTENING_PREFIX) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });

        let mut proxy = ProxyProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_pem: home.join("ca").join("ca.pem"),
            stderr_path,
            _dir: dir,
        };
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a,
            Err(_) => {
                return Err(format!(
                    "the proxy printed no listening line within {} s; its stderr:\n{}",
                    START_TIMEOUT.as_secs(),
                    proxy.stderr()
                ))
            }
        };
        proxy.addr = addr
            .parse()
            .map_err(|e| format!("cannot parse the proxy address `{addr}`: {e}"))?;
        Ok(proxy)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the proxy wrote to stderr so far (for error reports).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Fails if the proxy has exited, with its status and stderr.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the proxy exited ({status}); its stderr:\n{}",
                self.stderr()
            )),
            Err(e) => Err(format!("cannot query the proxy process: {e}")),
        }
    }

    /// VmRSS and VmHWM from `/proc/<pid>/status`.
    pub fn memory(&self) -> Result<Memory, String> {
        read_memory(self.pid())
    }

    /// CPU time the proxy has used so far (user + system, all threads).
    pub fn cpu_time(&self) -> Result<Duration, String> {
        read_cpu_time(self.pid())
    }

    /// Open file descriptors of the proxy: one per client socket, pooled upstream socket,
    /// and a handful of fixed ones.
    pub fn open_fds(&self) -> Result<usize, String> {
        let dir = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&dir)
            .map(|d| d.count())
            .map_err(|e| format!("cannot list {dir}: {e}"))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // Also runs while a failed run unwinds: no panics here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory of process `pid` (use `std::process::id()` for this one).
pub fn read_memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no readable {name} line"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// User + system CPU time of process `pid`, from fields 14 and 15 of `/proc/<pid>/stat`.
pub fn read_cpu_time(pid: u32) -> Result<Duration, String> {
    // The kernel reports these in USER_HZ, which is 100 on every Linux ABI.
    const TICKS_PER_SEC: u64 = 100;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: count from after its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path} has no command field"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{path} has no readable field {}", i + 3))
    };
    // Field 3 (state) is index 0 here, so utime (14) and stime (15) are 11 and 12.
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SEC))
}

/// CPU time the whole machine spent busy (all CPUs, every process), from `/proc/stat`; with
/// this process's and the proxy's own time it tells how much else was running.
pub fn read_machine_busy() -> Result<Duration, String> {
    const TICKS_PER_SEC: u64 = 100;
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat has no cpu line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Ok(Duration::from_millis(busy * 1000 / TICKS_PER_SEC))
}

/// The soft limit on open files of this process (the proxy inherits it), from
/// `/proc/self/limits`; `None` when unlimited.
pub fn open_file_limit() -> Result<Option<u64>, String> {
    let limits = std::fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("cannot read /proc/self/limits: {e}"))?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("/proc/self/limits has no `Max open files` line")?;
    Ok(soft.parse().ok())
}
