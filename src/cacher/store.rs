//! The store: the current objects of one resource, published as immutable snapshots.
//!
//! A [`Snapshot`] is a persistent ordered map (imbl's `OrdMap`, a B-tree whose updates copy only
//! the path they touch) from storage key to [`CachedObject`], with the revision it reflects. The
//! [`StoreWriter`] (owned by the reflector) applies each event to its working map and publishes
//! the result through an [`ArcSwap`]: a reader loads the current snapshot without a lock, keeps
//! it as long as it likes, and never waits for the writer or for other readers.
//!
//! A snapshot that a paginated list served a page from is *pinned*: retained by revision in a
//! lock-free skip list for [`StoreLimits::retain_for`] (75 s, kube's window) after its latest
//! page, so that the list's later pages read the same state from the cache however many writes
//! come in between. Only pinned snapshots are retained, so retention costs memory for the lists
//! in progress, not for the write rate, and progress reports or writes to other resources
//! retain nothing. [`StoreLimits::retained`] caps how many distinct revisions may be pinned at
//! once (the oldest go first). An exact-revision read is served from the current snapshot or a
//! pinned one when either holds that revision's state, and from storage otherwise.
//!
//! # Why one persistent map rather than shards
//!
//! A namespace-sharded or hash-sharded store exists to bound the cost of copy-on-write
//! publishing. A persistent B-tree already bounds it (O(log n) per write, measured in
//! `benches/store.rs` against a sharded copy-on-write map), keeps one consistent revision for
//! the whole resource, and serves namespace lists as a key range (`/pods/<ns>/...`) and
//! all-namespace lists in key order without a merge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_skiplist::SkipMap;
use imbl::OrdMap;

use super::object::CachedObject;
use crate::storage::Revision;

/// The objects of a resource at one revision.
#[derive(Clone)]
pub struct Snapshot {
    /// The revision this state reflects.
    pub revision: Revision,
    /// The revision of the last change in it (`<= revision`): the state is the same at every
    /// revision from this one to `revision`.
    pub changed: Revision,
    /// The objects, by storage key.
    pub objects: OrdMap<Arc<str>, Arc<CachedObject>>,
}

impl Snapshot {
    /// The objects whose keys start with `prefix`, in key order, after `after` if given.
    pub fn range<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<CachedObject>> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        self.objects
            .range::<_, str>((start, Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, object)| object)
    }

    /// The object at `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<CachedObject>> {
        self.objects.get(key)
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// How many past snapshots to keep, and for how long.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// Distinct revisions pinned at most (the oldest are dropped first).
    pub retained: usize,
    /// How long a pinned snapshot is kept after the last page served from it.
    pub retain_for: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { retained: 1024, retain_for: Duration::from_secs(75) }
    }
}

/// The shared, read side of the store.
pub struct Store {
    /// The newest snapshot. Replaced (never mutated) by the writer; loaded by readers.
    current: ArcSwap<Snapshot>,
    /// Pinned snapshots by revision, with when they were last pinned. Readers insert (pin);
    /// the writer removes (trims). The skip list takes both at once without a lock.
    retained: SkipMap<Revision, Pinned>,
}

/// A pinned snapshot.
struct Pinned {
    snapshot: Arc<Snapshot>,
    at: Instant,
}

impl Store {
    /// The newest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The state at exactly `revision`, if the cache holds it: the current snapshot or a
    /// pinned one whose unchanged span (`changed..=revision`) covers `revision`. A revision
    /// beyond the current one is not known yet: `None`.
    pub fn at(&self, revision: Revision) -> Option<Arc<Snapshot>> {
        let current = self.current.load_full();
        if revision > current.revision {
            return None;
        }
        if revision >= current.changed {
            return Some(current);
        }
        // The oldest pinned snapshot at or after `revision`: if nothing changed between
        // `revision` and it, it is the state at `revision`.
        let entry = self.retained.lower_bound(std::ops::Bound::Included(&revision))?;
        let snapshot = &entry.value().snapshot;
        (snapshot.changed <= revision).then(|| Arc::clone(snapshot))
    }

    /// Retains `snapshot` (one a paginated list served a page from) for the retention window
    /// from now, so that the list's next pages find it.
    pub fn pin(&self, snapshot: &Arc<Snapshot>) {
        self.retained
            .insert(snapshot.revision, Pinned { snapshot: Arc::clone(snapshot), at: Instant::now() });
    }

    /// The revision of the oldest pinned snapshot.
    pub fn oldest_retained(&self) -> Option<Revision> {
        self.retained.front().map(|entry| *entry.key())
    }

    /// The number of pinned snapshots.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

/// The write side of the store: exactly one, owned by the reflector.
pub struct StoreWriter {
    store: Arc<Store>,
    working: OrdMap<Arc<str>, Arc<CachedObject>>,
    revision: Revision,
    changed: Revision,
    limits: StoreLimits,
    /// When pinned snapshots were last checked for age.
    last_trim: Instant,
}

impl StoreWriter {
    /// An empty store at `revision`.
    pub fn new(limits: StoreLimits, revision: Revision) -> StoreWriter {
        let snapshot = Arc::new(Snapshot { revision, changed: revision, objects: OrdMap::new() });
        let store = Arc::new(Store { current: ArcSwap::new(snapshot), retained: SkipMap::new() });
        StoreWriter {
            store,
            working: OrdMap::new(),
            revision,
            changed: revision,
            limits,
            last_trim: Instant::now(),
        }
    }

    /// The shared read side.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Replaces every object (after a list) and publishes the result at `revision`. Readers see
    /// the old state or the new one, never a mix; pinned snapshots are dropped (their lists
    /// continue from storage).
    pub fn replace(&mut self, objects: impl IntoIterator<Item = Arc<CachedObject>>, revision: Revision) {
        self.working = objects.into_iter().map(|object| (Arc::clone(&object.key), object)).collect();
        self.revision = revision;
        self.changed = revision;
        while self.store.retained.pop_front().is_some() {}
        self.publish();
    }

    /// Sets (or, with `None`, removes) the object at `key`, as of `revision`, without
    /// publishing.
    pub fn apply(&mut self, key: &Arc<str>, object: Option<Arc<CachedObject>>, revision: Revision) {
        match object {
            Some(object) => {
                self.working.insert(Arc::clone(key), object);
            }
            None => {
                self.working.remove(key);
            }
        }
        self.revision = revision;
        self.changed = revision;
    }

    /// Moves the store's revision forward without a change (a progress report).
    pub fn advance(&mut self, revision: Revision) {
        if revision > self.revision {
            self.revision = revision;
        }
    }

    /// The revision of the working state.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The object at `key` in the working state.
    pub fn get(&self, key: &str) -> Option<&Arc<CachedObject>> {
        self.working.get(key)
    }

    /// Publishes the working state as the current snapshot, and trims pinned snapshots.
    pub fn publish(&mut self) {
        let now = Instant::now();
        let snapshot = Arc::new(Snapshot {
            revision: self.revision,
            changed: self.changed,
            objects: self.working.clone(),
        });
        self.store.current.store(snapshot);
        self.trim(now);
    }

    /// Drops the oldest pinned snapshots beyond the cap and, at most once a second, those not
    /// pinned again within the retention window. Called on every publish and on the
    /// reflector's periodic tick, so an idle resource also lets go of them.
    pub fn trim(&mut self, now: Instant) {
        let retained = &self.store.retained;
        while retained.len() > self.limits.retained.max(1) {
            retained.pop_front();
        }
        if retained.is_empty() || now.saturating_duration_since(self.last_trim) < Duration::from_secs(1) {
            return;
        }
        self.last_trim = now;
        // Pinned at different times, in revision order: check each.
        for entry in retained.iter() {
            if now.saturating_duration_since(entry.value().at) > self.limits.retain_for {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cacher::object::ResourceConfig;

    fn object(key: &str, revision: Revision) -> Arc<CachedObject> {
        let resource = ResourceConfig {
            prefix: "/things/".into(),
            kind: "Thing".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec![],
            indexed_field: None,
        };
        let name = key.rsplit('/').next().unwrap();
        let json = format!(r#"{{"metadata":{{"name":"{name}"}}}}"#);
        Arc::new(CachedObject::decode(key, json.as_bytes(), revision, &resource).unwrap())
    }

    #[test]
    fn readers_keep_their_snapshot_while_the_writer_moves_on() {
        let mut writer = StoreWriter::new(StoreLimits::default(), 1);
        let a = object("/things/ns1/a", 2);
        writer.apply(&a.key, Some(Arc::clone(&a)), 2);
        writer.publish();
        let store = Arc::clone(writer.store());
        let before = store.current();
        let b = object("/things/ns2/b", 3);
        writer.apply(&b.key, Some(Arc::clone(&b)), 3);
        writer.publish();
        writer.apply(&a.key, None, 5);
        writer.publish();
        assert_eq!(before.revision, 2);
        assert_eq!(before.len(), 1);
        let after = store.current();
        assert_eq!(after.revision, 5);
        assert_eq!(after.range("/things/", None).map(|o| &*o.name).collect::<Vec<_>>(), ["b"]);
        // Nothing was pinned: only the current state is known, from its last change on.
        assert_eq!(store.retained_count(), 0);
        assert!(store.at(3).is_none(), "not pinned: storage serves it");
        assert_eq!(store.at(5).map(|s| s.revision), Some(5));
        assert!(store.at(6).is_none(), "the future is not known");
    }

    #[test]
    fn a_pinned_snapshot_serves_its_revision_and_the_unchanged_span_before_it() {
        let mut writer = StoreWriter::new(StoreLimits::default(), 1);
        let store = Arc::clone(writer.store());
        let a = object("/things/ns1/a", 2);
        writer.apply(&a.key, Some(Arc::clone(&a)), 2);
        writer.publish();
        // Progress to 4 without a change: the state at 2, 3 and 4 is the same.
        writer.advance(4);
        writer.publish();
        let paged = store.current();
        assert_eq!((paged.changed, paged.revision), (2, 4));
        store.pin(&paged);
        let b = object("/things/ns2/b", 5);
        writer.apply(&b.key, Some(Arc::clone(&b)), 5);
        writer.publish();
        writer.apply(&a.key, None, 6);
        writer.publish();
        for revision in [2, 3, 4] {
            let found = store.at(revision).expect("within the pinned snapshot's unchanged span");
            assert!(Arc::ptr_eq(&found, &paged), "at {revision}");
        }
        assert!(store.at(1).is_none(), "before the pinned snapshot's last change");
        assert!(store.at(5).is_none(), "changed at 5, not pinned");
        assert_eq!(store.at(6).map(|s| s.len()), Some(1));
    }
    #[test]
    fn ranges_follow_prefixes_and_continue_keys() {
        let mut writer = StoreWriter::new(StoreLimits::default(), 1);
        for key in ["/things/a/1", "/things/a/2", "/things/b/1", "/thingsx/a/1"] {
            writer.apply(&Arc::from(key), Some(object(key, 2)), 2);
        }
        writer.publish();
        let snapshot = writer.store().current();
        let keys =
            |prefix, after| snapshot.range(prefix, after).map(|o| o.key.to_string()).collect::<Vec<_>>();
        assert_eq!(keys("/things/", None), ["/things/a/1", "/things/a/2", "/things/b/1"]);
        assert_eq!(keys("/things/a/", None), ["/things/a/1", "/things/a/2"]);
        assert_eq!(keys("/things/", Some("/things/a/2")), ["/things/b/1"]);
    }

    #[test]
    fn pinned_snapshots_go_after_the_window_or_beyond_the_cap() {
        let limits = StoreLimits { retained: 3, retain_for: Duration::from_secs(60) };
        let mut writer = StoreWriter::new(limits, 1);
        let store = Arc::clone(writer.store());
        for revision in 2..10 {
            let key = format!("/things/ns/k{revision}");
            writer.apply(&Arc::from(key.as_str()), Some(object(&key, revision)), revision);
            writer.publish();
            store.pin(&store.current());
        }
        writer.publish();
        // Writes alone retain nothing; of eight pinned revisions the newest three stay.
        assert_eq!(store.retained_count(), 3);
        assert_eq!(store.oldest_retained(), Some(7));
        assert!(store.at(6).is_none());
        assert_eq!(store.at(7).unwrap().len(), 6);
        // Past the window (as seen from a minute and a bit later) they all go.
        writer.trim(Instant::now() + Duration::from_secs(62));
        assert_eq!(store.retained_count(), 0);
        assert!(store.at(7).is_none());
        store.pin(&store.current());
        writer.replace(vec![object("/things/ns/z", 20)], 20);
        assert_eq!(store.retained_count(), 0, "a relist drops pinned snapshots");
        assert!(store.at(9).is_none());
    }
}
