//! Heap bytes per idle watch: a counting global allocator measures the live heap before and
//! after opening 10,000 watches (all namespaces, no selectors, from the current revision) on a
//! pods cacher over the in-memory embedded store, once each watch has been polled and the
//! reflector has registered it. Counts everything a watch costs: the `CacheWatch` itself (kept
//! in a `Vec`, as an HTTP response future would keep it on the heap), its shared state and
//! queue, and its slot in the dispatcher's index.
//!
//! Run: `cargo bench --bench watcher_memory`. Prints one line per queue capacity.

mod support;

use support::pods;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use watchcache::cacher::{CacheConfig, CacheWatch, Cacher, WatchFilter, WatchStart};
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

const WATCHES: usize = 10_000;

/// Polls every watch once without waiting: it positions itself in the ring and, once the
/// reflector has registered it, switches to its queue.
async fn poll_all(watches: &mut [CacheWatch]) {
    for watch in watches {
        let polled = tokio::time::timeout(Duration::ZERO, watch.next()).await;
        assert!(polled.is_err(), "an idle watch has nothing to send: {polled:?}");
    }
}

async fn bytes_per_watch(storage: &Arc<dyn Storage>, watcher_queue: usize) -> isize {
    let cacher =
        Cacher::start(Arc::clone(storage), pods(), CacheConfig { watcher_queue, ..Default::default() });
    assert!(cacher.wait_ready(Duration::from_secs(10)).await, "the cache did not load");
    // One watch first, so that lazily built runtime and cacher state is not counted.
    let mut warm = vec![cacher
        .watch(WatchFilter::everything(), WatchStart::After(cacher.revision()), false)
        .await
        .unwrap()];
    poll_all(&mut warm).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = LIVE.load(Ordering::SeqCst);
    let mut watches = Vec::with_capacity(WATCHES);
    for _ in 0..WATCHES {
        let watch = cacher
            .watch(WatchFilter::everything(), WatchStart::After(cacher.revision()), false)
            .await
            .unwrap();
        watches.push(watch);
    }
    poll_all(&mut watches).await;
    // Let the reflector drain the registrations, then poll again so every watch goes live.
    tokio::time::sleep(Duration::from_millis(200)).await;
    poll_all(&mut watches).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = LIVE.load(Ordering::SeqCst);
    // Sanity, after the measurement: one write reaches the reflector, which then publishes its
    // watcher gauge; every watch must be registered.
    let key = format!("/pods/default/probe-{watcher_queue}");
    let pod = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"probe","namespace":"default"}}"#;
    storage.create(&key, Bytes::from_static(pod)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cacher.stats().events == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = cacher.stats();
    assert_eq!(stats.watchers as usize, WATCHES + 1, "every watch is registered: {stats:?}");

    drop(watches);
    drop(warm);
    cacher.stop();
    (after - before) / WATCHES as isize
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        for queue in [64, 16] {
            // A fresh, empty store each time, so that no earlier write is replayed to the watches.
            let storage: Arc<dyn Storage> =
                Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
            let bytes = bytes_per_watch(&storage, queue).await;
            println!("idle watcher heap: {bytes} bytes (queue {queue})");
        }
    });
}
