//! Heap bytes per cached object, against the object's JSON: a counting global allocator
//! measures the live heap that a resource's store and event ring hold after N ConfigMaps enter
//! them the way the reflector feeds them (each write decoded once, an event pushed to the ring,
//! the store updated and a snapshot published per event), for 10,000 and 100,000 objects of about
//! 1 KiB and 10,000 of about 10 KiB. Counts the snapshot store and the snapshots it retains for
//! pagination (none unless paginated lists pin them), the ring's events and slot array, the
//! decoded metadata and every byte those share. Then every object is updated once: the ring then holds each object's previous state as
//! well, as kube's watch cache does.
//!
//! The counts are the sizes asked of the allocator (its own rounding and caches are not
//! counted: RSS is the `perf/` figure).
//!
//! Run: `cargo bench --bench object_memory`; `OBJECT_MEMORY_SIZES=10000x1024,100000x1024` picks
//! the sizes (each runs in a process of its own), `OBJECT_MEMORY_PINNED=N` pins N snapshots
//! spread evenly over the writes, as N paginated lists in progress would (default 0).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use watchcache::cacher::object::{CachedEvent, CachedObject, EventType, ResourceConfig};
use watchcache::cacher::ring::{RingLimits, RingWriter};
use watchcache::cacher::store::{StoreLimits, StoreWriter};

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

fn measure(count: usize, size: usize, pinned: usize) {
    let resource = config_maps();
    let before = LIVE.load(Ordering::SeqCst);
    let ring_limits = RingLimits::default();
    let store_limits = StoreLimits::default();
    let pin_every = (2 * count).checked_div(pinned).map_or(usize::MAX, |every| every.max(1));
    let mut store = StoreWriter::new(store_limits, 0);
    let mut ring = RingWriter::new(ring_limits, 0);
    let mut json_bytes = 0;
    let mut revision = 0;
    for generation in 0..2 {
        for index in 0..count {
            let value = config_map(index, size, generation);
            if generation == 0 {
                json_bytes += value.len();
            }
            revision += 1;
            let key: Arc<str> = Arc::from(format!("/configmaps/default/settings-{index:06}"));
            let object = Arc::new(
                CachedObject::decode_with_key(Arc::clone(&key), &value, revision, &resource).unwrap(),
            );
            let prev = store.get(&key).cloned();
            let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
            let event = Arc::new(CachedEvent::new(ring.next_seq(), kind, Arc::clone(&object), prev));
            store.apply(&key, Some(object), revision);
            store.publish();
            if revision as usize % pin_every == 0 {
                store.store().pin(&store.store().current());
            }
            ring.push(event);
        }
        // Snapshots dropped from the retained set are freed through crossbeam's epochs, later:
        // collect that garbage before counting.
        for _ in 0..256 {
            crossbeam::epoch::pin().flush();
        }
        let held = LIVE.load(Ordering::SeqCst) - before;
        let json_per_object = json_bytes as f64 / count as f64;
        let per_object = held as f64 / count as f64;
        let state = if generation == 0 { "created" } else { "each updated once" };
        println!(
            "{count} objects of {json_per_object:.0} B JSON, {state}, {} snapshots pinned: {per_object:.0} B per object ({:.2}x JSON); ring {} events, ring bytes bound {:.0} B per object",
            store.store().retained_count(),
            per_object / json_per_object,
            ring.ring().len(),
            ring.ring().bytes() as f64 / count as f64,
        );
    }
}

fn main() {
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
    let pinned = match std::env::var("OBJECT_MEMORY_PINNED") {
        Ok(text) => text.parse().expect("a number of snapshots"),
        Err(_) => 0,
    };
    if let [(count, size)] = sizes[..] {
        measure(count, size, pinned);
        return;
    }
    // One process per size: garbage a run leaves to crossbeam's epochs would otherwise be freed
    // during the next run and counted against it.
    for (count, size) in sizes {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("OBJECT_MEMORY_SIZES", format!("{count}x{size}"))
            .env("OBJECT_MEMORY_PINNED", pinned.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}
