//! Per-connector guard policy: deny and allow patterns, the writes mode, the local rate limit,
//! and the memory of an upstream that said its own quota is spent (SPEC section 7).
//!
//! The guard knows nothing about sockets, TLS or bodies in flight. It decides on a method, a
//! path without its query string and, only for a POST to a GraphQL endpoint while writes are
//! restricted, the first MiB of the body. Patterns are compiled once into segment lists so a
//! decision allocates nothing unless it denies; a connector with no rules costs one branch.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::header::{HeaderName, RETRY_AFTER};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;

/// The most body the caller reads to classify a GraphQL POST; a larger body counts as a write.
pub const MAX_GRAPHQL_BODY: usize = 1 << 20;

/// The longest an upstream rate-limit signal may block a connector. GitHub resets hourly at
/// most; a bound keeps a buggy or hostile header from blocking the connector for days.
const MAX_UPSTREAM_BLOCK: Duration = Duration::from_secs(3600);

const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

const PATTERN_FORM: &str = "expected \"METHOD /path\", where METHOD may be `*`, \
    `*` matches one path segment and `**` any number of segments";

/// What happens to writes on a connector (`writes:` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WritesMode {
    #[default]
    Allow,
    Deny,
    /// Writes are answered locally and never sent upstream.
    DryRun,
}

/// The local rate limit (`rateLimit:` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub per_minute: u32,
    pub burst: u32,
}

/// The raw guard settings of one connector, borrowed from the resolved config.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardRules<'a> {
    pub writes: WritesMode,
    /// `None` when the config has no `allow` key. `Some(&[])` allows nothing: an empty list
    /// is still a list, and reading it as "no list" would silently open everything.
    pub allow: Option<&'a [String]>,
    pub deny: &'a [String],
    pub rate_limit: Option<RateLimitSpec>,
    /// Exact request paths that speak GraphQL (for example `/graphql`).
    pub graphql_paths: &'a [&'a str],
}

/// The guard's decision on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused by a rule (`403 policy_denied`); the reason names the rule.
    Deny {
        reason: String,
    },
    /// A write under `writes: dry-run`: answer locally, never forward.
    DryRun,
    /// The local rate limit is spent (`429 rate_limited`); whole seconds, at least 1.
    RateLimited {
        retry_after_secs: u64,
    },
}

/// One connector's compiled guard. Shared across requests (`Send + Sync`).
#[derive(Debug)]
pub struct Guard {
    /// No rule of any kind: `check` returns at once.
    noop: bool,
    writes: WritesMode,
    deny: Box<[Pattern]>,
    allow: Option<Box<[Pattern]>>,
    graphql_paths: Box<[Box<str>]>,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Guard {
    /// Compiles the rules. Errors name the bad pattern or setting and the expected form.
    pub fn new(rules: GuardRules<'_>) -> Result<Guard, String> {
        let deny = compile_all(rules.deny)?;
        let allow = rules.allow.map(compile_all).transpose()?;
        let limiter = rules.rate_limit.map(build_limiter).transpose()?;
        let noop = rules.writes == WritesMode::Allow
            && deny.is_empty()
            && allow.is_none()
            && limiter.is_none();
        Ok(Guard {
            noop,
            writes: rules.writes,
            deny,
            allow,
            graphql_paths: rules.graphql_paths.iter().map(|p| Box::from(*p)).collect(),
            limiter,
        })
    }

    /// True when the guard has no rules, so every request is allowed.
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// True when deciding needs the request body: a POST to a GraphQL path while writes are
    /// not simply allowed. The caller then reads at most [`MAX_GRAPHQL_BODY`] bytes and passes
    /// `None` to [`Guard::check`] when the body is larger.
    pub fn needs_body(&self, method: &Method, path: &str) -> bool {
        self.writes != WritesMode::Allow && *method == Method::POST && self.is_graphql_path(path)
    }

    /// Decides on one request. `path` has no query string; `body` is `Some` only when
    /// [`Guard::needs_body`] said so and the body fit in [`MAX_GRAPHQL_BODY`].
    ///
    /// Order: deny patterns, allow list, writes mode, local rate limit. Only a request that
    /// passes everything else spends a rate-limit token.
    pub fn check(&self, method: &Method, path: &str, body: Option<&[u8]>) -> Verdict {
        if self.noop {
            return Verdict::Allow;
        }
        let bytes = path.as_bytes();
        if (!self.deny.is_empty() || self.allow.is_some()) && has_dot_segment(bytes) {
            // SECURITY: the upstream may resolve `..` and land on a path no rule saw, so a
            // path the rules cannot judge is refused rather than guessed at.
            return Verdict::Deny {
                reason: "the path has a `.` or `..` segment; send the normalised path".into(),
            };
        }
        // SECURITY: deny rules win over everything, including the allow list.
        if let Some(rule) = self.deny.iter().find(|p| p.matches(method, bytes)) {
            return Verdict::Deny {
                reason: format!("`{method} {path}` matches the deny rule `{}`", rule.source),
            };
        }
        if let Some(allow) = &self.allow {
            if !allow.iter().any(|p| p.matches(method, bytes)) {
                return Verdict::Deny {
                    reason: format!("`{method} {path}` is not in the allow list"),
                };
            }
        }
        match self.writes {
            WritesMode::Allow => {}
            WritesMode::Deny => {
                if classify_write(method, self.is_graphql_path(path), body) {
                    return Verdict::Deny {
                        reason: "writes are denied for this connector".into(),
                    };
                }
            }
            WritesMode::DryRun => {
                if classify_write(method, self.is_graphql_path(path), body) {
                    return Verdict::DryRun;
                }
            }
        }
        if let Some(limiter) = &self.limiter {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(limiter.clock().now());
                return Verdict::RateLimited {
                    retry_after_secs: whole_seconds_up(wait),
                };
            }
        }
        Verdict::Allow
    }

    fn is_graphql_path(&self, path: &str) -> bool {
        self.graphql_paths.iter().any(|p| **p == *path)
    }
}

fn compile_all(patterns: &[String]) -> Result<Box<[Pattern]>, String> {
    patterns.iter().map(|p| Pattern::parse(p)).collect()
}

fn build_limiter(spec: RateLimitSpec) -> Result<DefaultDirectRateLimiter, String> {
    let per_minute = NonZeroU32::new(spec.per_minute)
        .ok_or("rateLimit.perMinute must be at least 1 (remove rateLimit to have no limit)")?;
    let burst = NonZeroU32::new(spec.burst)
        .ok_or("rateLimit.burst must be at least 1 (use 1 for no bursts)")?;
    Ok(RateLimiter::direct(
        Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

/// Rounds up so a client told to wait is never told "0" and retries too early.
fn whole_seconds_up(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// True when the request is a write: any method but GET, HEAD and OPTIONS, except a POST to
/// one of `graphql_paths`, which is a read when its body holds only query operations.
/// `body` is the whole body (at most [`MAX_GRAPHQL_BODY`]) or `None`, which counts as a write.
pub fn is_write(method: &Method, path: &str, graphql_paths: &[&str], body: Option<&[u8]>) -> bool {
    classify_write(method, graphql_paths.contains(&path), body)
}

fn classify_write(method: &Method, graphql_path: bool, body: Option<&[u8]>) -> bool {
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        return false;
    }
    if *method == Method::POST && graphql_path {
        // SECURITY: a missing, oversized or unreadable body is a write (fail closed).
        return !body.is_some_and(graphql_body_is_read_only);
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Path patterns

#[derive(Debug)]
enum Segment {
    /// Percent-decoded and ASCII-lowercased at compile time.
    Literal(Box<[u8]>),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments.
    Any,
}

#[derive(Debug)]
struct Pattern {
    /// The pattern as written, for deny messages.
    source: Box<str>,
    /// `None` for `*`.
    method: Option<Method>,
    segments: Box<[Segment]>,
}

impl Pattern {
    fn parse(source: &str) -> Result<Pattern, String> {
        let bad = |why: &str| format!("bad guard pattern `{source}`: {why}; {PATTERN_FORM}");
        let mut parts = source.split_whitespace();
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it must be a method and a path separated by a space"));
        };
        let method = if method == "*" {
            None
        } else {
            if !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(bad("the method must be letters or `*`"));
            }
            // Methods are case-sensitive on the wire; accepting `get` for GET keeps a
            // lowercase rule from silently matching nothing.
            let upper = method.to_ascii_uppercase();
            Some(Method::from_bytes(upper.as_bytes()).map_err(|_| bad("invalid method"))?)
        };
        if !path.starts_with('/') {
            return Err(bad("the path must start with `/`"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("patterns match the path only, without a query string"));
        }
        let mut segments = Vec::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            let compiled = match seg {
                "**" => {
                    // `**/**` means the same as `**`; one keeps backtracking short.
                    if matches!(segments.last(), Some(Segment::Any)) {
                        continue;
                    }
                    Segment::Any
                }
                "*" => Segment::One,
                _ if seg.contains('*') => {
                    return Err(bad("`*` and `**` must be a whole path segment"));
                }
                _ => {
                    let literal = percent_decode_lower(seg.as_bytes());
                    if literal == b"." || literal == b".." {
                        return Err(bad("`.` and `..` segments are not allowed"));
                    }
                    Segment::Literal(literal.into_boxed_slice())
                }
            };
            segments.push(compiled);
        }
        Ok(Pattern {
            source: source.into(),
            method,
            segments: segments.into_boxed_slice(),
        })
    }

    fn matches(&self, method: &Method, path: &[u8]) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && path_matches(&self.segments, path)
    }
}

/// Glob match over path segments with one backtrack point (the classic wildcard algorithm),
/// walking byte offsets so nothing is allocated. Empty segments are skipped, so a trailing
/// or doubled slash matches as if it were absent.
fn path_matches(pattern: &[Segment], path: &[u8]) -> bool {
    let mut pi = 0;
    let mut pos = 0;
    // (pattern index after the last `**`, path offset up to which that `**` has absorbed).
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        let Some((start, end)) = next_segment(path, pos) else {
            return pattern[pi..].iter().all(|s| matches!(s, Segment::Any));
        };
        match pattern.get(pi) {
            Some(Segment::Any) => {
                backtrack = Some((pi + 1, pos));
                pi += 1;
                continue;
            }
            Some(Segment::One) => {
                pi += 1;
                pos = end;
                continue;
            }
            Some(Segment::Literal(lit)) if segment_eq(lit, &path[start..end]) => {
                pi += 1;
                pos = end;
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `**` absorb one more segment and retry after it.
        let Some((after_any, absorbed)) = backtrack else {
            return false;
        };
        let Some((_, next)) = next_segment(path, absorbed) else {
            return false;
        };
        backtrack = Some((after_any, next));
        pi = after_any;
        pos = next;
    }
}

/// The next non-empty segment at or after `pos`, as a byte range.
fn next_segment(path: &[u8], mut pos: usize) -> Option<(usize, usize)> {
    while pos < path.len() && path[pos] == b'/' {
        pos += 1;
    }
    if pos >= path.len() {
        return None;
    }
    let end = path[pos..]
        .iter()
        .position(|&b| b == b'/')
        .map_or(path.len(), |n| pos + n);
    Some((pos, end))
}

/// Compares a request segment to a compiled literal after percent-decoding and ASCII
/// lowercasing the request side.
// SECURITY: providers treat `/repos/Acme` and `/repos/%61cme` as `/repos/acme`, so a deny
// rule must not be dodged by changing case or encoding.
fn segment_eq(literal: &[u8], segment: &[u8]) -> bool {
    let mut li = 0;
    let mut si = 0;
    while si < segment.len() {
        let (byte, width) = decode_at(segment, si);
        if literal.get(li) != Some(&byte.to_ascii_lowercase()) {
            return false;
        }
        li += 1;
        si += width;
    }
    li == literal.len()
}

fn has_dot_segment(path: &[u8]) -> bool {
    let mut pos = 0;
    while let Some((start, end)) = next_segment(path, pos) {
        let seg = &path[start..end];
        if segment_eq(b".", seg) || segment_eq(b"..", seg) {
            return true;
        }
        pos = end;
    }
    false
}

/// The byte at `i` with a `%XX` escape decoded, and how many input bytes it took. A `%` not
/// followed by two hex digits stands for itself.
fn decode_at(s: &[u8], i: usize) -> (u8, usize) {
    if s[i] == b'%' {
        if let (Some(hi), Some(lo)) = (
            s.get(i + 1).and_then(|&b| hex_value(b)),
            s.get(i + 2).and_then(|&b| hex_value(b)),
        ) {
            return ((hi << 4) | lo, 3);
        }
    }
    (s[i], 1)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_lower(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let (byte, width) = decode_at(s, i);
        out.push(byte.to_ascii_lowercase());
        i += width;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// GraphQL classification

#[derive(Deserialize)]
struct GraphqlRequest<'a> {
    // Borrowed when the JSON string has no escapes. A duplicate `query` key is a serde error,
    // so two documents cannot hide behind each other.
    #[serde(borrow)]
    query: Cow<'a, str>,
}

/// True only when the JSON body (one request or a batch array) provably holds nothing but
/// query operations.
fn graphql_body_is_read_only(body: &[u8]) -> bool {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        match serde_json::from_slice::<Vec<GraphqlRequest<'_>>>(body) {
            // An empty batch runs nothing, but it is odd enough not to vouch for.
            Ok(batch) => !batch.is_empty() && batch.iter().all(|r| document_is_read_only(&r.query)),
            Err(_) => false,
        }
    } else {
        match serde_json::from_slice::<GraphqlRequest<'_>>(body) {
            Ok(request) => document_is_read_only(&request.query),
            Err(_) => false,
        }
    }
}

/// Where a top-level definition's header is while scanning at brace depth 0.
#[derive(Clone, Copy, PartialEq)]
enum Header {
    /// Between definitions: the next token must be a keyword or `{`.
    Expecting,
    /// After `query`/`mutation`/`subscription`: at most an operation name, then variables
    /// and directives.
    Operation,
    /// After `fragment`: a name, `on`, a type name, then directives.
    Fragment,
    /// Inside the definition's selection set (the depth-0 `{` has not closed yet).
    Body,
}

/// Scans a GraphQL executable document and answers true only when every operation in it is
/// a query. Comments, strings and block strings are skipped, and only keywords that start a
/// top-level definition count, so a field named `mutation` or the word in a string does not.
/// Anything the scanner does not understand answers false.
// SECURITY: false means "write"; every doubt lands there.
fn document_is_read_only(doc: &str) -> bool {
    let doc = doc.as_bytes();
    let mut i = 0;
    let mut depth: u32 = 0;
    let mut header = Header::Expecting;
    // Plain names seen in the current header, and whether `(` or `@` has ended them.
    let mut header_names = 0u8;
    let mut header_names_closed = false;
    let mut after_at = false;
    let mut saw_query = false;

    while i < doc.len() {
        let b = doc[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            0xEF if doc[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => i += 3,
            b'#' => {
                while i < doc.len() && doc[i] != b'\n' && doc[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' => {
                // Strings only appear inside arguments and values, never at depth 0 of an
                // executable document.
                if depth == 0 {
                    return false;
                }
                match skip_string(doc, i) {
                    Some(next) => i = next,
                    None => return false,
                }
            }
            b'{' | b'(' | b'[' => {
                if depth == 0 {
                    if after_at {
                        return false;
                    }
                    match (header, b) {
                        (Header::Expecting, b'{') => {
                            // The anonymous `{ ... }` shorthand is a query.
                            saw_query = true;
                            header = Header::Body;
                        }
                        (Header::Operation, b'{') => header = Header::Body,
                        (Header::Fragment, b'{') if header_names == 3 => header = Header::Body,
                        (Header::Operation | Header::Fragment, b'(') => {
                            header_names_closed = true;
                        }
                        _ => return false,
                    }
                }
                depth += 1;
                i += 1;
            }
            b'}' | b')' | b']' => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
                i += 1;
                if depth == 0 && header == Header::Body {
                    if b != b'}' {
                        return false;
                    }
                    header = Header::Expecting;
                    header_names = 0;
                    header_names_closed = false;
                }
            }
            // Inside a block only strings, comments and brackets matter.
            _ if depth > 0 => i += 1,
            b'@' => {
                if after_at || !matches!(header, Header::Operation | Header::Fragment) {
                    return false;
                }
                after_at = true;
                header_names_closed = true;
                i += 1;
            }
            _ if is_name_start(b) => {
                let start = i;
                while i < doc.len() && is_name_continue(doc[i]) {
                    i += 1;
                }
                let name = &doc[start..i];
                if after_at {
                    // A directive's name.
                    after_at = false;
                    continue;
                }
                match header {
                    Header::Expecting => {
                        header = match name {
                            b"query" => {
                                saw_query = true;
                                Header::Operation
                            }
                            b"fragment" => Header::Fragment,
                            // `mutation`, `subscription`, and anything that is not an
                            // executable definition.
                            _ => return false,
                        }
                    }
                    Header::Operation => {
                        if header_names_closed || header_names >= 1 {
                            return false;
                        }
                        header_names += 1;
                    }
                    Header::Fragment => {
                        if header_names_closed
                            || header_names >= 3
                            || (header_names == 1 && name != b"on")
                        {
                            return false;
                        }
                        header_names += 1;
                    }
                    Header::Body => return false,
                }
            }
            _ => return false,
        }
    }
    depth == 0 && header == Header::Expecting && !after_at && saw_query
}

/// Returns the offset just past the string starting at `start` (which holds `"`), or `None`
/// if it never ends.
fn skip_string(doc: &[u8], start: usize) -> Option<usize> {
    if doc[start..].starts_with(b"\"\"\"") {
        // Block string: the only escape is `\"""`.
        let mut i = start + 3;
        while i < doc.len() {
            if doc[i..].starts_with(b"\\\"\"\"") {
                i += 4;
            } else if doc[i..].starts_with(b"\"\"\"") {
                return Some(i + 3);
            } else {
                i += 1;
            }
        }
        None
    } else {
        let mut i = start + 1;
        while i < doc.len() {
            match doc[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                // A line break ends no valid single-line string.
                b'\n' | b'\r' => return None,
                _ => i += 1,
            }
        }
        None
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

// ---------------------------------------------------------------------------------------------
// Upstream quota memory

/// Remembers, per connector, that the upstream said its rate limit is spent, so the proxy
/// answers `429 rate_limited` locally until the reset instead of spending more quota.
/// Lock-free: one atomic holding the unblock time in milliseconds since the epoch (0 = never).
#[derive(Debug, Default)]
pub struct UpstreamQuota {
    blocked_until_ms: AtomicU64,
}

impl UpstreamQuota {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at an upstream response. `x-ratelimit-remaining: 0` with `x-ratelimit-reset`
    /// (epoch seconds) blocks until the reset; a 429, or a 403 with remaining 0, carrying
    /// `Retry-After` in seconds blocks for that long. Malformed values are ignored, and a
    /// block never extends more than an hour past `now`.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) {
        let now_ms = epoch_ms(now);
        let remaining_spent = header_u64(headers, &RATELIMIT_REMAINING) == Some(0);
        let mut until = 0u64;
        if remaining_spent {
            if let Some(reset) = header_u64(headers, &RATELIMIT_RESET) {
                until = reset.saturating_mul(1000);
            }
        }
        if status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN && remaining_spent)
        {
            if let Some(secs) = header_u64(headers, &RETRY_AFTER) {
                until = until.max(now_ms.saturating_add(secs.saturating_mul(1000)));
            }
        }
        let cap_ms = u64::try_from(MAX_UPSTREAM_BLOCK.as_millis()).unwrap_or(u64::MAX);
        let until = until.min(now_ms.saturating_add(cap_ms));
        if until > now_ms {
            // Concurrent responses may race; the later unblock time wins.
            self.blocked_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// `Some(whole seconds, at least 1)` while blocked, else `None`.
    pub fn blocked_for(&self, now: SystemTime) -> Option<u64> {
        let until = self.blocked_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now_ms = epoch_ms(now);
        (until > now_ms).then(|| (until - now_ms).div_ceil(1000))
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const GRAPHQL: &[&str] = &["/graphql"];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn guard_with(allow: Option<&[&str]>, deny: &[&str], writes: WritesMode) -> Guard {
        let allow = allow.map(strings);
        let deny = strings(deny);
        Guard::new(GuardRules {
            writes,
            allow: allow.as_deref(),
            deny: &deny,
            rate_limit: None,
            graphql_paths: GRAPHQL,
        })
        .expect("test rules compile")
    }

    fn pattern_matches(pattern: &str, method: &Method, path: &str) -> bool {
        Pattern::parse(pattern)
            .expect("test pattern compiles")
            .matches(method, path.as_bytes())
    }

    fn is_deny(v: &Verdict) -> bool {
        matches!(v, Verdict::Deny { .. })
    }

    fn gql(query: &str) -> Vec<u8> {
        serde_json::json!({ "query": query })
            .to_string()
            .into_bytes()
    }

    fn doc_is_write(query: &str) -> bool {
        is_write(&Method::POST, "/graphql", GRAPHQL, Some(&gql(query)))
    }

    #[test]
    fn exact_pattern_matches_only_its_path_and_method() {
        let p = "GET /repos/acme/app";
        assert!(pattern_matches(p, &Method::GET, "/repos/acme/app"));
        assert!(!pattern_matches(p, &Method::POST, "/repos/acme/app"));
        assert!(!pattern_matches(p, &Method::GET, "/repos/acme"));
        assert!(!pattern_matches(p, &Method::GET, "/repos/acme/app/issues"));
        assert!(!pattern_matches(p, &Method::GET, "/repos/acme/apps"));
    }

    #[test]
    fn single_star_matches_exactly_one_segment() {
        let p = "POST /repos/acme/*/pulls/*/reviews";
        assert!(pattern_matches(
            p,
            &Method::POST,
            "/repos/acme/app/pulls/7/reviews"
        ));
        assert!(!pattern_matches(
            p,
            &Method::POST,
            "/repos/acme/app/pulls/reviews"
        ));
        assert!(!pattern_matches(
            p,
            &Method::POST,
            "/repos/acme/a/b/pulls/7/reviews"
        ));
    }

    #[test]
    fn double_star_at_end_matches_any_depth_including_none() {
        let p = "GET /repos/acme/**";
        assert!(pattern_matches(p, &Method::GET, "/repos/acme"));
        assert!(pattern_matches(p, &Method::GET, "/repos/acme/app"));
        assert!(pattern_matches(
            p,
            &Method::GET,
            "/repos/acme/app/issues/1/comments"
        ));
        assert!(!pattern_matches(p, &Method::GET, "/repos/other/app"));
        assert!(pattern_matches("DELETE /**", &Method::DELETE, "/"));
        assert!(pattern_matches("DELETE /**", &Method::DELETE, "/a/b/c"));
    }

    #[test]
    fn double_star_in_the_middle_backtracks() {
        let p = "GET /repos/**/comments";
        assert!(pattern_matches(p, &Method::GET, "/repos/comments"));
        assert!(pattern_matches(
            p,
            &Method::GET,
            "/repos/a/b/issues/1/comments"
        ));
        assert!(pattern_matches(
            p,
            &Method::GET,
            "/repos/comments/x/comments"
        ));
        assert!(!pattern_matches(p, &Method::GET, "/repos/a/b/comments/1"));
        let p = "GET /a/**/b/*/c/**";
        assert!(pattern_matches(p, &Method::GET, "/a/x/b/y/b/z/c"));
        assert!(pattern_matches(p, &Method::GET, "/a/b/1/c/d/e"));
        assert!(!pattern_matches(p, &Method::GET, "/a/x/b/c"));
    }

    #[test]
    fn method_wildcard_and_lowercase_method() {
        assert!(pattern_matches("* /x", &Method::PATCH, "/x"));
        assert!(pattern_matches("* /x", &Method::GET, "/x"));
        assert!(pattern_matches("get /x", &Method::GET, "/x"));
    }

    #[test]
    fn trailing_and_doubled_slashes_are_ignored() {
        assert!(pattern_matches(
            "GET /repos/acme",
            &Method::GET,
            "/repos/acme/"
        ));
        assert!(pattern_matches(
            "GET /repos/acme/",
            &Method::GET,
            "/repos/acme"
        ));
        assert!(pattern_matches(
            "GET /repos/acme",
            &Method::GET,
            "//repos//acme"
        ));
        assert!(!pattern_matches("GET /repos/*", &Method::GET, "/repos/"));
    }

    #[test]
    fn literals_ignore_case_and_percent_encoding() {
        let p = "DELETE /repos/acme/**";
        assert!(pattern_matches(p, &Method::DELETE, "/repos/ACME/app"));
        assert!(pattern_matches(p, &Method::DELETE, "/repos/%61cme/app"));
        // An encoded slash stays inside its segment.
        assert!(!pattern_matches(p, &Method::DELETE, "/repos%2Facme/app"));
    }

    #[test]
    fn dot_segments_are_refused_when_patterns_exist() {
        let g = guard_with(None, &["DELETE /repos/acme/**"], WritesMode::Allow);
        assert!(is_deny(&g.check(
            &Method::DELETE,
            "/x/../repos/acme/app",
            None
        )));
        assert!(is_deny(&g.check(&Method::GET, "/repos/%2e%2E/y", None)));
        assert_eq!(
            g.check(&Method::GET, "/repos/.well/y", None),
            Verdict::Allow
        );
    }

    #[test]
    fn bad_patterns_name_the_pattern_and_the_form() {
        for bad in [
            "/repos/**",
            "GET repos",
            "GET /repos/a* ",
            "GET /a/**b",
            "GET /a b",
            "G3T /a",
            "GET /a?x=1",
            "GET /a/../b",
            "",
        ] {
            let deny = strings(&[bad]);
            let err = Guard::new(GuardRules {
                deny: &deny,
                ..GuardRules::default()
            })
            .expect_err(bad);
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("METHOD /path"), "{err}");
        }
    }

    #[test]
    fn no_rules_allows_everything() {
        let g = Guard::new(GuardRules::default()).expect("empty rules compile");
        assert!(g.is_noop());
        assert!(!g.needs_body(&Method::POST, "/graphql"));
        assert_eq!(g.check(&Method::DELETE, "/x/../y", None), Verdict::Allow);
    }

    #[test]
    fn deny_is_checked_before_allow() {
        let g = guard_with(
            Some(&["* /repos/acme/**"]),
            &["DELETE /**"],
            WritesMode::Allow,
        );
        match g.check(&Method::DELETE, "/repos/acme/app", None) {
            Verdict::Deny { reason } => assert!(reason.contains("`DELETE /**`"), "{reason}"),
            other => panic!("expected deny, got {other:?}"),
        }
        assert_eq!(
            g.check(&Method::GET, "/repos/acme/app", None),
            Verdict::Allow
        );
    }

    #[test]
    fn allow_list_miss_is_denied() {
        let g = guard_with(Some(&["GET /repos/acme/**"]), &[], WritesMode::Allow);
        match g.check(&Method::GET, "/repos/other/app", None) {
            Verdict::Deny { reason } => assert!(reason.contains("allow list"), "{reason}"),
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn empty_allow_list_allows_nothing() {
        let g = guard_with(Some(&[]), &[], WritesMode::Allow);
        assert!(!g.is_noop());
        assert!(is_deny(&g.check(&Method::GET, "/", None)));
    }

    #[test]
    fn writes_deny_refuses_writes_and_passes_reads() {
        let g = guard_with(None, &[], WritesMode::Deny);
        assert_eq!(
            g.check(&Method::POST, "/repos/a/b/issues", None),
            Verdict::Deny {
                reason: "writes are denied for this connector".into()
            }
        );
        assert_eq!(g.check(&Method::GET, "/repos/a/b", None), Verdict::Allow);
        assert_eq!(g.check(&Method::HEAD, "/", None), Verdict::Allow);
        assert_eq!(g.check(&Method::OPTIONS, "/", None), Verdict::Allow);
    }

    #[test]
    fn writes_dry_run_answers_writes_locally() {
        let g = guard_with(None, &[], WritesMode::DryRun);
        assert_eq!(g.check(&Method::DELETE, "/x", None), Verdict::DryRun);
        assert_eq!(g.check(&Method::GET, "/x", None), Verdict::Allow);
        let q = gql("{ viewer { login } }");
        assert!(g.needs_body(&Method::POST, "/graphql"));
        assert_eq!(g.check(&Method::POST, "/graphql", Some(&q)), Verdict::Allow);
        let m = gql("mutation { addStar(input: {}) { clientMutationId } }");
        assert_eq!(
            g.check(&Method::POST, "/graphql", Some(&m)),
            Verdict::DryRun
        );
    }

    #[test]
    fn needs_body_only_for_graphql_posts_with_restricted_writes() {
        let g = guard_with(None, &[], WritesMode::Deny);
        assert!(g.needs_body(&Method::POST, "/graphql"));
        assert!(!g.needs_body(&Method::GET, "/graphql"));
        assert!(!g.needs_body(&Method::POST, "/repos"));
        let open = guard_with(None, &["DELETE /**"], WritesMode::Allow);
        assert!(!open.needs_body(&Method::POST, "/graphql"));
    }

    #[test]
    fn graphql_queries_are_reads() {
        assert!(!doc_is_write("{ viewer { login } }"));
        assert!(!doc_is_write("query { viewer { login } }"));
        assert!(!doc_is_write(
            "query Viewer($n: Int = 3) @live { viewer { repos(first: $n) { id } } }"
        ));
        assert!(!doc_is_write(
            "query A { a } query B { ...F } fragment F on Query @x { b }"
        ));
        assert!(!doc_is_write("\u{feff}# mutation { x }\nquery { a }"));
    }

    #[test]
    fn graphql_mutations_are_writes() {
        assert!(doc_is_write(
            "mutation { addStar(input: {}) { clientMutationId } }"
        ));
        assert!(doc_is_write("mutation Star { addStar { id } }"));
        assert!(doc_is_write("query A { a } mutation B { b }"));
        assert!(doc_is_write("subscription { events { id } }"));
        assert!(doc_is_write("query A { a } # trailing\nmutation{b}"));
    }

    #[test]
    fn graphql_field_named_mutation_or_word_in_strings_is_not_a_write() {
        assert!(!doc_is_write("{ mutation { id } }"));
        assert!(!doc_is_write("query mutation { a }"));
        assert!(!doc_is_write(r#"{ search(q: "mutation { x }") { id } }"#));
        assert!(!doc_is_write(
            r#"{ search(q: "\" } mutation { x } \"") { id } }"#
        ));
        assert!(!doc_is_write(
            "{ a(b: \"\"\" } \\\"\"\" mutation { x } \"\"\") { id } }"
        ));
        assert!(!doc_is_write("{ a # } mutation { x }\n }"));
        assert!(!doc_is_write("query Q @mutation { a }"));
    }

    #[test]
    fn graphql_tricks_and_garbage_count_as_writes() {
        // A brace hidden in a string must not end the selection early, but a real one must.
        assert!(doc_is_write("{ a } mutation { b }"));
        assert!(doc_is_write("{ a(s: \"x\") } mutation { b }"));
        // Unterminated string, unbalanced braces, stray tokens, type system definitions.
        assert!(doc_is_write("{ a(s: \"x) }"));
        assert!(doc_is_write("{ a(s: \"\"\"x) }"));
        assert!(doc_is_write("{ a "));
        assert!(doc_is_write("{ a } }"));
        assert!(doc_is_write("query Q R { a }"));
        assert!(doc_is_write("query Q mutation { a }"));
        assert!(doc_is_write("type Query { a: Int }"));
        assert!(doc_is_write("fragment F on Query { a }"));
        assert!(doc_is_write(""));
        assert!(doc_is_write("Mutation { a }"));
        assert!(doc_is_write("$x { a }"));
    }

    #[test]
    fn graphql_body_shapes() {
        let post = |b: &[u8]| is_write(&Method::POST, "/graphql", GRAPHQL, Some(b));
        assert!(!post(
            br#"{"query":"{ a }","operationName":null,"variables":{"x":1}}"#
        ));
        assert!(!post(br#" [{"query":"{ a }"},{"query":"query B { b }"}]"#));
        assert!(post(br#"[{"query":"{ a }"},{"query":"mutation { b }"}]"#));
        assert!(post(b"[]"));
        assert!(post(br#"{"query":"{ a }","query":"mutation { b }"}"#));
        assert!(post(br#"{"operationName":"A"}"#));
        assert!(post(br#"{"query":null}"#));
        assert!(post(b"not json"));
        assert!(post(b"{ a }"));
        assert!(post(br#"{"query":"{ a }"} trailing"#));
        // No body at all (over 1 MiB, or never read) is a write.
        assert!(is_write(&Method::POST, "/graphql", GRAPHQL, None));
        // Escapes in the JSON string are decoded before scanning.
        assert!(!post(br#"{"query":"query {\n  a\n}"}"#));
        assert!(post(br#"{"query":"\u006dutation { b }"}"#));
    }

    #[test]
    fn rest_methods_classify_by_method() {
        assert!(!is_write(&Method::GET, "/repos", GRAPHQL, None));
        assert!(!is_write(&Method::GET, "/graphql", GRAPHQL, None));
        assert!(is_write(
            &Method::POST,
            "/repos",
            GRAPHQL,
            Some(&gql("{ a }"))
        ));
        assert!(is_write(
            &Method::PUT,
            "/graphql",
            GRAPHQL,
            Some(&gql("{ a }"))
        ));
        assert!(is_write(&Method::TRACE, "/", GRAPHQL, None));
    }

    #[test]
    fn oversized_graphql_body_is_denied_when_writes_denied() {
        let g = guard_with(None, &[], WritesMode::Deny);
        assert!(is_deny(&g.check(&Method::POST, "/graphql", None)));
    }

    #[test]
    fn rate_limit_allows_the_burst_then_limits() {
        let g = Guard::new(GuardRules {
            rate_limit: Some(RateLimitSpec {
                per_minute: 1,
                burst: 2,
            }),
            deny: &strings(&["DELETE /**"]),
            ..GuardRules::default()
        })
        .expect("rules compile");
        // Denied requests spend no tokens.
        for _ in 0..5 {
            assert!(is_deny(&g.check(&Method::DELETE, "/x", None)));
        }
        assert_eq!(g.check(&Method::GET, "/x", None), Verdict::Allow);
        assert_eq!(g.check(&Method::GET, "/x", None), Verdict::Allow);
        match g.check(&Method::GET, "/x", None) {
            Verdict::RateLimited { retry_after_secs } => {
                assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected rate limit, got {other:?}"),
        }
    }

    #[test]
    fn zero_rate_limit_is_a_config_error() {
        for (per_minute, burst) in [(0, 1), (1, 0)] {
            let err = Guard::new(GuardRules {
                rate_limit: Some(RateLimitSpec { per_minute, burst }),
                ..GuardRules::default()
            })
            .expect_err("zero is refused");
            assert!(err.contains("rateLimit"), "{err}");
        }
    }

    #[test]
    fn wait_rounds_up_and_is_never_zero() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds_up(Duration::from_millis(2001)), 3);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("test header value"));
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn upstream_remaining_zero_blocks_until_reset() {
        let q = UpstreamQuota::new();
        let now = at(1_000_000);
        q.observe(
            StatusCode::OK,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000120"),
            ]),
            now,
        );
        assert_eq!(q.blocked_for(now), Some(120));
        assert_eq!(q.blocked_for(now + Duration::from_millis(119_500)), Some(1));
        assert_eq!(q.blocked_for(at(1_000_120)), None);
        assert_eq!(q.blocked_for(at(1_000_500)), None);
    }

    #[test]
    fn upstream_remaining_nonzero_does_not_block() {
        let q = UpstreamQuota::new();
        let now = at(1_000_000);
        q.observe(
            StatusCode::OK,
            &headers(&[
                ("x-ratelimit-remaining", "1"),
                ("x-ratelimit-reset", "1000120"),
            ]),
            now,
        );
        assert_eq!(q.blocked_for(now), None);
    }

    #[test]
    fn upstream_429_retry_after_blocks_for_that_long() {
        let q = UpstreamQuota::new();
        let now = at(2_000_000);
        q.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "30")]),
            now,
        );
        assert_eq!(q.blocked_for(now), Some(30));
        assert_eq!(q.blocked_for(at(2_000_029)), Some(1));
        assert_eq!(q.blocked_for(at(2_000_030)), None);
    }

    #[test]
    fn upstream_403_needs_remaining_zero_for_retry_after() {
        let now = at(3_000_000);
        let q = UpstreamQuota::new();
        q.observe(
            StatusCode::FORBIDDEN,
            &headers(&[("retry-after", "30")]),
            now,
        );
        assert_eq!(q.blocked_for(now), None);
        q.observe(
            StatusCode::FORBIDDEN,
            &headers(&[("retry-after", "30"), ("x-ratelimit-remaining", "0")]),
            now,
        );
        assert_eq!(q.blocked_for(now), Some(30));
        // Retry-After on a success is not a quota signal.
        let q = UpstreamQuota::new();
        q.observe(StatusCode::OK, &headers(&[("retry-after", "30")]), now);
        assert_eq!(q.blocked_for(now), None);
    }

    #[test]
    fn upstream_malformed_headers_are_ignored() {
        let now = at(4_000_000);
        let q = UpstreamQuota::new();
        for h in [
            headers(&[
                ("x-ratelimit-remaining", "zero"),
                ("x-ratelimit-reset", "4000100"),
            ]),
            headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "soon"),
            ]),
            headers(&[("x-ratelimit-remaining", "0")]),
            headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "-5")]),
            headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "3999999"),
            ]),
        ] {
            q.observe(StatusCode::OK, &h, now);
        }
        q.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            now,
        );
        q.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "0")]),
            now,
        );
        assert_eq!(q.blocked_for(now), None);
    }

    #[test]
    fn upstream_block_is_capped() {
        let now = at(5_000_000);
        let q = UpstreamQuota::new();
        q.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "99999999999999999")]),
            now,
        );
        assert_eq!(q.blocked_for(now), Some(MAX_UPSTREAM_BLOCK.as_secs()));
    }

    #[test]
    fn guard_and_quota_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Guard>();
        assert_send_sync::<UpstreamQuota>();
    }
}
