//! Encode once versus encode per watcher, for one ~1 KiB pod event and 1,000 watchers:
//!
//! - `encode-once`: watchcache's way: `CachedObject::decode` once, `CachedEvent::line` once,
//!   then one `Bytes` clone (a reference count) per watcher;
//! - `encode-per-watcher`: the stored JSON parsed once into a `serde_json::Value` event
//!   `{"type":"ADDED","object":...}`, then `serde_json::to_vec` of it for every watcher.
//!
//! Both start from the stored bytes and end with one line per watcher in a reused `Vec`.
//!
//! Run: `cargo bench --bench encode`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use watchcache::cacher::object::{CachedEvent, CachedObject, Delivery, EventType, ResourceConfig};

const WATCHERS: usize = 1_000;

fn pods() -> ResourceConfig {
    ResourceConfig {
        prefix: "/pods/".into(),
        kind: "Pod".into(),
        api_version: "v1".into(),
        namespaced: true,
        selectable_fields: vec!["spec.nodeName".into(), "status.phase".into()],
        indexed_field: Some("spec.nodeName".into()),
    }
}

/// A pod whose JSON is about 1 KiB.
fn pod_json(namespace: &str, name: &str) -> Vec<u8> {
    let object = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "6f1d7c1e-3f4a-4b8e-9a51-2d3c4b5a6f70",
            "resourceVersion": "1",
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "7d9f8c6b5d"},
            "annotations": {"kubernetes.io/psp": "restricted", "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5d",
                "uid": "0b6c1a2d-8e9f-4a3b-b2c1-d4e5f6a7b8c9", "controller": true}],
        },
        "spec": {
            "nodeName": "node-17",
            "serviceAccountName": "default",
            "containers": [{
                "name": "web",
                "image": "registry.example.com/web:1.27.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"}},
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
            }],
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.3.17",
            "podIP": "10.244.3.42",
            "startTime": "2024-05-01T12:00:02Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T12:00:09Z"}],
        },
    });
    serde_json::to_vec(&object).unwrap()
}

fn encode_benches(c: &mut Criterion) {
    let resource = pods();
    let stored = pod_json("default", "web-7d9f8c6b5d-x4k2p");
    eprintln!("stored pod JSON: {} bytes", stored.len());

    let mut group = c.benchmark_group("encode_1000_watchers");
    group.throughput(Throughput::Elements(WATCHERS as u64));
    group.bench_function(BenchmarkId::from_parameter("encode-once"), |b| {
        let mut lines: Vec<Bytes> = Vec::with_capacity(WATCHERS);
        b.iter(|| {
            let object = CachedObject::decode("/pods/default/web", &stored, 42, &resource).unwrap();
            let event = CachedEvent::new(0, EventType::Added, Arc::new(object), None);
            let line = event.line(Delivery::AsIs, &resource);
            lines.clear();
            for _ in 0..WATCHERS {
                lines.push(line.clone());
            }
            lines.len()
        })
    });
    group.bench_function(BenchmarkId::from_parameter("encode-per-watcher"), |b| {
        let mut lines: Vec<Vec<u8>> = Vec::with_capacity(WATCHERS);
        b.iter(|| {
            let mut object: Value = serde_json::from_slice(&stored).unwrap();
            object["metadata"]["resourceVersion"] = Value::String(42.to_string());
            let event = json!({"type": "ADDED", "object": object});
            lines.clear();
            for _ in 0..WATCHERS {
                let mut line = serde_json::to_vec(&event).unwrap();
                line.push(b'\n');
                lines.push(line);
            }
            lines.len()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = encode_benches
}
criterion_main!(benches);
