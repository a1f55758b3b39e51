//! The dispatcher: hands each event to the watchers that can want it, never waiting for any.
//!
//! Owned by the reflector task, which calls [`Dispatcher::dispatch`] after appending an event to
//! the ring. Watchers are indexed by the most selective key their filter allows:
//!
//! - by name (`fieldSelector=metadata.name=x`, in a namespace or not),
//! - by the resource's indexed field (pods: `spec.nodeName=node-1`),
//! - by namespace (a namespaced watch),
//! - or in the "everything" bucket.
//!
//! An event is offered to the watchers of its namespace, its name, the indexed field value of
//! the object before and after the write, and the everything bucket; each candidate's full filter
//! (label and field selectors) then decides, on both states, how the event reaches it. The cost
//! of an event is therefore proportional to the watchers that can want it, not to all watchers.
//!
//! New watches and ended ones reach the dispatcher through a channel, applied before each event;
//! ended watchers are swept out of the index lazily. A watcher that is not live (catching up
//! from the ring, or closed) is skipped before its filter is evaluated.
//!
//! # Coalescing
//!
//! An offer queues a position but wakes nobody. The watchers an event reached are remembered
//! (once each, in the order they were reached) and woken by a *flush*, which the reflector starts
//! after a batch of storage events once a linger ([`super::CacheConfig::delivery_linger`],
//! `--watch-delivery-linger`, 5 ms by default) has passed since the end of the previous flush, or
//! at once when half a queue of events is pending. The first batch after a quiet spell therefore
//! goes out at once; under load each woken watch writes everything queued for it in one write,
//! and since the linger counts from the end of a flush, the longer a fan-out takes the more
//! events the next one carries: coalescing grows with load by itself. The cost is latency: at
//! most one linger plus one flush. Wake-ups are deferred, never dropped.
//!
//! A flush wakes [`super::CacheConfig::flush_chunk`] watchers (32) at a time and the reflector
//! yields between chunks ([`Dispatcher::flush_some`]), so that the runtime polls other tasks
//! (a write's request, its storage reply) between chunks instead of after the whole fan-out.
//! Measured in BENCHMARKS.md (*Watch fan-out*): without chunks a closed-loop writer reached 112
//! of 500 writes/s at 1,000 watchers; with chunks of 32 and the linger, 500/s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::object::{CachedEvent, CachedObject, Delivery, ResourceConfig};
use super::watcher::{Offered, WatcherShared};

/// For benchmarking only (`perf/node_watch.rs`): when this environment variable is set to
/// anything but "" or "0" at startup, watchers are never indexed by the resource's indexed
/// field; a `spec.nodeName=x` watch of all namespaces then lands in the "everything" bucket and
/// its filter is evaluated for every event. The events each watcher receives are the same.
pub const NO_FIELD_INDEX_ENV: &str = "WATCHCACHE_BENCH_NO_FIELD_INDEX";

/// Whether watchers are indexed by field ([`NO_FIELD_INDEX_ENV`], read once per process).
fn field_index_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var_os(NO_FIELD_INDEX_ENV).is_none_or(|value| value.is_empty() || value == "0")
    })
}

/// A change to the set of watchers.
pub(crate) enum Registration {
    Add(Arc<WatcherShared>),
    Remove,
}

/// Where a watcher is indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IndexKey {
    Everything,
    Namespace(String),
    /// (namespace or "" for all namespaces, name)
    Name(String, String),
    Field(String),
}

/// Counters the dispatcher keeps (read for metrics).
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchStats {
    /// Watchers currently registered.
    pub watchers: usize,
    /// (event, watcher) deliveries pushed to queues.
    pub delivered: u64,
    /// Times a full queue switched a watcher to catching up.
    pub overflowed: u64,
}

type Bucket = Vec<Arc<WatcherShared>>;

/// The dispatcher of one cacher (see the module docs).
pub struct Dispatcher {
    resource: Arc<ResourceConfig>,
    everything: Bucket,
    by_namespace: HashMap<String, Bucket>,
    /// Namespace ("" for all namespaces or cluster-scoped) → name → watchers.
    by_name: HashMap<String, HashMap<String, Bucket>>,
    by_field: HashMap<String, Bucket>,
    /// Whether watchers of one indexed field value go to `by_field` (see [`NO_FIELD_INDEX_ENV`]).
    field_index: bool,
    closed_since_sweep: usize,
    /// Watchers to wake, in the order the events reached them (each once: `wake_pending`).
    pending: VecDeque<Arc<WatcherShared>>,
    /// Events dispatched since the last flush.
    pending_events: usize,
    pub(crate) stats: DispatchStats,
}

impl Dispatcher {
    pub(crate) fn new(resource: Arc<ResourceConfig>) -> Self {
        Dispatcher {
            resource,
            everything: Vec::new(),
            by_namespace: HashMap::new(),
            by_name: HashMap::new(),
            by_field: HashMap::new(),
            field_index: field_index_enabled(),
            closed_since_sweep: 0,
            pending: VecDeque::new(),
            pending_events: 0,
            stats: DispatchStats::default(),
        }
    }

    fn index_key(&self, watcher: &WatcherShared) -> IndexKey {
        let filter = &watcher.filter;
        if let Some(name) = filter.fields.required_value("metadata.name") {
            let namespace = filter
                .namespace
                .clone()
                .or_else(|| filter.fields.required_value("metadata.namespace").map(str::to_owned))
                .unwrap_or_default();
            return IndexKey::Name(namespace, name.to_owned());
        }
        if let (Some(field), true) = (&self.resource.indexed_field, self.field_index) {
            if let Some(value) = filter.fields.required_value(field) {
                return IndexKey::Field(value.to_owned());
            }
        }
        if let Some(namespace) = &filter.namespace {
            return IndexKey::Namespace(namespace.clone());
        }
        if let Some(namespace) = filter.fields.required_value("metadata.namespace") {
            return IndexKey::Namespace(namespace.to_owned());
        }
        IndexKey::Everything
    }

    /// Applies a registration.
    pub(crate) fn register(&mut self, registration: Registration) {
        match registration {
            Registration::Add(watcher) => {
                let key = self.index_key(&watcher);
                // Release: the watch may switch to its queue once it sees this.
                watcher.registered.store(true, Ordering::Release);
                watcher.wake();
                match key {
                    IndexKey::Everything => self.everything.push(watcher),
                    IndexKey::Namespace(namespace) => {
                        self.by_namespace.entry(namespace).or_default().push(watcher)
                    }
                    IndexKey::Name(namespace, name) => {
                        self.by_name.entry(namespace).or_default().entry(name).or_default().push(watcher)
                    }
                    IndexKey::Field(value) => self.by_field.entry(value).or_default().push(watcher),
                }
                self.stats.watchers += 1;
            }
            Registration::Remove => {
                self.stats.watchers = self.stats.watchers.saturating_sub(1);
                self.closed_since_sweep += 1;
                if self.closed_since_sweep > 64 && self.closed_since_sweep * 2 > self.stats.watchers {
                    self.sweep();
                }
            }
        }
    }

    /// Drops ended watchers from the index.
    pub(crate) fn sweep(&mut self) {
        fn sweep_map(map: &mut HashMap<String, Bucket>) {
            map.retain(|_, watchers| {
                watchers.retain(|watcher| !watcher.is_closed());
                !watchers.is_empty()
            });
        }
        self.everything.retain(|watcher| !watcher.is_closed());
        sweep_map(&mut self.by_namespace);
        sweep_map(&mut self.by_field);
        self.by_name.retain(|_, names| {
            sweep_map(names);
            !names.is_empty()
        });
        self.closed_since_sweep = 0;
    }

    /// Offers `event` to every watcher that can want it. Never blocks and wakes nobody: the
    /// watchers it reached are woken by the next [`Dispatcher::flush`].
    pub(crate) fn dispatch(&mut self, event: &CachedEvent) {
        self.pending_events += 1;
        let Dispatcher { everything, by_namespace, by_name, by_field, stats, resource, pending, .. } = self;
        let mut offer = |watchers: &[Arc<WatcherShared>]| {
            for watcher in watchers {
                // Catching up or closed: nothing to do, and no filter to evaluate.
                if !watcher.is_live() {
                    continue;
                }
                let Some(delivery) = watcher.filter.delivery(event) else { continue };
                if delivery == Delivery::AsDeleted {
                    // Build the transition's state here, once, rather than in the first watcher
                    // to read it.
                    event.deleted_state(resource);
                }
                stats.delivered += 1;
                if watcher.offer(event, delivery) == Offered::Overflowed {
                    stats.overflowed += 1;
                }
                // Relaxed: only the dispatcher reads and writes it.
                if !watcher.wake_pending.swap(true, Ordering::Relaxed) {
                    pending.push_back(Arc::clone(watcher));
                }
            }
        };
        offer(everything);
        let object = &event.object;
        if !by_namespace.is_empty() && !object.namespace.is_empty() {
            if let Some(watchers) = by_namespace.get(&*object.namespace) {
                offer(watchers);
            }
        }
        if !by_name.is_empty() {
            // A name watch without a namespace sees that name in every namespace.
            for namespace in [&*object.namespace, ""] {
                if let Some(watchers) = by_name.get(namespace).and_then(|names| names.get(&*object.name)) {
                    offer(watchers);
                }
                if object.namespace.is_empty() {
                    break;
                }
            }
        }
        if let (Some(field), false) = (&resource.indexed_field, by_field.is_empty()) {
            let now = field_of(object, field);
            if let Some(watchers) = by_field.get(now) {
                offer(watchers);
            }
            if let Some(before) = event.prev.as_deref().map(|prev| field_of(prev, field)) {
                if before != now {
                    if let Some(watchers) = by_field.get(before) {
                        offer(watchers);
                    }
                }
            }
        }
    }

    /// Whether some watcher waits for a wake-up.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Events dispatched since the last flush.
    pub(crate) fn pending_events(&self) -> usize {
        self.pending_events
    }

    /// Wakes every watcher an event reached since the last flush.
    pub(crate) fn flush(&mut self) {
        while self.flush_some(usize::MAX) {}
    }

    /// Forgets the wake-ups held back (the watchers are being closed, which wakes them).
    pub(crate) fn discard_pending(&mut self) {
        for watcher in self.pending.drain(..) {
            watcher.wake_pending.store(false, Ordering::Relaxed);
        }
        self.pending_events = 0;
    }

    /// Wakes at most `max` of the watchers waiting for a wake-up, oldest first; whether some
    /// still wait. The reflector wakes a flush's watchers a chunk at a time and yields between
    /// chunks, so that the tasks of other requests (writes above all) never queue behind a
    /// whole fan-out.
    pub(crate) fn flush_some(&mut self, max: usize) -> bool {
        self.pending_events = 0;
        for _ in 0..max {
            let Some(watcher) = self.pending.pop_front() else { return false };
            watcher.wake_pending.store(false, Ordering::Relaxed);
            watcher.wake();
        }
        !self.pending.is_empty()
    }

    /// Every registered watcher.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<WatcherShared>> {
        self.everything
            .iter()
            .chain(self.by_namespace.values().flatten())
            .chain(self.by_name.values().flat_map(|names| names.values().flatten()))
            .chain(self.by_field.values().flatten())
    }
}

fn field_of<'a>(object: &'a CachedObject, field: &str) -> &'a str {
    use crate::selector::FieldSource;
    object.field(field).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cacher::object::EventType;
    use crate::cacher::watcher::{Mode, WatchFilter};
    use crate::selector::{FieldSelector, LabelSelector};

    fn pods() -> Arc<ResourceConfig> {
        Arc::new(ResourceConfig {
            prefix: "/pods/".into(),
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec!["spec.nodeName".into()],
            indexed_field: Some("spec.nodeName".into()),
        })
    }

    fn pod(namespace: &str, name: &str, node: &str, revision: u64) -> Arc<CachedObject> {
        let value = format!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{namespace}"}},"spec":{{"nodeName":"{node}"}}}}"#
        );
        Arc::new(
            CachedObject::decode(&format!("/pods/{namespace}/{name}"), value.as_bytes(), revision, &pods())
                .unwrap(),
        )
    }

    fn watcher(namespace: Option<&str>, fields: &str) -> Arc<WatcherShared> {
        let filter = WatchFilter {
            namespace: namespace.map(str::to_owned),
            labels: LabelSelector::everything(),
            fields: FieldSelector::parse(fields, &["metadata.name", "metadata.namespace", "spec.nodeName"])
                .unwrap(),
        };
        let watcher = Arc::new(WatcherShared::new(filter, 1024));
        // Before the watcher is shared with any other thread: any ordering would do.
        watcher.mode.store(Mode::LIVE, Ordering::SeqCst);
        watcher
    }

    /// What each watcher received, in order: (ring position, how).
    fn run(field_index: bool) -> (Vec<Vec<(u64, Delivery)>>, usize, usize) {
        let mut dispatcher = Dispatcher::new(pods());
        dispatcher.field_index = field_index;
        let watchers = [
            watcher(None, "spec.nodeName=node-0"),
            watcher(None, "spec.nodeName=node-1"),
            watcher(None, "spec.nodeName=node-1"),
            watcher(Some("a"), "spec.nodeName=node-2"),
            watcher(None, "spec.nodeName!=node-0"),
            watcher(None, "spec.nodeName=node-9"),
            watcher(None, ""),
        ];
        for watcher in &watchers {
            dispatcher.register(Registration::Add(Arc::clone(watcher)));
        }
        let (by_field, everything) =
            (dispatcher.by_field.values().map(Vec::len).sum(), dispatcher.everything.len());
        let mut events = Vec::new();
        let mut revision = 1;
        let mut event = |kind, object: Arc<CachedObject>, prev: Option<Arc<CachedObject>>| {
            events.push(CachedEvent::new(events.len() as u64, kind, object, prev));
        };
        let mut state: HashMap<String, Arc<CachedObject>> = HashMap::new();
        for (namespace, name, node) in [
            ("a", "p0", "node-0"),
            ("a", "p1", "node-1"),
            ("b", "p2", "node-2"),
            ("a", "p3", "node-2"),
            // Moves between nodes: DELETED for the old node's watchers, ADDED for the new one's.
            ("a", "p0", "node-1"),
            ("a", "p1", "node-1"),
            ("a", "p3", "node-0"),
            ("b", "p2", "node-2"),
        ] {
            revision += 1;
            let object = pod(namespace, name, node, revision);
            let key = format!("{namespace}/{name}");
            match state.insert(key, Arc::clone(&object)) {
                None => event(EventType::Added, object, None),
                Some(prev) => event(EventType::Modified, object, Some(prev)),
            }
        }
        revision += 1;
        let gone = state.remove("a/p0").unwrap();
        event(EventType::Deleted, pod("a", "p0", "node-1", revision), Some(gone));
        for event in &events {
            dispatcher.dispatch(event);
        }
        dispatcher.flush();
        let received = watchers.iter().map(|watcher| watcher.drain_entries()).collect();
        (received, by_field, everything)
    }

    #[test]
    fn the_field_index_changes_where_watchers_sit_not_what_they_receive() {
        let (indexed, by_field, everything) = run(true);
        assert_eq!((by_field, everything), (5, 2), "node watchers sit in the field index");
        let (unindexed, by_field, everything) = run(false);
        assert_eq!((by_field, everything), (0, 6), "without the index they sit in the everything bucket");
        assert_eq!(indexed, unindexed);
        let seqs = |watcher: usize| indexed[watcher].iter().map(|(seq, _)| *seq).collect::<Vec<_>>();
        // node-0: p0 added, p0 leaves (4), p3 arrives (6), p0's delete is on node-1.
        assert_eq!(indexed[0], vec![(0, Delivery::AsIs), (4, Delivery::AsDeleted), (6, Delivery::AsAdded)]);
        assert_eq!(seqs(1), vec![1, 4, 5, 8]);
        assert_eq!(indexed[1], indexed[2]);
        assert_eq!(seqs(3), vec![3, 6], "namespace a on node-2: p3 only");
        assert!(indexed[5].is_empty(), "nobody on node-9");
        assert_eq!(seqs(6).len(), 9, "the unfiltered watcher sees every event");
    }
}
