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

use crate::selector::FieldSource;
use crate::storage::Revision;

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

    /// The approximate memory this object holds, for the ring's byte bound.
    pub fn size(&self) -> usize {
        self.json.len() + self.key.len() + std::mem::size_of::<CachedObject>()
    }
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
        CachedEvent { seq, kind, object, prev, received: Instant::now(), line, deleted_line: OnceLock::new() }
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
}
