//! Encode once versus encode per watcher, for one ~1 KiB pod event and 1,000 watchers:
//!
//! - `encode-once`: watchcache's way: `CachedObject::decode` once, then for every watcher the
//!   line's framing and the object's shared bytes written into the buffer it sends;
//! - `encode-per-watcher`: the stored JSON parsed once into a `serde_json::Value` event
//!   `{"type":"ADDED","object":...}`, then `serde_json::to_vec` of it for every watcher.
//!
//! Both start from the stored bytes and end with one line per watcher in a reused buffer.
//!
//! Run: `cargo bench --bench encode`.

mod support;

use support::{pod_json, pods};

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use watchcache::cacher::object::{CachedEvent, CachedObject, Delivery, EventType, Wire};

const WATCHERS: usize = 1_000;

fn encode_benches(c: &mut Criterion) {
    let resource = pods();
    let stored = pod_json("default", "web-7d9f8c6b5d-x4k2p");
    eprintln!("stored pod JSON: {} bytes", stored.len());

    let mut group = c.benchmark_group("encode_1000_watchers");
    group.throughput(Throughput::Elements(WATCHERS as u64));
    group.bench_function(BenchmarkId::from_parameter("encode-once"), |b| {
        // Each watcher writes the line (framing and the shared bytes) into the buffer it sends.
        let mut buffer = bytes::BytesMut::with_capacity(64 << 10);
        b.iter(|| {
            let object = CachedObject::decode("/pods/default/web", &stored, 42, &resource).unwrap();
            let event = CachedEvent::new(0, EventType::Added, Arc::new(object), None);
            let mut written = 0;
            for _ in 0..WATCHERS {
                buffer.clear();
                event.line_for(Wire::Json, Delivery::AsIs, &resource).write_to(&mut buffer);
                written += buffer.len();
            }
            written
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
