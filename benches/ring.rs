//! The event ring (`cacher::ring`): append per event on a full ring of 65,536 (so every push also
//! evicts the oldest event), `seq_after` (the binary search a watch "from revision N" starts
//! with) on a full ring, and `read` of 100 events from a position (the catch-up path).
//!
//! Run: `cargo bench --bench ring`.

mod support;

use support::{pod_json, pods};

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use watchcache::cacher::object::{CachedEvent, CachedObject, EventType, ResourceConfig};
use watchcache::cacher::ring::{RingLimits, RingWriter};

/// The ring's capacity and `max_events`.
const CAPACITY: usize = 65_536;
/// Events pushed (timed) per refill of the ring in the push bench.
const PUSHES_PER_CYCLE: usize = 16_384;
/// Objects decoded once: enough for a full ring plus one cycle of pushes, each with its own,
/// strictly growing revision (the ring requires it).
const POOL: usize = CAPACITY + PUSHES_PER_CYCLE;
const READ_BATCH: usize = 100;

fn limits() -> RingLimits {
    RingLimits {
        min_events: 100,
        max_events: CAPACITY,
        max_bytes: usize::MAX,
        window: Duration::from_secs(3_600),
        budget: None,
    }
}

/// `POOL` objects with revisions 1..=POOL, decoded once.
fn pool(resource: &ResourceConfig) -> Vec<Arc<CachedObject>> {
    let json = pod_json("default", "web-7d9f8c6b5d-x4k2p");
    (0..POOL)
        .map(|i| {
            let key = format!("/pods/default/web-{i}");
            Arc::new(CachedObject::decode(&key, &json, i as u64 + 1, resource).unwrap())
        })
        .collect()
}

fn event(seq: u64, object: &Arc<CachedObject>) -> Arc<CachedEvent> {
    Arc::new(CachedEvent::new(seq, EventType::Modified, Arc::clone(object), None))
}

fn ring_benches(c: &mut Criterion) {
    let resource = pods();
    let pool = pool(&resource);
    eprintln!(
        "object JSON: {} bytes, event size as the ring counts it: {} bytes",
        pool[0].json.len(),
        event(0, &pool[0]).size()
    );

    // A full ring with revisions 1..=CAPACITY.
    let mut full = RingWriter::new(limits(), 0);
    for object in &pool[..CAPACITY] {
        full.push(event(full.next_seq(), object));
    }
    let ring = Arc::clone(full.ring());
    assert_eq!(ring.len(), CAPACITY);

    let mut group = c.benchmark_group("ring/push");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("full_65536"), |b| {
        // Every timed push lands on a full ring and evicts the oldest event. Revisions must grow,
        // so after each cycle of PUSHES_PER_CYCLE the ring is reset and refilled, untimed.
        let mut writer = RingWriter::new(limits(), 0);
        let mut next = POOL; // force a refill first
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut remaining = iters as usize;
            while remaining > 0 {
                if next == POOL {
                    writer.reset(0);
                    for object in &pool[..CAPACITY] {
                        writer.push(event(writer.next_seq(), object));
                    }
                    next = CAPACITY;
                }
                let count = remaining.min(POOL - next);
                let seq = writer.next_seq();
                let events: Vec<_> = pool[next..next + count]
                    .iter()
                    .zip(seq..)
                    .map(|(object, seq)| event(seq, object))
                    .collect();
                let start = Instant::now();
                for event in events {
                    writer.push(event);
                }
                elapsed += start.elapsed();
                next += count;
                remaining -= count;
            }
            elapsed
        })
    });
    group.finish();

    // Revisions to look up, spread over the window (pseudo-random, fixed).
    let lookups: Vec<u64> =
        (0..4_096u64).map(|i| (i.wrapping_mul(2_654_435_761) % CAPACITY as u64) + 1).collect();
    let mut group = c.benchmark_group("ring/seq_after");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("full_65536"), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % lookups.len();
            let seq = ring.seq_after(std::hint::black_box(lookups[i])).unwrap();
            std::hint::black_box(seq)
        })
    });
    group.finish();

    let head = ring.head();
    let starts: Vec<u64> = lookups.iter().map(|r| head + (r - 1) % (CAPACITY - READ_BATCH) as u64).collect();
    let mut group = c.benchmark_group("ring/read");
    group.throughput(Throughput::Elements(READ_BATCH as u64));
    group.bench_function(BenchmarkId::from_parameter("100_of_65536"), |b| {
        let mut out = Vec::with_capacity(READ_BATCH);
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % starts.len();
            let next = ring.read(starts[i], READ_BATCH, 0, &mut out).unwrap();
            debug_assert_eq!(out.len(), READ_BATCH);
            out.clear();
            std::hint::black_box(next)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = ring_benches
}
criterion_main!(benches);
