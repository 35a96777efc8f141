//! Log output that cannot carry a credential (SPEC 9).
//!
//! Every event is formatted into a buffer, scrubbed, then written to stderr in one write. The
//! scrubber removes the values of credential headers in the shapes they take in log lines,
//! well-known token shapes, JWTs, and the exact value of every secret loaded so far. This is a
//! second line of defence: code should never log a secret, but a dependency at `trace` level
//! or a stray `{:?}` of a header map must not leak one either.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Captures, Regex};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::secret::Secret;

const REDACTED: &str = "[redacted]";

/// Registered values shorter than this are not scrubbed: a 1 to 3 character value would
/// blank common fragments of every line (making logs useless) while such a value protects
/// nothing anyway; real credentials are far longer.
const MIN_SECRET_LEN: usize = 4;

/// Header names whose values are credentials, then `:` or `=`, then the value: a quoted
/// string (JSON, `Debug` of a header map, a `?` tracing field) or else the rest of the line.
/// The unquoted case runs to the end of the line on purpose: `Bearer x` and cookie lists
/// contain spaces, and cutting a value short would leak its remainder.
static HEADER_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)((?:proxy[-_])?authorization|set[-_]cookie|cookie)(["']?\s*[:=]\s*)("(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'|[^\r\n]*)"#,
    )
    .expect("static regex")
});

/// Token shapes, each preceded by the start or a non-alphanumeric byte (kept in group 1) so
/// words such as `laughs_total` are not mistaken for a `ghs_` token.
static TOKEN_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(^|[^A-Za-z0-9])(?:gh[pousr]_|github_pat_|xox[A-Za-z0-9]-|xapp-|lin_api_|lin_oauth_)[A-Za-z0-9_-]+",
    )
    .expect("static regex")
});

/// A JWT: base64url header and payload (both JSON objects, hence `eyJ`) and a signature that
/// may be empty for unsigned tokens.
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*").expect("static regex")
});

/// How many exact values the scrubber keeps (oldest dropped first).
const MAX_REGISTERED: usize = 512;

/// The exact secrets to scrub, rebuilt on each registration (rare) and shared by every log
/// line (frequent) through a cloned `Arc`.
#[derive(Default)]
struct Registered {
    values: Vec<Secret>,
    matcher: Option<AhoCorasick>,
}

static REGISTERED: LazyLock<RwLock<Arc<Registered>>> = LazyLock::new(Default::default);

/// Adds an exact value to scrub from all log output written from now on. Values shorter than
/// 4 bytes are ignored (see `MIN_SECRET_LEN`).
pub fn register_secret(s: &Secret) {
    if s.expose().len() < MIN_SECRET_LEN {
        return;
    }
    let mut guard = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    if guard.values.contains(s) {
        return;
    }
    let mut values = guard.values.clone();
    values.push(s.clone());
    // Short-lived credentials (GitHub App JWTs every few minutes, installation tokens every
    // hour) are registered as they are minted; keep the newest ones so the set stays bounded.
    // A value this old has long expired: scrubbing it matters less than a bounded matcher.
    if values.len() > MAX_REGISTERED {
        let excess = values.len() - MAX_REGISTERED;
        values.drain(..excess);
    }
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(values.iter().map(|v| v.expose()))
        .ok();
    if matcher.is_none() {
        // Only possible past ~2^31 automaton states; keep the previous set rather than none.
        return;
    }
    *guard = Arc::new(Registered { values, matcher });
}

fn registered() -> Arc<Registered> {
    REGISTERED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Scrubs one formatted log event (one or more lines). Borrowed when nothing was found.
pub fn scrub(line: &str) -> Cow<'_, str> {
    // Exact secrets first, while they are still whole: a later rule could cut one in two and
    // leave a fragment that no longer matches.
    let reg = registered();
    let mut out = Cow::Borrowed(line);
    if let Some(ac) = &reg.matcher {
        if ac.is_match(line) {
            let mut s = String::with_capacity(line.len());
            let mut last = 0;
            for m in ac.find_iter(line) {
                // Matches of valid UTF-8 patterns in valid UTF-8 text fall on char boundaries.
                s.push_str(&line[last..m.start()]);
                s.push_str(REDACTED);
                last = m.end();
            }
            s.push_str(&line[last..]);
            out = Cow::Owned(s);
        }
    }
    out = apply(out, &HEADER_VALUE, |c: &Captures<'_>| {
        let value = &c[3];
        let quote = if value.len() >= 2 && (value.starts_with('"') || value.starts_with('\'')) {
            &value[..1]
        } else {
            ""
        };
        format!("{}{}{quote}{REDACTED}{quote}", &c[1], &c[2])
    });
    out = apply(out, &TOKEN_SHAPE, |c: &Captures<'_>| {
        format!("{}{REDACTED}", &c[1])
    });
    apply(out, &JWT, |_: &Captures<'_>| REDACTED.to_string())
}

/// Runs one replacement, keeping the text borrowed as long as nothing changed.
fn apply<'a>(
    text: Cow<'a, str>,
    re: &Regex,
    rep: impl FnMut(&Captures<'_>) -> String,
) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(b) => re.replace_all(b, rep),
        Cow::Owned(o) => match re.replace_all(&o, rep) {
            Cow::Borrowed(_) => Cow::Owned(o),
            Cow::Owned(n) => Cow::Owned(n),
        },
    }
}

/// Installs the global subscriber: human-readable lines on stderr, filtered by `RUST_LOG`
/// (default `axtary=info,warn`, or `axtary=debug,info` when `verbose`), every event scrubbed.
/// Does nothing if a subscriber is already installed.
pub fn init(verbose: bool) {
    let default = if verbose {
        "axtary=debug,info"
    } else {
        "axtary=info,warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr)
        // SECURITY: colour codes between a field name and its value would hide the pair from
        // the header rule.
        .with_ansi(false)
        .try_init();
}

/// Hands the formatter one scrubbing buffer per event.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbingWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter::new(io::stderr())
    }
}

/// Buffers everything written to it and, when dropped (the end of one event), writes the
/// scrubbed text to the target in a single write, so lines from several threads never mix
/// and a secret never straddles two writes.
pub struct ScrubbingWriter<W: Write> {
    buf: Vec<u8>,
    target: W,
}

impl<W: Write> ScrubbingWriter<W> {
    pub fn new(target: W) -> Self {
        ScrubbingWriter {
            buf: Vec::new(),
            target,
        }
    }

    fn emit(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let text = String::from_utf8_lossy(&buf);
        let clean = scrub(&text);
        // Nowhere to report a failed write to stderr; dropping the line is the only option.
        let _ = self.target.write_all(clean.as_bytes());
        let _ = self.target.flush();
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    /// Buffered until drop on purpose: flushing early could split a secret across writes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> String {
        scrub(line).into_owned()
    }

    #[test]
    fn clean_line_is_borrowed() {
        let line = "INFO axtary::proxy: listening on 127.0.0.1:8080";
        assert!(matches!(scrub(line), Cow::Borrowed(_)));
    }

    #[test]
    fn header_colon_form() {
        assert_eq!(
            s("authorization: Bearer abc.def\nnext"),
            "authorization: [redacted]\nnext"
        );
        assert_eq!(
            s("Proxy-Authorization: Basic dXNlcjpwYXNz"),
            "Proxy-Authorization: [redacted]"
        );
        assert_eq!(s("Cookie: a=1; b=2"), "Cookie: [redacted]");
        assert_eq!(s("set-cookie: sid=xyz; HttpOnly"), "set-cookie: [redacted]");
    }

    #[test]
    fn header_json_form() {
        assert_eq!(
            s(r#"{"authorization": "Bearer x1y2z3", "accept": "*/*"}"#),
            r#"{"authorization": "[redacted]", "accept": "*/*"}"#
        );
        assert_eq!(
            s(r#"{"cookie":"a=\"q\"; b=2","x":1}"#),
            r#"{"cookie":"[redacted]","x":1}"#
        );
    }

    #[test]
    fn header_equals_form() {
        assert_eq!(
            s("DEBUG forward: Authorization=Bearer tok123 status=200"),
            "DEBUG forward: Authorization=[redacted]"
        );
        assert_eq!(
            s(r#"DEBUG forward: authorization="Bearer tok123" status=200"#),
            r#"DEBUG forward: authorization="[redacted]" status=200"#
        );
    }

    #[test]
    fn header_map_debug_form() {
        let mut map = http::HeaderMap::new();
        map.insert("authorization", "Bearer mapsecret1".parse().unwrap());
        map.insert("proxy-authorization", "Basic cHJveHk6cHc=".parse().unwrap());
        map.insert("cookie", "sid=abc".parse().unwrap());
        map.insert("accept", "application/json".parse().unwrap());
        let out = s(&format!("headers={map:?}"));
        assert!(!out.contains("mapsecret1"), "{out}");
        assert!(!out.contains("cHJveHk6cHc"), "{out}");
        assert!(!out.contains("sid=abc"), "{out}");
        assert!(out.contains(r#""accept": "application/json""#), "{out}");
    }

    #[test]
    fn unrelated_words_survive() {
        let line = "no authorization header; cookie_jar=off laughs_total=3";
        assert_eq!(s(line), line);
    }

    #[test]
    fn token_shapes() {
        for tok in [
            "ghp_abcDEF0123456789abcdef0123456789ab",
            "gho_x1y2z3",
            "ghu_x1y2z3",
            "ghs_x1y2z3",
            "ghr_x1y2z3",
            "github_pat_11ABCDEFG_0123456789abcdef",
            "xoxb-1234-5678-abcdef",
            "xoxp-1234-5678-abcdef",
            "xapp-1-A0123-456-abcdef",
            "lin_api_0123456789abcdefABCDEF",
            "lin_oauth_0123456789abcdef",
        ] {
            assert_eq!(
                s(&format!("token={tok} ok")),
                "token=[redacted] ok",
                "{tok}"
            );
            assert_eq!(s(tok), "[redacted]", "{tok}");
            assert_eq!(s(&format!("(\"{tok}\")")), "(\"[redacted]\")", "{tok}");
        }
    }

    #[test]
    fn jwt() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl-_x";
        assert_eq!(
            s(&format!("id_token={jwt}, next")),
            "id_token=[redacted], next"
        );
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
        assert_eq!(s(unsigned), "[redacted]");
    }

    #[test]
    fn registered_secrets() {
        let secret = Secret::new("custom-canary-7f3a9c");
        register_secret(&secret);
        assert_eq!(
            s("upstream said custom-canary-7f3a9c twice: custom-canary-7f3a9c"),
            "upstream said [redacted] twice: [redacted]"
        );
        // Short values are ignored rather than blanking common text.
        register_secret(&Secret::new("abc"));
        assert_eq!(s("abc abc"), "abc abc");
    }

    #[test]
    fn writer_scrubs_one_event_in_one_write() {
        struct Recorder<'a>(&'a mut Vec<Vec<u8>>);
        impl Write for Recorder<'_> {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.push(data.to_vec());
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut writes = Vec::new();
        {
            let mut w = ScrubbingWriter::new(Recorder(&mut writes));
            w.write_all(b"INFO token=ghp_split").unwrap();
            w.write_all(b"value123 done\n").unwrap();
        }
        assert_eq!(writes, vec![b"INFO token=[redacted] done\n".to_vec()]);
    }
}
