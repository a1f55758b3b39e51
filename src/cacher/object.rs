//! Objects and events as the cache holds them: decoded once, encoded once, shared by reference.
//!
//! When a write enters the cache, its JSON is parsed once to read the metadata the cache indexes
//! and filters on (namespace, name, labels, selectable fields, kept in a compact form),
//! `metadata.resourceVersion` is set to the write's revision, and the object is encoded once.
//!
//! One copy of each object's bytes: the store, the ring, every reader and every watch line share
//! them ([`Bytes`]). A watch line is not a second copy: a [`Line`] names the event's type and the
//! object's bytes, and the watch writes the line's fixed prefix, the shared bytes and its fixed
//! suffix straight into the buffer that goes to the socket. The object's protobuf form is built
//! once, when the first protobuf reader or watcher needs it, and shared the same way. What a
//! selector transition adds (an update shown as DELETED to a watch whose selector the object
//! leaves: the previous state at the event's revision) is built at most once per event, by the
//! dispatcher before it hands out the first such delivery.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::protobuf::{self, ProtobufError};
use crate::selector::{FieldSource, Labels};
use crate::storage::Revision;

/// How a watcher or reader wants objects: newline-delimited JSON or Kubernetes protobuf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wire {
    /// JSON; watch events as `{"type":...,"object":...}\n` lines.
    #[default]
    Json,
    /// `application/vnd.kubernetes.protobuf`; watch events as length-prefixed frames.
    Protobuf,
}

/// What the cache needs to know about one resource type.
#[derive(Clone, Debug)]
pub struct ResourceConfig {
    /// The storage prefix of the resource's keys, e.g. `/configmaps/`.
    pub prefix: String,
    /// The kind, e.g. `ConfigMap` (for bookmark events).
    pub kind: String,
    /// The apiVersion, e.g. `v1` or `apps/v1` (for bookmark events).
    pub api_version: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Field selectors this resource supports besides `metadata.name` and `metadata.namespace`,
    /// as dotted JSON paths (e.g. `spec.nodeName`).
    pub selectable_fields: Vec<String>,
    /// The selectable field watchers are indexed by, if any (pods: `spec.nodeName`).
    pub indexed_field: Option<String>,
}

impl ResourceConfig {
    /// Every field a field selector may name for this resource.
    pub fn allowed_fields(&self) -> Vec<&str> {
        let mut fields = vec!["metadata.name", "metadata.namespace"];
        fields.extend(self.selectable_fields.iter().map(String::as_str));
        fields
    }
}

/// Why a stored value could not enter the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode the object at {key}: {reason}")]
pub struct DecodeError {
    /// The storage key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One object at one revision, decoded once.
#[derive(Debug)]
pub struct CachedObject {
    /// The storage key.
    pub key: Arc<str>,
    /// `metadata.namespace` (empty for cluster-scoped objects).
    pub namespace: Box<str>,
    /// `metadata.name`.
    pub name: Box<str>,
    /// `metadata.labels`.
    pub labels: LabelSet,
    /// The values of the resource's selectable fields, in `ResourceConfig::selectable_fields`
    /// order (a missing field is "").
    pub fields: Box<[(Box<str>, Box<str>)]>,
    /// The revision this state was written at (its `metadata.resourceVersion`).
    pub revision: Revision,
    /// The object's JSON, with `metadata.resourceVersion` set: the one copy of its bytes.
    pub json: Bytes,
    /// The object in protobuf (`k8s\0` envelope), built on first use by a protobuf reader (boxed:
    /// objects no protobuf client asks for pay one pointer).
    protobuf: OnceLock<Box<ProtobufForm>>,
}

/// An object's protobuf form, or why it has none.
#[derive(Debug)]
enum ProtobufForm {
    /// The encoded object.
    Encoded(Bytes),
    /// The object does not fit its Go type (stored before writes were checked): the error, and
    /// the encoded 500 Status a protobuf watcher gets in an ERROR event instead.
    Unencodable { error: ProtobufError, status: Bytes },
}

/// `metadata.labels`, compactly: one boxed slice of pairs sorted by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LabelSet(Box<[(Box<str>, Box<str>)]>);

impl LabelSet {
    /// The labels of a `metadata.labels` JSON object (values that are not strings read as "").
    fn from_json(labels: Option<&serde_json::Map<String, Value>>) -> LabelSet {
        let Some(labels) = labels else { return LabelSet::default() };
        let mut pairs: Vec<(Box<str>, Box<str>)> = labels
            .iter()
            .map(|(key, value)| (key.as_str().into(), value.as_str().unwrap_or_default().into()))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        LabelSet(pairs.into_boxed_slice())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(name, _)| (**name).cmp(key)).ok().map(|index| &*self.0[index].1)
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (&**key, &**value))
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn heap_size(&self) -> usize {
        self.0.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>()
            + std::mem::size_of_val(&*self.0)
    }
}

impl Labels for LabelSet {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl CachedObject {
    /// Decodes a stored value and stamps it with `revision`.
    pub fn decode(
        key: &str,
        value: &[u8],
        revision: Revision,
        resource: &ResourceConfig,
    ) -> Result<CachedObject, DecodeError> {
        CachedObject::decode_with_key(Arc::from(key), value, revision, resource)
    }

    /// [`CachedObject::decode`] with a key the caller already holds, which the object shares.
    pub fn decode_with_key(
        key: Arc<str>,
        value: &[u8],
        revision: Revision,
        resource: &ResourceConfig,
    ) -> Result<CachedObject, DecodeError> {
        let error = |reason: &str| DecodeError { key: key.to_string(), reason: reason.to_owned() };
        let mut object: Value = serde_json::from_slice(value).map_err(|e| error(&e.to_string()))?;
        let metadata = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| error("the object has no metadata"))?;
        metadata.insert("resourceVersion".into(), Value::String(revision.to_string()));
        let text =
            |value: Option<&Value>| -> Box<str> { value.and_then(Value::as_str).unwrap_or_default().into() };
        let name = text(metadata.get("name"));
        let namespace = text(metadata.get("namespace"));
        let labels = LabelSet::from_json(metadata.get("labels").and_then(Value::as_object));
        let fields = resource
            .selectable_fields
            .iter()
            .map(|path| (path.as_str().into(), field_value(&object, path).into()))
            .collect();
        let json = encode_exact(&object).map_err(|e| error(&e.to_string()))?;
        Ok(CachedObject { key, namespace, name, labels, fields, revision, json, protobuf: OnceLock::new() })
    }

    /// The same object content stamped with another revision (a deleted object is shown at the
    /// revision of its delete). Shares the key.
    pub fn restamped(
        &self,
        revision: Revision,
        resource: &ResourceConfig,
    ) -> Result<CachedObject, DecodeError> {
        CachedObject::decode_with_key(Arc::clone(&self.key), &self.json, revision, resource)
    }

    /// The ADDED event for this object in `wire`'s form.
    pub fn added(&self, wire: Wire, resource: &ResourceConfig) -> Line<'_> {
        self.event(wire, "ADDED", resource)
    }

    /// An event of `event_type` on this object in `wire`'s form; for protobuf, an ERROR event
    /// when the object has no protobuf form.
    pub fn event(&self, wire: Wire, event_type: &'static str, resource: &ResourceConfig) -> Line<'_> {
        match wire {
            Wire::Json => Line::json(event_type, &self.json),
            Wire::Protobuf => match self.protobuf_form(resource) {
                ProtobufForm::Encoded(encoded) => Line::protobuf(event_type, encoded),
                ProtobufForm::Unencodable { status, .. } => Line::protobuf("ERROR", status),
            },
        }
    }

    /// The object in Kubernetes protobuf (`k8s\0` and a `runtime.Unknown`), encoded from its
    /// JSON once, on first use, and shared by every protobuf reader and watcher after that.
    pub fn protobuf(&self, resource: &ResourceConfig) -> Result<&Bytes, ProtobufError> {
        match self.protobuf_form(resource) {
            ProtobufForm::Encoded(encoded) => Ok(encoded),
            ProtobufForm::Unencodable { error, .. } => Err(error.clone()),
        }
    }

    fn protobuf_form(&self, resource: &ResourceConfig) -> &ProtobufForm {
        self.protobuf.get_or_init(|| {
            Box::new(match encode_protobuf(&self.json, resource) {
                Ok(encoded) => ProtobufForm::Encoded(Bytes::from(encoded)),
                Err(error) => {
                    tracing::warn!(key = %self.key, %error, "a cached object has no protobuf form");
                    let message = format!("the object {} cannot be encoded as protobuf: {error}", self.key);
                    ProtobufForm::Unencodable { error, status: internal_error_status(&message) }
                }
            })
        })
    }

    /// The memory this object holds, for the ring's byte bound: its bytes, key, decoded
    /// metadata and protobuf form once built (a key shared with another state of the object is
    /// counted in each).
    pub fn size(&self) -> usize {
        let protobuf = self.protobuf.get().map_or(0, |form| {
            std::mem::size_of::<ProtobufForm>()
                + match &**form {
                    ProtobufForm::Encoded(encoded) => encoded.len(),
                    ProtobufForm::Unencodable { status, .. } => status.len(),
                }
        });
        std::mem::size_of::<CachedObject>()
            + self.json.len()
            + self.key.len()
            + self.namespace.len()
            + self.name.len()
            + self.labels.heap_size()
            + self.fields.iter().map(|(path, value)| path.len() + value.len()).sum::<usize>()
            + std::mem::size_of_val(&*self.fields)
            + protobuf
    }
}

/// `value` as JSON in a buffer of exactly its length: a `Vec` grown by doubling keeps up to twice
/// the object's size, for as long as the object lives.
fn encode_exact(value: &Value) -> Result<Bytes, serde_json::Error> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value)?;
    let mut out = Vec::with_capacity(counter.0);
    serde_json::to_writer(&mut out, value)?;
    Ok(Bytes::from(out))
}

/// An object's JSON in protobuf, as `resource`'s kind when the JSON does not say.
fn encode_protobuf(json: &[u8], resource: &ResourceConfig) -> Result<Vec<u8>, ProtobufError> {
    let object: Value =
        serde_json::from_slice(json).map_err(|error| ProtobufError::new(error.to_string()))?;
    let text = |name: &str, fallback: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .unwrap_or(fallback)
            .to_owned()
    };
    let mut out = Vec::with_capacity(json.len());
    protobuf::schema().encode_object_as(
        &text("apiVersion", &resource.api_version),
        &text("kind", &resource.kind),
        &object,
        &mut out,
    )?;
    Ok(out)
}

/// A 500 InternalError Status, encoded as protobuf.
fn internal_error_status(message: &str) -> Bytes {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    });
    Bytes::from(protobuf::schema().encode_object(&status).expect("a Status encodes"))
}

impl FieldSource for CachedObject {
    fn field(&self, path: &str) -> Option<&str> {
        match path {
            "metadata.name" => Some(&self.name),
            "metadata.namespace" => Some(&self.namespace),
            _ => self.fields.iter().find(|(name, _)| &**name == path).map(|(_, value)| &**value),
        }
    }
}

/// The value at a dotted path, as a field selector sees it ("" when missing).
fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One watch event as it goes on the wire: its type and the encoded object it carries (shared,
/// never copied into a line of its own). A watch writes it with [`Line::write_to`] into the
/// buffer it sends: for JSON `{"type":"<type>","object":<payload>}\n`, for protobuf a 4-byte
/// big-endian length and a `metav1.WatchEvent` whose `object.raw` is the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The stream's form.
    pub wire: Wire,
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub event_type: &'a str,
    /// The object: its JSON, or its protobuf (with the `k8s\0` envelope).
    pub payload: &'a [u8],
}

const JSON_PREFIX: &[u8] = b"{\"type\":\"";
const JSON_MIDDLE: &[u8] = b"\",\"object\":";
const JSON_SUFFIX: &[u8] = b"}\n";

impl<'a> Line<'a> {
    /// A JSON line.
    pub fn json(event_type: &'a str, payload: &'a [u8]) -> Line<'a> {
        Line { wire: Wire::Json, event_type, payload }
    }

    /// A protobuf frame.
    pub fn protobuf(event_type: &'a str, payload: &'a [u8]) -> Line<'a> {
        Line { wire: Wire::Protobuf, event_type, payload }
    }

    /// The line's length on the wire.
    pub fn len(&self) -> usize {
        match self.wire {
            Wire::Json => {
                JSON_PREFIX.len()
                    + self.event_type.len()
                    + JSON_MIDDLE.len()
                    + self.payload.len()
                    + JSON_SUFFIX.len()
            }
            Wire::Protobuf => protobuf::watch_frame_len(self.event_type, self.payload.len()),
        }
    }

    /// Whether the line is empty (never: a line always has its framing).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the line to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        match self.wire {
            Wire::Json => {
                out.put_slice(JSON_PREFIX);
                out.put_slice(self.event_type.as_bytes());
                out.put_slice(JSON_MIDDLE);
                out.put_slice(self.payload);
                out.put_slice(JSON_SUFFIX);
            }
            Wire::Protobuf => protobuf::write_watch_frame(out, self.event_type, self.payload),
        }
    }

    /// The line as bytes of its own (for tests and one-off lines; watches use `write_to`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        self.write_to(&mut out);
        out.freeze()
    }
}

/// `{"type":<kind>,"object":<json>}\n`.
pub fn event_line(kind: &str, object_json: &[u8]) -> Bytes {
    Line::json(kind, object_json).to_bytes()
}

/// What a watch event says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventType {
    /// The watch-event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write as the cache holds it, shared by the ring and every watcher that receives it.
#[derive(Debug)]
pub struct CachedEvent {
    /// The event's position in the ring (see `ring`).
    pub seq: u64,
    /// What happened.
    pub kind: EventType,
    /// The object after the write; for a delete, the last state stamped with the delete's
    /// revision, as kube-apiserver shows deleted objects.
    pub object: Arc<CachedObject>,
    /// The object before the write (`None` for a create).
    pub prev: Option<Arc<CachedObject>>,
    /// When the cache received the event (the ring keeps a time window).
    pub received: Instant,
    /// The previous state stamped with this event's revision, for watchers whose selector the
    /// object leaves (DELETED); built on first use, normally by the dispatcher.
    deleted_state: OnceLock<Arc<CachedObject>>,
}

/// Which line a watcher sends for an event, after its selectors are applied to the object
/// before and after the write (kube-apiserver's rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The event as it is.
    AsIs,
    /// The object started to match: ADDED with the new state.
    AsAdded,
    /// The object stopped matching: DELETED with the previous state at the event's revision.
    AsDeleted,
}

impl CachedEvent {
    /// Builds an event at ring position `seq`.
    pub fn new(
        seq: u64,
        kind: EventType,
        object: Arc<CachedObject>,
        prev: Option<Arc<CachedObject>>,
    ) -> Self {
        CachedEvent { seq, kind, object, prev, received: Instant::now(), deleted_state: OnceLock::new() }
    }

    /// The revision of the write.
    pub fn revision(&self) -> Revision {
        self.object.revision
    }

    /// How this event reaches a watcher whose filter gives `now` for the new state and `before`
    /// for the previous one; `None` if it does not reach it.
    pub fn delivery(&self, now: bool, before: bool) -> Option<Delivery> {
        match self.kind {
            EventType::Added | EventType::Deleted => now.then_some(Delivery::AsIs),
            EventType::Modified => match (before, now) {
                (true, true) => Some(Delivery::AsIs),
                (false, true) => Some(Delivery::AsAdded),
                (true, false) => Some(Delivery::AsDeleted),
                (false, false) => None,
            },
        }
    }

    /// The previous state at this event's revision (what a DELETED delivery shows), built once.
    pub fn deleted_state(&self, resource: &ResourceConfig) -> &Arc<CachedObject> {
        self.deleted_state.get_or_init(|| {
            let prev = self.prev.as_ref().expect("a modification has a previous state");
            match prev.restamped(self.revision(), resource) {
                Ok(restamped) => Arc::new(restamped),
                // The previous state was decoded once already; it decodes again.
                Err(_) => Arc::clone(prev),
            }
        })
    }

    /// The event for `delivery` in `wire`'s form. A protobuf form is built on first use, once
    /// per object state, shared by every protobuf watcher and reader, and never built when no
    /// protobuf client asks.
    pub fn line_for(&self, wire: Wire, delivery: Delivery, resource: &ResourceConfig) -> Line<'_> {
        match delivery {
            Delivery::AsIs => self.object.event(wire, self.kind.as_str(), resource),
            Delivery::AsAdded => self.object.added(wire, resource),
            Delivery::AsDeleted => self.deleted_state(resource).event(wire, "DELETED", resource),
        }
    }

    /// The memory this event holds, for the ring's byte bound: its object's and previous
    /// object's (each counted in full, though the store may share one of them), and the
    /// transition state once built.
    pub fn size(&self) -> usize {
        self.object.size()
            + self.prev.as_ref().map_or(0, |prev| prev.size())
            + self.deleted_state.get().map_or(0, |state| state.size())
            + std::mem::size_of::<CachedEvent>()
    }
}

/// The BOOKMARK event at `revision` in `wire`'s form: its type and payload, for a [`Line`]; with
/// `initial_events_end`, annotated `k8s.io/initial-events-end: "true"`. (A kind without a
/// protobuf form gets an ERROR event instead; protobuf watches are only served for built-ins.)
pub fn bookmark(
    wire: Wire,
    resource: &ResourceConfig,
    revision: Revision,
    initial_events_end: bool,
) -> (&'static str, Bytes) {
    let mut metadata = serde_json::json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        metadata["annotations"] = serde_json::json!({ "k8s.io/initial-events-end": "true" });
    }
    match wire {
        Wire::Json => {
            let object = serde_json::json!({
                "kind": resource.kind,
                "apiVersion": resource.api_version,
                "metadata": metadata,
            });
            ("BOOKMARK", Bytes::from(serde_json::to_vec(&object).expect("JSON value encodes")))
        }
        Wire::Protobuf => {
            let object = serde_json::json!({ "metadata": metadata });
            let mut encoded = Vec::new();
            match protobuf::schema().encode_object_as(
                &resource.api_version,
                &resource.kind,
                &object,
                &mut encoded,
            ) {
                Ok(()) => ("BOOKMARK", Bytes::from(encoded)),
                Err(error) => (
                    "ERROR",
                    internal_error_status(&format!("a bookmark cannot be encoded as protobuf: {error}")),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pods() -> ResourceConfig {
        ResourceConfig {
            prefix: "/pods/".into(),
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec!["spec.nodeName".into(), "status.phase".into()],
            indexed_field: Some("spec.nodeName".into()),
        }
    }

    #[test]
    fn decoding_stamps_the_revision_and_reads_the_metadata() {
        let value = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns","labels":{"app":"web"},"resourceVersion":"1"},"spec":{"nodeName":"n1"}}"#;
        let object = CachedObject::decode("/pods/ns/p", value, 42, &pods()).unwrap();
        assert_eq!((&*object.namespace, &*object.name), ("ns", "p"));
        assert_eq!(object.labels.get("app"), Some("web"));
        assert_eq!(object.field("spec.nodeName"), Some("n1"));
        assert_eq!(object.field("status.phase"), Some(""));
        let json: Value = serde_json::from_slice(&object.json).unwrap();
        assert_eq!(json["metadata"]["resourceVersion"], "42");
        // Field order is kept as written.
        assert!(std::str::from_utf8(&object.json).unwrap().starts_with(r#"{"kind":"Pod","apiVersion":"v1""#));
        let added = object.added(Wire::Json, &pods());
        assert_eq!(added.payload.as_ptr(), object.json.as_ptr(), "the line shares the object's bytes");
        let line = added.to_bytes();
        assert_eq!(line.len(), added.len());
        let event: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["metadata"]["resourceVersion"], "42");
        assert!(line.ends_with(b"\n"));
    }

    #[test]
    fn values_that_are_not_objects_with_metadata_are_rejected() {
        for value in [&b"not json"[..], b"[]", b"{}", b"{\"metadata\":3}"] {
            assert!(CachedObject::decode("/pods/ns/p", value, 1, &pods()).is_err());
        }
    }

    #[test]
    fn selector_transitions_follow_kube() {
        let resource = pods();
        let old = Arc::new(
            CachedObject::decode("/pods/ns/p", br#"{"metadata":{"name":"p"}}"#, 5, &resource).unwrap(),
        );
        let new = Arc::new(
            CachedObject::decode("/pods/ns/p", br#"{"metadata":{"name":"p"}}"#, 9, &resource).unwrap(),
        );
        let event = CachedEvent::new(0, EventType::Modified, new, Some(old));
        assert_eq!(event.delivery(true, true), Some(Delivery::AsIs));
        assert_eq!(event.delivery(true, false), Some(Delivery::AsAdded));
        assert_eq!(event.delivery(false, true), Some(Delivery::AsDeleted));
        assert_eq!(event.delivery(false, false), None);
        let deleted: Value =
            serde_json::from_slice(&event.line_for(Wire::Json, Delivery::AsDeleted, &resource).to_bytes())
                .unwrap();
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["metadata"]["resourceVersion"], "9");
        let (kind, payload) = super::bookmark(Wire::Json, &resource, 7, true);
        let bookmark: Value = serde_json::from_slice(&Line::json(kind, &payload).to_bytes()).unwrap();
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], "7");
        assert_eq!(bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    }

    fn config_maps() -> ResourceConfig {
        ResourceConfig {
            prefix: "/configmaps/".into(),
            kind: "ConfigMap".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec![],
            indexed_field: None,
        }
    }

    #[test]
    fn labels_are_sorted_and_looked_up_by_key() {
        let value = br#"{"metadata":{"name":"p","labels":{"tier":"web","app":"shop","z":"1"}}}"#;
        let object = CachedObject::decode("/pods/ns/p", value, 1, &pods()).unwrap();
        let labels: Vec<_> = object.labels.iter().collect();
        assert_eq!(labels, [("app", "shop"), ("tier", "web"), ("z", "1")]);
        assert_eq!((object.labels.get("tier"), object.labels.get("nope")), (Some("web"), None));
        let selector = crate::selector::LabelSelector::parse("app=shop,tier in (web,db)").unwrap();
        assert!(selector.matches(&object.labels));
        assert!(!crate::selector::LabelSelector::parse("z>1").unwrap().matches(&object.labels));
    }

    #[test]
    fn the_json_is_held_in_a_buffer_of_its_own_length() {
        let data: String = (0..200).map(|i| format!(r#","k{i}":"value-{i}""#)).collect();
        let value = format!(r#"{{"metadata":{{"name":"c"}},"data":{{"a":"b"{data}}}}}"#);
        let object = CachedObject::decode("/configmaps/ns/c", value.as_bytes(), 7, &config_maps()).unwrap();
        let expected = serde_json::to_vec(&serde_json::from_slice::<Value>(&object.json).unwrap()).unwrap();
        assert_eq!(object.json, expected);
        // `Bytes` from a `Vec` with spare capacity keeps it for as long as the object lives (as
        // `serde_json::to_vec`'s doubling leaves it); the encoding leaves none.
        let parsed: Value = serde_json::from_slice(&object.json).unwrap();
        let grown: Vec<u8> = Bytes::from(serde_json::to_vec(&parsed).unwrap()).into();
        assert!(grown.capacity() > grown.len(), "the check below would not see spare capacity");
        let exact: Vec<u8> = encode_exact(&parsed).unwrap().into();
        assert_eq!(exact.capacity(), exact.len());
    }

    #[test]
    fn lines_frame_the_shared_bytes_exactly() {
        let resource = config_maps();
        let value = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"ns"},"data":{"k":"v"}}"#;
        let object = CachedObject::decode("/configmaps/ns/c", value, 3, &resource).unwrap();
        let json = object.event(Wire::Json, "MODIFIED", &resource);
        assert_eq!(json.to_bytes(), event_line("MODIFIED", &object.json));
        assert_eq!(
            json.to_bytes(),
            format!("{{\"type\":\"MODIFIED\",\"object\":{}}}\n", std::str::from_utf8(&object.json).unwrap())
        );
        let frame = object.event(Wire::Protobuf, "MODIFIED", &resource);
        let encoded = object.protobuf(&resource).unwrap();
        assert_eq!(frame.payload.as_ptr(), encoded.as_ptr(), "the frame shares the protobuf form");
        let bytes = frame.to_bytes();
        assert_eq!(bytes.len(), frame.len());
        assert_eq!(bytes, protobuf::schema().watch_frame("MODIFIED", encoded));
        // Lengths that need multi-byte varints.
        for size in [0, 1, 127, 128, 16_383, 16_384, 300_000] {
            let payload = vec![7u8; size];
            let line = Line::protobuf("BOOKMARK", &payload);
            let bytes = line.to_bytes();
            assert_eq!(bytes.len(), line.len(), "{size}");
            assert_eq!(bytes, protobuf::schema().watch_frame("BOOKMARK", &payload), "{size}");
        }
        // A sink that already holds lines appends after them.
        let mut out = BytesMut::from(&b"x"[..]);
        json.write_to(&mut out);
        assert_eq!(&out[1..], &json.to_bytes()[..]);
    }

    #[test]
    fn protobuf_forms_are_built_once_and_only_for_protobuf_clients() {
        let resource = config_maps();
        let decode = |revision, data: &str| {
            let value = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c","namespace":"ns"}},"data":{{"k":"{data}"}}}}"#
            );
            Arc::new(CachedObject::decode("/configmaps/ns/c", value.as_bytes(), revision, &resource).unwrap())
        };
        let (old, new) = (decode(5, "a"), decode(9, "b"));
        let event = CachedEvent::new(0, EventType::Modified, Arc::clone(&new), Some(Arc::clone(&old)));

        // JSON watchers pay nothing for protobuf, and their lines are the objects' own bytes.
        for delivery in [Delivery::AsIs, Delivery::AsAdded, Delivery::AsDeleted] {
            let line = event.line_for(Wire::Json, delivery, &resource);
            if delivery != Delivery::AsDeleted {
                assert_eq!(line.payload.as_ptr(), new.json.as_ptr());
            }
        }
        assert!(new.protobuf.get().is_none() && old.protobuf.get().is_none());

        // The protobuf form is built on first use and then shared: the same bytes each time.
        let first = event.line_for(Wire::Protobuf, Delivery::AsIs, &resource).to_bytes();
        let again = event.line_for(Wire::Protobuf, Delivery::AsIs, &resource);
        assert_eq!(again.payload.as_ptr(), new.protobuf(&resource).unwrap().as_ptr());
        let schema = protobuf::schema();
        let len = u32::from_be_bytes(first[..4].try_into().unwrap()) as usize;
        assert_eq!(len, first.len() - 4);
        let (kind, object) = schema.decode_watch_event(&first[4..]).unwrap();
        assert_eq!(kind, "MODIFIED");
        assert_eq!(object, serde_json::from_slice::<Value>(&new.json).unwrap());

        // Transitions: ADDED shares the object's form; DELETED shows the old state at the
        // event's revision, built once.
        let added = event.line_for(Wire::Protobuf, Delivery::AsAdded, &resource);
        assert_eq!((added.event_type, added.payload.as_ptr()), ("ADDED", again.payload.as_ptr()));
        let deleted = event.line_for(Wire::Protobuf, Delivery::AsDeleted, &resource).to_bytes();
        let (kind, object) = schema.decode_watch_event(&deleted[4..]).unwrap();
        assert_eq!((kind.as_str(), object["data"]["k"].as_str()), ("DELETED", Some("a")));
        assert_eq!(object["metadata"]["resourceVersion"], "9");
        assert!(Arc::ptr_eq(event.deleted_state(&resource), event.deleted_state(&resource)));
        assert!(old.protobuf.get().is_none(), "the previous state at its own revision is not encoded");

        let (kind, payload) = bookmark(Wire::Protobuf, &resource, 12, true);
        let frame = Line::protobuf(kind, &payload).to_bytes();
        let (kind, object) = schema.decode_watch_event(&frame[4..]).unwrap();
        assert_eq!(kind, "BOOKMARK");
        assert_eq!(object["metadata"]["resourceVersion"], "12");
        assert_eq!(object["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    }

    #[test]
    fn an_object_without_a_protobuf_form_becomes_an_error_frame() {
        let resource = config_maps();
        let value = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":1}}"#;
        let object = CachedObject::decode("/configmaps/ns/c", value, 3, &resource).unwrap();
        assert!(object.protobuf(&resource).unwrap_err().to_string().contains("data.k"));
        let frame = object.added(Wire::Protobuf, &resource).to_bytes();
        let (kind, status) = protobuf::schema().decode_watch_event(&frame[4..]).unwrap();
        assert_eq!((kind.as_str(), status["code"].as_i64()), ("ERROR", Some(500)));
    }

    #[test]
    fn the_size_counts_what_the_object_holds() {
        let resource = config_maps();
        let value = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":{"a":"b"}},"data":{"k":"v"}}"#;
        let object = CachedObject::decode("/configmaps/ns/c", value, 3, &resource).unwrap();
        let before = object.size();
        assert!(before > object.json.len() + object.key.len() + std::mem::size_of::<CachedObject>());
        let encoded = object.protobuf(&resource).unwrap().len();
        assert!(object.size() >= before + encoded, "the protobuf form counts once built");
    }
}
