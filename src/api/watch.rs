//! Watch responses: newline-delimited JSON events streamed over chunked HTTP/1.1 or HTTP/2.
//!
//! The response body pulls from the resource's [`CacheWatch`] as the connection can take it:
//! no task or buffer of its own. Each batch of lines is written as one chunk. The stream ends
//! at `timeoutSeconds`, when the server shuts down, when the cache ends the watch (a relist),
//! or after an ERROR event (410 Expired) for a watcher that fell behind the cache's history.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::handlers::Target;
use super::request::Query;
use super::status::ApiError;
use super::{ApiState, Body};
use crate::cacher::object::event_line;
use crate::cacher::ring::TooOld;
use crate::cacher::{CacheError, CacheWatch, WatchItem};

/// GET with `watch=true` on a collection.
pub async fn watch(state: &ApiState, target: &Target, query: &Query) -> Result<Response<Body>, ApiError> {
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
    let deadline = query
        .timeout_seconds
        .filter(|&seconds| seconds > 0)
        .map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let stream =
        WatchStream { watch: first.as_ref().ok().is_some(), shutdown: state.shutdown.clone(), deadline };
    let body = match first {
        Ok(watch) => stream.into_body(watch),
        Err(too_old) => error_body(too_old),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response"))
}

/// The ERROR event for a watcher that fell behind: a 410 Expired Status.
pub fn expired_line(too_old: TooOld) -> Bytes {
    let status = ApiError::expired(too_old.to_string()).to_status();
    event_line("ERROR", &serde_json::to_vec(&status).expect("Status encodes"))
}

fn error_body(too_old: TooOld) -> Body {
    let line = expired_line(too_old);
    let stream = futures_util::stream::once(async move { Ok(Frame::data(line)) });
    StreamBody::new(stream).boxed_unsync()
}

struct WatchStream {
    watch: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
}

struct State {
    watch: CacheWatch,
    shutdown: tokio::sync::watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
    ended: bool,
}

impl WatchStream {
    fn into_body(self, watch: CacheWatch) -> Body {
        debug_assert!(self.watch);
        let state = State { watch, shutdown: self.shutdown, deadline: self.deadline, ended: false };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            if state.ended {
                return None;
            }
            let deadline = async {
                match state.deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                item = state.watch.next() => item,
                () = deadline => None,
                _ = state.shutdown.wait_for(|stopping| *stopping) => None,
            };
            let chunk = match item? {
                WatchItem::Lines(lines) => concat(lines),
                WatchItem::Expired(too_old) => {
                    state.ended = true;
                    expired_line(too_old)
                }
            };
            Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), state))
        });
        StreamBody::new(stream).boxed_unsync()
    }
}

/// One chunk for a batch of lines (a copy of shared bytes, no encoding).
fn concat(lines: Vec<Bytes>) -> Bytes {
    if lines.len() == 1 {
        return lines.into_iter().next().expect("one line");
    }
    let mut chunk = BytesMut::with_capacity(lines.iter().map(Bytes::len).sum());
    for line in lines {
        chunk.put_slice(&line);
    }
    chunk.freeze()
}
