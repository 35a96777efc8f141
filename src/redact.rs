//! Streaming scrubber for responses on injected routes (SPEC 9).
//!
//! An upstream may echo the credential it was sent (an error page quoting the header, a debug
//! endpoint). Every occurrence of an injected secret in a response header, body or trailer is
//! replaced with `[redacted]` before it reaches the agent. Bodies are scanned as they stream:
//! a chunk is emitted at once except for the shortest tail that could still be the start of a
//! secret, so memory stays bounded by the longest secret whatever the body size. The output is
//! byte-for-byte what a whole-buffer replacement would give, however the body is chunked.

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, Input, MatchKind};
use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use crate::secret::Secret;

/// What a secret is replaced with.
pub const REDACTED: &[u8] = b"[redacted]";

/// A compiled set of secret values to scrub.
pub struct Redactor {
    ac: AhoCorasick,
    /// The values themselves, for the hold-back check at a chunk's end.
    patterns: Vec<Secret>,
    max_len: usize,
}

// SECURITY: hand-written so neither the patterns nor the automaton (whose transitions spell
// the secrets) can reach a log line through `{:?}`.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl Redactor {
    /// A redactor for these values. `None` when no non-empty secret is given (nothing to scrub,
    /// so callers can skip the wrapper entirely).
    pub fn new(secrets: &[Secret]) -> Option<Redactor> {
        let mut patterns: Vec<Secret> = Vec::new();
        for s in secrets {
            if !s.is_empty() && !patterns.contains(s) {
                patterns.push(s.clone());
            }
        }
        if patterns.is_empty() {
            return None;
        }
        // Leftmost-longest: when one secret is a prefix of another, the longer one is removed
        // whole instead of leaving its tail behind.
        let ac = match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|s| s.expose().as_bytes()))
        {
            Ok(ac) => ac,
            Err(e) => {
                // Only reachable past ~2^31 automaton states, far beyond any credential.
                tracing::error!("cannot build the response redactor: {e}");
                return None;
            }
        };
        let max_len = patterns.iter().map(|s| s.expose().len()).max().unwrap_or(0);
        Some(Redactor {
            ac,
            patterns,
            max_len,
        })
    }

    /// Length of the longest secret, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Replaces every occurrence with `[redacted]` in a complete value (a header, a trailer,
    /// a buffered body). Borrowed when nothing matched.
    pub fn redact_all<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let mut matches = self.ac.find_iter(input).peekable();
        if matches.peek().is_none() {
            return Cow::Borrowed(input);
        }
        let mut out = Vec::with_capacity(input.len());
        let mut last = 0;
        for m in matches {
            out.extend_from_slice(&input[last..m.start()]);
            out.extend_from_slice(REDACTED);
            last = m.end();
        }
        out.extend_from_slice(&input[last..]);
        Cow::Owned(out)
    }

    /// True when the input holds a secret anywhere.
    pub fn contains_secret(&self, input: &[u8]) -> bool {
        self.ac.is_match(input)
    }

    /// The smallest index `i >= from` such that `buf[i..]` is a proper prefix of some secret,
    /// i.e. the point from which the bytes could still turn into a match once more data
    /// arrives. `buf.len()` when no such suffix exists.
    fn hold_start(&self, buf: &[u8], from: usize) -> usize {
        // A proper prefix is shorter than the longest secret, which bounds the search window.
        let window = buf.len().saturating_sub(self.max_len.saturating_sub(1));
        for i in from.max(window)..buf.len() {
            let rest = &buf[i..];
            if self.patterns.iter().any(|p| {
                let p = p.expose().as_bytes();
                rest.len() < p.len() && p.starts_with(rest)
            }) {
                return i;
            }
        }
        buf.len()
    }

    /// Scans `buf` as the next part of a stream. Matches that start before the hold point are
    /// final (no later byte can change them), so they are replaced and everything up to the
    /// hold point is written to `out`. Returns the hold point; `buf[hold..]` must be carried.
    fn scan_into(&self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        let mut hold = self.hold_start(buf, 0);
        loop {
            match self.ac.find(Input::new(buf).span(pos..buf.len())) {
                Some(m) if m.start() < hold => {
                    out.extend_from_slice(&buf[pos..m.start()]);
                    out.extend_from_slice(REDACTED);
                    pos = m.end();
                    if pos > hold {
                        hold = self.hold_start(buf, pos);
                    }
                }
                _ => {
                    out.extend_from_slice(&buf[pos..hold]);
                    return hold;
                }
            }
        }
    }
}

/// Per-stream state: carries across chunk boundaries only the shortest tail that could still
/// be the start of a secret (at most `max_len - 1` bytes).
pub struct RedactStream {
    r: Arc<Redactor>,
    carry: Vec<u8>,
}

// SECURITY: the carry may hold the first bytes of a secret.
impl fmt::Debug for RedactStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactStream")
            .field("carry_len", &self.carry.len())
            .finish()
    }
}

impl RedactStream {
    pub fn new(r: Arc<Redactor>) -> Self {
        RedactStream {
            r,
            carry: Vec::new(),
        }
    }

    /// Bytes currently held back.
    pub fn carry_len(&self) -> usize {
        self.carry.len()
    }

    /// Feeds the next chunk and returns the bytes that are safe to emit now (possibly empty).
    /// When nothing is carried and the chunk neither holds a secret nor ends with the start of
    /// one, the chunk itself is returned without a copy.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if chunk.is_empty() {
            return chunk;
        }
        if self.carry.is_empty() {
            let hold = self.r.hold_start(&chunk, 0);
            let final_match = self
                .r
                .ac
                .find(Input::new(&chunk[..]))
                .is_some_and(|m| m.start() < hold);
            if !final_match {
                // Fast path: no copy of the emitted part, only of the (short) held tail.
                self.carry.extend_from_slice(&chunk[hold..]);
                return chunk.slice(..hold);
            }
            let mut out = Vec::with_capacity(chunk.len());
            let hold = self.r.scan_into(&chunk, &mut out);
            self.carry.extend_from_slice(&chunk[hold..]);
            return Bytes::from(out);
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(buf.len());
        let hold = self.r.scan_into(&buf, &mut out);
        buf.drain(..hold);
        self.carry = buf;
        Bytes::from(out)
    }

    /// End of stream: the held-back tail never became a secret; it is emitted (scrubbed of any
    /// complete match inside it, such as a short secret that a longer one shared a prefix with).
    pub fn finish(&mut self) -> Bytes {
        let carry = std::mem::take(&mut self.carry);
        match self.r.redact_all(&carry) {
            Cow::Borrowed(_) => Bytes::from(carry),
            Cow::Owned(v) => Bytes::from(v),
        }
    }
}

/// Scrubs every value of a header map in place (response headers and trailers).
pub fn redact_headers(r: &Redactor, headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if let Cow::Owned(v) = r.redact_all(value.as_bytes()) {
            // The replacement is plain ASCII, so the result stays a valid value; should that
            // ever fail, drop the value entirely rather than pass the secret on.
            *value = HeaderValue::from_bytes(&v).unwrap_or_else(|_| HeaderValue::from_static(""));
        }
    }
}

/// An `http_body::Body` wrapper that scrubs data frames as they stream and redacts trailer
/// values. The tail held back by the stream is emitted as a last data frame before the trailers
/// or the end. Errors of the inner body pass through unchanged.
///
/// The inner body must be `Unpin` (hyper's `Incoming`, boxed bodies and `Full` all are); wrap
/// anything else in `Box::pin` first. This keeps the wrapper free of unsafe pin projection.
///
/// When redacting, the output length differs from the input: the caller must drop any
/// `content-length` of the wrapped response.
pub struct RedactBody<B> {
    inner: B,
    stream: Option<RedactStream>,
    /// Trailers waiting behind the flushed tail.
    pending: Option<HeaderMap>,
    done: bool,
}

impl<B> fmt::Debug for RedactBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactBody")
            .field("redacting", &self.stream.is_some())
            .field("done", &self.done)
            .finish()
    }
}

impl<B> RedactBody<B> {
    /// `None` passes the body through untouched (only its data frames are converted to
    /// `Bytes`, which is free for `Bytes` bodies).
    pub fn new(inner: B, r: Option<Arc<Redactor>>) -> Self {
        RedactBody {
            inner,
            stream: r.map(RedactStream::new),
            pending: None,
            done: false,
        }
    }
}

impl<B> Body for RedactBody<B>
where
    B: Body + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = this.stream.as_mut().map(RedactStream::finish);
                    return match tail {
                        Some(tail) if !tail.is_empty() => Poll::Ready(Some(Ok(Frame::data(tail)))),
                        _ => Poll::Ready(None),
                    };
                }
            };
            let frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
            let frame = match frame.into_data() {
                Ok(data) => {
                    let Some(stream) = this.stream.as_mut() else {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    };
                    let out = stream.push(data);
                    if out.is_empty() {
                        // Everything was held back; an empty frame would be noise.
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Err(frame) => frame,
            };
            let mut trailers = match frame.into_trailers() {
                Ok(t) => t,
                // Neither data nor trailers: a frame kind this wrapper does not know; pass it on.
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            };
            // SECURITY: an upstream could echo the credential in a trailer as well.
            redact_headers(&stream.r, &mut trailers);
            let tail = stream.finish();
            if tail.is_empty() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            this.pending = Some(trailers);
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.pending.is_some() {
            return false;
        }
        if self.done {
            return true;
        }
        let carry_empty = self.stream.as_ref().is_none_or(|s| s.carry.is_empty());
        carry_empty && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.stream {
            None => self.inner.size_hint(),
            // Replacement changes the length, so nothing exact can be promised.
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn redactor(secrets: &[&str]) -> Arc<Redactor> {
        let secrets: Vec<Secret> = secrets.iter().map(Secret::new).collect();
        Arc::new(Redactor::new(&secrets).unwrap())
    }

    /// Streams `input` cut at the given lengths and returns everything emitted.
    fn stream_chunks(r: &Arc<Redactor>, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = RedactStream::new(r.clone());
        let mut out = Vec::new();
        let mut pos = 0;
        for &n in cuts {
            let end = (pos + n).min(input.len());
            out.extend_from_slice(&s.push(Bytes::copy_from_slice(&input[pos..end])));
            assert!(s.carry_len() < r.max_len(), "carry exceeded max_len - 1");
            pos = end;
        }
        out.extend_from_slice(&s.push(Bytes::copy_from_slice(&input[pos..])));
        out.extend_from_slice(&s.finish());
        out
    }

    fn whole(r: &Redactor, input: &[u8]) -> Vec<u8> {
        r.redact_all(input).into_owned()
    }

    #[test]
    fn empty_secrets_give_none() {
        assert!(Redactor::new(&[]).is_none());
        assert!(Redactor::new(&[Secret::new(""), Secret::new("  ")]).is_none());
    }

    #[test]
    fn debug_hides_patterns() {
        let r = redactor(&["sekrit-value"]);
        let s = format!("{r:?}");
        assert!(!s.contains("sekrit"), "{s}");
    }

    #[test]
    fn redact_all_borrows_when_clean() {
        let r = redactor(&["topsecret"]);
        assert!(matches!(r.redact_all(b"nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            &*r.redact_all(b"a topsecret b topsecret"),
            b"a [redacted] b [redacted]"
        );
        assert!(r.contains_secret(b"xxtopsecretxx"));
        assert!(!r.contains_secret(b"topsecre"));
    }

    #[test]
    fn split_across_two_three_and_many_chunks() {
        let r = redactor(&["ghp_canary123"]);
        let input = b"{\"echo\":\"Bearer ghp_canary123\"}";
        let expected = b"{\"echo\":\"Bearer [redacted]\"}".to_vec();
        assert_eq!(stream_chunks(&r, input, &[20]), expected);
        assert_eq!(stream_chunks(&r, input, &[18, 4]), expected);
        assert_eq!(stream_chunks(&r, input, &vec![1; input.len()]), expected);
    }

    #[test]
    fn at_very_start_and_end() {
        let r = redactor(&["s3cr3t!"]);
        assert_eq!(stream_chunks(&r, b"s3cr3t!", &[3]), b"[redacted]");
        assert_eq!(stream_chunks(&r, b"s3cr3t!abc", &[1, 1]), b"[redacted]abc");
        assert_eq!(stream_chunks(&r, b"abcs3cr3t!", &[5]), b"abc[redacted]");
        // A tail that looked like a start but the stream ended: emitted as is.
        assert_eq!(stream_chunks(&r, b"abcs3cr", &[4]), b"abcs3cr");
    }

    #[test]
    fn back_to_back_occurrences() {
        let r = redactor(&["tok"]);
        assert_eq!(
            stream_chunks(&r, b"toktoktok", &[2, 2, 2]),
            b"[redacted][redacted][redacted]"
        );
    }

    #[test]
    fn overlapping_prefix() {
        let r = redactor(&["aab"]);
        assert_eq!(stream_chunks(&r, b"aaab", &[1, 1, 1]), b"a[redacted]");
        assert_eq!(stream_chunks(&r, b"aaab", &[2]), b"a[redacted]");
        assert_eq!(stream_chunks(&r, b"aaaab", &[3]), b"aa[redacted]");
    }

    #[test]
    fn two_different_secrets() {
        let r = redactor(&["alpha-key", "beta-key-2"]);
        let input = b"x alpha-key y beta-key-2 z beta-key";
        let expected = b"x [redacted] y [redacted] z beta-key".to_vec();
        for cut in 1..input.len() {
            assert_eq!(stream_chunks(&r, input, &[cut]), expected, "cut {cut}");
        }
    }

    #[test]
    fn secret_that_prefixes_another() {
        // The short one at the very end must still be removed at finish.
        let r = redactor(&["abc", "abcdef"]);
        assert_eq!(stream_chunks(&r, b"xxabc", &[3]), b"xx[redacted]");
        assert_eq!(stream_chunks(&r, b"xxabcdef", &[5]), b"xx[redacted]");
        assert_eq!(stream_chunks(&r, b"xxabcdeX", &[5]), b"xx[redacted]deX");
    }

    #[test]
    fn carry_is_bounded() {
        let r = redactor(&["aaaaaaab"]);
        let mut s = RedactStream::new(r.clone());
        let mut emitted = 0;
        for _ in 0..1000 {
            emitted += s.push(Bytes::from_static(b"a")).len();
            assert!(s.carry_len() <= 7);
        }
        emitted += s.finish().len();
        assert_eq!(emitted, 1000);
    }

    #[test]
    fn fast_path_returns_same_bytes() {
        let r = redactor(&["zzsecretzz"]);
        let mut s = RedactStream::new(r);
        let chunk = Bytes::from(vec![b'q'; 4096]);
        let ptr = chunk.as_ptr();
        let out = s.push(chunk);
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out.len(), 4096);
        // A held tail still shares the chunk's memory for the emitted part.
        let chunk = Bytes::from(b"qqqqzzse".to_vec());
        let ptr = chunk.as_ptr();
        let out = s.push(chunk);
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(&out[..], b"qqqq");
        assert_eq!(&s.push(Bytes::from_static(b"cretzz!"))[..], b"[redacted]!");
    }

    #[test]
    fn random_chunkings_match_whole_buffer() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let alphabet = b"abc";
        for round in 0..2000 {
            let n_secrets = rng.random_range(1..=3);
            let secrets: Vec<String> = (0..n_secrets)
                .map(|_| {
                    let len = rng.random_range(1..=5);
                    (0..len)
                        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
                        .collect()
                })
                .collect();
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let r = redactor(&refs);
            let len = rng.random_range(0..60);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let mut cuts = Vec::new();
            let mut total = 0;
            while total < len {
                let c = rng.random_range(0..8);
                cuts.push(c);
                total += c;
            }
            assert_eq!(
                stream_chunks(&r, &input, &cuts),
                whole(&r, &input),
                "round {round} secrets {secrets:?} input {:?} cuts {cuts:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[tokio::test]
    async fn body_wrapper_scrubs_frames_and_trailers() {
        let r = redactor(&["ghp_body_secret"]);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-echo", HeaderValue::from_static("ghp_body_secret"));
        let body = FrameBody(
            vec![
                Frame::data(Bytes::from_static(b"start ghp_bo")),
                Frame::data(Bytes::from_static(b"dy_secret end ghp_")),
                Frame::trailers(trailers),
            ]
            .into(),
        );
        let collected = RedactBody::new(body, Some(r)).collect().await.unwrap();
        let t = collected.trailers().cloned().unwrap();
        assert_eq!(t["x-echo"], "[redacted]");
        assert_eq!(&collected.to_bytes()[..], b"start [redacted] end ghp_");
    }

    #[tokio::test]
    async fn body_wrapper_passes_through_without_redactor() {
        let body = Full::new(Bytes::from_static(b"ghp_body_secret"));
        let out = RedactBody::new(body, None).collect().await.unwrap();
        assert_eq!(&out.to_bytes()[..], b"ghp_body_secret");
    }

    #[tokio::test]
    async fn body_wrapper_flushes_tail_at_end() {
        let r = redactor(&["abcdef"]);
        let body = Full::new(Bytes::from_static(b"xyzabc"));
        let out = RedactBody::new(body, Some(r)).collect().await.unwrap();
        assert_eq!(&out.to_bytes()[..], b"xyzabc");
    }

    /// A body that yields the given frames in order.
    struct FrameBody(std::collections::VecDeque<Frame<Bytes>>);

    impl Body for FrameBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }
}
