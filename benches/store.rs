//! The store (`cacher::store`): 10,000 pods of about 1 KiB in 100 namespaces. Get by key on the
//! current snapshot, list of one namespace (100 objects) and of all 10,000 (iterate and clone
//! each `Arc`), and apply + publish of one update, side by side with the two designs the store
//! did not take (see the module docs of `cacher::store`):
//!
//! - `hash-sharded-cow`: 16 shards by key hash, each an `ArcSwap` of a `BTreeMap`; an update
//!   clones its whole shard map and swaps it in; list-all merges the shards and sorts.
//! - `namespace-cow`: namespace → `ArcSwap` of a `BTreeMap`, copy-on-write per namespace;
//!   list-all walks the namespaces in sorted order.
//!
//! `imbl-btree` is the store as the cacher runs it (it also retains up to 1,024 past snapshots
//! for paginated and exact-revision reads, which the peers do not offer);
//! `imbl-btree-retain-1` keeps only the current snapshot, like the peers.
//!
//! Run: `cargo bench --bench store`.

mod support;

use support::{pod_json, pods};

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use watchcache::cacher::object::{CachedObject, ResourceConfig};
use watchcache::cacher::store::{StoreLimits, StoreWriter};

const NAMESPACES: usize = 100;
const PER_NAMESPACE: usize = 100;
const OBJECTS: usize = NAMESPACES * PER_NAMESPACE;
const SHARDS: usize = 16;
const PREFIX: &str = "/pods/";

type Map = BTreeMap<Arc<str>, Arc<CachedObject>>;

fn namespace(i: usize) -> String {
    format!("ns-{i:03}")
}

fn objects(resource: &ResourceConfig, revision: u64) -> Vec<Arc<CachedObject>> {
    let mut objects = Vec::with_capacity(OBJECTS);
    for n in 0..NAMESPACES {
        let namespace = namespace(n);
        for p in 0..PER_NAMESPACE {
            let name = format!("web-7d9f8c6b5d-{p:05}");
            let key = format!("{PREFIX}{namespace}/{name}");
            let json = pod_json(&namespace, &name);
            objects.push(Arc::new(CachedObject::decode(&key, &json, revision, resource).unwrap()));
        }
    }
    objects
}

/// The common operations, so that every design runs the same loops.
trait Subject {
    fn get(&self, key: &str) -> Option<Arc<CachedObject>>;
    fn list_namespace(&self, namespace: &str, out: &mut Vec<Arc<CachedObject>>);
    fn list_all(&self, out: &mut Vec<Arc<CachedObject>>);
    fn update(&mut self, object: &Arc<CachedObject>, revision: u64);
}

/// The store as the cacher uses it.
struct Imbl {
    writer: StoreWriter,
}

impl Imbl {
    fn new(limits: StoreLimits, objects: &[Arc<CachedObject>]) -> Imbl {
        let mut writer = StoreWriter::new(limits, 1);
        writer.replace(objects.iter().cloned(), 1);
        Imbl { writer }
    }
}

impl Subject for Imbl {
    fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.writer.store().current().get(key).cloned()
    }

    fn list_namespace(&self, namespace: &str, out: &mut Vec<Arc<CachedObject>>) {
        let snapshot = self.writer.store().current();
        let prefix = format!("{PREFIX}{namespace}/");
        out.extend(snapshot.range(&prefix, None).cloned());
    }

    fn list_all(&self, out: &mut Vec<Arc<CachedObject>>) {
        let snapshot = self.writer.store().current();
        out.extend(snapshot.range(PREFIX, None).cloned());
    }

    fn update(&mut self, object: &Arc<CachedObject>, revision: u64) {
        self.writer.apply(&object.key, Some(Arc::clone(object)), revision);
        self.writer.publish();
    }
}

/// 16 shards by key hash, each published copy-on-write.
struct HashSharded {
    shards: Vec<ArcSwap<Map>>,
    hasher: std::collections::hash_map::RandomState,
}

impl HashSharded {
    fn new(objects: &[Arc<CachedObject>]) -> HashSharded {
        let hasher = std::collections::hash_map::RandomState::new();
        let mut maps: Vec<Map> = (0..SHARDS).map(|_| Map::new()).collect();
        let mut sharded = HashSharded { shards: Vec::new(), hasher };
        for object in objects {
            maps[sharded.shard(&object.key)].insert(Arc::clone(&object.key), Arc::clone(object));
        }
        sharded.shards = maps.into_iter().map(ArcSwap::from_pointee).collect();
        sharded
    }

    fn shard(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % SHARDS
    }
}

impl Subject for HashSharded {
    fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.shards[self.shard(key)].load().get(key).cloned()
    }

    fn list_namespace(&self, namespace: &str, out: &mut Vec<Arc<CachedObject>>) {
        // A namespace is spread over every shard: range-scan each, then merge by sorting.
        let prefix = format!("{PREFIX}{namespace}/");
        let start = out.len();
        for shard in &self.shards {
            let map = shard.load();
            out.extend(
                map.range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .map(|(_, object)| Arc::clone(object)),
            );
        }
        out[start..].sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }

    fn list_all(&self, out: &mut Vec<Arc<CachedObject>>) {
        let start = out.len();
        for shard in &self.shards {
            out.extend(shard.load().values().cloned());
        }
        out[start..].sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }

    fn update(&mut self, object: &Arc<CachedObject>, _revision: u64) {
        let shard = &self.shards[self.shard(&object.key)];
        let mut map = Map::clone(&shard.load());
        map.insert(Arc::clone(&object.key), Arc::clone(object));
        shard.store(Arc::new(map));
    }
}

/// Namespace → copy-on-write map; the namespaces are fixed here (a new namespace would also need
/// the outer map swapped), which favours this design.
struct NamespaceSharded {
    namespaces: HashMap<String, ArcSwap<Map>>,
    sorted: Vec<String>,
}

impl NamespaceSharded {
    fn new(objects: &[Arc<CachedObject>]) -> NamespaceSharded {
        let mut maps: HashMap<String, Map> = HashMap::new();
        for object in objects {
            maps.entry(object.namespace.to_string())
                .or_default()
                .insert(Arc::clone(&object.key), Arc::clone(object));
        }
        let mut sorted: Vec<String> = maps.keys().cloned().collect();
        sorted.sort();
        let namespaces = maps.into_iter().map(|(ns, map)| (ns, ArcSwap::from_pointee(map))).collect();
        NamespaceSharded { namespaces, sorted }
    }
}

impl Subject for NamespaceSharded {
    fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        let namespace = key[PREFIX.len()..].split('/').next()?;
        self.namespaces.get(namespace)?.load().get(key).cloned()
    }

    fn list_namespace(&self, namespace: &str, out: &mut Vec<Arc<CachedObject>>) {
        if let Some(map) = self.namespaces.get(namespace) {
            out.extend(map.load().values().cloned());
        }
    }

    fn list_all(&self, out: &mut Vec<Arc<CachedObject>>) {
        // Key order, given namespace names that sort like their keys (true here).
        for namespace in &self.sorted {
            out.extend(self.namespaces[namespace].load().values().cloned());
        }
    }

    fn update(&mut self, object: &Arc<CachedObject>, _revision: u64) {
        let shard = &self.namespaces[&*object.namespace];
        let mut map = Map::clone(&shard.load());
        map.insert(Arc::clone(&object.key), Arc::clone(object));
        shard.store(Arc::new(map));
    }
}

fn store_benches(c: &mut Criterion) {
    let resource = pods();
    let objects = objects(&resource, 1);
    eprintln!("object JSON: {} bytes", objects[0].json.len());
    // The updates: new versions of 1,000 objects spread over the key space.
    let updates: Vec<Arc<CachedObject>> = objects
        .iter()
        .step_by(OBJECTS / 1_000)
        .map(|object| Arc::new(object.restamped(2, &resource).unwrap()))
        .collect();
    let mut subjects: Vec<(&str, Box<dyn Subject>)> = vec![
        ("imbl-btree", Box::new(Imbl::new(StoreLimits::default(), &objects))),
        (
            "imbl-btree-retain-1",
            Box::new(Imbl::new(StoreLimits { retained: 1, retain_for: Duration::from_secs(75) }, &objects)),
        ),
        ("hash-sharded-cow", Box::new(HashSharded::new(&objects))),
        ("namespace-cow", Box::new(NamespaceSharded::new(&objects))),
    ];
    let keys: Vec<Arc<str>> = objects.iter().step_by(7).map(|object| Arc::clone(&object.key)).collect();
    drop(objects);

    // Sanity: every design lists the same keys in the same order.
    let expected: Vec<Arc<str>> = {
        let mut out = Vec::new();
        subjects[0].1.list_all(&mut out);
        out.iter().map(|o| Arc::clone(&o.key)).collect()
    };
    for (name, subject) in &subjects {
        let mut out = Vec::new();
        subject.list_all(&mut out);
        assert!(out.iter().map(|o| &o.key).eq(expected.iter()), "{name} lists in another order");
        out.clear();
        subject.list_namespace(&namespace(42), &mut out);
        assert_eq!(out.len(), PER_NAMESPACE, "{name}");
        assert!(out.windows(2).all(|w| w[0].key < w[1].key), "{name}");
    }

    let mut group = c.benchmark_group("store/get");
    group.throughput(Throughput::Elements(1));
    for (name, subject) in &subjects {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                subject.get(&keys[i]).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("store/list_namespace_100");
    group.throughput(Throughput::Elements(PER_NAMESPACE as u64));
    for (name, subject) in &subjects {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut out = Vec::with_capacity(PER_NAMESPACE);
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % NAMESPACES;
                out.clear();
                subject.list_namespace(&namespace(i), &mut out);
                out.len()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("store/list_all_10000");
    group.throughput(Throughput::Elements(OBJECTS as u64));
    for (name, subject) in &subjects {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut out = Vec::with_capacity(OBJECTS);
            b.iter(|| {
                out.clear();
                subject.list_all(&mut out);
                out.len()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("store/apply_publish");
    group.throughput(Throughput::Elements(1));
    let mut revision = 2;
    for (name, subject) in &mut subjects {
        group.bench_function(BenchmarkId::from_parameter(*name), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % updates.len();
                revision += 1;
                subject.update(&updates[i], revision);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1_500));
    targets = store_benches
}
criterion_main!(benches);
