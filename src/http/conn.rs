//! Per-connection deadlines: the header timeout and the idle timeout,
//! enforced on the connection's reads; the write timeout (no progress) and
//! the request timeout (a response still being written), enforced on its
//! writes.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Limits;

/// Per-connection timing shared by the handler and the connection's
/// reader: which deadline applies to the next read.
pub(super) struct ConnClock {
    /// Milliseconds since `base` of the last request's end (or of accept).
    idle_since: AtomicU64,
    /// Requests started minus requests answered.
    in_flight: AtomicU64,
    /// Whether the next request is the first (its wait is a header wait).
    first: AtomicBool,
    /// Requests answered (a change tells the reader a new wait began).
    answered: AtomicU64,
    /// Milliseconds since `base` of the latest request's start (what is
    /// being written belongs to it: requests are answered in order).
    started: AtomicU64,
    base: Instant,
}

impl ConnClock {
    pub(super) fn new() -> ConnClock {
        ConnClock {
            idle_since: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            first: AtomicBool::new(true),
            answered: AtomicU64::new(0),
            started: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }
    pub(super) fn request_started(&self) {
        self.started.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first.store(false, Ordering::Release);
    }
    pub(super) fn request_done(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
        self.answered.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream whose reads fail with `TimedOut` once the deadline that applies
/// passes: header timeout from accept for the first request, idle timeout
/// from the last answer while nothing arrived, header timeout from the
/// first byte of a request whose header is incomplete. No deadline while a
/// request is being answered.
pub(super) struct Deadlined<S> {
    inner: S,
    clock: Arc<ConnClock>,
    limits: Arc<Limits>,
    /// When the first byte since the last answer arrived (ms since base).
    first_byte: Option<u64>,
    seen_answered: u64,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Since when writes have made no progress.
    stalled: Option<Instant>,
    wsleep: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Deadlined<S> {
    pub(super) fn new(inner: S, clock: Arc<ConnClock>, limits: Arc<Limits>) -> Self {
        let d = limits.header_timeout;
        Deadlined {
            inner,
            clock,
            limits,
            first_byte: None,
            seen_answered: 0,
            sleep: Box::pin(tokio::time::sleep(d)),
            stalled: None,
            wsleep: Box::pin(tokio::time::sleep(d)),
        }
    }

    /// After a write poll: `Ready(Err(TimedOut))` once the write timeout
    /// (no progress since `stalled`) or the request timeout (from the
    /// latest request's start) passed, else `r` with the timer armed.
    fn write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
        progress: impl Fn(&T) -> bool,
    ) -> Poll<std::io::Result<T>> {
        let now = Instant::now();
        let request_end = self.clock.base
            + Duration::from_millis(self.clock.started.load(Ordering::Acquire))
            + self.limits.request_timeout;
        match &r {
            Poll::Ready(Ok(v)) if progress(v) => self.stalled = None,
            Poll::Ready(_) => return r,
            Poll::Pending => {}
        }
        if now >= request_end {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        if r.is_ready() {
            return r;
        }
        let stalled = *self.stalled.get_or_insert(now);
        let at = (stalled + self.limits.write_timeout).min(request_end);
        if now >= at {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        let at = tokio::time::Instant::from_std(at);
        if self.wsleep.deadline() != at {
            self.wsleep.as_mut().reset(at);
        }
        if self.wsleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }

    fn deadline_ms(&mut self) -> Option<u64> {
        let c = &self.clock;
        if c.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let answered = c.answered.load(Ordering::Acquire);
        if answered != self.seen_answered {
            self.seen_answered = answered;
            self.first_byte = None;
        }
        let idle_since = c.idle_since.load(Ordering::Acquire);
        let h = self.limits.header_timeout.as_millis() as u64;
        Some(if c.first.load(Ordering::Acquire) {
            h
        } else if let Some(t) = self.first_byte {
            t + h
        } else {
            idle_since + self.limits.idle_timeout.as_millis() as u64
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if buf.filled().len() > before && self.first_byte.is_none() {
                self.first_byte = Some(self.clock.now_ms());
            }
            return r;
        }
        if r.is_ready() {
            return r;
        }
        if let Some(ms) = self.deadline_ms() {
            let at = self.clock.base + Duration::from_millis(ms);
            if Instant::now() >= at {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
            let at = tokio::time::Instant::from_std(at);
            if self.sleep.deadline() != at {
                self.sleep.as_mut().reset(at);
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_deadline(cx, r, |n| *n > 0)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_deadline(cx, r, |_| true)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_deadline(cx, r, |n| *n > 0)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
