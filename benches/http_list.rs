//! GET and LIST through HTTP of 10,000 ConfigMaps of 1 KiB: the real `watchcache` binary
//! fronting a real etcd (Debian's etcd-server, started for the run), side by side with the same
//! reads served by etcd directly (one range request over the prefix, as an API server without a
//! watch cache would issue).
//!
//! Run: `cargo bench --bench http_list`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etcd_client::GetOptions;
use serde_json::json;
use watchcache::storage::Storage;

const OBJECTS: usize = 10_000;

fn configmap(index: usize) -> Bytes {
    let object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": format!("cm-{index:05}"),
            "namespace": "default",
            "uid": format!("00000000-0000-0000-0000-{index:012}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "bench", "shard": (index % 10).to_string()},
        },
        "data": {"payload": "x".repeat(800)},
    });
    Bytes::from(serde_json::to_vec(&object).unwrap())
}

fn http_list(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = common::EtcdCluster::start(1);
    let urls = cluster.client_urls();
    // Load the objects straight into etcd, kube-apiserver's layout.
    runtime.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(cluster.storage("/registry").await);
        let mut tasks = Vec::new();
        for chunk in 0..32 {
            let storage = Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                for index in (chunk..OBJECTS).step_by(32) {
                    storage
                        .create(&format!("/configmaps/default/cm-{index:05}"), configmap(index))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let server = common::ServerProcess::start(&["--etcd-endpoints", &urls[0]]);
    let http = common::Http::new(&server.address, false);
    let mut etcd = runtime.block_on(etcd_client::Client::connect(&urls, None)).unwrap();
    let kv = etcd.kv_client().max_decoding_message_size(256 << 20);
    // Wait until the cache holds everything.
    runtime.block_on(async {
        for _ in 0..600 {
            let reply = http.get("/api/v1/namespaces/default/configmaps?resourceVersion=0&limit=0").await;
            if reply.json()["items"].as_array().map_or(0, Vec::len) == OBJECTS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cache never loaded the objects");
    });
    let list = "/api/v1/namespaces/default/configmaps";

    let mut group = c.benchmark_group("http/list_10k_configmaps");
    group.throughput(Throughput::Elements(OBJECTS as u64));
    group.bench_function(BenchmarkId::from_parameter("watchcache rv=0"), |b| {
        b.to_async(&runtime).iter(|| async {
            let reply = http.get(&format!("{list}?resourceVersion=0")).await;
            assert_eq!(reply.status, 200);
            assert!(reply.body.len() > OBJECTS * 900);
        })
    });
    group.bench_function(BenchmarkId::from_parameter("watchcache consistent"), |b| {
        b.to_async(&runtime).iter(|| async {
            let reply = http.get(list).await;
            assert_eq!(reply.status, 200);
            assert!(reply.body.len() > OBJECTS * 900);
        })
    });
    group.bench_function(BenchmarkId::from_parameter("etcd range"), |b| {
        b.to_async(&runtime).iter(|| {
            let mut kv = kv.clone();
            async move {
                let response = kv
                    .get("/registry/configmaps/default/", Some(GetOptions::new().with_prefix()))
                    .await
                    .unwrap();
                assert_eq!(response.kvs().len(), OBJECTS);
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("http/list_100_of_10k_by_label");
    group.bench_function(BenchmarkId::from_parameter("watchcache rv=0 labelSelector"), |b| {
        b.to_async(&runtime).iter(|| async {
            let reply =
                http.get(&format!("{list}?resourceVersion=0&limit=100&labelSelector=shard%3D3")).await;
            assert_eq!(reply.status, 200);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("http/get_configmap");
    group.bench_function(BenchmarkId::from_parameter("watchcache rv=0"), |b| {
        b.to_async(&runtime).iter(|| async {
            assert_eq!(http.get(&format!("{list}/cm-04242?resourceVersion=0")).await.status, 200);
        })
    });
    group.bench_function(BenchmarkId::from_parameter("watchcache consistent"), |b| {
        b.to_async(&runtime).iter(|| async {
            assert_eq!(http.get(&format!("{list}/cm-04242")).await.status, 200);
        })
    });
    group.bench_function(BenchmarkId::from_parameter("etcd get"), |b| {
        b.to_async(&runtime).iter(|| {
            let mut kv = kv.clone();
            async move {
                let response = kv.get("/registry/configmaps/default/cm-04242", None).await.unwrap();
                assert_eq!(response.kvs().len(), 1);
            }
        })
    });
    group.finish();
    let _ = &mut etcd;
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    targets = http_list
}
criterion_main!(benches);
