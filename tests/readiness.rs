//! Honest readiness, through the real binary: after a restart over a store with thousands of
//! objects, `/readyz` is not 200 before the caches have synced, and no list served from the cache
//! ever shows a partial state or goes back in resourceVersion.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{http_get, ServerProcess};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::Storage;

const CONFIGMAPS: usize = 5_000;

fn configmap(index: usize) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "name": format!("cm-{index:05}"),
                "namespace": "default",
                "uid": format!("00000000-0000-0000-0000-{index:012}"),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "data": {"index": index.to_string()},
        }))
        .unwrap(),
    )
}

/// Writes the ConfigMaps straight into the embedded store under `dir`, 64 at a time.
fn fill(dir: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let storage = Arc::new(EmbeddedStorage::open(dir, EmbeddedOptions::default()).unwrap());
        for chunk in (0..CONFIGMAPS).collect::<Vec<_>>().chunks(64) {
            let writes: Vec<_> = chunk
                .iter()
                .map(|&index| {
                    let storage = Arc::clone(&storage);
                    tokio::spawn(async move {
                        storage.create(&format!("/configmaps/default/cm-{index:05}"), configmap(index)).await
                    })
                })
                .collect();
            for write in writes {
                write.await.unwrap().unwrap();
            }
        }
    });
}

#[test]
fn a_restart_is_not_ready_until_synced_and_never_serves_a_partial_list() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    fill(&data_dir);
    let server = ServerProcess::start(&["--data-dir", data_dir.to_str().unwrap()]);
    // From the moment the port is open: readiness, then a resourceVersion=0 list, over and over.
    let started = Instant::now();
    let mut ready_at = None;
    let mut lists_while_ready = 0;
    let mut not_ready_lists = 0;
    let mut last_revision = 0u64;
    while ready_at.is_none_or(|at: Duration| started.elapsed() < at + Duration::from_secs(2)) {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        let (ready, _) = http_get(&server.address, "/readyz");
        if ready == 200 && ready_at.is_none() {
            ready_at = Some(started.elapsed());
        }
        assert!(ready == 200 || ready_at.is_none(), "readiness went back to {ready}");
        let (status, body) =
            http_get(&server.address, "/api/v1/namespaces/default/configmaps?resourceVersion=0");
        match status {
            200 => {
                let list: serde_json::Value = serde_json::from_str(&body).unwrap();
                let items = list["items"].as_array().unwrap().len();
                assert_eq!(items, CONFIGMAPS, "a list showed a partial state (ready: {ready})");
                let revision: u64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                assert!(revision >= last_revision, "resourceVersion went back: {revision} < {last_revision}");
                last_revision = revision;
                if ready == 200 {
                    lists_while_ready += 1;
                }
            }
            429 => {
                // Not synced yet: kube-apiserver's answer, never while ready.
                assert_ne!(ready, 200, "a ready server answered 429: {body}");
                let status: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(status["reason"], "TooManyRequests");
                assert_eq!(status["details"]["retryAfterSeconds"], 1);
                not_ready_lists += 1;
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert!(lists_while_ready > 0);
    eprintln!(
        "ready after {:?}; {lists_while_ready} full lists while ready, {not_ready_lists} answered 429 before",
        ready_at.unwrap()
    );
}
