//! The ConfigMap every write carries, in the three shapes the peers need: the merge patch sent to
//! watchcache, the object put into etcd, and the watch event line the floor sends.

use serde_json::json;

/// The namespace (and the ConfigMap's name) of the scenario.
pub const NAMESPACE: &str = "fanout";

/// The ConfigMap's etcd key, as kube-apiserver and watchcache lay it out.
pub const ETCD_KEY: &str = "/registry/configmaps/fanout/fanout";

/// The prefix the etcd watchers watch: the namespace's ConfigMaps.
pub const ETCD_PREFIX: &str = "/registry/configmaps/fanout/";

/// The API path of the ConfigMap.
pub const ITEM_PATH: &str = "/api/v1/namespaces/fanout/configmaps/fanout";

/// The API path of the namespace's ConfigMaps.
pub const COLLECTION_PATH: &str = "/api/v1/namespaces/fanout/configmaps";

/// ~700 bytes that change with every write.
fn payload(seq: u32) -> String {
    let letter = char::from(b'a' + (seq % 26) as u8);
    let mut payload = String::with_capacity(700);
    while payload.len() < 700 {
        payload.push(letter);
    }
    payload
}

/// The merge patch of write `seq` (`application/merge-patch+json`).
pub fn patch(seq: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({"data": {"seq": seq.to_string(), "payload": payload(seq)}})).unwrap()
}

/// The `data.seq` of the ConfigMap as created, before any write (the watches start after it). It
/// differs from every write's, so that no write is a no-op.
const INITIAL: &str = "initial";

/// The ConfigMap as POSTed to watchcache before the watches start.
pub fn create_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAMESPACE, "namespace": NAMESPACE},
        "data": {"seq": INITIAL, "payload": payload(0)},
    }))
    .unwrap()
}

/// The ConfigMap as put into etcd before the watches start.
pub fn initial_configmap() -> Vec<u8> {
    configmap_of(INITIAL.to_owned(), 0, None)
}

/// The namespace, as POSTed to watchcache first.
pub fn namespace_body() -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .unwrap()
}

/// The whole ConfigMap after write `seq`, with the metadata an API server fills in (as stored in
/// etcd, kube-apiserver leaves `resourceVersion` out: it is the key's revision).
pub fn configmap(seq: u32, resource_version: Option<u64>) -> Vec<u8> {
    configmap_of(seq.to_string(), seq, resource_version)
}

fn configmap_of(seq: String, payload_of: u32, resource_version: Option<u64>) -> Vec<u8> {
    let mut metadata = json!({
        "name": NAMESPACE,
        "namespace": NAMESPACE,
        "uid": "6b1f3c2e-9a4d-4e8b-b7c1-0d2f5a6e7b80",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    });
    if let Some(resource_version) = resource_version {
        metadata["resourceVersion"] = json!(resource_version.to_string());
    }
    serde_json::to_vec(&json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": metadata,
        "data": {"seq": seq, "payload": payload(payload_of)},
    }))
    .unwrap()
}

/// The watch event line of write `seq`: `{"type":"MODIFIED","object":{...}}\n`.
pub fn event_line(seq: u32, resource_version: u64) -> Vec<u8> {
    let object = configmap(seq, Some(resource_version));
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"MODIFIED\",\"object\":");
    line.extend_from_slice(&object);
    line.extend_from_slice(b"}\n");
    line
}
