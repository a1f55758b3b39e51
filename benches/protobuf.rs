//! The cost of Kubernetes protobuf, next to JSON, for the realistic ~1 KiB pod of
//! `support::pod_json` and the 4.7 KiB real-shaped pod of tests/fixtures/real-shaped/pod.json:
//!
//! - `encode/protobuf`: the stored JSON bytes to the enveloped protobuf object, as the cache
//!   builds it once per object revision for protobuf readers (`CachedObject::protobuf` parses the
//!   JSON and encodes it);
//! - `encode/json-reserialize` (the peer): the same JSON parsed and serialized again, what a
//!   cache that kept decoded objects would pay per revision for JSON;
//! - `decode/protobuf`: protobuf bytes to JSON bytes, as a protobuf request body or a value
//!   that kube-apiserver wrote to etcd is read;
//! - `decode/json` (the peer): JSON bytes parsed into a `Value`;
//! - `frame_1000_watchers/protobuf`: one protobuf watch frame built once and handed to 1,000
//!   watchers (a reference count each), against `json` lines the same way.
//!
//! Run: `cargo bench --bench protobuf`.

mod support;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use watchcache::cacher::object::{CachedEvent, CachedObject, Delivery, EventType, Wire};
use watchcache::protobuf::schema;

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let real =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-shaped/pod.json")).unwrap();
    let real = serde_json::to_vec(&serde_json::from_slice::<Value>(&real).unwrap()).unwrap();
    vec![("pod-1k", support::pod_json("default", "web-7d9f8c6b5d-x4k2p")), ("pod-real", real)]
}

fn protobuf_benches(c: &mut Criterion) {
    let schema = schema();
    for (name, json) in inputs() {
        let value: Value = serde_json::from_slice(&json).unwrap();
        let encoded = schema.encode_object(&value).unwrap();
        eprintln!("{name}: {} bytes of JSON, {} bytes of protobuf", json.len(), encoded.len());
        let mut group = c.benchmark_group(format!("protobuf_{name}"));
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(BenchmarkId::new("encode", "protobuf"), |b| {
            b.iter(|| {
                let value: Value = serde_json::from_slice(&json).unwrap();
                schema.encode_object(&value).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("encode", "json-reserialize"), |b| {
            b.iter(|| {
                let value: Value = serde_json::from_slice(&json).unwrap();
                serde_json::to_vec(&value).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("decode", "protobuf"), |b| {
            b.iter(|| serde_json::to_vec(&schema.decode_object(&encoded).unwrap()).unwrap())
        });
        group.bench_function(BenchmarkId::new("decode", "json"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(&json).unwrap())
        });
        group.finish();
    }

    let resource = support::pods();
    let stored = support::pod_json("default", "web-7d9f8c6b5d-x4k2p");
    let mut group = c.benchmark_group("frame_1000_watchers");
    group.throughput(Throughput::Elements(1_000));
    for wire in [Wire::Json, Wire::Protobuf] {
        let label = if wire == Wire::Json { "json" } else { "protobuf" };
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            // Each watcher writes the line into the buffer it sends, as `LineBuffer` does.
            let mut buffer = bytes::BytesMut::with_capacity(64 << 10);
            b.iter(|| {
                let object = CachedObject::decode("/pods/default/web", &stored, 42, &resource).unwrap();
                let event = CachedEvent::new(0, EventType::Modified, Arc::new(object), None);
                let mut written = 0;
                for _ in 0..1_000 {
                    buffer.clear();
                    event.line_for(wire, Delivery::AsIs, &resource).write_to(&mut buffer);
                    written += buffer.len();
                }
                written
            })
        });
    }
    group.finish();
}

criterion_group!(benches, protobuf_benches);
criterion_main!(benches);
