//! Audit logging (`--audit-log-path`): one JSON line per request stage, in kube-apiserver's
//! `audit.k8s.io/v1` `Event` shape at the `Metadata` level: who, what, on which object, when,
//! the answer's code and the authorization decision. Never a request or response body, so never
//! Secret data.
//!
//! Nothing on the request path waits for the log. A request takes the facts it already has
//! (method, URI, user, codes, times) into an [`Record`] and offers it to a bounded channel
//! ([`AuditLog::record`], `try_send`); one writer thread turns records into JSON and writes
//! them. When the channel is full the record is dropped, counted
//! (`apiserver_audit_error_total{plugin="log"}`) and the first drop is logged.
//!
//! Each request gets an audit ID (a UUID, or the client's `Audit-ID` header, as kube), which the
//! response carries as `Audit-Id`. A watch logs `ResponseStarted` when its stream starts and
//! `ResponseComplete` when it ends, as kube-apiserver does for long-running requests; other
//! requests log `ResponseComplete`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method, Uri};
use serde::Serialize;

use crate::auth::UserInfo;

/// How many records may wait for the writer before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 10_000;

/// What the audit log has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events written (`apiserver_audit_event_total`).
    pub events: AtomicU64,
    /// Events dropped because the queue was full or the write failed
    /// (`apiserver_audit_error_total{plugin="log"}`).
    pub dropped: AtomicU64,
    /// Whether a drop has been logged yet (once per process).
    warned: AtomicBool,
}

/// The stage of a request an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A long-running request's response headers were sent (watches).
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
        }
    }
}

/// The name of the object a create made (set in the response's extensions by the handler;
/// the audit event's `objectRef.name`, which a create's URI does not hold).
#[derive(Debug, Clone)]
pub struct CreatedName(pub Box<str>);

/// What a request knows for its audit event; cheap to make (clones of reference-counted
/// values), turned into JSON by the writer thread.
#[derive(Debug, Clone)]
pub struct Record {
    /// The audit ID.
    pub audit_id: HeaderValue,
    /// The stage.
    pub stage: Stage,
    /// The method.
    pub method: Method,
    /// The request URI (path and query).
    pub uri: Uri,
    /// Whether the request is a watch.
    pub is_watch: bool,
    /// The authenticated user; `None` when authentication failed.
    pub user: Option<Arc<UserInfo>>,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// `X-Forwarded-For`, when given.
    pub forwarded_for: Option<HeaderValue>,
    /// `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// The object's name when the URI does not hold it (a create).
    pub created: Option<Box<str>>,
    /// The response code.
    pub code: u16,
    /// For failures: the Status's `reason` and `message`.
    pub failure: Option<(&'static str, String)>,
    /// The authorization decision (`allow` or `forbid`) and its reason, when one was made.
    pub decision: Option<(&'static str, String)>,
    /// When the request arrived.
    pub received: SystemTime,
    /// When this stage was reached.
    pub at: SystemTime,
}

/// The audit log: a bounded queue and the thread that writes it.
#[derive(Debug)]
pub struct AuditLog {
    sender: crossbeam::channel::Sender<Record>,
    stats: Arc<AuditStats>,
    /// Random high bits of this process's audit IDs.
    id_base: u128,
    /// The audit IDs made so far.
    ids: AtomicU64,
}

impl AuditLog {
    /// Opens `path` for appending (`-`: standard output) and starts the writer thread.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(AuditLog::to_writer(out))
    }

    /// Writes the log to `out` (tests and benches).
    pub fn to_writer(out: Box<dyn Write + Send>) -> AuditLog {
        let (sender, receiver) = crossbeam::channel::bounded(QUEUE_CAPACITY);
        let stats = Arc::new(AuditStats::default());
        let writer_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(&receiver, out, &writer_stats))
            .expect("the audit writer thread starts");
        AuditLog { sender, stats, id_base: uuid::Uuid::new_v4().as_u128(), ids: AtomicU64::new(0) }
    }

    /// A log whose writer takes each record off the queue and drops it: what the request path
    /// pays alone (benchmarks).
    pub fn discarding() -> AuditLog {
        let (sender, receiver) = crossbeam::channel::bounded::<Record>(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("audit-discard".into())
            .spawn(move || while receiver.recv().is_ok() {})
            .expect("the audit writer thread starts");
        AuditLog {
            sender,
            stats: Arc::new(AuditStats::default()),
            id_base: uuid::Uuid::new_v4().as_u128(),
            ids: AtomicU64::new(0),
        }
    }

    /// How many records wait for the writer.
    pub fn queued(&self) -> usize {
        self.sender.len()
    }

    /// The counters for `/metrics`.
    pub fn stats(&self) -> Arc<AuditStats> {
        Arc::clone(&self.stats)
    }

    /// A new audit ID: a version-4 UUID, unique in this process (random per process, then
    /// counted, so that making one costs no system call).
    pub fn new_id(&self) -> HeaderValue {
        // Relaxed: the counter only needs each value once; it orders nothing else.
        let count = self.ids.fetch_add(1, Ordering::Relaxed);
        // An odd multiplier makes the counter's values distinct across all 128 bits.
        let bits = self.id_base ^ u128::from(count).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        let id = uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid();
        let mut buffer = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer)).expect("a UUID is a header value")
    }

    /// Queues `record` for the writer; never waits. A full queue drops it.
    pub fn record(&self, record: Record) {
        if self.sender.try_send(record).is_err() {
            // Relaxed: counters read by /metrics only.
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.stats.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    capacity = QUEUE_CAPACITY,
                    "audit log queue full: events are being dropped (counted in apiserver_audit_error_total)"
                );
            }
        }
    }
}

/// Appends `record`'s JSON line to `line`: what the writer thread does per event.
pub fn encode(record: &Record, line: &mut Vec<u8>) {
    serde_json::to_writer(&mut *line, &Event::of(record)).expect("an event encodes");
    line.push(b'\n');
}

fn write_loop(
    receiver: &crossbeam::channel::Receiver<Record>,
    out: Box<dyn Write + Send>,
    stats: &AuditStats,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(1024);
    let mut failed = false;
    // Blocks for the first record of a batch, writes what else is queued, then flushes.
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        let mut batch = 0u64;
        while let Some(record) = next {
            line.clear();
            encode(&record, &mut line);
            if out.write_all(&line).is_ok() {
                batch += 1;
            } else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            next = receiver.try_recv().ok();
        }
        if let Err(error) = out.flush() {
            if !failed {
                tracing::warn!(%error, "cannot write the audit log");
                failed = true;
            }
        }
        stats.events.fetch_add(batch, Ordering::Relaxed);
    }
}

/// kube's `audit.k8s.io/v1` `Event`, at the Metadata level.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    #[serde(rename = "auditID")]
    audit_id: &'a str,
    stage: &'static str,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: User<'a>,
    #[serde(rename = "sourceIPs")]
    source_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectRef>,
    response_status: ResponseStatus<'a>,
    request_received_timestamp: String,
    stage_timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Annotations<'a>>,
}

#[derive(Serialize, Default)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<&'a std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_group: String,
    api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    subresource: String,
}

#[derive(Serialize)]
struct ResponseStatus<'a> {
    metadata: Empty,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Annotations<'a> {
    #[serde(rename = "authorization.k8s.io/decision")]
    decision: &'static str,
    #[serde(rename = "authorization.k8s.io/reason")]
    reason: &'a str,
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

impl<'a> Event<'a> {
    fn of(record: &'a Record) -> Event<'a> {
        let path = record.uri.path();
        let parsed = super::request::parse_path(path).filter(|parsed| parsed.plural.is_some());
        // As the authorizer names it: kube's verb for resources, the method for other paths.
        let verb = match parsed {
            Some(_) => super::classify(&record.method, path, record.is_watch).0,
            None => record.method.as_str().to_lowercase(),
        };
        let object_ref = parsed.map(|parsed| ObjectRef {
            resource: parsed.plural.unwrap_or_default(),
            namespace: parsed.namespace.unwrap_or_default(),
            name: parsed.name.or_else(|| record.created.as_deref().map(str::to_owned)).unwrap_or_default(),
            api_group: parsed.group,
            api_version: parsed.version,
            subresource: parsed.subresource.unwrap_or_default(),
        });
        let user = match &record.user {
            Some(user) => User {
                username: Some(&user.name),
                uid: Some(user.uid.as_str()).filter(|uid| !uid.is_empty()),
                groups: Some(&user.groups),
                extra: Some(&user.extra).filter(|extra| !extra.is_empty()),
            },
            None => User::default(),
        };
        // As kube's utilnet.SourceIPs: the X-Forwarded-For chain, then the peer.
        let mut source_ips: Vec<String> = record
            .forwarded_for
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(peer) = record.peer {
            let peer = peer.ip().to_string();
            if !source_ips.contains(&peer) {
                source_ips.push(peer);
            }
        }
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            audit_id: record.audit_id.to_str().unwrap_or_default(),
            stage: record.stage.as_str(),
            request_uri: record
                .uri
                .path_and_query()
                .map_or_else(|| path.to_owned(), |pq| pq.as_str().to_owned()),
            verb,
            user,
            source_ips,
            user_agent: record.user_agent.as_ref().and_then(|agent| agent.to_str().ok()),
            object_ref,
            response_status: ResponseStatus {
                metadata: Empty {},
                status: record.failure.as_ref().map(|_| "Failure"),
                message: record.failure.as_ref().map(|(_, message)| message.as_str()),
                reason: record
                    .failure
                    .as_ref()
                    .map(|(reason, _)| *reason)
                    .filter(|reason| !reason.is_empty()),
                code: record.code,
            },
            request_received_timestamp: timestamp(record.received),
            stage_timestamp: timestamp(record.at),
            annotations: record.decision.as_ref().map(|(decision, reason)| Annotations { decision, reason }),
        }
    }
}

/// Logs `ResponseComplete` for a long-running request when dropped (its stream ended).
pub struct OnComplete {
    /// The log.
    pub log: Arc<AuditLog>,
    /// The request's record, at `ResponseStarted`.
    pub record: Record,
}

impl Drop for OnComplete {
    fn drop(&mut self) {
        let mut record = self.record.clone();
        record.stage = Stage::ResponseComplete;
        record.at = SystemTime::now();
        self.log.record(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer stuck in its first write until `release` is dropped or sent to.
    struct Stuck(Option<std::sync::mpsc::Receiver<()>>);

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(release) = self.0.take() {
                let _ = release.recv();
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(log: &AuditLog) -> Record {
        let now = SystemTime::now();
        Record {
            audit_id: log.new_id(),
            stage: Stage::ResponseComplete,
            method: Method::GET,
            uri: Uri::from_static("/healthz"),
            is_watch: false,
            user: None,
            peer: None,
            forwarded_for: None,
            user_agent: None,
            created: None,
            code: 200,
            failure: None,
            decision: None,
            received: now,
            at: now,
        }
    }

    #[test]
    fn a_stuck_writer_never_holds_up_a_request_and_drops_are_counted() {
        let (release, stuck) = std::sync::mpsc::channel();
        let log = AuditLog::to_writer(Box::new(Stuck(Some(stuck))));
        let capacity = QUEUE_CAPACITY as u64;
        let offered = 2 * capacity;
        // Every call returns at once. The writer takes what fills its 64 KiB buffer (a few
        // hundred records at most) and is then stuck; the queue holds its capacity; the rest
        // is dropped.
        for _ in 0..offered {
            log.record(record(&log));
        }
        let dropped = log.stats.dropped.load(Ordering::Relaxed);
        assert!(dropped <= offered - capacity && dropped >= offered - capacity - 1_000, "{dropped} dropped");
        drop(release);
        // Once unstuck, the writer writes every record it queued.
        while log.stats.events.load(Ordering::Relaxed) < offered - dropped {
            std::thread::yield_now();
        }
        assert_eq!(log.stats.events.load(Ordering::Relaxed), offered - dropped);
    }

    #[test]
    fn audit_ids_are_distinct_version_4_uuids() {
        let log = AuditLog::to_writer(Box::new(std::io::sink()));
        let ids: std::collections::BTreeSet<String> =
            (0..1000).map(|_| log.new_id().to_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }

    #[test]
    fn an_event_has_kube_fields_and_names_the_object() {
        let out = Shared::default();
        let log = AuditLog::to_writer(Box::new(out.clone()));
        let user = UserInfo {
            name: "alice".into(),
            uid: "u1".into(),
            groups: vec!["dev".into()],
            ..UserInfo::default()
        };
        let now = SystemTime::now();
        log.record(Record {
            audit_id: log.new_id(),
            stage: Stage::ResponseComplete,
            method: Method::GET,
            uri: "/api/v1/namespaces/default/secrets/s1?timeout=5s".parse().unwrap(),
            is_watch: false,
            user: Some(Arc::new(user)),
            peer: Some("127.0.0.1:5000".parse().unwrap()),
            forwarded_for: Some(HeaderValue::from_static("10.0.0.1, not-an-ip")),
            user_agent: Some(HeaderValue::from_static("kubectl/v1.32")),
            created: None,
            code: 200,
            failure: None,
            decision: Some(("allow", String::new())),
            received: now,
            at: now,
        });
        let line = loop {
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            if text.ends_with('\n') {
                break text;
            }
            std::thread::yield_now();
        };
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["kind"], "Event");
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["level"], "Metadata");
        assert_eq!(event["verb"], "get");
        assert_eq!(event["requestURI"], "/api/v1/namespaces/default/secrets/s1?timeout=5s");
        assert_eq!(event["user"], serde_json::json!({"username": "alice", "uid": "u1", "groups": ["dev"]}));
        assert_eq!(event["sourceIPs"], serde_json::json!(["10.0.0.1", "127.0.0.1"]));
        assert_eq!(
            event["objectRef"],
            serde_json::json!({"resource": "secrets", "namespace": "default", "name": "s1", "apiVersion": "v1"})
        );
        assert_eq!(event["responseStatus"], serde_json::json!({"metadata": {}, "code": 200}));
        assert_eq!(event["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(event["stageTimestamp"].as_str().unwrap().ends_with('Z'));
    }
}
