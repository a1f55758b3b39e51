//! Heap bytes per cached object, against the object's JSON: a counting global allocator
//! measures the live heap before and after a cacher loads N ConfigMaps that are already in the
//! in-memory embedded store (so the store's own copy is not counted), for 10,000 and 100,000
//! objects of about 1 KiB and 10,000 of about 10 KiB. Counts the snapshot store, the ring of
//! events the reflector replays (it lists a little in the past and replays the rest, so the ring
//! holds an ADDED event per object), the decoded metadata and every byte those share. Then every
//! object is updated once and a new cacher loads again: its ring then holds each object's
//! previous state as well, as kube's watch cache does.
//!
//! Run: `cargo bench --bench object_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use watchcache::cacher::object::ResourceConfig;
use watchcache::cacher::{CacheConfig, Cacher};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::Storage;

/// Counts the live heap bytes of the whole process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` was allocated by this allocator (hence `System`) with `layout`.
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc` and `alloc`.
        let new = unsafe { System.realloc(pointer, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn config_maps() -> ResourceConfig {
    ResourceConfig {
        prefix: "/configmaps/".into(),
        kind: "ConfigMap".into(),
        api_version: "v1".into(),
        namespaced: true,
        selectable_fields: vec![],
        indexed_field: None,
    }
}

/// A ConfigMap of about `size` bytes of JSON, as kube-apiserver would store it.
fn config_map(index: usize, size: usize, generation: usize) -> Vec<u8> {
    let name = format!("settings-{index:06}");
    let mut data = serde_json::Map::new();
    let mut key = 0;
    let skeleton = 330;
    while data
        .iter()
        .map(|(k, v): (&String, &serde_json::Value)| k.len() + v.as_str().unwrap().len() + 6)
        .sum::<usize>()
        + skeleton
        < size
    {
        data.insert(
            format!("key-{key:03}"),
            serde_json::Value::String(format!("value-{generation}-{index}-{key}-").repeat(3)),
        );
        key += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "uid": format!("6f1d7c1e-3f4a-4b8e-9a51-{index:012}"),
            "creationTimestamp": "2026-11-30T09:14:02Z", "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"owner": "platform-team"}},
        "data": data,
    }))
    .unwrap()
}

async fn measure(count: usize, size: usize) {
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
    let mut json_bytes = 0;
    for index in 0..count {
        let value = config_map(index, size, 0);
        json_bytes += value.len();
        storage
            .create(&format!("/configmaps/default/settings-{index:06}"), Bytes::from(value))
            .await
            .unwrap();
    }
    let json_per_object = json_bytes as f64 / count as f64;
    report("created", count, json_per_object, &storage).await;
    for index in 0..count {
        let key = format!("/configmaps/default/settings-{index:06}");
        let current = storage.get(&key).await.unwrap().unwrap();
        storage.update(&key, Bytes::from(config_map(index, size, 1)), current.mod_revision).await.unwrap();
    }
    report("each updated once", count, json_per_object, &storage).await;
}

/// Starts a cacher that replays the whole history into its ring, and prints what it holds.
async fn report(state: &str, count: usize, json_per_object: f64, storage: &Arc<dyn Storage>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = LIVE.load(Ordering::SeqCst);
    let config = CacheConfig { history_revisions: count as u64 * 3, ..Default::default() };
    let cacher = Cacher::start(Arc::clone(storage), config_maps(), config);
    assert!(cacher.wait_ready(Duration::from_secs(120)).await, "the cache did not load");
    // The reflector lists in the past and replays the rest: wait until it has all of it.
    let target = storage.current_revision().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while cacher.revision() < target && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = cacher.stats();
    assert_eq!((stats.objects, stats.revision), (count, target));
    let held = LIVE.load(Ordering::SeqCst) - before;
    let per_object = held as f64 / count as f64;
    println!(
        "{count} objects of {json_per_object:.0} B JSON, {state}: {per_object:.0} B per object ({:.2}x JSON); ring {} events, ring_bytes {:.0} B per object",
        per_object / json_per_object,
        stats.ring_events,
        stats.ring_bytes as f64 / count as f64,
    );
    cacher.stop();
    drop(cacher);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let sizes: Vec<(usize, usize)> = match std::env::var("OBJECT_MEMORY_SIZES") {
            Ok(text) => text
                .split(',')
                .map(|pair| {
                    let (count, size) = pair.split_once('x').expect("COUNTxSIZE");
                    (count.parse().unwrap(), size.parse().unwrap())
                })
                .collect(),
            Err(_) => vec![(10_000, 1_024), (10_000, 10_240), (100_000, 1_024)],
        };
        for (count, size) in sizes {
            measure(count, size).await;
        }
    });
}
