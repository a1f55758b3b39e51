//! The store: the current objects of one resource, published as immutable snapshots.
//!
//! A [`Snapshot`] is a persistent ordered map (imbl's `OrdMap`, a B-tree whose updates copy only
//! the path they touch) from storage key to [`CachedObject`], with the revision it reflects. The
//! [`StoreWriter`] (owned by the reflector) applies each event to its working map and publishes
//! the result through an [`ArcSwap`]: a reader loads the current snapshot without a lock, keeps
//! it as long as it likes, and never waits for the writer or for other readers.
//!
//! Recent snapshots are also retained by revision (the last [`StoreLimits::retained`] ones,
//! none older than [`StoreLimits::retain_for`]) in a lock-free skip list, so that a paginated
//! list can read its later pages, and an exact-revision read its revision, from the cache.
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
    /// The objects, by storage key.
    pub objects: OrdMap<Arc<str>, Arc<CachedObject>>,
    /// When it was published.
    pub published: Instant,
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
    /// Snapshots kept at most.
    pub retained: usize,
    /// Snapshots older than this are dropped.
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
    /// Past snapshots by revision, the newest included. Inserted and removed by the writer only.
    retained: SkipMap<Revision, Arc<Snapshot>>,
}

impl Store {
    /// The newest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The state at exactly `revision`, if the cache still holds it.
    ///
    /// The writer publishes (and retains) a snapshot after every write and every progress
    /// report, and trims retained snapshots from the oldest only; so the state at a revision
    /// between the oldest retained snapshot and the current one is the newest retained snapshot
    /// at or before it. A revision beyond the current one is not known yet: `None`.
    pub fn at(&self, revision: Revision) -> Option<Arc<Snapshot>> {
        let current = self.current.load_full();
        if revision >= current.revision {
            return (revision == current.revision).then_some(current);
        }
        let entry = self.retained.upper_bound(std::ops::Bound::Included(&revision))?;
        Some(Arc::clone(entry.value()))
    }

    /// The revision of the oldest retained snapshot.
    pub fn oldest_retained(&self) -> Option<Revision> {
        self.retained.front().map(|entry| *entry.key())
    }

    /// The number of retained snapshots.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

/// The write side of the store: exactly one, owned by the reflector.
pub struct StoreWriter {
    store: Arc<Store>,
    working: OrdMap<Arc<str>, Arc<CachedObject>>,
    revision: Revision,
    limits: StoreLimits,
}

impl StoreWriter {
    /// An empty store at `revision`.
    pub fn new(limits: StoreLimits, revision: Revision) -> StoreWriter {
        let snapshot = Arc::new(Snapshot { revision, objects: OrdMap::new(), published: Instant::now() });
        let store =
            Arc::new(Store { current: ArcSwap::new(Arc::clone(&snapshot)), retained: SkipMap::new() });
        store.retained.insert(revision, snapshot);
        StoreWriter { store, working: OrdMap::new(), revision, limits }
    }

    /// The shared read side.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Replaces every object (after a list) and publishes the result at `revision`. Readers see
    /// the old state or the new one, never a mix; past snapshots are dropped.
    pub fn replace(&mut self, objects: impl IntoIterator<Item = Arc<CachedObject>>, revision: Revision) {
        self.working = objects.into_iter().map(|object| (Arc::clone(&object.key), object)).collect();
        self.revision = revision;
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

    /// Publishes the working state as the current snapshot and retains it.
    pub fn publish(&mut self) {
        let now = Instant::now();
        let snapshot =
            Arc::new(Snapshot { revision: self.revision, objects: self.working.clone(), published: now });
        self.store.current.store(Arc::clone(&snapshot));
        self.store.retained.insert(self.revision, snapshot);
        while self.store.retained.len() > self.limits.retained.max(1) {
            self.store.retained.pop_front();
        }
        while let Some(oldest) = self.store.retained.front() {
            if self.store.retained.len() > 1
                && now.duration_since(oldest.value().published) > self.limits.retain_for
            {
                oldest.remove();
            } else {
                break;
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
        assert_eq!(store.at(2).map(|s| s.len()), Some(1));
        assert_eq!(store.at(3).map(|s| s.len()), Some(2));
        // No write at 4: the state at 4 is the state at 3.
        assert_eq!(store.at(4).map(|s| s.revision), Some(3));
        assert_eq!(store.at(5).map(|s| s.revision), Some(5));
        assert!(store.at(6).is_none(), "the future is not known");
        assert!(store.at(0).is_none(), "before the first snapshot");
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
    fn old_snapshots_are_dropped_beyond_the_limits() {
        let mut writer =
            StoreWriter::new(StoreLimits { retained: 3, retain_for: Duration::from_secs(60) }, 1);
        for revision in 2..10 {
            let key = format!("/things/ns/k{revision}");
            writer.apply(&Arc::from(key.as_str()), Some(object(&key, revision)), revision);
            writer.publish();
        }
        let store = writer.store();
        assert_eq!(store.retained_count(), 3);
        assert_eq!(store.oldest_retained(), Some(7));
        assert!(store.at(6).is_none());
        assert_eq!(store.at(7).unwrap().len(), 6);
        writer.replace(vec![object("/things/ns/z", 20)], 20);
        assert_eq!(writer.store().retained_count(), 1);
        assert!(writer.store().at(9).is_none());
    }
}
