//! The request ledger: an append-only, hash-chained JSONL file (SPEC 8).
//!
//! One line per request on a connector route or tunneled CONNECT. Each line's `prev` is the
//! SHA-256 of the previous line's exact bytes, so editing, removing or reordering lines breaks
//! the chain at a point `verify` can name. Recording never blocks the request path: entries go
//! over a channel to one writer thread that appends them in batches. Several processes may share
//! one ledger: each batch is appended under an exclusive file lock, and a writer that finds the
//! file grew behind its back re-reads the last line to chain onto it.
//!
//! Never written: a header value, a body or a query string.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// `prev` of the first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest number of entries appended under one lock.
const MAX_BATCH: usize = 1024;

/// Fields every line must have, in the order they are written.
const FIELDS: [&str; 13] = [
    "ts",
    "id",
    "connector",
    "method",
    "host",
    "path",
    "status",
    "durationMs",
    "decision",
    "credentialSource",
    "bytesIn",
    "bytesOut",
    "prev",
];

/// RFC 3339, UTC, milliseconds.
const TS_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// What the proxy did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Injected,
    Denied,
    DryRun,
    RateLimited,
    Tunneled,
    Error,
}

/// One request, as the caller reports it. `ts` and `id` are added by `record`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub connector: Option<String>,
    pub method: String,
    pub host: String,
    /// Path only; anything from `?` or `#` on is dropped before writing.
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    pub decision: Decision,
    pub credential_source: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The on-disk shape of a line; field order here is the order in the file.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    ts: &'a str,
    id: &'a str,
    connector: Option<&'a str>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: u64,
    decision: Decision,
    credential_source: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
    prev: &'a str,
}

struct Pending {
    ts: String,
    id: String,
    entry: Entry,
}

enum Msg {
    Record(Box<Pending>),
    /// Answered once everything sent before it is written and synced.
    Flush(Sender<()>),
}

/// A handle to the ledger writer. Cloning is cheap; the writer thread ends when the last
/// handle is dropped, after writing what it was sent. Call `flush` at shutdown so the process
/// does not exit before that.
#[derive(Clone, Debug)]
pub struct Ledger {
    tx: Option<Sender<Msg>>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and starts its writer thread. A new
    /// parent directory is created with mode 0700 and a new file with 0600; an existing file
    /// that other users can access is refused.
    pub fn open(path: &Path) -> io::Result<Ledger> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // SECURITY: the ledger shows which services were called and when.
            options.mode(0o600);
        }
        let file = options.open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata()?.permissions().mode();
            // SECURITY: an existing file keeps its mode, so check it rather than trust it.
            if mode & 0o077 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "ledger {} is accessible by other users (mode {:o}): run `chmod 600 {}`",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    ),
                ));
            }
        }
        let mut writer = Writer {
            file,
            path: path.to_path_buf(),
            prev: GENESIS.to_string(),
            needs_newline: false,
            known_len: 0,
        };
        writer.resync()?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("axtary-ledger".into())
            .spawn(move || writer.run(rx))?;
        Ok(Ledger { tx: Some(tx) })
    }

    /// A ledger that records nothing.
    pub fn off() -> Ledger {
        Ledger { tx: None }
    }

    /// False for `Ledger::off()`: callers skip assembling entries nobody will write.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one entry; returns at once.
    pub fn record(&self, e: Entry) {
        let Some(tx) = &self.tx else { return };
        let ts = OffsetDateTime::now_utc()
            .format(TS_FORMAT)
            .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string());
        let id = format!("{:016x}", rand::random::<u64>());
        // A closed channel means the writer thread died; it has already logged why.
        let _ = tx.send(Msg::Record(Box::new(Pending { ts, id, entry: e })));
    }

    /// Blocks until every entry recorded so far through any handle of this ledger is written
    /// and synced to disk.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = mpsc::channel();
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            // Err only if the writer thread is gone, in which case there is nothing to wait on.
            let _ = done_rx.recv();
        }
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// State owned by the writer thread.
struct Writer {
    file: File,
    path: PathBuf,
    /// Hash of the last line in the file, as far as this writer knows.
    prev: String,
    /// The file ends in a partial line (a crashed writer); start the next line on its own.
    needs_newline: bool,
    /// File length after this writer's last append; a different length means another
    /// process wrote in between.
    known_len: u64,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Record(p) => batch.push(*p),
                    Msg::Flush(w) => waiters.push(w),
                }
                next = if batch.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                if let Err(e) = self.append(&batch) {
                    tracing::error!(
                        "cannot append {} entries to ledger {}: {e}",
                        batch.len(),
                        self.path.display()
                    );
                }
                batch.clear();
            }
            if !waiters.is_empty() {
                if let Err(e) = self.file.sync_data() {
                    tracing::warn!("cannot sync ledger {}: {e}", self.path.display());
                }
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }
    }

    // `File::lock` is stable since 1.89; the manifest's `rust-version` should say so.
    fn append(&mut self, batch: &[Pending]) -> io::Result<()> {
        let locked = match self.file.lock() {
            Ok(()) => true,
            Err(e) => {
                // A filesystem without locks still gets the entries; only cross-process
                // ordering is at risk.
                tracing::warn!("cannot lock ledger {}: {e}", self.path.display());
                false
            }
        };
        let result = self.append_locked(batch);
        if locked {
            let _ = self.file.unlock();
        }
        result
    }

    fn append_locked(&mut self, batch: &[Pending]) -> io::Result<()> {
        if self.file.metadata()?.len() != self.known_len {
            self.resync()?;
        }
        let mut out = Vec::with_capacity(batch.len() * 256);
        if self.needs_newline {
            out.push(b'\n');
        }
        let mut prev = self.prev.clone();
        for p in batch {
            let e = &p.entry;
            let line = Line {
                ts: &p.ts,
                id: &p.id,
                connector: e.connector.as_deref(),
                method: &e.method,
                host: &e.host,
                path: strip_query(&e.path),
                status: e.status,
                duration_ms: e.duration_ms,
                decision: e.decision,
                credential_source: e.credential_source.as_deref(),
                bytes_in: e.bytes_in,
                bytes_out: e.bytes_out,
                prev: &prev,
            };
            let json = serde_json::to_vec(&line).map_err(io::Error::other)?;
            prev = hex::encode(Sha256::digest(&json));
            out.extend_from_slice(&json);
            out.push(b'\n');
        }
        // One write in append mode: the batch lands whole at the end of the file.
        self.file.write_all(&out)?;
        self.prev = prev;
        self.needs_newline = false;
        self.known_len = self.file.metadata()?.len();
        Ok(())
    }

    /// Reads the file's last line to chain onto it.
    fn resync(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let lines = last_lines(&mut self.file, 1)?;
        self.prev = match lines.last() {
            Some(line) => hex::encode(Sha256::digest(line)),
            None => GENESIS.to_string(),
        };
        self.needs_newline = len > 0 && last_byte(&mut self.file, len)? != b'\n';
        self.known_len = len;
        Ok(())
    }
}

/// SECURITY: a query string can carry tokens (`?access_token=`); it never reaches the ledger
/// even if a caller forgets to strip it.
fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

fn last_byte(file: &mut File, len: u64) -> io::Result<u8> {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut b)?;
    Ok(b[0])
}

/// The last `n` lines of the file (without newlines), reading backwards in blocks so a large
/// file is not read whole. A final line without a newline counts as a line.
fn last_lines(file: &mut File, n: usize) -> io::Result<Vec<Vec<u8>>> {
    const BLOCK: u64 = 8192;
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 || n == 0 {
        return Ok(Vec::new());
    }
    // Lines end before this offset: skip the file's final newline.
    let content_end = if last_byte(file, len)? == b'\n' {
        len - 1
    } else {
        len
    };
    let mut start = 0;
    let mut found = 0;
    let mut pos = content_end;
    let mut block = vec![0u8; BLOCK as usize];
    'scan: while pos > 0 {
        let from = pos.saturating_sub(BLOCK);
        let chunk = &mut block[..(pos - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(chunk)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            if b == b'\n' {
                found += 1;
                if found == n {
                    start = from + i as u64 + 1;
                    break 'scan;
                }
            }
        }
        pos = from;
    }
    let mut tail = vec![0u8; (content_end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut tail)?;
    Ok(tail.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect())
}

/// The last `n` raw lines of the ledger, oldest first.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    Ok(last_lines(&mut file, n)?
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect())
}

/// Where and why a ledger failed verification. `line` is 1-based; 0 means the file itself
/// could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "line {}: {}", self.line, self.reason)
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks every line parses, has every field, and chains onto the line before it. Returns
/// the number of lines checked, or the first broken line.
pub fn verify(path: &Path) -> Result<usize, VerifyError> {
    let file = File::open(path).map_err(|e| VerifyError {
        line: 0,
        reason: format!("cannot open {}: {e}", path.display()),
    })?;
    let mut reader = BufReader::new(file);
    let mut expected_prev = GENESIS.to_string();
    let mut buf = Vec::new();
    let mut count = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| VerifyError {
                line: count + 1,
                reason: format!("cannot read: {e}"),
            })?;
        if n == 0 {
            return Ok(count);
        }
        count += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let fail = |reason: String| VerifyError {
            line: count,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| fail(format!("not valid JSON ({e})")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| fail("not a JSON object".to_string()))?;
        if let Some(missing) = FIELDS.iter().find(|f| !obj.contains_key(**f)) {
            return Err(fail(format!("missing field `{missing}`")));
        }
        let prev = obj.get("prev").and_then(|p| p.as_str()).unwrap_or("");
        if prev != expected_prev {
            let reason = if count == 1 {
                "`prev` is not the genesis value: lines before it were removed".to_string()
            } else {
                format!(
                    "`prev` does not match line {}: that line was changed, or lines between were removed or reordered",
                    count - 1
                )
            };
            return Err(fail(reason));
        }
        expected_prev = hex::encode(Sha256::digest(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a test waits for a flush before failing instead of hanging.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    fn entry(path: &str, status: u16) -> Entry {
        Entry {
            connector: Some("github".into()),
            method: "GET".into(),
            host: "api.github.com".into(),
            path: path.into(),
            status,
            duration_ms: 12,
            decision: Decision::Injected,
            credential_source: Some("keychain".into()),
            bytes_in: 10,
            bytes_out: 200,
        }
    }

    fn read_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn chain_of_three_verifies_with_fields_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = Ledger::open(&path).unwrap();
        for i in 0..3 {
            ledger.record(entry("/user", 200 + i));
        }
        ledger.flush();
        assert_eq!(verify(&path), Ok(3));
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 3);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["decision"], "injected");
        assert_eq!(first["id"].as_str().unwrap().len(), 16);
        let ts = first["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2025-01-01T00:00:00.000Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        // Field order as in the SPEC.
        let mut last = 0;
        for f in FIELDS {
            let at = lines[0].find(&format!("\"{f}\":")).unwrap();
            assert!(at >= last, "{f} out of order");
            last = at;
        }
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            second["prev"],
            hex::encode(Sha256::digest(lines[0].as_bytes()))
        );
    }

    #[test]
    fn edited_line_breaks_the_chain_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = Ledger::open(&path).unwrap();
        for _ in 0..3 {
            ledger.record(entry("/user", 200));
        }
        ledger.flush();
        let original = read_lines(&path);

        let mut edited = original.clone();
        edited[1] = edited[1].replace("\"status\":200", "\"status\":201");
        write_lines(&path, &edited);
        assert_eq!(verify(&path).unwrap_err().line, 3);

        let mut broken = original.clone();
        broken[1].truncate(20);
        write_lines(&path, &broken);
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("JSON"), "{err}");

        let mut missing = original.clone();
        missing[1] = missing[1].replace("\"bytesIn\":10,", "");
        write_lines(&path, &missing);
        let err = verify(&path).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("bytesIn"), "{err}");

        write_lines(&path, &original[1..]);
        assert_eq!(verify(&path).unwrap_err().line, 1);
    }

    #[test]
    fn reopen_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        {
            let ledger = Ledger::open(&path).unwrap();
            ledger.record(entry("/a", 200));
            ledger.record(entry("/b", 200));
            ledger.flush();
        }
        let ledger = Ledger::open(&path).unwrap();
        ledger.record(entry("/c", 200));
        ledger.flush();
        assert_eq!(verify(&path), Ok(3));
    }

    #[test]
    fn two_handles_on_one_file_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let a = Ledger::open(&path).unwrap();
        let b = Ledger::open(&path).unwrap();
        let threads: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|l| {
                std::thread::spawn(move || {
                    for i in 0..200 {
                        l.record(entry("/x", 200));
                        if i % 17 == 0 {
                            l.flush();
                        }
                    }
                    l.flush();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(verify(&path), Ok(400));
    }

    #[cfg(unix)]
    #[test]
    fn new_file_is_private_and_open_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("ledger.jsonl");
        let ledger = Ledger::open(&path).unwrap();
        ledger.flush();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Ledger::open(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }

    #[test]
    fn query_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = Ledger::open(&path).unwrap();
        ledger.record(entry("/search?access_token=ghp_leak#frag", 200));
        ledger.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("access_token"), "{text}");
        assert!(text.contains("\"path\":\"/search\""), "{text}");
    }

    #[test]
    fn off_records_nothing() {
        let ledger = Ledger::off();
        ledger.record(entry("/x", 200));
        ledger.flush();
    }

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = Ledger::open(&path).unwrap();
        // Enough lines to span several read blocks.
        for i in 0..300 {
            ledger.record(entry(&format!("/p{i}"), 200));
        }
        ledger.flush();
        let all = read_lines(&path);
        assert_eq!(tail(&path, 5).unwrap(), all[295..].to_vec());
        assert_eq!(tail(&path, 1000).unwrap(), all);
        assert!(tail(&path, 0).unwrap().is_empty());
    }

    #[test]
    fn partial_last_line_is_not_glued_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        {
            let ledger = Ledger::open(&path).unwrap();
            ledger.record(entry("/a", 200));
            ledger.flush();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"ts\":\"trunc").unwrap();
        drop(f);
        let ledger = Ledger::open(&path).unwrap();
        ledger.record(entry("/b", 200));
        ledger.flush();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 3);
        // The damage is reported where it is.
        assert_eq!(verify(&path).unwrap_err().line, 2);
    }

    #[test]
    fn flush_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = Ledger::open(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            ledger.record(entry("/a", 200));
            ledger.flush();
            let _ = tx.send(());
        });
        rx.recv_timeout(TEST_TIMEOUT).unwrap();
    }
}
