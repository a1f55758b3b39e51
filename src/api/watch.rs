//! Watch responses: newline-delimited JSON events, or length-prefixed protobuf frames
//! (`application/vnd.kubernetes.protobuf;stream=watch`), streamed over chunked HTTP/1.1 or
//! HTTP/2.
//!
//! The response body ([`WatchBody`]) implements `hyper::body::Body` (`http_body::Body`) itself and pulls from the
//! resource's [`CacheWatch`] as the connection can take it: no task, channel or timer of its
//! own beyond the one deadline, all created once per watch. Each poll copies everything the
//! watcher has queued (up to a batch) into the watch's one reused buffer and hands it out as one
//! chunk, so a watcher that has several events waiting sends them in one write.
//!
//! The stream ends at `timeoutSeconds`; without it, after a random time between
//! `--min-request-timeout` and twice that, as kube-apiserver does, so that clients re-watch at
//! different moments and spread over replicas. It also ends when the server shuts down (the
//! caches end every watch), when the cache ends the watch (a relist), or after an ERROR event
//! (410 Expired) for a watcher that fell behind the cache's history.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::handlers::Target;
use super::negotiate;
use super::request::Query;
use super::status::ApiError;
use super::{ApiState, Body};
use crate::cacher::object::{event_line, Wire};
use crate::cacher::ring::TooOld;
use crate::cacher::watcher::{Filled, LineBuffer};
use crate::cacher::{CacheError, CacheWatch};

/// An idle watch keeps its buffer up to this size; a larger one is released.
const IDLE_BUFFER_LIMIT: usize = 16 << 10;

/// GET with `watch=true` on a collection.
pub async fn watch(
    state: &ApiState,
    target: &Target,
    query: &Query,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let filter = super::handlers::watch_filter(target, query)?;
    let cacher = &target.resource.cacher;
    let start = query.watch_start(cacher.revision())?;
    let subject = super::status::Subject {
        group: &target.resource.ty.group,
        plural: &target.resource.ty.plural,
        kind: &target.resource.ty.kind,
        name: "",
    };
    let first = match cacher.watch(filter, start, query.allow_watch_bookmarks).await {
        Ok(watch) => Ok(watch),
        // As kube-apiserver's cache does: a watch stream with one ERROR event.
        Err(CacheError::TooOld(too_old)) => Err(too_old),
        Err(error) => return Err(ApiError::from_cache(error, subject)),
    };
    let timeout = watch_timeout(query.timeout_seconds, state.min_request_timeout);
    let body = match first {
        Ok(mut watch) => {
            watch.set_wire(wire);
            WatchBody::new(watch, timeout).boxed_unsync()
        }
        Err(too_old) => error_body(too_old, wire),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, negotiate::watch_content_type(wire))
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response"))
}

/// How long a watch lasts: `timeoutSeconds` when given (and positive), else a random time in
/// `[min_request_timeout, 2 × min_request_timeout)`, as kube-apiserver chooses it.
pub fn watch_timeout(timeout_seconds: Option<u64>, min_request_timeout: Duration) -> Duration {
    match timeout_seconds.filter(|&seconds| seconds > 0) {
        Some(seconds) => Duration::from_secs(seconds),
        None => {
            // A random fraction in [0, 1) from the standard library's per-instance random keys.
            let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
            let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
            min_request_timeout.mul_f64(1.0 + fraction)
        }
    }
}

/// The ERROR event for a watcher that fell behind: a 410 Expired Status, in `wire`'s form.
pub fn expired_line(too_old: TooOld, wire: Wire) -> Bytes {
    let status = ApiError::expired(too_old.to_string()).to_status();
    match wire {
        Wire::Json => event_line("ERROR", &serde_json::to_vec(&status).expect("Status encodes")),
        Wire::Protobuf => {
            let schema = crate::protobuf::schema();
            Bytes::from(schema.watch_frame("ERROR", &schema.encode_object(&status).expect("Status encodes")))
        }
    }
}

fn error_body(too_old: TooOld, wire: Wire) -> Body {
    let line = expired_line(too_old, wire);
    let stream = futures_util::stream::once(async move { Ok(Frame::data(line)) });
    StreamBody::new(stream).boxed_unsync()
}

/// The body of a watch response (see the module docs).
pub struct WatchBody {
    watch: CacheWatch,
    buffer: LineBuffer,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The ERROR line that ends the stream, once the lines before it are out.
    last: Option<Bytes>,
    done: bool,
}

impl WatchBody {
    /// A body streaming `watch` for `timeout`.
    pub fn new(watch: CacheWatch, timeout: Duration) -> WatchBody {
        WatchBody {
            watch,
            buffer: LineBuffer::default(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            last: None,
            done: false,
        }
    }
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(line) = this.last.take() {
            this.done = true;
            return Poll::Ready(Some(Ok(Frame::data(line))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        match this.watch.poll_fill(cx, &mut this.buffer) {
            Poll::Ready(Some(Filled::Lines)) => Poll::Ready(Some(Ok(Frame::data(this.buffer.take())))),
            Poll::Ready(Some(Filled::Expired(too_old))) => {
                let line = expired_line(too_old, this.watch.wire());
                if this.buffer.lines > 0 {
                    this.last = Some(line);
                    return Poll::Ready(Some(Ok(Frame::data(this.buffer.take()))));
                }
                this.done = true;
                Poll::Ready(Some(Ok(Frame::data(line))))
            }
            Poll::Ready(None) => {
                this.done = true;
                if this.buffer.lines > 0 {
                    return Poll::Ready(Some(Ok(Frame::data(this.buffer.take()))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.buffer.bytes.capacity() > IDLE_BUFFER_LIMIT {
                    this.buffer.bytes = Default::default();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.last.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_kube() {
        assert_eq!(watch_timeout(Some(7), Duration::from_secs(1800)), Duration::from_secs(7));
        let minimum = Duration::from_secs(1800);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            for timeout_seconds in [None, Some(0)] {
                let timeout = watch_timeout(timeout_seconds, minimum);
                assert!(timeout >= minimum && timeout < minimum * 2, "{timeout:?}");
                seen.insert(timeout);
            }
        }
        assert!(seen.len() > 150, "timeouts must be spread, got {} distinct", seen.len());
    }
}
