//! The watch cache: one [`Cacher`] per resource type serves its gets, lists and watches from
//! memory, kept in step with storage by a reflector. It knows nothing of HTTP.
//!
//! ```text
//!  storage ──watch──▶ reflector ──▶ store (snapshots, arc-swap)   ◀── get / list
//!                         │  └────▶ ring (recent events)          ◀── watchers catching up
//!                         └──────▶ dispatcher ──▶ one queue per watcher ──▶ CacheWatch
//! ```
//!
//! - [`object`]: objects and events decoded once and encoded once, shared as bytes.
//! - [`ring`]: the bounded window of recent events; one producer, lock-free readers.
//! - [`store`]: the current objects as immutable snapshots, and recent ones by revision.
//! - [`dispatcher`]: hands each event to the watchers that can want it, never waiting.
//! - [`watcher`]: the per-watch queue, the catch-up path through the ring, and shedding.
//! - `reflector`: list, replace, watch, re-watch, relist: the only writer of all of the above.
//!
//! # Staleness
//!
//! This is a cache: a read with [`ReadVersion::Any`] may be behind storage. A
//! [`ReadVersion::Consistent`] read first asks storage for its current revision and waits (at
//! most [`CacheConfig::consistent_read_timeout`]) for the cache to reach it, else reads storage;
//! with an etcd whose progress notifications cannot be trusted (see
//! [`crate::storage::Storage::progress_notify_reliable`]) it reads storage unless the events the
//! cache applied already reach storage's revision. Such progress notifications move only the
//! revision that waiters see ([`Cacher::revision`]): a watch from a revision the client read
//! from storage must not wait for an event that will never come, and starts (skipping any event
//! at or below its revision, which may still arrive behind the notification). The ring, the
//! store, bookmarks and the reflector's re-watch point move with applied events only, and a
//! `NotOlderThan` read that only a notification satisfied is served by storage, and so is the
//! initial state of a watch-list (`sendInitialEvents`) that the cache cannot prove current.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

mod dispatcher;
pub mod object;
mod reflector;
pub mod ring;
pub mod store;
pub mod watcher;

pub use dispatcher::DispatchStats;
use dispatcher::{Dispatcher, Registration};
use object::{CachedObject, DecodeError, ResourceConfig};
use ring::{EventRing, RingLimits, RingWriter, TooOld};
use store::{Snapshot, Store, StoreLimits, StoreWriter};
pub use watcher::{CacheWatch, WatchFilter, WatchItem};
use watcher::{Start, WatcherShared};

use crate::storage::{ListOptions, Revision, Storage, StorageError};

/// The default of [`CacheConfig::delivery_linger`].
pub const DEFAULT_DELIVERY_LINGER: Duration = Duration::from_millis(5);

/// Settings of a cacher.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// The event ring's bounds.
    pub ring: RingLimits,
    /// How many past snapshots the store keeps, and for how long.
    pub store: StoreLimits,
    /// The capacity of each watcher's queue (positions, 16 bytes each).
    pub watcher_queue: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How long a consistent read waits for the cache before it reads storage.
    pub consistent_read_timeout: Duration,
    /// How far back (in revisions) the reflector starts its list when storage still has the
    /// history, to refill the ring after a restart.
    pub history_revisions: u64,
    /// Page size of the reflector's lists.
    pub list_page_size: usize,
    /// How long the dispatcher may hold back wake-ups after a flush so that watchers write
    /// several events at once (see `dispatcher`, *Coalescing*). Zero wakes watchers after every
    /// batch of storage events.
    pub delivery_linger: Duration,
    /// How many watchers a flush wakes before the reflector yields to other tasks, so that a
    /// write's request never queues behind a whole fan-out (see `dispatcher`, *Coalescing*).
    pub flush_chunk: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ring: RingLimits::default(),
            store: StoreLimits::default(),
            watcher_queue: 64,
            bookmark_interval: Duration::from_secs(60),
            consistent_read_timeout: Duration::from_secs(3),
            history_revisions: 10_000,
            list_page_size: 1_000,
            delivery_linger: DEFAULT_DELIVERY_LINGER,
            flush_chunk: 32,
        }
    }
}

/// Which revision a read wants (kube's resourceVersion / resourceVersionMatch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadVersion {
    /// resourceVersion unset: as of storage's current revision.
    Consistent,
    /// resourceVersion "0": any revision; the cache's current one.
    Any,
    /// At least this revision (waits, bounded, for the cache to reach it).
    NotOlderThan(Revision),
    /// Exactly this revision (from a retained snapshot, else from storage's history).
    Exact(Revision),
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// The events after this revision (resourceVersion N).
    After(Revision),
    /// ADDED events for the current state first (resourceVersion unset: consistent; "0": any),
    /// then the events after it; with `initial_events_end`, a BOOKMARK annotated
    /// `k8s.io/initial-events-end` after the initial events (sendInitialEvents=true).
    InitialState {
        /// Which state: `Consistent`, `Any` or `NotOlderThan`.
        version: ReadVersion,
        /// Send the initial-events-end bookmark.
        initial_events_end: bool,
    },
}

/// A list request.
#[derive(Debug)]
pub struct ListRequest {
    /// Which objects.
    pub filter: WatchFilter,
    /// At most this many (`None`: all).
    pub limit: Option<usize>,
    /// Continue a paginated list: its revision and the last key it returned.
    pub continue_from: Option<(Revision, String)>,
    /// Which revision, when not continuing.
    pub version: ReadVersion,
}

/// A list answer.
#[derive(Debug)]
pub struct ListResult {
    /// The objects, in key order.
    pub items: Vec<Arc<CachedObject>>,
    /// The revision the list reflects.
    pub revision: Revision,
    /// When more objects follow: the key to continue after (at `revision`).
    pub continue_after: Option<String>,
}

/// The errors of the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The events after the requested revision are gone (watch: 410 Gone).
    #[error(transparent)]
    TooOld(#[from] TooOld),
    /// A paginated list's revision is neither cached nor in storage's history (410 Expired).
    #[error("the list at revision {revision} has expired; start a new list")]
    Expired {
        /// The list's revision.
        revision: Revision,
    },
    /// The cache did not reach the requested revision in time (kube: "Too large resource
    /// version", 504).
    #[error("too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion {
        /// The revision asked for.
        requested: Revision,
        /// The cache's revision.
        current: Revision,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored object could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The cache has not synced with storage yet (kube-apiserver 1.34: 429 "storage is
    /// (re)initializing", Retry-After 1).
    #[error("storage is (re)initializing")]
    NotReady,
    /// The cacher was stopped.
    #[error("the cache is shutting down")]
    Closed,
}

/// Counters a cacher keeps, for metrics. All Relaxed: statistics only.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    pub(crate) watchers: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) overflowed: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) caught_up: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) storage_fallbacks: AtomicU64,
    pub(crate) relists_compacted: AtomicU64,
    pub(crate) relists_event_behind_progress: AtomicU64,
    pub(crate) relists_watch_failed: AtomicU64,
    pub(crate) relists_catch_up_stalled: AtomicU64,
}

/// A point-in-time view of a cacher's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The cache's revision.
    pub revision: Revision,
    /// Events received from storage.
    pub events: u64,
    /// Open watches.
    pub watchers: u64,
    /// (event, watcher) pairs pushed to watcher queues.
    pub delivered: u64,
    /// Times a full queue sent a watcher to catch up from the ring.
    pub overflowed: u64,
    /// Watchers ended because they fell behind the ring.
    pub shed: u64,
    /// Times a watcher that had overflowed caught up from the ring and went back to its queue.
    pub caught_up: u64,
    /// Stored values that could not be decoded.
    pub decode_errors: u64,
    /// Reads served from storage because the cache could not serve them.
    pub storage_fallbacks: u64,
    /// Relists, by cause: the watch's history was compacted, an event arrived behind a
    /// progress notification, the watch failed with an error a retry will not fix, the first
    /// list's catch-up stalled.
    pub relists: Relists,
    /// Events in the ring.
    pub ring_events: usize,
    /// Bytes of events in the ring.
    pub ring_bytes: usize,
    /// The age of the oldest event in the ring.
    pub ring_window: Duration,
    /// Objects in the store.
    pub objects: usize,
}

/// Relists by cause (see [`CacheStats::relists`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relists {
    /// Storage no longer had the history the watch needed.
    pub compacted: u64,
    /// An event arrived behind a progress notification (etcd#15220).
    pub event_behind_progress: u64,
    /// The watch failed with an error a retry will not fix.
    pub watch_failed: u64,
    /// The first list's catch-up from the past stopped moving.
    pub catch_up_stalled: u64,
}

impl Relists {
    /// `(cause label, count)` pairs, for metrics.
    pub fn by_cause(&self) -> [(&'static str, u64); 4] {
        [
            ("compacted", self.compacted),
            ("event_behind_progress", self.event_behind_progress),
            ("watch_failed", self.watch_failed),
            ("catch_up_stalled", self.catch_up_stalled),
        ]
    }
}

/// What the cacher's handles, its watches and its reflector share.
pub(crate) struct CacherShared {
    pub(crate) resource: Arc<ResourceConfig>,
    pub(crate) ring: Arc<EventRing>,
    pub(crate) store: Arc<Store>,
    registrations: mpsc::UnboundedSender<Registration>,
    /// The revision the cache has reached, published by the reflector after each batch and each
    /// progress notification.
    pub(crate) revision: watch::Sender<Revision>,
    /// The revision of the last list or event applied: unlike `revision`, never advanced by a
    /// progress notification. Written by the reflector (Release); read (Acquire) by consistent
    /// reads when storage's progress notifications cannot be trusted.
    pub(crate) event_revision: AtomicU64,
    /// Whether the cache has synced: it has reached the revision storage had when its first
    /// list began (see `reflector`, *Readiness*). Never goes back to false.
    pub(crate) ready: watch::Sender<bool>,
    /// Readers waiting for a revision ask the reflector to request progress from storage.
    pub(crate) progress_requests: Notify,
    pub(crate) stop: Notify,
    /// Set (Release) by `Cacher::stop`; read (Acquire) by readers and watches, which then end.
    closed: AtomicBool,
    pub(crate) counters: Counters,
}

impl CacherShared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn unregister(&self) {
        let _ = self.registrations.send(Registration::Remove);
    }
}

/// The watch cache of one resource type. See the module docs.
pub struct Cacher {
    shared: Arc<CacherShared>,
    storage: Arc<dyn Storage>,
    config: CacheConfig,
}

impl Cacher {
    /// Starts caching `resource` from `storage` (spawns the reflector on the current runtime).
    pub fn start(storage: Arc<dyn Storage>, resource: ResourceConfig, config: CacheConfig) -> Cacher {
        let resource = Arc::new(resource);
        let ring = RingWriter::new(config.ring.clone(), 0);
        let store = StoreWriter::new(config.store.clone(), 0);
        let (registrations, registration_receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(CacherShared {
            resource: Arc::clone(&resource),
            ring: Arc::clone(ring.ring()),
            store: Arc::clone(store.store()),
            registrations,
            revision: watch::Sender::new(0),
            event_revision: AtomicU64::new(0),
            ready: watch::Sender::new(false),
            progress_requests: Notify::new(),
            stop: Notify::new(),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let reflector = reflector::Reflector {
            storage: Arc::clone(&storage),
            shared: Arc::clone(&shared),
            ring,
            store,
            dispatcher: Dispatcher::new(resource),
            registrations: registration_receiver,
            config: config.clone(),
        };
        tokio::spawn(reflector.run());
        Cacher { shared, storage, config }
    }

    /// The resource this cacher serves.
    pub fn resource(&self) -> &ResourceConfig {
        &self.shared.resource
    }

    /// Whether the cache has synced with storage (see `reflector`, *Readiness*).
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits (at most `timeout`) until the cache has synced with storage; whether it has.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.shared.ready.subscribe();
        tokio::time::timeout(timeout, ready.wait_for(|ready| *ready)).await.is_ok_and(|result| result.is_ok())
    }

    /// The cache's current objects, without waiting and without reading storage (the
    /// authorizer evaluates RBAC policy from it on every request).
    pub fn current_snapshot(&self) -> Arc<store::Snapshot> {
        self.shared.store.current()
    }

    /// The revision the cache has reached.
    pub fn revision(&self) -> Revision {
        *self.shared.revision.borrow()
    }

    /// Stops the reflector and ends every watch cleanly.
    pub fn stop(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop.notify_one();
    }

    /// The counters, for metrics.
    pub fn stats(&self) -> CacheStats {
        let counters = &self.shared.counters;
        let snapshot = self.shared.store.current();
        CacheStats {
            revision: self.revision(),
            events: counters.events.load(Ordering::Relaxed),
            watchers: counters.watchers.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            overflowed: counters.overflowed.load(Ordering::Relaxed),
            shed: counters.shed.load(Ordering::Relaxed),
            caught_up: counters.caught_up.load(Ordering::Relaxed),
            decode_errors: counters.decode_errors.load(Ordering::Relaxed),
            storage_fallbacks: counters.storage_fallbacks.load(Ordering::Relaxed),
            relists: Relists {
                compacted: counters.relists_compacted.load(Ordering::Relaxed),
                event_behind_progress: counters.relists_event_behind_progress.load(Ordering::Relaxed),
                watch_failed: counters.relists_watch_failed.load(Ordering::Relaxed),
                catch_up_stalled: counters.relists_catch_up_stalled.load(Ordering::Relaxed),
            },
            ring_events: self.shared.ring.len(),
            ring_bytes: self.shared.ring.bytes(),
            ring_window: self.shared.ring.window_age().unwrap_or_default(),
            objects: snapshot.len(),
        }
    }

    /// Waits (bounded) until the cache has reached `revision`; whether it has.
    async fn wait_for_revision(&self, revision: Revision) -> bool {
        let mut published = self.shared.revision.subscribe();
        if *published.borrow_and_update() >= revision {
            return true;
        }
        self.shared.progress_requests.notify_one();
        let deadline = tokio::time::Instant::now() + self.config.consistent_read_timeout;
        loop {
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    if *published.borrow_and_update() >= revision {
                        return true;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    // Progress requests may be lost across a re-watch: ask again.
                    self.shared.progress_requests.notify_one();
                }
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// The snapshot a read at `version` is served from; `None` when storage must serve it
    /// (with the revision to read storage at, if exact).
    async fn snapshot_for(
        &self,
        version: ReadVersion,
    ) -> Result<Result<Arc<Snapshot>, Option<Revision>>, CacheError> {
        if self.shared.is_closed() {
            return Err(CacheError::Closed);
        }
        if !*self.shared.ready.borrow() {
            match version {
                // Storage can answer these itself, as kube-apiserver delegates them while its
                // cache is not ready: the cache has nothing to wait for.
                ReadVersion::Consistent => return Ok(Err(None)),
                ReadVersion::Exact(revision) => return Ok(Err(Some(revision))),
                // These are the cache's own to serve: wait (bounded), then 429.
                ReadVersion::Any | ReadVersion::NotOlderThan(_) => {
                    if !self.wait_ready(self.config.consistent_read_timeout).await {
                        return Err(CacheError::NotReady);
                    }
                }
            }
        }
        match version {
            ReadVersion::Any => Ok(Ok(self.shared.store.current())),
            ReadVersion::Consistent => {
                let current = self.storage.current_revision().await?;
                let cached = self.shared.store.current();
                if !self.storage.progress_notify_reliable() {
                    // Only events prove the cache current: a progress notification from such an
                    // etcd may run ahead of an event it has yet to send (etcd#15220).
                    if self.shared.event_revision.load(Ordering::Acquire) >= current {
                        return Ok(Ok(cached));
                    }
                    return Ok(Err(None));
                }
                if cached.revision >= current {
                    return Ok(Ok(cached));
                }
                if self.wait_for_revision(current).await {
                    Ok(Ok(self.shared.store.current()))
                } else {
                    Ok(Err(None))
                }
            }
            ReadVersion::NotOlderThan(revision) => {
                if self.wait_for_revision(revision).await {
                    let snapshot = self.shared.store.current();
                    if snapshot.revision >= revision {
                        Ok(Ok(snapshot))
                    } else {
                        // Reached by an unreliable progress notification only: storage serves.
                        Ok(Err(None))
                    }
                } else {
                    Err(CacheError::TooLargeResourceVersion { requested: revision, current: self.revision() })
                }
            }
            ReadVersion::Exact(revision) => match self.shared.store.at(revision) {
                Some(snapshot) => Ok(Ok(snapshot)),
                None => Ok(Err(Some(revision))),
            },
        }
    }

    /// Gets the object at `key`.
    pub async fn get(
        &self,
        key: &str,
        version: ReadVersion,
    ) -> Result<Option<Arc<CachedObject>>, CacheError> {
        match self.snapshot_for(version).await? {
            Ok(snapshot) => Ok(snapshot.get(key).cloned()),
            Err(exact) => {
                self.shared.counters.storage_fallbacks.fetch_add(1, Ordering::Relaxed);
                let found = match exact {
                    None => self.storage.get(key).await?,
                    Some(revision) => {
                        let listed = self
                            .storage
                            .list(
                                key,
                                ListOptions {
                                    revision: Some(revision),
                                    limit: Some(1),
                                    continue_after: None,
                                },
                            )
                            .await?;
                        listed.items.into_iter().find(|kv| kv.key == key)
                    }
                };
                match found {
                    None => Ok(None),
                    Some(kv) => Ok(Some(Arc::new(CachedObject::decode(
                        &kv.key,
                        &kv.value,
                        kv.mod_revision,
                        &self.shared.resource,
                    )?))),
                }
            }
        }
    }

    /// Lists the objects that pass `request.filter`.
    pub async fn list(&self, request: &ListRequest) -> Result<ListResult, CacheError> {
        let prefix = match &request.filter.namespace {
            Some(namespace) => format!("{}{namespace}/", self.shared.resource.prefix),
            None => self.shared.resource.prefix.clone(),
        };
        let (version, after) = match &request.continue_from {
            Some((revision, after)) => (ReadVersion::Exact(*revision), Some(after.as_str())),
            None => (request.version, None),
        };
        let limit = request.limit.filter(|&limit| limit > 0).unwrap_or(usize::MAX);
        match self.snapshot_for(version).await? {
            Ok(snapshot) => {
                let mut items = Vec::new();
                let mut continue_after = None;
                for object in snapshot.range(&prefix, after) {
                    if !request.filter.matches(object) {
                        continue;
                    }
                    if items.len() == limit {
                        continue_after = items.last().map(|last: &Arc<CachedObject>| last.key.to_string());
                        break;
                    }
                    items.push(Arc::clone(object));
                }
                if continue_after.is_some() {
                    // The next page must read the same state, however many writes come first.
                    self.shared.store.pin(&snapshot);
                }
                Ok(ListResult { items, revision: snapshot.revision, continue_after })
            }
            Err(exact) => self.list_from_storage(&prefix, request, exact, after, limit).await,
        }
    }

    async fn list_from_storage(
        &self,
        prefix: &str,
        request: &ListRequest,
        revision: Option<Revision>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, CacheError> {
        self.shared.counters.storage_fallbacks.fetch_add(1, Ordering::Relaxed);
        let mut items = Vec::new();
        let mut after = after.map(str::to_owned);
        let mut revision = revision;
        loop {
            let page = self
                .storage
                .list(prefix, ListOptions { revision, limit: Some(1_000), continue_after: after.take() })
                .await
                .map_err(|error| match (error, request.continue_from.as_ref()) {
                    (StorageError::Compacted { .. }, Some((revision, _))) => {
                        CacheError::Expired { revision: *revision }
                    }
                    (StorageError::Compacted { requested, .. }, None) => {
                        CacheError::Expired { revision: requested }
                    }
                    (error, _) => CacheError::Storage(error),
                })?;
            revision = Some(page.revision);
            for kv in &page.items {
                let object =
                    CachedObject::decode(&kv.key, &kv.value, kv.mod_revision, &self.shared.resource)?;
                if !request.filter.matches(&object) {
                    continue;
                }
                if items.len() == limit {
                    let continue_after = items.last().map(|last: &Arc<CachedObject>| last.key.to_string());
                    return Ok(ListResult { items, revision: page.revision, continue_after });
                }
                items.push(Arc::new(object));
            }
            if !page.more {
                return Ok(ListResult { items, revision: page.revision, continue_after: None });
            }
            after = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// The objects of `namespace` (all namespaces when `None`) as storage has them now.
    async fn storage_snapshot(&self, namespace: Option<&str>) -> Result<Arc<Snapshot>, CacheError> {
        let prefix = match namespace {
            Some(namespace) => format!("{}{namespace}/", self.shared.resource.prefix),
            None => self.shared.resource.prefix.clone(),
        };
        let request = ListRequest {
            filter: WatchFilter::everything(),
            limit: None,
            continue_from: None,
            version: ReadVersion::Consistent,
        };
        let listed = self.list_from_storage(&prefix, &request, None, None, usize::MAX).await?;
        Ok(Arc::new(Snapshot {
            revision: listed.revision,
            changed: listed.revision,
            objects: listed.items.into_iter().map(|object| (Arc::clone(&object.key), object)).collect(),
        }))
    }

    /// Starts a watch.
    pub async fn watch(
        &self,
        filter: WatchFilter,
        start: WatchStart,
        bookmarks: bool,
    ) -> Result<CacheWatch, CacheError> {
        if self.shared.is_closed() {
            return Err(CacheError::Closed);
        }
        if !self.wait_ready(self.config.consistent_read_timeout).await {
            return Err(CacheError::NotReady);
        }
        let start = match start {
            WatchStart::After(revision) => {
                // A revision the cache has not reached yet: wait for it (bounded), as kube does.
                if revision > self.shared.ring.revision() && !self.wait_for_revision(revision).await {
                    return Err(CacheError::TooLargeResourceVersion {
                        requested: revision,
                        current: self.revision(),
                    });
                }
                // Fail now, not at the first read, if the revision is too old.
                self.shared.ring.seq_after(revision)?;
                Start::After(revision)
            }
            WatchStart::InitialState { version, initial_events_end } => {
                let snapshot = match self.snapshot_for(version).await? {
                    Ok(snapshot) => snapshot,
                    // The cache cannot be proven current (an etcd whose progress notifications
                    // cannot be trusted, or a cache that did not catch up in time): the initial
                    // state comes from storage, so that the initial-events-end bookmark is not
                    // older than the client asked for. The watch then skips any event at or
                    // below that revision that the cache applies later.
                    Err(_) => self.storage_snapshot(filter.namespace.as_deref()).await?,
                };
                Start::Snapshot { snapshot, initial_events_end }
            }
        };
        let shared = Arc::new(WatcherShared::new(filter, self.config.watcher_queue));
        self.shared
            .registrations
            .send(Registration::Add(Arc::clone(&shared)))
            .map_err(|_| CacheError::Closed)?;
        let interval = bookmarks.then_some(self.config.bookmark_interval);
        // Counted here and uncounted when the watch is dropped.
        self.shared.counters.watchers.fetch_add(1, Ordering::Relaxed);
        Ok(CacheWatch::new(shared, Arc::clone(&self.shared), start, interval))
    }
}

impl Drop for Cacher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Internals exposed for the criterion benches in `benches/`; not part of the API.
#[doc(hidden)]
pub mod bench_support {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    pub use super::dispatcher::Dispatcher;
    use super::dispatcher::Registration;
    use super::object::{CachedEvent, ResourceConfig};
    use super::watcher::{Mode, WatchFilter, WatcherShared};

    /// A watcher as the dispatcher sees it, already live.
    pub struct BenchWatcher(pub(crate) Arc<WatcherShared>);

    impl BenchWatcher {
        /// A live watcher with `filter` and a queue of `capacity`.
        pub fn new(filter: WatchFilter, capacity: usize) -> BenchWatcher {
            let shared = Arc::new(WatcherShared::new(filter, capacity));
            // Before the watcher is shared with any other thread: any ordering would do.
            shared.mode.store(Mode::LIVE, Ordering::SeqCst);
            BenchWatcher(shared)
        }

        /// Pops everything queued (the consumer's side); returns how many.
        pub fn drain(&self) -> usize {
            self.0.drain_for_bench()
        }
    }

    /// A dispatcher for `resource`.
    pub fn dispatcher(resource: ResourceConfig) -> Dispatcher {
        Dispatcher::new(Arc::new(resource))
    }

    /// Registers `watcher` with `dispatcher`.
    pub fn register(dispatcher: &mut Dispatcher, watcher: &BenchWatcher) {
        dispatcher.register(Registration::Add(Arc::clone(&watcher.0)));
    }

    /// Dispatches `event`.
    pub fn dispatch(dispatcher: &mut Dispatcher, event: &CachedEvent) {
        dispatcher.dispatch(event);
    }
}
