//! Body wrappers on the streaming path: byte counting for the ledger, and the response
//! finisher that writes the ledger line once the response body is done (or dropped), so
//! `bytesOut` and `durationMs` cover the whole exchange without buffering anything.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::ledger::{Entry, Ledger};

pin_project_lite::pin_project! {
    /// Counts the data bytes that pass through into a shared counter.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Counted { inner, count }
    }
}

impl<B: Body<Data = Bytes>> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A ledger line waiting for its response body to finish.
pub struct PendingEntry {
    pub ledger: Ledger,
    pub entry: Entry,
    pub started: Instant,
    pub bytes_in: Arc<AtomicU64>,
}

impl PendingEntry {
    fn commit(mut self, bytes_out: u64) {
        self.entry.bytes_out = bytes_out;
        self.entry.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.entry.duration_ms = self.started.elapsed().as_millis() as u64;
        self.ledger.record(self.entry);
    }
}

pin_project_lite::pin_project! {
    /// Passes the body through, then records the ledger line exactly once: at the end of
    /// the stream, or when the client goes away mid-body (drop).
    pub struct Finish<B> {
        #[pin]
        inner: B,
        bytes_out: u64,
        pending: Option<PendingEntry>,
    }

    impl<B> PinnedDrop for Finish<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(p) = this.pending.take() {
                p.commit(*this.bytes_out);
            }
        }
    }
}

impl<B> Finish<B> {
    pub fn new(inner: B, pending: PendingEntry) -> Self {
        Finish {
            inner,
            bytes_out: 0,
            pending: Some(pending),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Finish<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = this.pending.take() {
                    p.commit(*this.bytes_out);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
