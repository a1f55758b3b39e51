//! Model-based test: random sequences of creates, updates, deletes, writes to other resources,
//! compactions, reads and watches, run against the watch cache (over the in-memory store) and
//! against a plain `BTreeMap` model; every get, list (paginated or not) and watch stream must
//! agree with the model.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use watchcache::cacher::object::ResourceConfig;
use watchcache::cacher::ring::RingLimits;
use watchcache::cacher::{
    CacheConfig, CacheWatch, Cacher, ListRequest, ReadVersion, WatchFilter, WatchItem, WatchStart,
};
use watchcache::selector::{FieldSelector, LabelSelector};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{Revision, Storage};

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const APPS: [&str; 2] = ["web", "db"];

fn resource() -> ResourceConfig {
    ResourceConfig {
        prefix: "/pods/".into(),
        kind: "Pod".into(),
        api_version: "v1".into(),
        namespaced: true,
        selectable_fields: vec!["spec.nodeName".into()],
        indexed_field: Some("spec.nodeName".into()),
    }
}

/// The model's view of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Object {
    namespace: String,
    name: String,
    app: String,
    node: String,
    revision: Revision,
}

/// A filter the model evaluates on its own.
#[derive(Clone, Debug)]
struct ModelFilter {
    namespace: Option<String>,
    app: Option<String>,
    node: Option<String>,
}

impl ModelFilter {
    fn random(rng: &mut StdRng) -> ModelFilter {
        ModelFilter {
            namespace: rng.random_bool(0.4).then(|| NAMESPACES[rng.random_range(0..3)].to_owned()),
            app: rng.random_bool(0.4).then(|| APPS[rng.random_range(0..2)].to_owned()),
            node: rng.random_bool(0.3).then(|| format!("n{}", rng.random_range(0..2))),
        }
    }

    fn matches(&self, object: &Object) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == object.namespace)
            && self.app.as_ref().is_none_or(|app| *app == object.app)
            && self.node.as_ref().is_none_or(|node| *node == object.node)
    }

    fn to_cache(&self) -> WatchFilter {
        let labels = self.app.as_ref().map(|app| format!("app={app}")).unwrap_or_default();
        let fields = self.node.as_ref().map(|node| format!("spec.nodeName={node}")).unwrap_or_default();
        WatchFilter {
            namespace: self.namespace.clone(),
            labels: LabelSelector::parse(&labels).unwrap(),
            fields: FieldSelector::parse(&fields, &["metadata.name", "metadata.namespace", "spec.nodeName"])
                .unwrap(),
        }
    }
}

/// One write, as the model records it.
#[derive(Clone, Debug)]
struct Write {
    revision: Revision,
    before: Option<Object>,
    after: Option<Object>,
}

/// The watch events kube-apiserver sends for `writes` after `from` to a watcher with `filter`:
/// (type, namespace/name, resourceVersion).
fn expected_events(
    writes: &[Write],
    from: Revision,
    filter: &ModelFilter,
) -> Vec<(String, String, Revision)> {
    let mut events = Vec::new();
    for write in writes.iter().filter(|write| write.revision > from) {
        let now = write.after.as_ref().is_some_and(|object| filter.matches(object));
        let before = write.before.as_ref().is_some_and(|object| filter.matches(object));
        let object = write.after.as_ref().or(write.before.as_ref()).unwrap();
        let name = format!("{}/{}", object.namespace, object.name);
        let kind = match (&write.before, &write.after, before, now) {
            (None, Some(_), _, true) => "ADDED",
            (Some(_), None, true, _) => "DELETED",
            (Some(_), Some(_), true, true) => "MODIFIED",
            (Some(_), Some(_), false, true) => "ADDED",
            (Some(_), Some(_), true, false) => "DELETED",
            _ => continue,
        };
        events.push((kind.to_owned(), name, write.revision));
    }
    events
}

fn encode(object: &Object) -> Bytes {
    let value = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": object.name, "namespace": object.namespace, "labels": {"app": object.app}},
        "spec": {"nodeName": object.node},
    });
    Bytes::from(serde_json::to_vec(&value).unwrap())
}

fn parse_event(line: &[u8]) -> (String, String, Revision) {
    let event: Value = serde_json::from_slice(line).unwrap();
    let metadata = &event["object"]["metadata"];
    (
        event["type"].as_str().unwrap().to_owned(),
        format!(
            "{}/{}",
            metadata["namespace"].as_str().unwrap_or(""),
            metadata["name"].as_str().unwrap_or("")
        ),
        metadata["resourceVersion"].as_str().unwrap().parse().unwrap(),
    )
}

struct OpenWatch {
    watch: CacheWatch,
    from: Revision,
    filter: ModelFilter,
    seen: Vec<(String, String, Revision)>,
    expired: bool,
}

impl OpenWatch {
    /// Reads whatever is available now, without waiting (`next` is cancel-safe).
    fn poll(&mut self) {
        use futures_util::FutureExt;
        while !self.expired {
            match self.watch.next().now_or_never() {
                Some(Some(WatchItem::Lines(lines))) => self
                    .seen
                    .extend(lines.iter().map(|line| parse_event(line)).filter(|event| event.0 != "BOOKMARK")),
                Some(Some(WatchItem::Expired(_))) => self.expired = true,
                Some(None) => panic!("watch ended without a reason"),
                None => return,
            }
        }
    }
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
    let config = CacheConfig {
        watcher_queue: 4,
        ring: RingLimits { min_events: 20, max_events: 128, ..RingLimits::default() },
        store: watchcache::cacher::store::StoreLimits { retained: 64, retain_for: Duration::from_secs(60) },
        ..CacheConfig::default()
    };
    let cacher = Cacher::start(Arc::clone(&storage), resource(), config);
    assert!(cacher.wait_ready(Duration::from_secs(10)).await);

    let mut model: BTreeMap<String, Object> = BTreeMap::new();
    let mut writes: Vec<Write> = Vec::new();
    let mut watches: Vec<OpenWatch> = Vec::new();
    let start_revision = storage.current_revision().await.unwrap();

    for step in 0..400 {
        let roll = rng.random_range(0..100);
        let namespace = NAMESPACES[rng.random_range(0..3)];
        let name = format!("p{}", rng.random_range(0..8));
        let key = format!("/pods/{namespace}/{name}");
        match roll {
            0..=24 => {
                let mut object = Object {
                    namespace: namespace.into(),
                    name: name.clone(),
                    app: APPS[rng.random_range(0..2)].into(),
                    node: format!("n{}", rng.random_range(0..2)),
                    revision: 0,
                };
                if model.contains_key(&key) {
                    continue;
                }
                let kv = storage.create(&key, encode(&object)).await.unwrap();
                object.revision = kv.mod_revision;
                writes.push(Write { revision: kv.mod_revision, before: None, after: Some(object.clone()) });
                model.insert(key, object);
            }
            25..=44 => {
                let Some(before) = model.get(&key).cloned() else { continue };
                let mut object = before.clone();
                if rng.random_bool(0.5) {
                    object.app = APPS[rng.random_range(0..2)].into();
                } else {
                    object.node = format!("n{}", rng.random_range(0..2));
                }
                let kv = storage.update(&key, encode(&object), before.revision).await.unwrap();
                object.revision = kv.mod_revision;
                writes.push(Write {
                    revision: kv.mod_revision,
                    before: Some(before),
                    after: Some(object.clone()),
                });
                model.insert(key, object);
            }
            45..=54 => {
                let Some(before) = model.remove(&key) else { continue };
                let deleted = storage.delete(&key, None).await.unwrap();
                writes.push(Write { revision: deleted.revision, before: Some(before), after: None });
            }
            55..=59 => {
                // Another resource: only the revision moves.
                storage
                    .create(
                        &format!("/configmaps/{namespace}/c{step}"),
                        Bytes::from_static(br#"{"metadata":{}}"#),
                    )
                    .await
                    .unwrap();
            }
            60..=61 => {
                let current = storage.current_revision().await.unwrap();
                let _ = storage.compact(current.saturating_sub(rng.random_range(0..50)).max(1)).await;
            }
            62..=71 => {
                let got = cacher.get(&key, ReadVersion::Consistent).await.unwrap();
                let expected = model.get(&key);
                assert_eq!(
                    got.map(|o| (o.name.to_string(), o.revision)),
                    expected.map(|o| (o.name.clone(), o.revision)),
                    "seed {seed} step {step}: get {key}"
                );
            }
            72..=81 => {
                let filter = ModelFilter::random(&mut rng);
                let limit = rng.random_bool(0.5).then(|| rng.random_range(1..6));
                let mut request = ListRequest {
                    filter: filter.to_cache(),
                    limit,
                    continue_from: None,
                    version: ReadVersion::Consistent,
                };
                let mut names = Vec::new();
                let first = cacher.list(&request).await.unwrap();
                let revision = first.revision;
                let mut page = first;
                loop {
                    names.extend(
                        page.items.iter().map(|o| (format!("{}/{}", o.namespace, o.name), o.revision)),
                    );
                    let Some(after) = page.continue_after.clone() else { break };
                    request.continue_from = Some((revision, after));
                    page = match cacher.list(&request).await {
                        Ok(page) => page,
                        Err(watchcache::cacher::CacheError::Expired { .. }) => break,
                        Err(error) => panic!("seed {seed} step {step}: {error}"),
                    };
                }
                // The model's state at `revision`: replay the writes up to it.
                let mut at: BTreeMap<String, Object> = BTreeMap::new();
                for write in writes.iter().filter(|write| write.revision <= revision) {
                    match &write.after {
                        Some(object) => {
                            at.insert(format!("/pods/{}/{}", object.namespace, object.name), object.clone())
                        }
                        None => {
                            let object = write.before.as_ref().unwrap();
                            at.remove(&format!("/pods/{}/{}", object.namespace, object.name))
                        }
                    };
                }
                let expected: Vec<(String, Revision)> = at
                    .values()
                    .filter(|object| filter.matches(object))
                    .map(|object| (format!("{}/{}", object.namespace, object.name), object.revision))
                    .collect();
                if request.continue_from.is_none() || names.len() == expected.len() {
                    assert_eq!(names, expected, "seed {seed} step {step}: list {filter:?} at {revision}");
                } else {
                    // An expired continue ends early: what came must be a prefix.
                    assert_eq!(names[..], expected[..names.len()], "seed {seed} step {step}: pages");
                }
                if limit.is_none() {
                    assert_eq!(
                        revision,
                        storage.current_revision().await.unwrap(),
                        "consistent list revision"
                    );
                }
            }
            82..=91 => {}
            _ => {
                let filter = ModelFilter::random(&mut rng);
                // From a recent revision (most start fine, some too old).
                let latest = writes.last().map_or(start_revision, |write| write.revision);
                let from = latest.saturating_sub(rng.random_range(0..40)).max(start_revision);
                match cacher.watch(filter.to_cache(), WatchStart::After(from), rng.random_bool(0.3)).await {
                    Ok(watch) => {
                        watches.push(OpenWatch { watch, from, filter, seen: Vec::new(), expired: false })
                    }
                    Err(watchcache::cacher::CacheError::TooOld(_)) => {}
                    Err(error) => panic!("seed {seed} step {step}: watch: {error}"),
                }
            }
        }
        // Some watches read along, others only at the end.
        for (index, open) in watches.iter_mut().enumerate() {
            if index % 2 == 0 {
                open.poll();
            }
        }
    }

    // Every watch must end up with exactly the model's events after its start (or have been
    // told to relist).
    let mut complete = 0;
    for open in &mut watches {
        let expected = expected_events(&writes, open.from, &open.filter);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !open.expired && open.seen.len() < expected.len() && tokio::time::Instant::now() < deadline {
            open.poll();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if open.expired {
            // What it saw before it was shed is still a prefix of the truth.
            assert_eq!(
                open.seen[..],
                expected[..open.seen.len()],
                "seed {seed}: shed watch from {}",
                open.from
            );
        } else {
            assert_eq!(open.seen, expected, "seed {seed}: watch from {} with {:?}", open.from, open.filter);
            complete += 1;
        }
    }
    assert!(complete > 0 || watches.is_empty(), "seed {seed}: every watch was shed");
    let stats = cacher.stats();
    assert_eq!(stats.decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_agrees_with_a_model_over_random_operations() {
    let seeds: u64 =
        std::env::var("WATCHCACHE_MODEL_SEEDS").ok().and_then(|seeds| seeds.parse().ok()).unwrap_or(40);
    for seed in 0..seeds {
        run(seed).await;
    }
}
