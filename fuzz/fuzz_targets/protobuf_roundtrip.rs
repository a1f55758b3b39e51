//! Valid objects round-trip exactly, and encoding is a fixed point.
//!
//! - JSON → protobuf → JSON → protobuf: a real-shaped object (tests/fixtures/real-shaped, and
//!   Kubernetes' own Job, CronJob and ConfigMap fixtures), mutated under the fuzzer's control
//!   (strings, numbers, booleans replaced, fields and items removed, duplicated or nulled, keys
//!   added), either fails to encode with an error, or its encoding decodes, the decoded JSON
//!   encodes again to bytes that decode to the same JSON, and that second encoding is a fixed
//!   point. When the decoded JSON is the input (JSON in Go's form), the second encoding is
//!   byte-identical to the first.
//! - protobuf → JSON → protobuf: bytes (one of Kubernetes' `.pb` fixtures with bytes
//!   overwritten, inserted or cut off, or the input as the message of a kind) either fail to
//!   decode with an error, or their JSON encodes, and that encoding decodes to the same JSON and
//!   is a fixed point as above.
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use watchcache::protobuf::schema;

macro_rules! fixtures {
    ($dir:literal: $($file:literal),* $(,)?) => {
        &[$(include_bytes!(concat!("../../tests/fixtures/", $dir, "/", $file))),*]
    };
}

const JSON: &[&[u8]] = fixtures!("real-shaped": "pod.json", "deployment.json", "service.json", "node.json",
    "secret.json", "event.json", "events.k8s.io-event.json", "controllerrevision.json");
const KUBE_JSON: &[&[u8]] = fixtures!("kube-api-testdata": "batch.v1.Job.json", "batch.v1.CronJob.json",
    "core.v1.ConfigMap.json");
const PROTOBUF: &[&[u8]] = fixtures!("kube-api-testdata": "core.v1.Pod.pb", "core.v1.ConfigMap.pb",
    "core.v1.Secret.pb", "core.v1.Service.pb", "apps.v1.Deployment.pb", "batch.v1.Job.pb",
    "batch.v1.CronJob.pb", "core.v1.Node.pb", "core.v1.Event.pb", "events.k8s.io.v1.Event.pb");

/// The JSON fixtures, parsed once.
static FIXTURES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    [JSON, KUBE_JSON]
        .concat()
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).expect("fixtures are JSON"))
        .collect()
});

/// The JSON pointer of a value of `root` the input picks: a walk down from the root that stops
/// at a leaf, or earlier with a probability of 1/8 at each step.
fn pick(root: &Value, u: &mut Unstructured<'_>) -> Result<String> {
    let mut at = String::new();
    let mut node = root;
    loop {
        let (key, child) = match node {
            Value::Object(map) if !map.is_empty() && u.ratio(7u8, 8)? => {
                let (key, child) = map.iter().nth(u.choose_index(map.len())?).unwrap();
                (key.replace('~', "~0").replace('/', "~1"), child)
            }
            Value::Array(items) if !items.is_empty() && u.ratio(7u8, 8)? => {
                let index = u.choose_index(items.len())?;
                (index.to_string(), &items[index])
            }
            _ => return Ok(at),
        };
        at.push('/');
        at.push_str(&key);
        node = child;
    }
}

/// Removes the value at `pointer` (not the root) from its object or array.
fn remove(root: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("not the root");
    let key = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.shift_remove(&key);
        }
        Some(Value::Array(items)) => {
            if let Ok(index) = key.parse::<usize>() {
                if index < items.len() {
                    items.remove(index);
                }
            }
        }
        _ => {}
    }
}

fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Value::from(u.int_in_range(-2i64..=2)?),
        1 => Value::from(u.arbitrary::<i32>()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        _ => Number::from_f64(u.arbitrary::<f64>()?).map(Value::Number).unwrap_or(Value::Null),
    })
}

/// One change to `root`.
fn mutate(root: &mut Value, u: &mut Unstructured<'_>) -> Result<()> {
    let pointer = pick(root, u)?;
    let operation = u.int_in_range(0..=7)?;
    if pointer.is_empty() && matches!(operation, 2 | 3) {
        return Ok(());
    }
    match operation {
        0 => *root.pointer_mut(&pointer).unwrap() = Value::String(u.arbitrary()?),
        1 => *root.pointer_mut(&pointer).unwrap() = number(u)?,
        2 => remove(root, &pointer),
        3 => {
            let (parent, _) = pointer.rsplit_once('/').unwrap();
            let copy = root.pointer(&pointer).unwrap().clone();
            if let Some(Value::Array(items)) = root.pointer_mut(parent) {
                items.push(copy);
            }
        }
        4 => *root.pointer_mut(&pointer).unwrap() = Value::Null,
        5 => {
            if let Some(Value::Object(map)) = root.pointer_mut(&pointer) {
                map.insert(u.arbitrary()?, Value::String(u.arbitrary()?));
            }
        }
        6 => *root.pointer_mut(&pointer).unwrap() = Value::Bool(u.arbitrary()?),
        _ => {
            let target = root.pointer_mut(&pointer).unwrap();
            *target = match target {
                Value::Object(_) => Value::Object(Map::new()),
                Value::Array(_) => Value::Array(Vec::new()),
                Value::Number(_) => Value::from(0),
                _ => Value::String(String::new()),
            };
        }
    }
    Ok(())
}

/// `encoded` (bytes the transcoder wrote) decodes, its JSON encodes again, the second
/// encoding decodes to the same JSON, and it is a fixed point: its JSON encodes to the same
/// bytes. Returns the JSON and the second encoding.
fn fixed_point(encoded: &[u8], origin: &dyn std::fmt::Debug) -> (Value, Vec<u8>) {
    let decoded = schema()
        .decode_object(encoded)
        .unwrap_or_else(|error| panic!("an encoding does not decode: {error}; from {origin:?}"));
    let again = schema()
        .encode_object(&decoded)
        .unwrap_or_else(|error| panic!("decoded JSON does not encode: {error}: {decoded}; from {origin:?}"));
    let decoded_again = schema()
        .decode_object(&again)
        .unwrap_or_else(|error| panic!("the second encoding does not decode: {error}; from {origin:?}"));
    assert_eq!(decoded_again, decoded, "the two encodings carry different objects; from {origin:?}");
    let third = schema().encode_object(&decoded_again).unwrap();
    assert!(third == again, "the encoding of decoded JSON is not a fixed point: {decoded}; from {origin:?}");
    (decoded, again)
}

/// `value` without the object members that are null.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, child)| !child.is_null())
                .map(|(key, child)| (key.clone(), without_nulls(child)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn put_bytes(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push(number << 3 | 2);
    let mut length = bytes.len();
    while length >= 0x80 {
        out.push(length as u8 | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
    out.extend_from_slice(bytes);
}

/// `k8s\0` + a `runtime.Unknown` whose typeMeta names `api_version`/`kind` and whose raw is
/// `message`.
fn envelope(api_version: &str, kind: &str, message: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut body = b"k8s\0".to_vec();
    put_bytes(&mut body, 1, &type_meta);
    put_bytes(&mut body, 2, message);
    body
}

fn json_round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let mut object = u.choose(&FIXTURES)?.clone();
    for _ in 0..u.int_in_range(0..=8)? {
        mutate(&mut object, u)?;
    }
    if let Ok(encoded) = schema().encode_object(&object) {
        let (decoded, again) = fixed_point(&encoded, &object);
        // JSON as Go renders it (what the cache holds of an object kube-apiserver or a Go
        // client wrote) comes back unchanged, and its second encoding is the first, byte for
        // byte. JSON that spells out a zero Go leaves out, or leaves out a zero Go writes, comes
        // back in Go's form, and the transcoder writes only the fields JSON has: then only the
        // objects are the same.
        if decoded == object {
            assert!(again == encoded, "the second encoding differs from the first: {object}");
        }
    }
    Ok(())
}

fn protobuf_round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let mut bytes = u.choose(PROTOBUF)?.to_vec();
    match u.int_in_range(0..=2)? {
        0 => {
            for _ in 0..u.int_in_range(1..=8)? {
                let at = u.choose_index(bytes.len())?;
                bytes[at] = u.arbitrary()?;
            }
        }
        1 => {
            let at = u.int_in_range(0..=bytes.len())?;
            let inserted: Vec<u8> = u.arbitrary()?;
            bytes.splice(at..at, inserted);
            bytes.truncate(u.int_in_range(0..=bytes.len())?);
        }
        _ => {
            // The rest of the input as the message of the fixture's kind.
            let (api_version, kind, _) = schema().unwrap(&bytes).expect("fixtures are enveloped");
            let message = u.bytes(u.len())?;
            bytes = envelope(&api_version, &kind, message);
        }
    }
    if let Ok(decoded) = schema().decode_object(&bytes) {
        let encoded = schema()
            .encode_object(&decoded)
            .unwrap_or_else(|error| panic!("decoded JSON does not encode: {error}: {decoded}"));
        let (again, _) = fixed_point(&encoded, &decoded);
        // A pointer that is set but renders as null (a FieldsV1 without raw bytes, a zero
        // Time) is nil once read back from that JSON, in Go as here: null and absent are the
        // same Go value.
        assert!(
            without_nulls(&again) == without_nulls(&decoded),
            "protobuf → JSON → protobuf → JSON changed the object:\n{decoded}\n{again}"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.arbitrary::<bool>() {
        Ok(true) => protobuf_round_trip(&mut u),
        _ => json_round_trip(&mut u),
    };
});
