//! JSON → protobuf → JSON on real-shaped objects (as kube-apiserver returns them: managed
//! fields, projected volumes, probes with named ports, quantities, null times, bytes), and the
//! zero-value rules of Go-written protobuf, where every non-pointer field is on the wire.

use serde_json::{json, Value};
use watchcache::protobuf::schema;

fn real_shaped() -> Vec<(String, Value)> {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-shaped");
    let mut objects: Vec<(String, Value)> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap())
        })
        .collect();
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(objects.len() >= 8);
    objects
}

#[test]
fn real_shaped_objects_survive_protobuf_exactly() {
    for (name, object) in real_shaped() {
        let encoded = schema().encode_object(&object).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(&encoded[..4], b"k8s\0");
        let decoded = schema().decode_object(&encoded).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(decoded, object, "{name} changed on the way through protobuf");
    }
}

/// Encodes `object` with every field it has (as Go's marshaller writes non-pointer fields
/// even when zero), then decodes it.
fn through_go_wire(object: Value) -> Value {
    schema().decode_object(&schema().encode_object(&object).unwrap()).unwrap()
}

#[test]
fn zero_values_render_as_go_renders_them() {
    let decoded = through_go_wire(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "generateName": "", "generation": 0, "uid": "", "creationTimestamp": null},
        "spec": {"replicas": 0, "paused": false, "minReadySeconds": 0, "selector": {},
            "template": {"metadata": {"creationTimestamp": null},
                "spec": {"containers": [{"name": "c", "image": "", "stdin": false}],
                    "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0}}},
        "status": {"replicas": 0}
    }));
    // omitempty non-pointer zeros are gone, as Go's encoding/json drops them...
    assert_eq!(decoded["metadata"], json!({"name": "d", "creationTimestamp": null}));
    assert!(decoded["spec"].get("paused").is_none() && decoded["spec"].get("minReadySeconds").is_none());
    assert!(decoded["status"].get("replicas").is_none());
    // ...pointers keep their zeros (scaling to zero, disabled token mounts)...
    assert_eq!(decoded["spec"]["replicas"], 0);
    assert_eq!(decoded["spec"]["template"]["spec"]["automountServiceAccountToken"], false);
    assert_eq!(decoded["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 0);
    // ...and so do fields without omitempty; structs are always there, a zero Time is null.
    assert_eq!(decoded["spec"]["template"]["spec"]["containers"][0], json!({"name": "c"}));
    assert_eq!(decoded["spec"]["selector"], json!({}));
    assert_eq!(decoded["spec"]["template"]["metadata"]["creationTimestamp"], Value::Null);

    let status = through_go_wire(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {}}]}
    }));
    assert_eq!(
        status["status"]["containerStatuses"][0],
        json!({"name": "c", "state": {}, "ready": false, "restartCount": 0, "image": "", "imageID": ""}),
        "ContainerStatus's non-omitempty fields render even when zero"
    );
}

#[test]
fn special_types_take_their_json_forms() {
    let decoded = through_go_wire(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": "https"}]}
    }));
    assert_eq!(decoded["spec"]["ports"][0]["targetPort"], 8080, "IntOrString as a number");
    assert_eq!(decoded["spec"]["ports"][1]["targetPort"], "https", "IntOrString as a string");

    // A quantity written as a JSON number travels as its string.
    let decoded = through_go_wire(json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
        "spec": {"hard": {"pods": 10, "requests.cpu": "1500m"}}
    }));
    assert_eq!(decoded["spec"]["hard"], json!({"pods": "10", "requests.cpu": "1500m"}));

    // Time keeps seconds (any offset becomes UTC); MicroTime keeps microseconds.
    let decoded = through_go_wire(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "creationTimestamp": "2026-01-02T03:04:05+02:00"},
        "spec": {"holderIdentity": "a", "renewTime": "2026-01-02T03:04:05.123456789Z", "leaseDurationSeconds": 15}
    }));
    assert_eq!(decoded["metadata"]["creationTimestamp"], "2026-01-02T01:04:05Z");
    assert_eq!(decoded["spec"]["renewTime"], "2026-01-02T03:04:05.123456Z");

    // Duration is Go's duration string.
    let decoded = through_go_wire(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration", "metadata": {"name": "p"},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5}}
    }));
    assert_eq!(decoded["spec"]["limited"]["nominalConcurrencyShares"], 5);

    // Bytes are base64 in JSON, raw on the wire; a missing padding is an error.
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "aGk="}});
    let encoded = schema().encode_object(&secret).unwrap();
    assert!(encoded.windows(2).any(|window| window == b"hi"), "the secret's bytes are raw on the wire");
    let bad = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}});
    let error = schema().encode_object(&bad).unwrap_err().to_string();
    assert!(error.starts_with("data.k: illegal base64 data"), "{error}");

    // RawExtension holds any JSON.
    let revision = through_go_wire(json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
        "data": {"nested": [1, "two", {"three": null}]}, "revision": 2
    }));
    assert_eq!(revision["data"], json!({"nested": [1, "two", {"three": null}]}));
}

#[test]
fn type_errors_name_the_field() {
    let cases = [
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1}}),
            "data.a: expected a string, found a number",
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "3"}}),
            "spec.replicas: expected an integer, found a string",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": {}}]}}),
            "spec.containers[0].ports: expected an array, found an object",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": "yesterday"}}),
            "metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "p"}}),
            "v1, Kind=Nope has no protobuf form",
        ),
    ];
    for (object, expected) in cases {
        let error = schema().encode_object(&object).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{error:?} does not start with {expected:?}");
    }
}

#[test]
fn truncated_or_foreign_bytes_are_errors_not_panics() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let encoded = schema().encode_object(&pod).unwrap();
    for end in 0..encoded.len() {
        // Every prefix either decodes (to something) or fails cleanly.
        let _ = schema().decode_object(&encoded[..end]);
    }
    assert!(schema().decode_object(b"{\"kind\":\"Pod\"}").unwrap_err().to_string().contains("magic"));
    let mut foreign = encoded.clone();
    foreign[10] ^= 0xff;
    let _ = schema().decode_object(&foreign);
}

#[test]
fn every_served_builtin_type_has_a_real_shaped_fixture() {
    let kinds: std::collections::BTreeSet<(String, String)> = real_shaped()
        .into_iter()
        .map(|(_, object)| {
            (object["apiVersion"].as_str().unwrap().to_owned(), object["kind"].as_str().unwrap().to_owned())
        })
        .collect();
    let missing: Vec<String> = watchcache::registry::builtin_types()
        .into_iter()
        .filter(|ty| ty.protobuf())
        .filter(|ty| !kinds.contains(&(ty.api_version(), ty.kind.clone())))
        .map(|ty| format!("{} {}", ty.api_version(), ty.kind))
        .collect();
    // The types served before these fixtures were written are covered by tests/protobuf_fixtures.rs.
    let older = [
        "v1 Namespace",
        "v1 ConfigMap",
        "v1 Endpoints",
        "v1 ServiceAccount",
        "apps/v1 ReplicaSet",
        "apps/v1 StatefulSet",
        "apps/v1 DaemonSet",
        "batch/v1 Job",
        "batch/v1 CronJob",
        "coordination.k8s.io/v1 Lease",
        "apiextensions.k8s.io/v1 CustomResourceDefinition",
    ];
    let missing: Vec<&String> = missing.iter().filter(|kind| !older.contains(&kind.as_str())).collect();
    assert!(missing.is_empty(), "no real-shaped fixture for {missing:?}");
}
