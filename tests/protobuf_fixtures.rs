//! Kubernetes' own serialization fixtures (k8s.io/api and apiextensions-apiserver
//! `testdata/HEAD` at v0.36.3, copied to tests/fixtures/kube-api-testdata): for every stable
//! built-in kind, the same object as Go writes it in JSON and in protobuf, every field set.
//!
//! Each `.pb` must decode to its `.json`, and each `.json` must encode to the `.pb` byte for
//! byte: the transcoder writes exactly what Go's generated marshallers write. The one exception
//! is the CustomResourceDefinition, whose filled-in Go object holds both halves of
//! `JSONSchemaPropsOrArray` and `JSONSchemaPropsOrBool`, which JSON cannot: its JSON encodes to
//! less, and must decode back to the same JSON.

use std::path::Path;

use serde_json::Value;
use watchcache::protobuf::schema;

fn fixtures() -> Vec<(String, Value, Vec<u8>)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-api-testdata");
    let mut fixtures = Vec::new();
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "pb") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let json: Value =
                serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
            fixtures.push((name, json, std::fs::read(&path).unwrap()));
        }
    }
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(fixtures.len() >= 90, "the fixtures are there ({} found)", fixtures.len());
    fixtures
}

/// The first place two JSON values differ, for a readable failure.
fn first_difference(path: &str, left: &Value, right: &Value) -> Option<String> {
    match (left, right) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    None => return Some(format!("{path}.{key} only on the left: {value}")),
                    Some(other) => {
                        if let Some(found) = first_difference(&format!("{path}.{key}"), value, other) {
                            return Some(found);
                        }
                    }
                }
            }
            b.keys()
                .find(|key| !a.contains_key(*key))
                .map(|key| format!("{path}.{key} only on the right: {}", b[key]))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if left == right => None,
        _ => Some(format!("{path}: {left} != {right}")),
    }
}

#[test]
fn every_fixture_decodes_to_its_json() {
    let mut failures = Vec::new();
    for (name, json, pb) in fixtures() {
        if name == "core.v1.WatchEvent" {
            continue; // not an object: see watch_event_fixture_decodes
        }
        match schema().decode_object(&pb) {
            Ok(decoded) => {
                if let Some(difference) = first_difference("", &decoded, &json) {
                    failures.push(format!("{name}: {difference}"));
                } else {
                    // Go renders fields in declaration order; so must the decoder.
                    let (ours, theirs) =
                        (serde_json::to_string(&decoded).unwrap(), serde_json::to_string(&json).unwrap());
                    if let Some(at) = ours.bytes().zip(theirs.bytes()).position(|(a, b)| a != b) {
                        let around =
                            |text: &str| text[at.saturating_sub(60)..(at + 40).min(text.len())].to_owned();
                        failures.push(format!(
                            "{name}: fields in another order:\n  {}\n  {}",
                            around(&ours),
                            around(&theirs)
                        ));
                    }
                }
            }
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{} fixtures differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_fixture_encodes_to_its_protobuf_byte_for_byte() {
    let mut failures = Vec::new();
    for (name, json, pb) in fixtures() {
        if name == "core.v1.WatchEvent" || name == "apiextensions.k8s.io.v1.CustomResourceDefinition" {
            continue;
        }
        match schema().encode_object(&json) {
            Ok(encoded) if encoded == pb => {}
            Ok(encoded) => {
                let at =
                    encoded.iter().zip(&pb).position(|(a, b)| a != b).unwrap_or(encoded.len().min(pb.len()));
                let window = |bytes: &[u8]| {
                    String::from_utf8_lossy(&bytes[at.saturating_sub(40)..(at + 40).min(bytes.len())])
                        .into_owned()
                };
                failures.push(format!(
                    "{name}: {} bytes against {}, first difference at {at}:\n  ours   {:?}\n  theirs {:?}",
                    encoded.len(),
                    pb.len(),
                    window(&encoded),
                    window(&pb)
                ));
            }
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{} fixtures differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn watch_event_fixture_decodes() {
    let (_, json, pb) = fixtures().into_iter().find(|(name, _, _)| name == "core.v1.WatchEvent").unwrap();
    let event = schema().message_bytes(&pb).unwrap();
    let (event_type, object) = schema().decode_watch_event(event).unwrap();
    assert_eq!(event_type, json["type"]);
    assert_eq!(object, json["object"]);
}

#[test]
fn every_fixture_survives_json_to_protobuf_to_json() {
    let mut failures = Vec::new();
    for (name, json, _) in fixtures() {
        if name == "core.v1.WatchEvent" {
            continue;
        }
        let back = schema().encode_object(&json).and_then(|pb| schema().decode_object(&pb));
        match back {
            Ok(back) => {
                if let Some(difference) = first_difference("", &back, &json) {
                    failures.push(format!("{name}: {difference}"));
                }
            }
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{} fixtures differ:\n{}", failures.len(), failures.join("\n"));
}
