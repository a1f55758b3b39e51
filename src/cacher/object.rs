//! Objects and events as the cache holds them: decoded once, encoded once, shared by reference.
//!
//! When a write enters the cache, its JSON is parsed once to read the metadata the cache indexes
//! and filters on (namespace, name, labels, selectable fields), `metadata.resourceVersion` is set
//! to the write's revision, and the object is encoded once. Every reader and watcher then shares
//! those bytes ([`Bytes`]). An event's own watch line (`{"type":"MODIFIED","object":...}\n`) is
//! built by the reflector when the event enters the cache; the lines of selector transitions
//! (an update shown as ADDED or DELETED to a watch whose selector it enters or leaves) are built
//! at most once, by the dispatcher before it hands out the first of them. Every watcher shares
//! those lines too; an ADDED event's line is its object's ADDED line, not a second copy.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::protobuf::{self, ProtobufError};
use crate::selector::FieldSource;
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
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The values of the resource's selectable fields, in `ResourceConfig::selectable_fields`
    /// order (a missing field is "").
    pub fields: Vec<(String, String)>,
    /// The revision this state was written at (its `metadata.resourceVersion`).
    pub revision: Revision,
    /// The object's JSON, with `metadata.resourceVersion` set.
    pub json: Bytes,
    added_line: OnceLock<Bytes>,
    /// The object in protobuf (`k8s\0` envelope), built on first use by a protobuf reader.
    protobuf: OnceLock<Result<Bytes, ProtobufError>>,
    /// The protobuf watch frame that adds this object, built on first use.
    added_frame: OnceLock<Bytes>,
}

impl CachedObject {
    /// Decodes a stored value and stamps it with `revision`.
    pub fn decode(
        key: &str,
        value: &[u8],
        revision: Revision,
        resource: &ResourceConfig,
    ) -> Result<CachedObject, DecodeError> {
        let error = |reason: &str| DecodeError { key: key.to_owned(), reason: reason.to_owned() };
        let mut object: Value = serde_json::from_slice(value).map_err(|e| error(&e.to_string()))?;
        let metadata = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| error("the object has no metadata"))?;
        metadata.insert("resourceVersion".into(), Value::String(revision.to_string()));
        let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
        let name = text(metadata.get("name"));
        let namespace = text(metadata.get("namespace"));
        let labels = metadata
            .get("labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let fields = resource
            .selectable_fields
            .iter()
            .map(|path| (path.clone(), field_value(&object, path)))
            .collect();
        let json = Bytes::from(serde_json::to_vec(&object).map_err(|e| error(&e.to_string()))?);
        Ok(CachedObject {
            key: Arc::from(key),
            namespace,
            name,
            labels,
            fields,
            revision,
            json,
            added_line: OnceLock::new(),
            protobuf: OnceLock::new(),
            added_frame: OnceLock::new(),
        })
    }

    /// The same object content stamped with another revision (a deleted object is shown at the
    /// revision of its delete).
    pub fn restamped(
        &self,
        revision: Revision,
        resource: &ResourceConfig,
    ) -> Result<CachedObject, DecodeError> {
        CachedObject::decode(&self.key, &self.json, revision, resource)
    }

    /// The watch line that adds this object: `{"type":"ADDED","object":<json>}\n`, built once.
    pub fn added_line(&self) -> Bytes {
        self.added_line_ref().clone()
    }

    /// [`CachedObject::added_line`] by reference.
    pub fn added_line_ref(&self) -> &Bytes {
        self.added_line.get_or_init(|| event_line("ADDED", &self.json))
    }

    /// The object in Kubernetes protobuf (`k8s\0` and a `runtime.Unknown`), encoded from its
    /// JSON once, on first use, and shared by every protobuf reader and watcher after that.
    pub fn protobuf(&self, resource: &ResourceConfig) -> Result<&Bytes, ProtobufError> {
        self.protobuf
            .get_or_init(|| encode_protobuf(&self.json, resource).map(Bytes::from))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The ADDED event for this object in `wire`'s form, built once per form.
    pub fn added_line_for(&self, wire: Wire, resource: &ResourceConfig) -> &Bytes {
        match wire {
            Wire::Json => self.added_line_ref(),
            Wire::Protobuf => self.added_frame.get_or_init(|| protobuf_frame("ADDED", self, resource)),
        }
    }

    /// The approximate memory this object holds, for the ring's byte bound.
    pub fn size(&self) -> usize {
        self.json.len()
            + self.key.len()
            + std::mem::size_of::<CachedObject>()
            + self.protobuf.get().and_then(|encoded| encoded.as_ref().ok()).map_or(0, Bytes::len)
            + self.added_frame.get().map_or(0, Bytes::len)
    }
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

/// The protobuf watch frame of an event on `object`. An object that cannot be encoded (stored
/// before writes were checked against the schema) becomes an ERROR event that says why.
fn protobuf_frame(event_type: &str, object: &CachedObject, resource: &ResourceConfig) -> Bytes {
    match object.protobuf(resource) {
        Ok(encoded) => Bytes::from(protobuf::schema().watch_frame(event_type, encoded)),
        Err(error) => {
            tracing::warn!(key = %object.key, %error, "a cached object has no protobuf form");
            error_frame(&format!("the object {} cannot be encoded as protobuf: {error}", object.key))
        }
    }
}

/// An ERROR watch frame with a 500 InternalError Status.
fn error_frame(message: &str) -> Bytes {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    });
    let encoded = protobuf::schema().encode_object(&status).expect("a Status encodes");
    Bytes::from(protobuf::schema().watch_frame("ERROR", &encoded))
}

impl FieldSource for CachedObject {
    fn field(&self, path: &str) -> Option<&str> {
        match path {
            "metadata.name" => Some(&self.name),
            "metadata.namespace" => Some(&self.namespace),
            _ => self.fields.iter().find(|(name, _)| name == path).map(|(_, value)| value.as_str()),
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

/// `{"type":<kind>,"object":<json>}\n`.
pub fn event_line(kind: &str, object_json: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(object_json.len() + kind.len() + 24);
    line.put_slice(b"{\"type\":\"");
    line.put_slice(kind.as_bytes());
    line.put_slice(b"\",\"object\":");
    line.put_slice(object_json);
    line.put_slice(b"}\n");
    line.freeze()
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
    /// The event as it is, built when the event is created.
    line: Bytes,
    deleted_line: OnceLock<Bytes>,
    /// The event as it is and as DELETED, as protobuf frames, built on first use.
    frame: OnceLock<Bytes>,
    deleted_frame: OnceLock<Bytes>,
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
        let line = match kind {
            // The same bytes an ADDED delivery of the object uses.
            EventType::Added => object.added_line(),
            _ => event_line(kind.as_str(), &object.json),
        };
        CachedEvent {
            seq,
            kind,
            object,
            prev,
            received: Instant::now(),
            line,
            deleted_line: OnceLock::new(),
            frame: OnceLock::new(),
            deleted_frame: OnceLock::new(),
        }
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

    /// The wire line for `delivery`, built once per event and kind.
    pub fn line(&self, delivery: Delivery, resource: &ResourceConfig) -> Bytes {
        self.line_ref(delivery, resource).clone()
    }

    /// The wire line for `delivery`, by reference: the event's own line, or a transition's line
    /// (built on first use; the dispatcher builds it before it queues the first such delivery, so
    /// watchers normally find it built).
    pub fn line_ref(&self, delivery: Delivery, resource: &ResourceConfig) -> &Bytes {
        match delivery {
            Delivery::AsIs => &self.line,
            Delivery::AsAdded => self.object.added_line_ref(),
            Delivery::AsDeleted => self.deleted_line.get_or_init(|| {
                let prev = self.prev.as_ref().expect("a modification has a previous state");
                match prev.restamped(self.revision(), resource) {
                    Ok(restamped) => event_line("DELETED", &restamped.json),
                    // The previous state was decoded once already; it decodes again.
                    Err(_) => event_line("DELETED", &prev.json),
                }
            }),
        }
    }

    /// The event for `delivery` in `wire`'s form: JSON lines as [`CachedEvent::line_ref`];
    /// protobuf frames built on first use, once per event and kind, shared by every protobuf
    /// watcher (and never built when none watches).
    pub fn line_for(&self, wire: Wire, delivery: Delivery, resource: &ResourceConfig) -> &Bytes {
        match wire {
            Wire::Json => self.line_ref(delivery, resource),
            Wire::Protobuf => match (delivery, self.kind) {
                (Delivery::AsAdded, _) | (Delivery::AsIs, EventType::Added) => {
                    self.object.added_line_for(wire, resource)
                }
                (Delivery::AsIs, kind) => {
                    self.frame.get_or_init(|| protobuf_frame(kind.as_str(), &self.object, resource))
                }
                (Delivery::AsDeleted, _) => self.deleted_frame.get_or_init(|| {
                    let prev = self.prev.as_ref().expect("a modification has a previous state");
                    match prev.restamped(self.revision(), resource) {
                        Ok(restamped) => protobuf_frame("DELETED", &restamped, resource),
                        Err(_) => protobuf_frame("DELETED", prev, resource),
                    }
                }),
            },
        }
    }

    /// The approximate memory this event holds, for the ring's byte bound.
    pub fn size(&self) -> usize {
        self.object.size()
            + self.prev.as_ref().map_or(0, |prev| prev.size())
            + std::mem::size_of::<CachedEvent>()
    }
}

/// A BOOKMARK line at `revision`; with `initial_events_end`, annotated
/// `k8s.io/initial-events-end: "true"`.
pub fn bookmark_line(resource: &ResourceConfig, revision: Revision, initial_events_end: bool) -> Bytes {
    let mut metadata = serde_json::json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        metadata["annotations"] = serde_json::json!({ "k8s.io/initial-events-end": "true" });
    }
    let object = serde_json::json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": metadata,
    });
    event_line("BOOKMARK", &serde_json::to_vec(&object).expect("JSON value encodes"))
}

/// A BOOKMARK event at `revision` in `wire`'s form (see [`bookmark_line`]).
pub fn bookmark_line_for(
    wire: Wire,
    resource: &ResourceConfig,
    revision: Revision,
    initial_events_end: bool,
) -> Bytes {
    match wire {
        Wire::Json => bookmark_line(resource, revision, initial_events_end),
        Wire::Protobuf => {
            let mut metadata = serde_json::json!({ "resourceVersion": revision.to_string() });
            if initial_events_end {
                metadata["annotations"] = serde_json::json!({ "k8s.io/initial-events-end": "true" });
            }
            let object = serde_json::json!({ "metadata": metadata });
            let mut encoded = Vec::new();
            match protobuf::schema().encode_object_as(
                &resource.api_version,
                &resource.kind,
                &object,
                &mut encoded,
            ) {
                Ok(()) => Bytes::from(protobuf::schema().watch_frame("BOOKMARK", &encoded)),
                Err(error) => error_frame(&format!("a bookmark cannot be encoded as protobuf: {error}")),
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
        assert_eq!((object.namespace.as_str(), object.name.as_str()), ("ns", "p"));
        assert_eq!(object.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(object.field("spec.nodeName"), Some("n1"));
        assert_eq!(object.field("status.phase"), Some(""));
        let json: Value = serde_json::from_slice(&object.json).unwrap();
        assert_eq!(json["metadata"]["resourceVersion"], "42");
        // Field order is kept as written.
        assert!(std::str::from_utf8(&object.json).unwrap().starts_with(r#"{"kind":"Pod","apiVersion":"v1""#));
        let line = object.added_line();
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
        let deleted: Value = serde_json::from_slice(&event.line(Delivery::AsDeleted, &resource)).unwrap();
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["metadata"]["resourceVersion"], "9");
        let bookmark: Value = serde_json::from_slice(&bookmark_line(&resource, 7, true)).unwrap();
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
    fn protobuf_frames_are_built_once_and_only_for_protobuf_watchers() {
        let resource = config_maps();
        let decode = |revision, data: &str| {
            let value = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c","namespace":"ns"}},"data":{{"k":"{data}"}}}}"#
            );
            Arc::new(CachedObject::decode("/configmaps/ns/c", value.as_bytes(), revision, &resource).unwrap())
        };
        let (old, new) = (decode(5, "a"), decode(9, "b"));
        let event = CachedEvent::new(0, EventType::Modified, Arc::clone(&new), Some(Arc::clone(&old)));

        // JSON watchers pay nothing for protobuf.
        for delivery in [Delivery::AsIs, Delivery::AsAdded, Delivery::AsDeleted] {
            event.line_for(Wire::Json, delivery, &resource);
        }
        assert!(event.frame.get().is_none() && event.deleted_frame.get().is_none());
        assert!(new.protobuf.get().is_none() && new.added_frame.get().is_none());

        // A protobuf frame is built on first use and then shared: the same bytes each time.
        let first = event.line_for(Wire::Protobuf, Delivery::AsIs, &resource).clone();
        let again = event.line_for(Wire::Protobuf, Delivery::AsIs, &resource).clone();
        assert_eq!(first.as_ptr(), again.as_ptr());
        let schema = protobuf::schema();
        let len = u32::from_be_bytes(first[..4].try_into().unwrap()) as usize;
        assert_eq!(len, first.len() - 4);
        let (kind, object) = schema.decode_watch_event(&first[4..]).unwrap();
        assert_eq!(kind, "MODIFIED");
        assert_eq!(object, serde_json::from_slice::<Value>(&new.json).unwrap());

        // Transitions: ADDED shares the object's frame; DELETED shows the old state at the
        // event's revision.
        let added = event.line_for(Wire::Protobuf, Delivery::AsAdded, &resource).clone();
        assert_eq!(added.as_ptr(), new.added_line_for(Wire::Protobuf, &resource).as_ptr());
        let deleted = event.line_for(Wire::Protobuf, Delivery::AsDeleted, &resource).clone();
        let (kind, object) = schema.decode_watch_event(&deleted[4..]).unwrap();
        assert_eq!((kind.as_str(), object["data"]["k"].as_str()), ("DELETED", Some("a")));
        assert_eq!(object["metadata"]["resourceVersion"], "9");
        // The JSON line was not rebuilt or touched by any of this.
        assert_eq!(
            event.line_ref(Delivery::AsIs, &resource).as_ptr(),
            event.line_for(Wire::Json, Delivery::AsIs, &resource).as_ptr()
        );

        let bookmark = bookmark_line_for(Wire::Protobuf, &resource, 12, true);
        let (kind, object) = schema.decode_watch_event(&bookmark[4..]).unwrap();
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
        let frame = object.added_line_for(Wire::Protobuf, &resource);
        let (kind, status) = protobuf::schema().decode_watch_event(&frame[4..]).unwrap();
        assert_eq!((kind.as_str(), status["code"].as_i64()), ("ERROR", Some(500)));
    }
}
