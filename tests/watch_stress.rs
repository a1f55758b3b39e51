//! Watch delivery under load, over the in-memory embedded store.
//!
//! - A watch with a sparse selector reads past any number of events it does not want: from an
//!   old resourceVersion whose following events fill more than a batch, and after its queue
//!   overflowed while such events arrived.
//! - Many concurrent watchers (sparse label, field and namespace filters; tiny queues that
//!   overflow; slow readers; readers that pause; readers that stop and resume from the last
//!   revision they saw) each receive exactly kube's events for their filter, in order, with no
//!   gap and no duplicate, while writers move objects in and out of their selectors. A watcher
//!   told to relist (410) must have received a prefix of them.
//!
//! `WATCHCACHE_STRESS_SEEDS` sets how many seeds the random test runs (default 3);
//! `WATCHCACHE_STRESS_SEED` runs that one seed only. A failure names its seed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use watchcache::cacher::object::ResourceConfig;
use watchcache::cacher::ring::RingLimits;
use watchcache::cacher::{
    CacheConfig, CacheError, CacheStats, CacheWatch, Cacher, WatchFilter, WatchItem, WatchStart,
};
use watchcache::selector::{FieldSelector, LabelSelector};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{Revision, Storage};

/// How long a watch may take to deliver an event that is due before it counts as stalled.
const STALL: Duration = Duration::from_secs(5);

fn pods() -> ResourceConfig {
    ResourceConfig {
        prefix: "/pods/".into(),
        kind: "Pod".into(),
        api_version: "v1".into(),
        namespaced: true,
        selectable_fields: vec!["spec.nodeName".into()],
        indexed_field: Some("spec.nodeName".into()),
    }
}

const FIELDS: [&str; 3] = ["metadata.name", "metadata.namespace", "spec.nodeName"];

fn memory() -> Arc<dyn Storage> {
    Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap())
}

async fn start(storage: &Arc<dyn Storage>, config: CacheConfig) -> Cacher {
    let cacher = Cacher::start(Arc::clone(storage), pods(), config);
    assert!(cacher.wait_ready(Duration::from_secs(10)).await, "the cache did not load");
    cacher
}

fn pod(namespace: &str, name: &str, app: &str, node: &str, generation: u32) -> Bytes {
    let object = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app},
            "annotations": {"generation": generation.to_string()},
        },
        "spec": {"nodeName": node},
    });
    Bytes::from(serde_json::to_vec(&object).unwrap())
}

fn key(namespace: &str, name: &str) -> String {
    format!("/pods/{namespace}/{name}")
}

fn filter(namespace: Option<&str>, labels: &str, fields: &str) -> WatchFilter {
    WatchFilter {
        namespace: namespace.map(str::to_owned),
        labels: LabelSelector::parse(labels).unwrap(),
        fields: FieldSelector::parse(fields, &FIELDS).unwrap(),
    }
}

/// One watch event as received or as the model expects it: the object's state is the one kube
/// shows (the new state for ADDED and MODIFIED, the previous one for DELETED).
#[derive(Clone, PartialEq, Eq)]
struct Event {
    kind: String,
    /// namespace/name
    name: String,
    revision: Revision,
    app: String,
    node: String,
    generation: String,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}@{} ({}, {}, gen {})",
            self.kind, self.name, self.revision, self.app, self.node, self.generation
        )
    }
}

fn parse(line: &[u8]) -> Event {
    assert!(line.ends_with(b"\n"), "a watch line ends with a newline");
    let event: Value = serde_json::from_slice(line).unwrap();
    let object = &event["object"];
    let metadata = &object["metadata"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    Event {
        kind: text(&event["type"]),
        name: format!("{}/{}", text(&metadata["namespace"]), text(&metadata["name"])),
        revision: metadata["resourceVersion"].as_str().unwrap().parse().unwrap(),
        app: text(&metadata["labels"]["app"]),
        node: text(&object["spec"]["nodeName"]),
        generation: text(&metadata["annotations"]["generation"]),
    }
}

/// (type, namespace/name, resourceVersion) of each event.
fn brief(events: &[Event]) -> Vec<(&str, &str, Revision)> {
    events.iter().map(|event| (event.kind.as_str(), event.name.as_str(), event.revision)).collect()
}

/// Reads the next `count` events (bookmarks aside), allowing each of them [`STALL`].
async fn next_events(watch: &mut CacheWatch, count: usize) -> Vec<Event> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let item = match tokio::time::timeout(STALL, watch.next()).await {
            Ok(item) => item,
            Err(_) => panic!(
                "the watch stalled: {} of {count} events in time, then nothing for {STALL:?} (got {seen:?})",
                seen.len()
            ),
        };
        match item {
            Some(WatchItem::Lines(lines)) => {
                seen.extend(lines.iter().map(|line| parse(line)).filter(|event| event.kind != "BOOKMARK"))
            }
            Some(WatchItem::Expired(too_old)) => panic!("the watch expired: {too_old} (got {seen:?})"),
            None => panic!("the watch ended (got {seen:?})"),
        }
    }
    assert_eq!(seen.len(), count, "more events than expected: {seen:?}");
    seen
}

/// Waits until the cache has applied `revision`.
async fn cache_reaches(cacher: &Cacher, revision: Revision) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cacher.revision() < revision {
        assert!(Instant::now() < deadline, "the cache is at {}, not {revision}", cacher.revision());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (bounded) until the cache's counters satisfy `done`; the last stats.
async fn stats_until(cacher: &Cacher, done: impl Fn(&CacheStats) -> bool) -> CacheStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = cacher.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_watch_from_an_old_revision_reads_past_more_than_a_batch_of_unwanted_events() {
    let storage = memory();
    let cacher = start(&storage, CacheConfig::default()).await;
    let from = cacher.revision();
    // 600 objects neither watch wants (more than two batches of 256 events), then one for each.
    for i in 0..600 {
        let name = format!("other-{i}");
        storage.create(&key("a", &name), pod("a", &name, "x0", "n0", 0)).await.unwrap();
    }
    let labelled = storage.create(&key("a", "labelled"), pod("a", "labelled", "x1", "n0", 0)).await.unwrap();
    let scheduled =
        storage.create(&key("b", "scheduled"), pod("b", "scheduled", "x0", "n1", 0)).await.unwrap();
    cache_reaches(&cacher, scheduled.mod_revision).await;
    assert!(cacher.stats().ring_events >= 602, "the ring holds every event: {:?}", cacher.stats());

    // A namespaced watch with a label selector, and one with a field selector on the indexed
    // field, both from before the 600 objects.
    let mut by_label =
        cacher.watch(filter(Some("a"), "app=x1", ""), WatchStart::After(from), false).await.unwrap();
    let mut by_node =
        cacher.watch(filter(None, "", "spec.nodeName=n1"), WatchStart::After(from), false).await.unwrap();
    assert_eq!(brief(&next_events(&mut by_label, 1).await), [("ADDED", "a/labelled", labelled.mod_revision)]);
    assert_eq!(
        brief(&next_events(&mut by_node, 1).await),
        [("ADDED", "b/scheduled", scheduled.mod_revision)]
    );

    // Both then follow new writes.
    let later = storage.create(&key("a", "later"), pod("a", "later", "x1", "n1", 0)).await.unwrap();
    assert_eq!(brief(&next_events(&mut by_label, 1).await), [("ADDED", "a/later", later.mod_revision)]);
    assert_eq!(brief(&next_events(&mut by_node, 1).await), [("ADDED", "a/later", later.mod_revision)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_watch_whose_queue_overflowed_reads_past_more_than_a_batch_of_unwanted_events() {
    let storage = memory();
    let config = CacheConfig { watcher_queue: 2, ..CacheConfig::default() };
    let cacher = start(&storage, config).await;
    let mut watch = cacher
        .watch(filter(Some("a"), "app=x1", ""), WatchStart::After(cacher.revision()), false)
        .await
        .unwrap();
    // Nothing to read yet: the watch goes over to its queue.
    assert!(tokio::time::timeout(Duration::from_millis(300), watch.next()).await.is_err());

    // The watch does not read while three wanted events overflow its queue of two, then 1000
    // unwanted ones (about four batches) arrive, then two more wanted ones.
    let mut wanted = Vec::new();
    for i in 0..5 {
        if i == 3 {
            for j in 0..1000 {
                let name = format!("other-{j}");
                storage.create(&key("a", &name), pod("a", &name, "x0", "n0", 0)).await.unwrap();
            }
        }
        let name = format!("wanted-{i}");
        let created = storage.create(&key("a", &name), pod("a", &name, "x1", "n0", 0)).await.unwrap();
        wanted.push(("ADDED", format!("a/{name}"), created.mod_revision));
    }
    cache_reaches(&cacher, wanted[4].2).await;
    let stats = stats_until(&cacher, |stats| stats.overflowed >= 1).await;
    assert!(stats.overflowed >= 1, "the queue did not overflow: {stats:?}");
    assert!(stats.ring_events >= 1005, "the ring holds every event: {stats:?}");

    let seen = next_events(&mut watch, 5).await;
    let wanted: Vec<(&str, &str, Revision)> =
        wanted.iter().map(|(kind, name, revision)| (*kind, name.as_str(), *revision)).collect();
    assert_eq!(brief(&seen), wanted);

    // And it goes on with new writes.
    let later = storage.create(&key("a", "later"), pod("a", "later", "x1", "n0", 0)).await.unwrap();
    assert_eq!(brief(&next_events(&mut watch, 1).await), [("ADDED", "a/later", later.mod_revision)]);
}

// The random test.

const NAMESPACES: usize = 6;
const APPS: usize = 8;
const NODES: usize = 8;
const WRITERS: usize = 3;
/// Object names per writer (each in any namespace): the writers' keys never overlap.
const NAMES: usize = 16;
const WRITES_PER_WRITER: usize = 1000;
const WATCHERS: usize = 40;

/// The model's view of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Object {
    namespace: usize,
    name: String,
    app: usize,
    node: usize,
    generation: u32,
}

impl Object {
    fn value(&self) -> Bytes {
        pod(
            &format!("ns{}", self.namespace),
            &self.name,
            &format!("a{}", self.app),
            &format!("n{}", self.node),
            self.generation,
        )
    }

    /// The event kube sends for this state.
    fn event(&self, kind: &str, revision: Revision) -> Event {
        Event {
            kind: kind.to_owned(),
            name: format!("ns{}/{}", self.namespace, self.name),
            revision,
            app: format!("a{}", self.app),
            node: format!("n{}", self.node),
            generation: self.generation.to_string(),
        }
    }
}

/// One write as the model records it.
#[derive(Debug)]
struct Write {
    revision: Revision,
    before: Option<Object>,
    after: Option<Object>,
}

#[derive(Clone, Debug)]
enum AppSelector {
    Is(usize),
    In(usize, usize),
    Not(usize),
}

#[derive(Clone, Debug)]
enum NodeSelector {
    Is(usize),
    Not(usize),
}

/// A watch filter the model evaluates on its own.
#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<usize>,
    app: Option<AppSelector>,
    node: Option<NodeSelector>,
    name: Option<String>,
}

impl Filter {
    /// Mostly sparse filters (one in 8 to one in 400 objects), some dense ones.
    fn random(rng: &mut StdRng) -> Filter {
        let namespace =
            |rng: &mut StdRng, p: f64| rng.random_bool(p).then(|| rng.random_range(0..NAMESPACES));
        let app = |rng: &mut StdRng| rng.random_range(0..APPS);
        let node = |rng: &mut StdRng| rng.random_range(0..NODES);
        match rng.random_range(0..100) {
            0..=4 => Filter::default(),
            5..=14 => Filter { namespace: namespace(rng, 1.0), ..Filter::default() },
            15..=29 => Filter {
                namespace: namespace(rng, 0.3),
                app: Some(AppSelector::Is(app(rng))),
                ..Filter::default()
            },
            30..=44 => Filter {
                node: Some(NodeSelector::Is(node(rng))),
                app: rng.random_bool(0.3).then(|| AppSelector::Is(app(rng))),
                ..Filter::default()
            },
            45..=59 => Filter {
                namespace: namespace(rng, 1.0),
                app: Some(AppSelector::In(app(rng), app(rng))),
                ..Filter::default()
            },
            60..=71 => Filter {
                namespace: namespace(rng, 1.0),
                app: Some(AppSelector::Is(app(rng))),
                node: Some(NodeSelector::Is(node(rng))),
                ..Filter::default()
            },
            72..=79 => Filter {
                app: Some(AppSelector::Is(app(rng))),
                node: Some(NodeSelector::Not(node(rng))),
                ..Filter::default()
            },
            80..=85 => Filter {
                namespace: namespace(rng, 1.0),
                app: Some(AppSelector::Not(app(rng))),
                ..Filter::default()
            },
            _ => Filter {
                namespace: namespace(rng, 0.5),
                name: Some(format!("w{}-{}", rng.random_range(0..WRITERS), rng.random_range(0..NAMES))),
                ..Filter::default()
            },
        }
    }

    fn matches(&self, object: &Object) -> bool {
        self.namespace.is_none_or(|namespace| namespace == object.namespace)
            && self.name.as_ref().is_none_or(|name| *name == object.name)
            && match self.app {
                None => true,
                Some(AppSelector::Is(app)) => object.app == app,
                Some(AppSelector::In(a, b)) => object.app == a || object.app == b,
                Some(AppSelector::Not(app)) => object.app != app,
            }
            && match self.node {
                None => true,
                Some(NodeSelector::Is(node)) => object.node == node,
                Some(NodeSelector::Not(node)) => object.node != node,
            }
    }

    fn labels(&self) -> String {
        match self.app {
            None => String::new(),
            Some(AppSelector::Is(app)) => format!("app=a{app}"),
            Some(AppSelector::In(a, b)) => format!("app in (a{a},a{b})"),
            Some(AppSelector::Not(app)) => format!("app!=a{app}"),
        }
    }

    fn fields(&self) -> String {
        let mut terms = Vec::new();
        match self.node {
            None => {}
            Some(NodeSelector::Is(node)) => terms.push(format!("spec.nodeName=n{node}")),
            Some(NodeSelector::Not(node)) => terms.push(format!("spec.nodeName!=n{node}")),
        }
        if let Some(name) = &self.name {
            terms.push(format!("metadata.name={name}"));
        }
        terms.join(",")
    }

    fn to_cache(&self) -> WatchFilter {
        let namespace = self.namespace.map(|namespace| format!("ns{namespace}"));
        filter(namespace.as_deref(), &self.labels(), &self.fields())
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace {
            Some(namespace) => write!(f, "namespace ns{namespace}")?,
            None => write!(f, "all namespaces")?,
        }
        write!(f, ", labelSelector {:?}, fieldSelector {:?}", self.labels(), self.fields())
    }
}

/// The watch events kube-apiserver sends for `writes` after `from` to a watcher with `filter`.
fn expected_events(writes: &[Write], from: Revision, filter: &Filter) -> Vec<Event> {
    let mut events = Vec::new();
    for write in writes.iter().filter(|write| write.revision > from) {
        let before = write.before.as_ref().filter(|object| filter.matches(object));
        let after = write.after.as_ref().filter(|object| filter.matches(object));
        let event = match (&write.before, before, after) {
            // Created, or changed so that it starts matching: ADDED with the new state.
            (None, _, Some(after)) | (Some(_), None, Some(after)) => after.event("ADDED", write.revision),
            (Some(_), Some(_), Some(after)) => after.event("MODIFIED", write.revision),
            // Deleted, or changed so that it stops matching: DELETED with the previous state,
            // at the write's revision.
            (_, Some(before), None) => before.event("DELETED", write.revision),
            (_, None, None) => continue,
        };
        events.push(event);
    }
    events
}

/// Picks between `counts` distinct values below `of`.
fn some_of(rng: &mut StdRng, of: usize, counts: std::ops::RangeInclusive<usize>) -> Vec<usize> {
    let count = rng.random_range(counts);
    let mut values: Vec<usize> = (0..of).collect();
    for i in 0..count {
        values.swap(i, rng.random_range(i..of));
    }
    values.truncate(count);
    values
}

/// One writer: random creates, updates (moving objects between apps and nodes, or neither) and
/// deletes of its own objects. It works in phases, each on a few namespaces, apps and nodes, so
/// that a filter sees bursts (which overflow queues) and long stretches of events it does not
/// want; and it pauses now and then, so that watchers catch up and go back to their queues.
async fn writer(storage: Arc<dyn Storage>, index: usize, seed: u64) -> Vec<Write> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(index as u64));
    // key -> (object, mod revision)
    let mut objects: BTreeMap<String, (Object, Revision)> = BTreeMap::new();
    let mut writes = Vec::new();
    let (mut namespaces, mut apps, mut nodes) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..WRITES_PER_WRITER {
        if step % 150 == 0 {
            namespaces = some_of(&mut rng, NAMESPACES, 1..=3);
            apps = some_of(&mut rng, APPS, 2..=4);
            nodes = some_of(&mut rng, NODES, 2..=4);
        }
        if step % 64 == 63 && rng.random_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
        }
        let name = format!("w{index}-{}", rng.random_range(0..NAMES));
        let namespace = namespaces[rng.random_range(0..namespaces.len())];
        let app = apps[rng.random_range(0..apps.len())];
        let node = nodes[rng.random_range(0..nodes.len())];
        let key = key(&format!("ns{namespace}"), &name);
        match objects.get(&key).cloned() {
            None => {
                let object = Object { namespace, name, app, node, generation: 0 };
                let created = storage.create(&key, object.value()).await.unwrap();
                writes.push(Write {
                    revision: created.mod_revision,
                    before: None,
                    after: Some(object.clone()),
                });
                objects.insert(key, (object, created.mod_revision));
            }
            Some((before, revision)) if rng.random_bool(0.2) => {
                let deleted = storage.delete(&key, Some(revision)).await.unwrap();
                writes.push(Write { revision: deleted.revision, before: Some(before), after: None });
                objects.remove(&key);
            }
            Some((before, revision)) => {
                let mut object = before.clone();
                object.generation += 1;
                if rng.random_bool(0.4) {
                    object.app = app;
                }
                if rng.random_bool(0.4) {
                    object.node = node;
                }
                let updated = storage.update(&key, object.value(), revision).await.unwrap();
                writes.push(Write {
                    revision: updated.mod_revision,
                    before: Some(before),
                    after: Some(object.clone()),
                });
                objects.insert(key, (object, updated.mod_revision));
            }
        }
    }
    writes
}

/// How one watcher behaves.
#[derive(Clone, Debug)]
struct Plan {
    filter: Filter,
    /// It starts once the cache has reached this revision...
    start_at: Revision,
    /// ...from this many revisions before the cache's.
    back: u64,
    /// At most this long a sleep after each read (0: reads as fast as it can).
    read_delay: Duration,
    /// The chance, after a read, of a longer pause (50-500 ms).
    pause: f64,
    /// The chance, after a read, of dropping the watch and watching again from the last revision
    /// it saw.
    resume: f64,
    bookmarks: bool,
}

impl Plan {
    fn random(rng: &mut StdRng, base: Revision, writes: u64) -> Plan {
        let back = if rng.random_bool(0.7) { rng.random_range(0..=1500) } else { 0 };
        Plan {
            filter: Filter::random(rng),
            start_at: base + back + rng.random_range(0..writes * 3 / 4 - back),
            back,
            read_delay: match rng.random_range(0..100) {
                0..=49 => Duration::ZERO,
                50..=84 => Duration::from_millis(rng.random_range(1..=3)),
                _ => Duration::from_millis(rng.random_range(5..=10)),
            },
            pause: if rng.random_bool(0.3) { 0.2 } else { 0.0 },
            resume: if rng.random_bool(0.3) { 0.1 } else { 0.0 },
            bookmarks: rng.random_bool(0.2),
        }
    }
}

/// How a watcher ended.
#[derive(Debug)]
enum End {
    /// It received as many events as the model expects, and nothing more came.
    Complete,
    /// Its start revision had already left the ring.
    TooOldAtStart,
    /// 410: it was shed, or its resume revision had left the ring.
    Expired(String),
    /// Nothing came for [`STALL`] while events were due.
    Stalled,
    /// More events came after the expected ones.
    Extra(Vec<Event>),
    /// The watch ended (`None`) without a 410.
    EndedWithoutReason,
    /// A (re-)watch failed with something else than 410.
    WatchFailed(String),
}

/// What one watcher received.
#[derive(Debug)]
struct Outcome {
    from: Revision,
    events: Vec<Event>,
    /// (events received before it, its revision)
    bookmarks: Vec<(usize, Revision)>,
    resumes: usize,
    end: End,
}

type History = Option<Arc<Vec<Write>>>;

/// One watcher: it follows its plan until the writes are over, then reads until it has as many
/// events as the model expects for it.
async fn watcher(
    cacher: Arc<Cacher>,
    plan: Plan,
    mut history: watch::Receiver<History>,
    base: Revision,
    seed: u64,
) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed ^ plan.start_at.rotate_left(32) ^ plan.back);
    while cacher.revision() < plan.start_at && history.borrow().is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let from = cacher.revision().saturating_sub(plan.back).max(base);
    let mut outcome =
        Outcome { from, events: Vec::new(), bookmarks: Vec::new(), resumes: 0, end: End::Complete };
    let mut watch = match cacher.watch(plan.filter.to_cache(), WatchStart::After(from), plan.bookmarks).await
    {
        Ok(watch) => watch,
        Err(CacheError::TooOld(_)) => {
            outcome.end = End::TooOldAtStart;
            return outcome;
        }
        Err(error) => {
            outcome.end = End::WatchFailed(error.to_string());
            return outcome;
        }
    };
    // The last revision received (event or bookmark): where a resumed watch starts.
    let mut last = from;
    // Once the writes are over: how many events the model expects, and until when the next one
    // may take.
    let mut expected: Option<usize> = None;
    let mut deadline = Instant::now();
    loop {
        if expected.is_some_and(|expected| outcome.events.len() >= expected) {
            break;
        }
        let item = match expected {
            None => tokio::select! {
                biased;
                _ = history.changed() => {
                    let writes = history.borrow().clone().expect("the history");
                    expected = Some(expected_events(&writes, from, &plan.filter).len());
                    deadline = Instant::now() + STALL;
                    continue;
                }
                item = watch.next() => item,
            },
            Some(_) => match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(item) => item,
                Err(_) => {
                    outcome.end = End::Stalled;
                    return outcome;
                }
            },
        };
        match item {
            Some(WatchItem::Lines(lines)) => {
                for event in lines.iter().map(|line| parse(line)) {
                    last = event.revision;
                    if event.kind == "BOOKMARK" {
                        outcome.bookmarks.push((outcome.events.len(), event.revision));
                    } else {
                        outcome.events.push(event);
                        deadline = Instant::now() + STALL;
                    }
                }
            }
            Some(WatchItem::Expired(too_old)) => {
                outcome.end = End::Expired(too_old.to_string());
                return outcome;
            }
            None => {
                outcome.end = End::EndedWithoutReason;
                return outcome;
            }
        }
        if !plan.read_delay.is_zero() {
            tokio::time::sleep(rng.random_range(Duration::ZERO..=plan.read_delay)).await;
        }
        if rng.random_bool(plan.pause) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        }
        if rng.random_bool(plan.resume) {
            drop(watch);
            if rng.random_bool(0.5) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
            }
            watch = match cacher.watch(plan.filter.to_cache(), WatchStart::After(last), plan.bookmarks).await
            {
                Ok(watch) => watch,
                Err(CacheError::TooOld(too_old)) => {
                    outcome.end = End::Expired(too_old.to_string());
                    return outcome;
                }
                Err(error) => {
                    outcome.end = End::WatchFailed(error.to_string());
                    return outcome;
                }
            };
            outcome.resumes += 1;
            deadline = deadline.max(Instant::now() + STALL);
        }
    }
    // Every write is in the cache by now: anything more would be available at once.
    match tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
        Ok(Some(WatchItem::Lines(lines))) => {
            let extra: Vec<Event> =
                lines.iter().map(|line| parse(line)).filter(|event| event.kind != "BOOKMARK").collect();
            if !extra.is_empty() {
                outcome.end = End::Extra(extra);
            }
        }
        Ok(Some(WatchItem::Expired(_))) | Err(_) => {}
        Ok(None) => outcome.end = End::EndedWithoutReason,
    }
    outcome
}

/// What is wrong with `outcome`, if anything.
fn check(outcome: &Outcome, expected: &[Event]) -> Result<(), String> {
    let got = &outcome.events;
    let first_difference = || {
        let at = got
            .iter()
            .zip(expected)
            .position(|(got, want)| got != want)
            .unwrap_or(got.len().min(expected.len()));
        format!(
            "first difference at event {at}: got {:?}, expected {:?}; before it: {:?}",
            got.get(at),
            expected.get(at),
            &got[at.saturating_sub(3)..at.min(got.len())]
        )
    };
    let is_prefix = got.len() <= expected.len() && got[..] == expected[..got.len()];
    match &outcome.end {
        End::Complete if got[..] == expected[..] => {}
        End::Complete => return Err(format!("wrong events: {}", first_difference())),
        End::TooOldAtStart => return Ok(()),
        End::Expired(_) if is_prefix => {}
        End::Expired(reason) => {
            return Err(format!("expired ({reason}) after wrong events: {}", first_difference()))
        }
        End::Stalled if is_prefix => {
            return Err(format!(
                "stalled: {} of {} events, then nothing for {STALL:?}; the next one due is {:?}",
                got.len(),
                expected.len(),
                expected[got.len()]
            ))
        }
        End::Stalled => return Err(format!("stalled after wrong events: {}", first_difference())),
        End::Extra(extra) => return Err(format!("events after all expected ones: {extra:?}")),
        End::EndedWithoutReason => {
            return Err(format!("the watch ended without a 410 after {} events", got.len()))
        }
        End::WatchFailed(error) => return Err(format!("a watch failed: {error}")),
    }
    // A bookmark promises every event up to its revision.
    for &(before, revision) in &outcome.bookmarks {
        let due = expected.iter().take_while(|event| event.revision <= revision).count();
        if due != before {
            return Err(format!(
                "a bookmark at {revision} came after {before} events, but {due} events up to it were due"
            ));
        }
    }
    Ok(())
}

async fn run(seed: u64) -> CacheStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let storage = memory();
    let config = CacheConfig {
        watcher_queue: rng.random_range(2..=8),
        // Holds a writer's worth of events or two, so that watchers far behind are shed now
        // and then, but most catch up from the ring.
        ring: RingLimits { min_events: 1024, max_events: 2048, ..RingLimits::default() },
        bookmark_interval: Duration::from_millis(100),
        ..CacheConfig::default()
    };
    let cacher = Arc::new(start(&storage, config.clone()).await);
    let base = cacher.revision();
    let began = Instant::now();
    let total = (WRITERS * WRITES_PER_WRITER) as u64;
    let (publish, history) = watch::channel(None);
    let plans: Vec<Plan> = (0..WATCHERS).map(|_| Plan::random(&mut rng, base, total)).collect();
    let watchers: Vec<_> = plans
        .iter()
        .map(|plan| tokio::spawn(watcher(Arc::clone(&cacher), plan.clone(), history.clone(), base, seed)))
        .collect();
    let writers: Vec<_> =
        (0..WRITERS).map(|index| tokio::spawn(writer(Arc::clone(&storage), index, seed))).collect();
    let mut writes = Vec::new();
    for writer in writers {
        writes.extend(writer.await.unwrap_or_else(|error| panic!("seed {seed}: a writer failed: {error}")));
    }
    writes.sort_by_key(|write| write.revision);
    let revisions: Vec<Revision> = writes.iter().map(|write| write.revision).collect();
    assert_eq!(
        revisions,
        (base + 1..=base + total).collect::<Vec<_>>(),
        "seed {seed}: the writes are the history"
    );
    let writes = Arc::new(writes);
    publish.send_replace(Some(Arc::clone(&writes)));

    let mut failures = Vec::new();
    let mut complete = 0;
    for (index, (plan, watcher)) in plans.iter().zip(watchers).enumerate() {
        let outcome =
            watcher.await.unwrap_or_else(|error| panic!("seed {seed}: watcher {index} failed: {error}"));
        let expected = expected_events(&writes, outcome.from, &plan.filter);
        if matches!(outcome.end, End::Complete) {
            complete += 1;
        }
        if let Err(problem) = check(&outcome, &expected) {
            failures.push(format!(
                "watcher {index} ({}; from {}; read delay {:?}, pause {}, resume {}, bookmarks {}; {} resumes): {problem}",
                plan.filter,
                outcome.from,
                plan.read_delay,
                plan.pause,
                plan.resume,
                plan.bookmarks,
                outcome.resumes
            ));
        }
    }
    let stats = cacher.stats();
    eprintln!(
        "seed {seed}: {total} writes and {WATCHERS} watchers checked in {:?}; {stats:?}",
        began.elapsed()
    );
    cacher.stop();
    assert!(
        failures.is_empty(),
        "seed {seed} (rerun it alone with WATCHCACHE_STRESS_SEED={seed}; watcher queue {}): {} of {WATCHERS} \
         watchers went wrong; {stats:?}\n{}",
        config.watcher_queue,
        failures.len(),
        failures.join("\n")
    );
    assert!(
        complete * 2 >= WATCHERS,
        "seed {seed}: only {complete} of {WATCHERS} watchers were not shed: {stats:?}"
    );
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_watchers_with_tiny_queues_each_receive_exactly_their_events() {
    let seeds: Vec<u64> = match std::env::var("WATCHCACHE_STRESS_SEED") {
        Ok(seed) => vec![seed.parse().expect("WATCHCACHE_STRESS_SEED is a number")],
        Err(_) => {
            let count = std::env::var("WATCHCACHE_STRESS_SEEDS").ok().and_then(|seeds| seeds.parse().ok());
            (0..count.unwrap_or(3)).collect()
        }
    };
    let (mut overflowed, mut caught_up, mut shed) = (0, 0, 0);
    for seed in seeds {
        let stats = match tokio::time::timeout(Duration::from_secs(120), run(seed)).await {
            Ok(stats) => stats,
            Err(_) => panic!("seed {seed} did not finish in 120 s"),
        };
        overflowed += stats.overflowed;
        caught_up += stats.caught_up;
        shed += stats.shed;
    }
    // The point of the tiny queues: watchers overflowed and caught up from the ring.
    assert!(overflowed > 0, "no queue overflowed");
    assert!(caught_up > 0, "no watcher caught up from the ring and went back to its queue");
    eprintln!("overflowed {overflowed} times, caught up {caught_up} times, shed {shed} watchers");
}
