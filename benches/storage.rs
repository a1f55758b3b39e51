//! Storage backends side by side: create, concurrent create, get, list of 1,000 keys and
//! guaranteed_update, on the embedded store (on disk, fsync per commit), its in-memory variant,
//! and a real etcd server started for the run (Debian's etcd-server; the bench fails without it).
//!
//! Run: `cargo bench --bench storage`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{guaranteed_update, ListOptions, Storage, StorageError};

const LIST_SIZE: usize = 1_000;
const VALUE_SIZE: usize = 1_024;
const CONCURRENT: usize = 64;

struct Subject {
    name: &'static str,
    storage: Arc<dyn Storage>,
}

fn subjects(runtime: &tokio::runtime::Runtime) -> (Vec<Subject>, tempfile::TempDir, common::EtcdCluster) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let in_memory = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
    let cluster = common::EtcdCluster::start(1);
    let etcd = runtime.block_on(cluster.storage("/registry"));
    let subjects = vec![
        Subject { name: "embedded", storage: Arc::new(embedded) },
        Subject { name: "in-memory", storage: Arc::new(in_memory) },
        Subject { name: "etcd", storage: Arc::new(etcd) },
    ];
    (subjects, dir, cluster)
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; VALUE_SIZE])
}

fn storage_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (subjects, _dir, _cluster) = subjects(&runtime);
    for subject in &subjects {
        runtime.block_on(async {
            for i in 0..LIST_SIZE {
                subject.storage.create(&format!("/list/ns/k{i:05}"), value()).await.unwrap();
            }
            subject.storage.create("/counter/c", Bytes::from_static(b"0")).await.unwrap();
        });
    }
    let counter = AtomicU64::new(0);

    let mut group = c.benchmark_group("storage/create");
    group.throughput(Throughput::Elements(1));
    for subject in &subjects {
        group.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                let key = format!("/create/ns/k{}", counter.fetch_add(1, Ordering::Relaxed));
                subject.storage.create(&key, value()).await.unwrap();
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("storage/create_64_concurrent");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    for subject in &subjects {
        group.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                let writes = (0..CONCURRENT).map(|_| {
                    let storage = Arc::clone(&subject.storage);
                    let key = format!("/concurrent/ns/k{}", counter.fetch_add(1, Ordering::Relaxed));
                    tokio::spawn(async move { storage.create(&key, value()).await.unwrap() })
                });
                for write in writes.collect::<Vec<_>>() {
                    write.await.unwrap();
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("storage/get");
    for subject in &subjects {
        group.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                let i = counter.fetch_add(1, Ordering::Relaxed) as usize % LIST_SIZE;
                subject.storage.get(&format!("/list/ns/k{i:05}")).await.unwrap().unwrap();
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("storage/list_1000");
    group.throughput(Throughput::Elements(LIST_SIZE as u64));
    for subject in &subjects {
        group.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                let listed = subject.storage.list("/list/", ListOptions::default()).await.unwrap();
                assert_eq!(listed.items.len(), LIST_SIZE);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("storage/guaranteed_update");
    for subject in &subjects {
        group.bench_function(BenchmarkId::from_parameter(subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                guaranteed_update::<StorageError, _>(subject.storage.as_ref(), "/counter/c", |current| {
                    let n: u64 =
                        current.map_or(0, |kv| std::str::from_utf8(&kv.value).unwrap().parse().unwrap());
                    Ok(Bytes::from((n + 1).to_string()))
                })
                .await
                .unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = storage_benches
}
criterion_main!(benches);
