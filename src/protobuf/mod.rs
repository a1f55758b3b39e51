//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`): the `k8s\0` + `runtime.Unknown`
//! envelope, lists, watch-event frames, and the translation between the JSON that the cache and
//! storage keep and the protobuf that kube's own components speak.
//!
//! Message layouts are not written here: they come from the official .proto files of the
//! Kubernetes API (vendored under `proto/`, compiled by build.rs into descriptors that
//! [`schema::Schema`] reads once). How each Go type renders as JSON (names, inlining, which
//! zero values show) comes from `proto/gofields.tsv`, generated from the Go types by
//! `scripts/gen-protobuf-fields.py`.

mod schema;
mod transcode;

use std::sync::LazyLock;

use prost::encoding::encode_varint;
use serde_json::{Map, Value};

pub use schema::Schema;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The four bytes every protobuf-encoded object starts with.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// Why a value could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ProtobufError {
    /// Where in the object, e.g. `spec.containers[0].ports`.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

impl ProtobufError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        ProtobufError { path: String::new(), reason: reason.into() }
    }

    /// The same error, one level further out.
    pub(crate) fn at(mut self, segment: &str) -> Self {
        self.path = if self.path.is_empty() {
            segment.to_owned()
        } else if self.path.starts_with('[') {
            format!("{segment}{}", self.path)
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }
}

/// The schema of every built-in type, loaded on first use.
pub fn schema() -> &'static Schema {
    static SCHEMA: LazyLock<Schema> = LazyLock::new(Schema::load);
    &SCHEMA
}

impl Schema {
    /// Encodes an object (its JSON carries `apiVersion` and `kind`) as kube-apiserver does:
    /// `k8s\0` and a `runtime.Unknown` holding the type and the message.
    pub fn encode_object(&self, object: &Value) -> Result<Vec<u8>, ProtobufError> {
        let text = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default();
        let mut out = Vec::with_capacity(256);
        self.encode_object_as(text("apiVersion"), text("kind"), object, &mut out)?;
        Ok(out)
    }

    /// Encodes `object` as an `api_version`/`kind` object, appending to `out`.
    pub fn encode_object_as(
        &self,
        api_version: &str,
        kind: &str,
        object: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        let message = self
            .kind(api_version, kind)
            .ok_or_else(|| ProtobufError::new(format!("{api_version}, Kind={kind} has no protobuf form")))?;
        out.extend_from_slice(&MAGIC);
        self.encode_unknown(api_version, kind, out, |out| self.encode_message(message, object, out))
    }

    /// Writes the fields of a `runtime.Unknown` whose `raw` is what `raw` writes.
    fn encode_unknown(
        &self,
        api_version: &str,
        kind: &str,
        out: &mut Vec<u8>,
        raw: impl FnOnce(&mut Vec<u8>) -> Result<(), ProtobufError>,
    ) -> Result<(), ProtobufError> {
        let mut type_meta = Vec::with_capacity(api_version.len() + kind.len() + 4);
        put_bytes(&mut type_meta, 1, api_version.as_bytes());
        put_bytes(&mut type_meta, 2, kind.as_bytes());
        put_bytes(out, 1, &type_meta);
        let mut body = Vec::with_capacity(256);
        raw(&mut body)?;
        put_bytes(out, 2, &body);
        // contentEncoding and contentType, empty, as Go writes them.
        put_bytes(out, 3, b"");
        put_bytes(out, 4, b"");
        Ok(())
    }

    /// Decodes a protobuf-encoded object (`k8s\0` + `runtime.Unknown`) into its JSON, with
    /// `apiVersion` and `kind` first, as kube-apiserver renders it.
    pub fn decode_object(&self, bytes: &[u8]) -> Result<Value, ProtobufError> {
        let (api_version, kind, raw) = self.unwrap(bytes)?;
        let message = self.kind(&api_version, &kind).ok_or_else(|| {
            ProtobufError::new(format!("no kind {kind:?} is registered for version {api_version:?}"))
        })?;
        let Value::Object(fields) = self.decode_message(message, raw)? else {
            return Err(ProtobufError::new(format!("{kind} does not decode to an object")));
        };
        let mut object = Map::with_capacity(fields.len() + 2);
        object.insert("kind".into(), Value::String(kind));
        object.insert("apiVersion".into(), Value::String(api_version));
        object.extend(fields);
        Ok(Value::Object(object))
    }

    /// The `apiVersion`, `kind` and message bytes of an encoded object.
    pub fn unwrap<'a>(&self, bytes: &'a [u8]) -> Result<(String, String, &'a [u8]), ProtobufError> {
        let envelope = bytes.strip_prefix(&MAGIC).ok_or_else(|| {
            ProtobufError::new("the body does not start with the protobuf magic \"k8s\\x00\"")
        })?;
        let mut reader = envelope;
        let (mut api_version, mut kind, mut raw, mut content_type) =
            (String::new(), String::new(), &[][..], "");
        while let Some((number, value)) = next_len_field(&mut reader)? {
            match number {
                1 => {
                    let mut type_meta = value;
                    while let Some((number, value)) = next_len_field(&mut type_meta)? {
                        let text = std::str::from_utf8(value)
                            .map_err(|_| ProtobufError::new("typeMeta is not UTF-8"))?
                            .to_owned();
                        match number {
                            1 => api_version = text,
                            2 => kind = text,
                            _ => {}
                        }
                    }
                }
                2 => raw = value,
                4 => content_type = std::str::from_utf8(value).unwrap_or("?"),
                _ => {}
            }
        }
        if !(content_type.is_empty() || content_type == MEDIA_TYPE) {
            return Err(ProtobufError::new(format!(
                "unsupported content type {content_type:?} inside the envelope"
            )));
        }
        Ok((api_version, kind, raw))
    }

    /// Encodes a list (`ConfigMapList` and the like): `metadata` is the list's ListMeta JSON and
    /// `items` each item's message bytes (see [`Schema::message_bytes`]).
    pub fn encode_list<'a>(
        &self,
        api_version: &str,
        list_kind: &str,
        metadata: &Value,
        items: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<u8>, ProtobufError> {
        let list_meta = self.message("k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta");
        if self.kind(api_version, list_kind).is_none() {
            return Err(ProtobufError::new(format!("{api_version}, Kind={list_kind} has no protobuf form")));
        }
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(&MAGIC);
        self.encode_unknown(api_version, list_kind, &mut out, |out| {
            let mut meta = Vec::new();
            self.encode_message(list_meta, metadata, &mut meta)?;
            put_bytes(out, 1, &meta);
            for item in items {
                put_bytes(out, 2, item);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The bare message bytes inside an encoded object (what a list's `items` hold).
    pub fn message_bytes<'a>(&self, encoded: &'a [u8]) -> Result<&'a [u8], ProtobufError> {
        self.unwrap(encoded).map(|(_, _, raw)| raw)
    }

    /// One watch-stream frame, as kube's protobuf stream serializer writes it: a 4-byte
    /// big-endian length, then a `metav1.WatchEvent` (without envelope) whose object is the
    /// encoded object (with envelope).
    pub fn watch_frame(&self, event_type: &str, encoded_object: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(watch_frame_len(event_type, encoded_object.len()));
        write_watch_frame(&mut frame, event_type, encoded_object);
        frame
    }

    /// Decodes one watch frame's event (without the length prefix): its type and object JSON.
    pub fn decode_watch_event(&self, event: &[u8]) -> Result<(String, Value), ProtobufError> {
        let mut reader = event;
        let (mut event_type, mut object) = (String::new(), Value::Null);
        while let Some((number, value)) = next_len_field(&mut reader)? {
            match number {
                1 => event_type = String::from_utf8_lossy(value).into_owned(),
                2 => {
                    let mut raw = value;
                    while let Some((number, value)) = next_len_field(&mut raw)? {
                        if number == 1 {
                            object = if value.starts_with(&MAGIC) {
                                self.decode_object(value)?
                            } else {
                                // A custom resource's object is its JSON.
                                serde_json::from_slice(value).map_err(|error| {
                                    ProtobufError::new(format!(
                                        "the event's object is not valid JSON: {error}"
                                    ))
                                })?
                            };
                        }
                    }
                }
                _ => {}
            }
        }
        Ok((event_type, object))
    }
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_varint(((number as u64) << 3) | 2, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The length of [`write_watch_frame`]'s frame for an object of `object_len` bytes.
pub fn watch_frame_len(event_type: &str, object_len: usize) -> usize {
    let raw = bytes_field_len(object_len);
    4 + bytes_field_len(event_type.len()) + bytes_field_len(raw)
}

/// Writes one watch-stream frame (see [`Schema::watch_frame`]) straight into `out`, without an
/// intermediate copy of the object.
pub fn write_watch_frame(out: &mut impl bytes::BufMut, event_type: &str, encoded_object: &[u8]) {
    let raw = bytes_field_len(encoded_object.len());
    let event = bytes_field_len(event_type.len()) + bytes_field_len(raw);
    out.put_u32(event as u32);
    put_bytes_header(out, 1, event_type.len());
    out.put_slice(event_type.as_bytes());
    put_bytes_header(out, 2, raw);
    put_bytes_header(out, 1, encoded_object.len());
    out.put_slice(encoded_object);
}

/// The encoded length of a length-delimited field (numbers below 16) of `len` bytes.
fn bytes_field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

fn put_bytes_header(out: &mut impl bytes::BufMut, number: u32, len: usize) {
    encode_varint(((number as u64) << 3) | 2, out);
    encode_varint(len as u64, out);
}

/// The next length-delimited field (others are skipped).
fn next_len_field<'a>(reader: &mut &'a [u8]) -> Result<Option<(u32, &'a [u8])>, ProtobufError> {
    let truncated = || ProtobufError::new("the envelope is truncated");
    loop {
        if reader.is_empty() {
            return Ok(None);
        }
        let key = prost::encoding::decode_varint(reader).map_err(|_| truncated())?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                prost::encoding::decode_varint(reader).map_err(|_| truncated())?;
            }
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                *reader = reader.get(width..).ok_or_else(truncated)?;
            }
            2 => {
                let len = prost::encoding::decode_varint(reader).map_err(|_| truncated())? as usize;
                let value = reader.get(..len).ok_or_else(truncated)?;
                *reader = &reader[len..];
                return Ok(Some((number, value)));
            }
            _ => return Err(ProtobufError::new(format!("unsupported wire type {wire} in the envelope"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transcode::{format_go_duration, parse_go_duration};

    #[test]
    fn go_durations_format_and_parse_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (1_000_000_000, "1s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(format_go_duration(nanos), text);
            assert_eq!(parse_go_duration(text).unwrap(), nanos, "{text}");
        }
        assert_eq!(parse_go_duration("300ms").unwrap(), 300_000_000);
        assert!(parse_go_duration("3 days").is_err());
        assert!(parse_go_duration("").is_err());
    }
}
