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
//! A watch that asks for Tables (`kubectl get -w`) gets each event's object as a one-row Table
//! ([`TableEvents`]), transformed for that watcher alone.
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
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::handlers::Target;
use super::negotiate;
use super::printers::{self, TableOptions};
use super::request::Query;
use super::status::ApiError;
use super::{ApiState, Body};
use crate::cacher::object::{Line, Wire};
use crate::cacher::ring::TooOld;
use crate::cacher::watcher::{Filled, LineBuffer, LineSink};
use crate::cacher::{CacheError, CacheWatch};
use crate::registry::ResourceType;

/// An idle watch keeps its buffer up to this size; a larger one is released.
const IDLE_BUFFER_LIMIT: usize = 16 << 10;

/// GET with `watch=true` on a collection (Table events when the client asked for a Table).
pub async fn watch(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let filter = super::handlers::watch_filter(target, query)?;
    let table = super::handlers::table_options(headers, query)?
        .map(|options| TableEvents::new(target.resource.ty.clone(), options));
    // A Table is JSON.
    let wire = if table.is_some() { Wire::Json } else { wire };
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
            let mut body = WatchBody::new(watch, timeout);
            body.table = table;
            body.boxed_unsync()
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
    let payload = match wire {
        Wire::Json => serde_json::to_vec(&status).expect("Status encodes"),
        Wire::Protobuf => crate::protobuf::schema().encode_object(&status).expect("Status encodes"),
    };
    Line { wire, event_type: "ERROR", payload: &payload }.to_bytes()
}

fn error_body(too_old: TooOld, wire: Wire) -> Body {
    let line = expired_line(too_old, wire);
    let stream = futures_util::stream::once(async move { Ok(Frame::data(line)) });
    StreamBody::new(stream).boxed_unsync()
}

/// Turns a watch's JSON event lines into Table events, for `kubectl get -w`: each event's
/// object becomes a one-row Table, the first with the column definitions and the later ones
/// without, as kube-apiserver's watch sends them. ERROR events (a Status) pass as they are;
/// a BOOKMARK's object becomes a Table too, as kube-apiserver's encoder transforms every object
/// but a Status.
///
/// This is per-watcher work (each shared line is decoded and a Table encoded), done only for
/// watches that asked for Tables; JSON and protobuf watches copy the cache's lines as before.
pub struct TableEvents {
    ty: ResourceType,
    options: TableOptions,
    headers_sent: bool,
    /// The line of the current batch that carries the column definitions, if any: should the
    /// batch be cut before it, the next event carries them instead.
    headers_line: Option<usize>,
}

impl TableEvents {
    /// Table events for a watch on objects of type `ty`.
    pub fn new(ty: ResourceType, options: TableOptions) -> TableEvents {
        TableEvents { ty, options, headers_sent: false, headers_line: None }
    }

    /// The Table event for one JSON watch event (`None`: it passes as it is); `index` is its
    /// place in the batch.
    fn transform(&mut self, line: Line<'_>, index: usize) -> Option<Bytes> {
        let kind = line.event_type;
        let object = serde_json::from_slice::<serde_json::Value>(line.payload).ok()?;
        if kind == "ERROR" || !object.is_object() || object["kind"] == "Status" {
            return None;
        }
        let options = TableOptions { no_headers: self.headers_sent, ..self.options };
        let table = printers::object_table(&self.ty, &object, &options);
        if !self.headers_sent {
            self.headers_sent = true;
            self.headers_line = Some(index);
        }
        Some(Bytes::from(serde_json::to_vec(&table).expect("JSON value encodes")))
    }
}

/// The watch's buffer, with each line turned into a Table event on the way in.
struct TableSink<'a> {
    buffer: &'a mut LineBuffer,
    table: &'a mut TableEvents,
}

impl LineSink for TableSink<'_> {
    fn put(&mut self, line: Line<'_>) {
        match self.table.transform(line, self.buffer.lines) {
            Some(table) => self.buffer.put(Line { payload: &table, ..line }),
            None => self.buffer.put(line),
        }
    }

    fn size(&self) -> (usize, usize) {
        self.buffer.size()
    }

    fn truncate(&mut self, size: (usize, usize)) {
        self.buffer.truncate(size);
        if self.table.headers_line.is_some_and(|line| line >= size.0) {
            self.table.headers_sent = false;
            self.table.headers_line = None;
        }
    }
}

/// The body of a watch response (see the module docs).
pub struct WatchBody {
    watch: CacheWatch,
    buffer: LineBuffer,
    /// Set for a watch of Tables.
    table: Option<TableEvents>,
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
            table: None,
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
        let filled = match &mut this.table {
            None => this.watch.poll_fill(cx, &mut this.buffer),
            Some(table) => {
                // Every batch starts with an empty buffer.
                table.headers_line = None;
                this.watch.poll_fill(cx, &mut TableSink { buffer: &mut this.buffer, table })
            }
        };
        match filled {
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
    fn table_watches_send_column_definitions_once() {
        let ty = crate::registry::builtin_types().into_iter().find(|ty| ty.plural == "configmaps").unwrap();
        let options = TableOptions {
            api_version: "meta.k8s.io/v1",
            include: crate::api::printers::IncludeObject::Metadata,
            no_headers: false,
        };
        let mut table = TableEvents::new(ty, options);
        let mut buffer = LineBuffer::default();
        let configmap = |name: &str| {
            format!(
                r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","resourceVersion":"4"}},"data":{{"a":"1"}}}}"#
            )
        };
        let status = br#"{"kind":"Status","code":410}"#;
        let mut sink = TableSink { buffer: &mut buffer, table: &mut table };
        sink.put(Line::json("ADDED", configmap("a").as_bytes()));
        sink.put(Line::json("ERROR", status));
        sink.put(Line::json("ADDED", configmap("b").as_bytes()));
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&buffer.take())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[0]["object"]["kind"], "Table");
        assert_eq!(lines[0]["object"]["metadata"]["resourceVersion"], "4");
        assert_eq!(lines[0]["object"]["columnDefinitions"][1]["name"], "Data");
        assert_eq!(lines[0]["object"]["rows"][0]["cells"][0], "a");
        assert_eq!(lines[1]["object"]["kind"], "Status", "errors pass as they are");
        assert!(
            lines[2]["object"]["columnDefinitions"].is_null(),
            "column definitions go in the first event only"
        );
        assert_eq!(lines[2]["object"]["rows"][0]["cells"][0], "b");

        // A batch cut before the event with the column definitions leaves them to the next.
        let mut table = TableEvents::new(table.ty.clone(), options);
        let mut sink = TableSink { buffer: &mut buffer, table: &mut table };
        sink.put(Line::json("ADDED", configmap("a").as_bytes()));
        sink.truncate((0, 0));
        sink.put(Line::json("ADDED", configmap("b").as_bytes()));
        let line: serde_json::Value = serde_json::from_slice(&buffer.take()).unwrap();
        assert!(line["object"]["columnDefinitions"].is_array());
    }

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
