//! Connection limits: kube-apiserver's idle and slow-header timeouts, and its header size.
//!
//! kube-apiserver's `http.Server` closes a keep-alive connection that has been idle (no
//! request in progress) for 90 s (`IdleTimeout`, for HTTP/1.1 and HTTP/2 alike), and one whose
//! next request's headers have not all arrived 32 s after their first byte
//! (`ReadHeaderTimeout`). hyper has neither in that form (its `header_read_timeout` starts when
//! the connection becomes idle, so it would also close idle connections at 32 s), so
//! [`TimedIo`] wraps each connection's stream and ends it itself: a request counts as in
//! progress from the service's call until its response body is dropped, so a watch, however long
//! it sends nothing, is never idle, and ends only at its own timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The largest request head (request line and headers) of HTTP/1.1, and header list of HTTP/2:
/// kube-apiserver's `MaxHeaderBytes` (1 MiB). Beyond it, HTTP/1.1 gets 431 Request Header
/// Fields Too Large and the connection is closed.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// The longest request URI (path and query). hyper refuses one past 64 KiB - 2 bytes on
/// HTTP/1.1 before the service sees it; this applies the same limit to HTTP/2.
pub const MAX_URI_BYTES: usize = (u16::MAX - 1) as usize;

/// 431 for a request whose request line and headers, counted as they were on the wire in
/// HTTP/1.1, exceed [`MAX_HEADER_BYTES`]; 414 for a URI past [`MAX_URI_BYTES`]. hyper's read
/// buffer bounds what it buffers but lets a head past its size through when one read completes
/// it, so the exact limit is applied here.
pub fn check_head<B>(request: &http::Request<B>) -> Result<(), super::ApiError> {
    let uri = request.uri().path_and_query().map_or(0, |path| path.as_str().len());
    if uri > MAX_URI_BYTES {
        return Err(super::ApiError::uri_too_long(uri, MAX_URI_BYTES));
    }
    // "METHOD URI HTTP/1.1\r\n", each "name: value\r\n", and the final "\r\n".
    let line = request.method().as_str().len() + 1 + uri + 1 + 8 + 2;
    let headers: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + 2 + value.len() + 2).sum();
    let size = line + headers + 2;
    if size > MAX_HEADER_BYTES {
        return Err(super::ApiError::headers_too_large(size, MAX_HEADER_BYTES));
    }
    Ok(())
}

/// Connection timeouts (`--idle-connection-timeout`, `--request-header-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a connection with no request in progress stays open.
    pub idle_timeout: Duration,
    /// How long an HTTP/1.1 request's head may take to arrive, from its first byte.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// kube-apiserver's: 90 s idle, 32 s for a request's headers.
    fn default() -> ConnectionLimits {
        ConnectionLimits { idle_timeout: Duration::from_secs(90), header_timeout: Duration::from_secs(32) }
    }
}

/// What a connection's requests tell its stream: how many are in progress, and since when
/// none is.
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted; the origin of `idle_since`.
    origin: Instant,
    /// Requests in progress (service called, response body not yet dropped).
    active: AtomicUsize,
    /// Nanoseconds from `origin` to the moment `active` last fell to 0.
    idle_since: AtomicU64,
    /// Counts the falls of `active` to 0, so the stream knows a new idle period began.
    idle_periods: AtomicU64,
    /// The stream's reader, woken when the connection becomes idle so its timer starts even
    /// when nothing is read (HTTP/2 keeps a read pending throughout).
    reader: Mutex<Option<Waker>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            idle_periods: AtomicU64::new(0),
            reader: Mutex::new(None),
        }
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub fn begin(self: &Arc<Activity>) -> RequestGuard {
        // Relaxed: the count is read by the stream's own poll_read only to decide whether a
        // timer runs; the idle transition it must see is published by `idle_periods` below.
        self.active.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }
}

/// A request in progress on its connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            let since = u64::try_from(activity.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            activity.idle_since.store(since, Ordering::Relaxed);
            // Release: pairs with the Acquire load in `TimedIo::poll_read`, so a reader that sees
            // the new period also sees its `idle_since`.
            activity.idle_periods.fetch_add(1, Ordering::Release);
            let waker = activity.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A response body that holds its request's [`RequestGuard`] until it is dropped; its size and
/// end are the inner body's, so a body of known length keeps its Content-Length.
pub struct Guarded<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Guarded<B> {
    /// `body`, holding `guard`.
    pub fn new(body: B, guard: RequestGuard) -> Guarded<B> {
        Guarded { body, _guard: guard }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Which timer a stream runs while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's first byte (the idle timeout).
    Idle,
    /// A request's head has begun to arrive (the header timeout, HTTP/1.1 only).
    Head,
}

/// A connection's stream that ends when the connection has been idle, or a request's head has
/// been arriving, for too long. Ending is an end of stream for the idle timeout (hyper then closes
/// the connection quietly) and a `TimedOut` error for a slow head; in both cases no response is
/// sent, as with Go's timeouts.
pub struct TimedIo<T> {
    inner: T,
    limits: ConnectionLimits,
    activity: Arc<Activity>,
    /// The running timer; `None` while a request is in progress.
    timer: Option<(Phase, u64, Pin<Box<Sleep>>)>,
    /// The idle period in which a request's head began to arrive.
    head_started_in: Option<u64>,
    /// Bytes read so far, up to the length of the HTTP/2 preface's start.
    seen: usize,
    /// The connection speaks HTTP/2 (it began with the preface): only the idle timeout applies.
    http2: bool,
}

/// The start of the HTTP/2 connection preface.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

impl<T> TimedIo<T> {
    /// Wraps `inner`; the returned [`Activity`] goes to the connection's service.
    pub fn new(inner: T, limits: ConnectionLimits) -> (TimedIo<T>, Arc<Activity>) {
        let activity = Arc::new(Activity::new());
        let io = TimedIo {
            inner,
            limits,
            activity: Arc::clone(&activity),
            timer: None,
            head_started_in: None,
            seen: 0,
            http2: false,
        };
        (io, activity)
    }

    /// Notes what was read: the preface's start, and the first byte of a request's head.
    fn observe(&mut self, bytes: &[u8], period: u64, idle: bool) {
        if self.seen < H2_PREFACE_START.len() && !bytes.is_empty() {
            let take = bytes.len().min(H2_PREFACE_START.len() - self.seen);
            if bytes[..take] == H2_PREFACE_START[self.seen..self.seen + take] {
                self.seen += take;
                self.http2 = self.seen == H2_PREFACE_START.len();
                if self.http2 {
                    self.head_started_in = None;
                }
            } else {
                // Not HTTP/2: stop looking.
                self.seen = H2_PREFACE_START.len();
            }
        }
        if idle && !bytes.is_empty() && !self.http2 && self.head_started_in != Some(period) {
            self.head_started_in = Some(period);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Acquire: pairs with the Release increment in `RequestGuard::drop`.
        let period = this.activity.idle_periods.load(Ordering::Acquire);
        let idle = this.activity.active.load(Ordering::Relaxed) == 0;
        if let Poll::Ready(Ok(())) = &result {
            this.observe(&buf.filled()[before..], period, idle);
            return result;
        }
        if result.is_ready() {
            return result;
        }
        if !idle {
            this.timer = None;
            {
                let mut reader = this.activity.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if !reader.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
            }
            // A request may have ended between the load above and storing the waker: look again.
            if this.activity.active.load(Ordering::Relaxed) != 0 {
                return Poll::Pending;
            }
        }
        let period = this.activity.idle_periods.load(Ordering::Acquire);
        let (phase, deadline) = if this.head_started_in == Some(period) {
            (Phase::Head, None)
        } else {
            let since = Duration::from_nanos(this.activity.idle_since.load(Ordering::Relaxed));
            (Phase::Idle, Some(this.activity.origin + since + this.limits.idle_timeout))
        };
        let rearm = !matches!(&this.timer, Some((running, at, _)) if *running == phase && *at == period);
        if rearm {
            let deadline = deadline.unwrap_or_else(|| Instant::now() + this.limits.header_timeout);
            match &mut this.timer {
                Some((running, at, sleep)) => {
                    sleep.as_mut().reset(deadline);
                    *running = phase;
                    *at = period;
                }
                None => this.timer = Some((phase, period, Box::pin(tokio::time::sleep_until(deadline)))),
            }
        }
        let (_, _, sleep) = this.timer.as_mut().expect("armed above");
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match phase {
            Phase::Idle => {
                tracing::debug!("closing a connection idle for {:?}", this.limits.idle_timeout);
                Poll::Ready(Ok(()))
            }
            Phase::Head => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the request's headers did not arrive within {:?}", this.limits.header_timeout),
            ))),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
