//! The watch cache against a model: after any sequence of creates, updates and deletes (with
//! labels that move objects in and out of a selector) and bursts of writes the selector does not
//! want (up to about a thousand writes in all, so that the ring can hold several watcher batches
//! of events nobody wants), a consistent list from the cache equals the model, and three watches
//! with that selector and tiny queues (one that reads only at the end, one that reads along, one
//! that drops its watch and resumes from the last revision it saw) each deliver exactly kube's
//! events for it, including selector transitions, or are shed with 410 having delivered a prefix
//! of them. A watch that delivers nothing for 5 s while events are due panics: a stall is a
//! crash.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use watchcache::cacher::object::ResourceConfig;
use watchcache::cacher::ring::RingLimits;
use watchcache::cacher::{
    CacheConfig, CacheError, CacheWatch, Cacher, ListRequest, ReadVersion, WatchFilter, WatchItem, WatchStart,
};
use watchcache::selector::{FieldSelector, LabelSelector};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::Storage;

/// One step, read from one byte of the input (after the first, which chooses the watchers'
/// queue capacity and the ring's size), so that short inputs already make long histories.
#[derive(Debug)]
enum Op {
    /// A create, update or delete of one of five objects, which the selector wants or not.
    Write { key: u8, delete: bool, selected: bool },
    /// `count` (32 to 1024, within the writes left) creates of new objects the selector does not
    /// want, written concurrently; with `then_wanted`, followed by the create of a new object it
    /// wants.
    Unwanted { count: usize, then_wanted: bool },
    /// The watches that read along read what is there now.
    Read,
    /// The resuming watch drops its watch and watches again after the last revision it saw.
    Resume,
}

impl From<u8> for Op {
    fn from(byte: u8) -> Op {
        match byte {
            0x00..=0x7f => Op::Write { key: byte & 7, delete: byte & 0x30 == 0x30, selected: byte & 8 != 0 },
            0x80..=0xbf => {
                Op::Unwanted { count: 32 * (usize::from(byte & 0x1f) + 1), then_wanted: byte & 0x20 != 0 }
            }
            0xc0..=0xdf => Op::Read,
            _ => Op::Resume,
        }
    }
}

/// Writes per input at most.
const MAX_WRITES: usize = 1200;
/// How long a watch may take for an event that is due.
const STALL: Duration = Duration::from_secs(5);

/// (type, name, resourceVersion)
type Seen = (String, String, u64);

fn object(namespace: &str, name: &str, selected: bool) -> Bytes {
    let value = serde_json::json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"pick": if selected { "yes" } else { "no" }}},
    });
    Bytes::from(serde_json::to_vec(&value).unwrap())
}

fn filter(namespace: Option<&str>) -> WatchFilter {
    WatchFilter {
        namespace: namespace.map(str::to_owned),
        labels: LabelSelector::parse("pick=yes").unwrap(),
        fields: FieldSelector::everything(),
    }
}

/// One client's watch: what it received, and the revision it would resume after.
struct Follower {
    name: &'static str,
    namespace: Option<String>,
    /// `None` once shed.
    watch: Option<CacheWatch>,
    seen: Vec<Seen>,
    last: u64,
}

impl Follower {
    async fn start(cacher: &Cacher, name: &'static str, namespace: Option<String>, from: u64) -> Self {
        let watch = cacher.watch(filter(namespace.as_deref()), WatchStart::After(from), false).await.unwrap();
        Follower { name, namespace, watch: Some(watch), seen: Vec::new(), last: from }
    }

    fn take(&mut self, item: Option<WatchItem>) {
        match item {
            Some(WatchItem::Lines(lines)) => {
                for line in lines {
                    let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
                    let metadata = &event["object"]["metadata"];
                    let seen: Seen = (
                        event["type"].as_str().unwrap().to_owned(),
                        metadata["name"].as_str().unwrap_or_default().to_owned(),
                        metadata["resourceVersion"].as_str().unwrap().parse().unwrap(),
                    );
                    self.last = seen.2;
                    if seen.0 != "BOOKMARK" {
                        self.seen.push(seen);
                    }
                }
            }
            Some(WatchItem::Expired(_)) => self.watch = None,
            None => panic!("the {} watch ended without a reason", self.name),
        }
    }

    /// Reads whatever is available now, without waiting (`next` is cancel-safe).
    fn poll(&mut self) {
        loop {
            let item = {
                let Some(watch) = self.watch.as_mut() else { return };
                let mut next = std::pin::pin!(watch.next());
                match next.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(item) => item,
                    Poll::Pending => return,
                }
            };
            self.take(item);
        }
    }

    /// Drops the watch and watches again after the last revision received.
    async fn resume(&mut self, cacher: &Cacher) {
        if self.watch.take().is_none() {
            return;
        }
        match cacher.watch(filter(self.namespace.as_deref()), WatchStart::After(self.last), false).await {
            Ok(watch) => self.watch = Some(watch),
            Err(CacheError::TooOld(_)) => {}
            Err(error) => panic!("the {} watch could not resume after {}: {error}", self.name, self.last),
        }
    }

    /// Reads until every expected event is in, then compares.
    async fn finish(&mut self, expected: &[Seen]) {
        while self.seen.len() < expected.len() {
            let Some(watch) = self.watch.as_mut() else { break };
            match tokio::time::timeout(STALL, watch.next()).await {
                Ok(item) => self.take(item),
                Err(_) => panic!(
                    "the {} watch stalled: {} of {} events, then nothing for {STALL:?}; the next one due is {:?}",
                    self.name,
                    self.seen.len(),
                    expected.len(),
                    expected[self.seen.len()]
                ),
            }
        }
        // Nothing more may be there.
        self.poll();
        if self.watch.is_some() {
            assert_eq!(self.seen, expected, "the {} watch diverged from the model", self.name);
        } else {
            // Shed: what came before the 410 is still a prefix of the truth.
            assert!(
                self.seen.len() <= expected.len() && self.seen[..] == expected[..self.seen.len()],
                "the {} watch diverged from the model before it was shed: {:?}",
                self.name,
                self.seen
            );
        }
    }
}

/// One watch cache over its own store, shared by the inputs with the same setup byte's queue
/// and ring; replaced once it has taken [`WRITES_PER_CACHE`] writes, so that it stays small.
struct Slot {
    storage: Arc<dyn Storage>,
    cacher: Cacher,
    writes: usize,
}

/// What inputs share: one runtime, and a cache per setup. Each input writes in a namespace of
/// its own and watches from the revision the previous inputs left, so it sees only its own
/// events.
struct Shared {
    runtime: tokio::runtime::Runtime,
    slots: HashMap<(usize, u8), Slot>,
    serial: u64,
}

const WRITES_PER_CACHE: usize = 50_000;

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

fn open_slot(queue: usize, ring: u8) -> Slot {
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::in_memory_volatile(EmbeddedOptions::default()).unwrap());
    let resource = ResourceConfig {
        prefix: "/pods/".into(),
        kind: "Pod".into(),
        api_version: "v1".into(),
        namespaced: true,
        selectable_fields: vec![],
        indexed_field: None,
    };
    // Tiny (16 events), a batch or two (512), or the whole history (4096).
    let ring = match ring {
        0 => RingLimits { min_events: 4, max_events: 16, ..RingLimits::default() },
        1 => RingLimits { min_events: 256, max_events: 512, ..RingLimits::default() },
        _ => RingLimits { min_events: 2048, max_events: 4096, ..RingLimits::default() },
    };
    let config = CacheConfig { watcher_queue: queue, ring, ..CacheConfig::default() };
    let cacher = Cacher::start(Arc::clone(&storage), resource, config);
    Slot { storage, cacher, writes: 0 }
}

fuzz_target!(|input: &[u8]| {
    let [setup, ops @ ..] = input else { return };
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let shared = shared.get_or_insert_with(|| Shared {
        runtime: tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap(),
        slots: HashMap::new(),
        serial: 0,
    });
    shared.serial += 1;
    let namespace = format!("n{}", shared.serial);
    let setup = (1 + usize::from(setup & 7), ((setup >> 3) % 4).min(2));
    let Shared { runtime, slots, .. } = shared;
    runtime.block_on(async {
        if slots.get(&setup).is_some_and(|slot| slot.writes >= WRITES_PER_CACHE) {
            if let Some(slot) = slots.remove(&setup) {
                slot.cacher.stop();
            }
        }
        let slot = slots.entry(setup).or_insert_with(|| open_slot(setup.0, setup.1));
        let storage = Arc::clone(&slot.storage);
        let cacher = &slot.cacher;
        assert!(cacher.wait_ready(Duration::from_secs(10)).await);
        let start = storage.current_revision().await.unwrap();
        let mut idle = Follower::start(cacher, "idle", None, start).await;
        let mut reader = Follower::start(cacher, "reading", Some(namespace.clone()), start).await;
        let mut resumer = Follower::start(cacher, "resuming", None, start).await;

        // name -> (selected, revision)
        let mut model: BTreeMap<String, (bool, u64)> = BTreeMap::new();
        let mut expected = Vec::new();
        let mut writes = 0;
        for &op in ops {
            match Op::from(op) {
                Op::Write { key, delete, selected } if writes < MAX_WRITES => {
                    writes += 1;
                    let name = format!("p{}", key % 5);
                    let key = format!("/pods/{namespace}/{name}");
                    match (model.get(&name).copied(), delete) {
                        (None, true) => {}
                        (None, false) => {
                            let kv = storage.create(&key, object(&namespace, &name, selected)).await.unwrap();
                            if selected {
                                expected.push(("ADDED", name.clone(), kv.mod_revision));
                            }
                            model.insert(name, (selected, kv.mod_revision));
                        }
                        (Some((was, revision)), true) => {
                            let deleted = storage.delete(&key, Some(revision)).await.unwrap();
                            if was {
                                expected.push(("DELETED", name.clone(), deleted.revision));
                            }
                            model.remove(&name);
                        }
                        (Some((was, revision)), false) => {
                            let kv = storage
                                .update(&key, object(&namespace, &name, selected), revision)
                                .await
                                .unwrap();
                            match (was, selected) {
                                (true, true) => expected.push(("MODIFIED", name.clone(), kv.mod_revision)),
                                (false, true) => expected.push(("ADDED", name.clone(), kv.mod_revision)),
                                (true, false) => expected.push(("DELETED", name.clone(), kv.mod_revision)),
                                (false, false) => {}
                            }
                            model.insert(name, (selected, kv.mod_revision));
                        }
                    }
                }
                Op::Write { .. } => {}
                Op::Unwanted { count, then_wanted } => {
                    let count = count.min(MAX_WRITES - writes);
                    let creates: Vec<_> = (writes..writes + count)
                        .map(|i| {
                            let storage = Arc::clone(&storage);
                            let namespace = namespace.clone();
                            tokio::spawn(async move {
                                let name = format!("unwanted-{i}");
                                storage
                                    .create(
                                        &format!("/pods/{namespace}/{name}"),
                                        object(&namespace, &name, false),
                                    )
                                    .await
                                    .unwrap();
                            })
                        })
                        .collect();
                    for create in creates {
                        create.await.unwrap();
                    }
                    writes += count;
                    if then_wanted && writes < MAX_WRITES {
                        let name = format!("wanted-{writes}");
                        let kv = storage
                            .create(&format!("/pods/{namespace}/{name}"), object(&namespace, &name, true))
                            .await
                            .unwrap();
                        expected.push(("ADDED", name.clone(), kv.mod_revision));
                        model.insert(name, (true, kv.mod_revision));
                        writes += 1;
                    }
                }
                Op::Read => {
                    reader.poll();
                    resumer.poll();
                }
                Op::Resume => resumer.resume(cacher).await,
            }
        }
        slot.writes += writes;
        let request = ListRequest {
            filter: filter(Some(&namespace)),
            limit: None,
            continue_from: None,
            version: ReadVersion::Consistent,
        };
        let listed = cacher.list(&request).await.unwrap();
        let got: Vec<(String, u64)> = listed.items.iter().map(|o| (o.name.to_string(), o.revision)).collect();
        let want: Vec<(String, u64)> = model
            .iter()
            .filter(|(_, (selected, _))| *selected)
            .map(|(name, (_, rev))| (name.clone(), *rev))
            .collect();
        assert_eq!(got, want);

        let expected: Vec<Seen> =
            expected.into_iter().map(|(kind, name, rev)| (kind.to_owned(), name, rev)).collect();
        for follower in [&mut idle, &mut reader, &mut resumer] {
            follower.finish(&expected).await;
        }
    });
});
