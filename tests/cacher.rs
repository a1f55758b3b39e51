//! The watch cache against real storage: reads, watches, selectors and their transitions,
//! watch-list, bookmarks, slow watchers (catch-up and shedding), resuming after a restart,
//! consistent reads, and pagination from retained snapshots.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use watchcache::cacher::object::ResourceConfig;
use watchcache::cacher::ring::RingLimits;
use watchcache::cacher::{
    CacheConfig, CacheError, CacheWatch, Cacher, ListRequest, ReadVersion, WatchFilter, WatchItem, WatchStart,
};
use watchcache::selector::{FieldSelector, LabelSelector};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{Storage, StorageError};

const WAIT: Duration = Duration::from_secs(10);

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

fn pod(namespace: &str, name: &str, node: &str, labels: Value) -> Bytes {
    let object = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node},
    });
    Bytes::from(serde_json::to_vec(&object).unwrap())
}

fn key(namespace: &str, name: &str) -> String {
    format!("/pods/{namespace}/{name}")
}

fn memory() -> Arc<dyn Storage> {
    Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap())
}

async fn start(storage: &Arc<dyn Storage>, config: CacheConfig) -> Cacher {
    let cacher = Cacher::start(Arc::clone(storage), pods(), config);
    assert!(cacher.wait_ready(WAIT).await, "the cache did not load");
    cacher
}

fn filter(namespace: Option<&str>, labels: &str, fields: &str) -> WatchFilter {
    WatchFilter {
        namespace: namespace.map(str::to_owned),
        labels: LabelSelector::parse(labels).unwrap(),
        fields: FieldSelector::parse(fields, &["metadata.name", "metadata.namespace", "spec.nodeName"])
            .unwrap(),
    }
}

/// One decoded watch event: (type, namespace/name, resourceVersion).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: String,
    name: String,
    revision: u64,
    initial_events_end: bool,
}

fn parse(line: &[u8]) -> Seen {
    assert!(line.ends_with(b"\n"), "a watch line ends with a newline");
    let event: Value = serde_json::from_slice(line).unwrap();
    let metadata = &event["object"]["metadata"];
    Seen {
        kind: event["type"].as_str().unwrap().to_owned(),
        name: format!(
            "{}/{}",
            metadata["namespace"].as_str().unwrap_or_default(),
            metadata["name"].as_str().unwrap_or_default()
        ),
        revision: metadata["resourceVersion"].as_str().unwrap().parse().unwrap(),
        initial_events_end: metadata["annotations"]["k8s.io/initial-events-end"] == "true",
    }
}

/// Reads until `count` non-bookmark events arrived.
async fn events(watch: &mut CacheWatch, count: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    while seen.iter().filter(|event: &&Seen| event.kind != "BOOKMARK").count() < count {
        match tokio::time::timeout(WAIT, watch.next()).await.expect("watch stalled").expect("watch ended") {
            WatchItem::Lines(lines) => seen.extend(lines.iter().map(|line| parse(line))),
            WatchItem::Expired(too_old) => panic!("watch expired: {too_old}"),
        }
    }
    seen.retain(|event| event.kind != "BOOKMARK");
    assert_eq!(seen.len(), count, "more events than expected: {seen:?}");
    seen
}

async fn no_more_events(watch: &mut CacheWatch) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), watch.next()).await {
        panic!("unexpected {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reads_and_watches_from_storage_state() {
    let storage = memory();
    storage.create(&key("a", "p1"), pod("a", "p1", "n1", json!({"app": "web"}))).await.unwrap();
    storage.create(&key("b", "p2"), pod("b", "p2", "n2", json!({"app": "db"}))).await.unwrap();
    let cacher = start(&storage, CacheConfig::default()).await;

    let object = cacher.get(&key("a", "p1"), ReadVersion::Consistent).await.unwrap().unwrap();
    let json: Value = serde_json::from_slice(&object.json).unwrap();
    assert_eq!(json["metadata"]["resourceVersion"], object.revision.to_string());
    assert!(cacher.get(&key("a", "none"), ReadVersion::Any).await.unwrap().is_none());

    let all = cacher
        .list(&ListRequest {
            filter: WatchFilter::everything(),
            limit: None,
            continue_from: None,
            version: ReadVersion::Consistent,
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert_eq!(all.revision, storage.current_revision().await.unwrap());
    let web = cacher
        .list(&ListRequest {
            filter: filter(None, "app=web", ""),
            limit: None,
            continue_from: None,
            version: ReadVersion::Any,
        })
        .await
        .unwrap();
    assert_eq!(web.items.iter().map(|o| &*o.name).collect::<Vec<_>>(), ["p1"]);
    let in_b = cacher
        .list(&ListRequest {
            filter: filter(Some("b"), "", ""),
            limit: None,
            continue_from: None,
            version: ReadVersion::Any,
        })
        .await
        .unwrap();
    assert_eq!(in_b.items.iter().map(|o| &*o.name).collect::<Vec<_>>(), ["p2"]);

    // A watch from the list's revision sees exactly the writes after it.
    let mut watch =
        cacher.watch(WatchFilter::everything(), WatchStart::After(all.revision), false).await.unwrap();
    let created = storage.create(&key("a", "p3"), pod("a", "p3", "n1", json!({}))).await.unwrap();
    let updated =
        storage.update(&key("a", "p3"), pod("a", "p3", "n2", json!({})), created.mod_revision).await.unwrap();
    let deleted = storage.delete(&key("b", "p2"), None).await.unwrap();
    let seen = events(&mut watch, 3).await;
    let expected = [
        ("ADDED", "a/p3", created.mod_revision),
        ("MODIFIED", "a/p3", updated.mod_revision),
        ("DELETED", "b/p2", deleted.revision),
    ];
    assert_eq!(
        seen.iter().map(|e| (e.kind.as_str(), e.name.as_str(), e.revision)).collect::<Vec<_>>(),
        expected
    );
    no_more_events(&mut watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_their_transitions_follow_kube() {
    let storage = memory();
    let cacher = start(&storage, CacheConfig::default()).await;
    let from = cacher.revision();
    let mut web = cacher.watch(filter(None, "app=web", ""), WatchStart::After(from), false).await.unwrap();
    let mut node1 =
        cacher.watch(filter(None, "", "spec.nodeName=n1"), WatchStart::After(from), false).await.unwrap();
    let mut named =
        cacher.watch(filter(Some("a"), "", "metadata.name=p"), WatchStart::After(from), false).await.unwrap();
    let mut other_ns = cacher.watch(filter(Some("z"), "", ""), WatchStart::After(from), false).await.unwrap();

    let v1 = storage.create(&key("a", "p"), pod("a", "p", "n1", json!({"app": "web"}))).await.unwrap();
    // Leaves app=web and node n1 at once.
    let v2 = storage
        .update(&key("a", "p"), pod("a", "p", "n2", json!({"app": "db"})), v1.mod_revision)
        .await
        .unwrap();
    // Comes back to app=web, still on n2.
    let v3 = storage
        .update(&key("a", "p"), pod("a", "p", "n2", json!({"app": "web"})), v2.mod_revision)
        .await
        .unwrap();
    let gone = storage.delete(&key("a", "p"), None).await.unwrap();
    storage.create(&key("a", "q"), pod("a", "q", "n3", json!({}))).await.unwrap();

    let summary = |seen: Vec<Seen>| seen.into_iter().map(|e| (e.kind, e.revision)).collect::<Vec<_>>();
    let kinds = |list: &[(&str, u64)]| list.iter().map(|(k, r)| (k.to_string(), *r)).collect::<Vec<_>>();
    assert_eq!(
        summary(events(&mut web, 4).await),
        kinds(&[
            ("ADDED", v1.mod_revision),
            ("DELETED", v2.mod_revision),
            ("ADDED", v3.mod_revision),
            ("DELETED", gone.revision)
        ])
    );
    assert_eq!(
        summary(events(&mut node1, 2).await),
        kinds(&[("ADDED", v1.mod_revision), ("DELETED", v2.mod_revision)])
    );
    assert_eq!(summary(events(&mut named, 4).await).len(), 4);
    no_more_events(&mut web).await;
    no_more_events(&mut node1).await;
    no_more_events(&mut named).await;
    no_more_events(&mut other_ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_sends_initial_events_then_the_end_bookmark() {
    let storage = memory();
    for i in 0..600 {
        storage
            .create(&key("a", &format!("p{i:03}")), pod("a", &format!("p{i:03}"), "n", json!({})))
            .await
            .unwrap();
    }
    let cacher = start(&storage, CacheConfig::default()).await;
    let start = WatchStart::InitialState { version: ReadVersion::Consistent, initial_events_end: true };
    let mut watch = cacher.watch(WatchFilter::everything(), start, true).await.unwrap();
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|event: &Seen| event.initial_events_end) {
        match tokio::time::timeout(WAIT, watch.next()).await.unwrap().unwrap() {
            WatchItem::Lines(lines) => seen.extend(lines.iter().map(|line| parse(line))),
            other => panic!("{other:?}"),
        }
    }
    let end = seen.pop().unwrap();
    assert_eq!(end.kind, "BOOKMARK");
    assert_eq!(end.revision, storage.current_revision().await.unwrap());
    assert_eq!(seen.len(), 600);
    assert!(seen.iter().all(|event| event.kind == "ADDED"));
    let names: Vec<&str> = seen.iter().map(|event| event.name.as_str()).collect();
    assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "initial events in key order, each once");
    // Then the live events.
    let next = storage.create(&key("a", "new"), pod("a", "new", "n", json!({}))).await.unwrap();
    let live = events(&mut watch, 1).await;
    assert_eq!((live[0].kind.as_str(), live[0].revision), ("ADDED", next.mod_revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_report_progress_without_getting_ahead() {
    let storage = memory();
    let config = CacheConfig { bookmark_interval: Duration::from_millis(50), ..CacheConfig::default() };
    let cacher = start(&storage, config).await;
    let mut watch =
        cacher.watch(filter(Some("a"), "", ""), WatchStart::After(cacher.revision()), true).await.unwrap();
    let mine = storage.create(&key("a", "p"), pod("a", "p", "n", json!({}))).await.unwrap();
    // Writes this watch does not want still move its bookmarks forward.
    let elsewhere = storage.create(&key("b", "p"), pod("b", "p", "n", json!({}))).await.unwrap();
    let mut last_revision = 0;
    let mut got_event = false;
    loop {
        let item = tokio::time::timeout(WAIT, watch.next()).await.unwrap().unwrap();
        let WatchItem::Lines(lines) = item else { panic!("{item:?}") };
        for event in lines.iter().map(|line| parse(line)) {
            assert!(event.revision >= last_revision, "bookmarks and events never go back");
            last_revision = event.revision;
            if event.kind == "ADDED" {
                assert_eq!(event.revision, mine.mod_revision);
                got_event = true;
            } else {
                assert_eq!(event.kind, "BOOKMARK");
                assert!(got_event || event.revision < mine.mod_revision, "a bookmark got ahead of an event");
            }
        }
        if got_event && last_revision >= elsewhere.mod_revision {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_neither_delays_others_nor_grows_and_is_shed_when_too_far_behind() {
    let storage = memory();
    let config = CacheConfig {
        watcher_queue: 8,
        ring: RingLimits { min_events: 10, max_events: 64, ..RingLimits::default() },
        ..CacheConfig::default()
    };
    let cacher = start(&storage, config).await;
    let from = cacher.revision();
    let mut stalled = cacher.watch(WatchFilter::everything(), WatchStart::After(from), false).await.unwrap();
    let mut reader = cacher.watch(WatchFilter::everything(), WatchStart::After(from), false).await.unwrap();
    // The stalled one is positioned and registered, then never read again.
    let first = storage.create(&key("a", "first"), pod("a", "first", "n", json!({}))).await.unwrap();
    assert_eq!(events(&mut stalled, 1).await[0].revision, first.mod_revision);
    assert_eq!(events(&mut reader, 1).await[0].revision, first.mod_revision);

    // The other watcher reads along, 20 writes at a time, and sees every event in order.
    for round in 0..15 {
        let mut expected = Vec::new();
        for i in 0..20 {
            let name = format!("p{round}-{i}");
            expected.push(
                storage.create(&key("a", &name), pod("a", &name, "n", json!({}))).await.unwrap().mod_revision,
            );
        }
        let seen = events(&mut reader, 20).await;
        assert_eq!(seen.iter().map(|e| e.revision).collect::<Vec<_>>(), expected);
    }

    let stats = cacher.stats();
    assert!(stats.overflowed >= 1, "the stalled watcher's queue never overflowed: {stats:?}");
    assert!(stats.ring_events <= 64, "the ring grew past its bound: {stats:?}");
    // Its queue held at most 8 positions; past that it fell behind the 64-event ring and is
    // shed with TooOld, cleanly.
    let mut drained = 0;
    loop {
        match tokio::time::timeout(WAIT, stalled.next()).await.unwrap() {
            Some(WatchItem::Lines(lines)) => drained += lines.len(),
            Some(WatchItem::Expired(too_old)) => {
                assert!(too_old.requested >= first.mod_revision);
                break;
            }
            None => panic!("ended without telling the client to relist"),
        }
    }
    assert!(drained <= 8, "a stalled watcher held more than its queue: {drained}");
    assert!(stalled.next().await.is_none(), "a shed watch ends");
    assert_eq!(cacher.stats().shed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_from_the_ring_without_loss_or_repeat() {
    let storage = memory();
    let config = CacheConfig {
        watcher_queue: 4,
        ring: RingLimits { min_events: 10_000, max_events: 16_384, ..RingLimits::default() },
        ..CacheConfig::default()
    };
    let cacher = start(&storage, config).await;
    let mut slow = cacher
        .watch(filter(None, "keep=yes", ""), WatchStart::After(cacher.revision()), false)
        .await
        .unwrap();
    // Go live first: nothing to read, so the watch switches to its queue.
    no_more_events(&mut slow).await;
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for burst in 0..10 {
        // A burst the watcher does not read: its 4-entry queue overflows.
        for i in 0..60 {
            let labels = if i % 3 == 0 { json!({"keep": "no"}) } else { json!({"keep": "yes"}) };
            let name = format!("p{burst}-{i}");
            let created = storage.create(&key("a", &name), pod("a", &name, "n", labels)).await.unwrap();
            if i % 3 != 0 {
                expected.push(created.mod_revision);
            }
        }
        // Then it reads: the queued positions, then the ring, then back to its queue.
        while seen.len() < expected.len() {
            match tokio::time::timeout(WAIT, slow.next()).await.unwrap().unwrap() {
                WatchItem::Lines(lines) => seen.extend(lines.iter().map(|line| parse(line).revision)),
                WatchItem::Expired(too_old) => panic!("shed although the ring holds everything: {too_old}"),
            }
        }
        no_more_events(&mut slow).await;
    }
    assert_eq!(seen, expected, "every wanted event exactly once, in order");
    let stats = cacher.stats();
    assert!(stats.overflowed >= 10, "the catch-up path was not exercised: {stats:?}");
    assert!(stats.caught_up >= 10, "the watcher did not return to its queue: {stats:?}");
    assert_eq!(stats.shed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_old_revision_is_refused() {
    let storage = memory();
    let config = CacheConfig {
        ring: RingLimits { min_events: 4, max_events: 8, ..RingLimits::default() },
        ..CacheConfig::default()
    };
    let cacher = start(&storage, config).await;
    let from = cacher.revision();
    let mut last = 0;
    for i in 0..20 {
        last = storage
            .create(&key("a", &format!("p{i}")), pod("a", &format!("p{i}"), "n", json!({})))
            .await
            .unwrap()
            .mod_revision;
    }
    let list = cacher
        .list(&ListRequest {
            filter: WatchFilter::everything(),
            limit: None,
            continue_from: None,
            version: ReadVersion::NotOlderThan(last),
        })
        .await
        .unwrap();
    assert_eq!(list.items.len(), 20);
    match cacher.watch(WatchFilter::everything(), WatchStart::After(from), false).await {
        Err(CacheError::TooOld(too_old)) => assert_eq!(too_old.requested, from),
        Ok(_) => panic!("a watch from an evicted revision started"),
        Err(other) => panic!("{other:?}"),
    }
    // A recent enough one works.
    let mut watch =
        cacher.watch(WatchFilter::everything(), WatchStart::After(last - 2), false).await.unwrap();
    assert_eq!(events(&mut watch, 2).await.len(), 2);
    // And one the cache has not reached is "too large" after a bounded wait.
    let config_timeout = tokio::time::timeout(
        WAIT,
        cacher.watch(WatchFilter::everything(), WatchStart::After(last + 100), false),
    );
    assert!(matches!(config_timeout.await.unwrap(), Err(CacheError::TooLargeResourceVersion { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_its_watch_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let mut revisions = Vec::new();
    for i in 0..50 {
        revisions.push(
            storage
                .create(&key("a", &format!("p{i}")), pod("a", &format!("p{i}"), "n", json!({})))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    // A new cache (a restarted server): a client that saw up to the 30th write resumes.
    let cacher = start(&storage, CacheConfig::default()).await;
    let mut watch =
        cacher.watch(WatchFilter::everything(), WatchStart::After(revisions[29]), false).await.unwrap();
    let seen = events(&mut watch, 20).await;
    assert_eq!(seen.iter().map(|e| e.revision).collect::<Vec<_>>(), revisions[30..]);
    // And the cache's state is current.
    let list = cacher
        .list(&ListRequest {
            filter: WatchFilter::everything(),
            limit: None,
            continue_from: None,
            version: ReadVersion::Consistent,
        })
        .await
        .unwrap();
    assert_eq!(list.items.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_reads_see_every_acknowledged_write() {
    let storage = memory();
    let cacher = start(&storage, CacheConfig::default()).await;
    for i in 0..30 {
        let written = storage
            .create(&key("a", &format!("p{i}")), pod("a", &format!("p{i}"), "n", json!({})))
            .await
            .unwrap();
        // A write to another resource moves storage's revision past this one's.
        storage
            .create(&format!("/configmaps/a/c{i}"), Bytes::from_static(b"{\"metadata\":{}}"))
            .await
            .unwrap();
        let got = cacher.get(&key("a", &format!("p{i}")), ReadVersion::Consistent).await.unwrap();
        assert_eq!(got.map(|object| object.revision), Some(written.mod_revision), "read {i} missed a write");
        let list = cacher
            .list(&ListRequest {
                filter: WatchFilter::everything(),
                limit: None,
                continue_from: None,
                version: ReadVersion::Consistent,
            })
            .await
            .unwrap();
        assert_eq!(list.items.len(), i + 1);
        assert_eq!(
            list.revision,
            storage.current_revision().await.unwrap(),
            "the list is at storage's revision"
        );
    }
    assert_eq!(cacher.stats().storage_fallbacks, 0, "progress notifications kept the cache current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_lists_read_their_revision_from_retained_snapshots() {
    let storage = memory();
    for i in 0..10 {
        storage
            .create(&key("a", &format!("p{i}")), pod("a", &format!("p{i}"), "n", json!({})))
            .await
            .unwrap();
    }
    let cacher = start(&storage, CacheConfig::default()).await;
    let request = |continue_from| ListRequest {
        filter: WatchFilter::everything(),
        limit: Some(4),
        continue_from,
        version: ReadVersion::Consistent,
    };
    let first = cacher.list(&request(None)).await.unwrap();
    assert_eq!(first.items.len(), 4);
    // Writes between pages do not show in later pages.
    storage.delete(&key("a", "p5"), None).await.unwrap();
    storage.create(&key("a", "p55"), pod("a", "p55", "n", json!({}))).await.unwrap();
    assert!(cacher.wait_ready(WAIT).await);
    let mut names: Vec<String> = first.items.iter().map(|o| o.name.to_string()).collect();
    let mut next = first.continue_after.clone().map(|after| (first.revision, after));
    while let Some(continue_from) = next {
        let page = cacher.list(&request(Some(continue_from))).await.unwrap();
        assert_eq!(page.revision, first.revision);
        names.extend(page.items.iter().map(|o| o.name.to_string()));
        next = page.continue_after.clone().map(|after| (page.revision, after));
    }
    assert_eq!(names, (0..10).map(|i| format!("p{i}")).collect::<Vec<_>>());
    assert_eq!(cacher.stats().storage_fallbacks, 0, "pages came from the cache");
}

/// Six pods in a cache that pins at most two revisions for `retain_for`.
async fn six_pods_paged_by_two(retain_for: Duration) -> (Arc<dyn Storage>, Cacher) {
    let storage = memory();
    for i in 0..6 {
        storage
            .create(&key("a", &format!("p{i}")), pod("a", &format!("p{i}"), "n", json!({})))
            .await
            .unwrap();
    }
    let config = CacheConfig {
        store: watchcache::cacher::store::StoreLimits { retained: 2, retain_for },
        ..CacheConfig::default()
    };
    let cacher = start(&storage, config).await;
    (storage, cacher)
}

/// A list of at most two items, from the start or continuing.
fn pages_of_two(continue_from: Option<(u64, String)>) -> ListRequest {
    ListRequest {
        filter: WatchFilter::everything(),
        limit: Some(2),
        continue_from,
        version: ReadVersion::Consistent,
    }
}

/// Retention is by time, not by writes: a list paged from the cache keeps its snapshot however
/// many writes come between pages, with a cap of only two pinned revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paginated_list_outlives_many_writes_between_its_pages() {
    let (storage, cacher) = six_pods_paged_by_two(Duration::from_secs(75)).await;
    let first = cacher.list(&pages_of_two(None)).await.unwrap();
    let mut names: Vec<String> = first.items.iter().map(|o| o.name.to_string()).collect();
    let mut next = first.continue_after.clone().map(|after| (first.revision, after));
    let mut round = 0;
    while let Some(continue_from) = next {
        // 600 writes (more than the old count bound's share) between pages, to this resource.
        for i in 0..600 {
            let name = format!("w{round}-{i}");
            storage.create(&key("b", &name), pod("b", &name, "n", json!({}))).await.unwrap();
        }
        let current = storage.current_revision().await.unwrap();
        let _ = cacher.get(&key("a", "p0"), ReadVersion::NotOlderThan(current)).await.unwrap();
        let page = cacher.list(&pages_of_two(Some(continue_from))).await.unwrap();
        assert_eq!(page.revision, first.revision);
        names.extend(page.items.iter().map(|o| o.name.to_string()));
        next = page.continue_after.clone().map(|after| (page.revision, after));
        round += 1;
    }
    assert_eq!(names, (0..6).map(|i| format!("p{i}")).collect::<Vec<_>>());
    assert_eq!(cacher.stats().storage_fallbacks, 0, "every page came from the pinned snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_is_gone() {
    let (storage, cacher) = six_pods_paged_by_two(Duration::from_millis(200)).await;
    let first = cacher.list(&pages_of_two(None)).await.unwrap();
    // Past the retention window (the store checks ages at most once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..10 {
        storage
            .create(&key("b", &format!("q{i}")), pod("b", &format!("q{i}"), "n", json!({})))
            .await
            .unwrap();
    }
    let current = storage.current_revision().await.unwrap();
    storage.compact(current).await.unwrap();
    let next = (first.revision, first.continue_after.unwrap());
    // Neither a retained snapshot nor storage's history can serve it any more.
    let _ = cacher.get(&key("a", "p0"), ReadVersion::NotOlderThan(current)).await.unwrap();
    match cacher.list(&pages_of_two(Some(next))).await {
        Err(CacheError::Expired { revision }) => assert_eq!(revision, first.revision),
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_without_reliable_progress_consistent_reads_fall_back_to_storage() {
    let cluster = common::EtcdCluster::start(1);
    let etcd = cluster.storage("/registry").await;
    assert!(
        !etcd.progress_notify_reliable(),
        "this test expects Debian's etcd 3.4.23 ({})",
        etcd.server_version()
    );
    let storage: Arc<dyn Storage> = Arc::new(etcd);
    let cacher = start(&storage, CacheConfig::default()).await;
    let written = storage.create(&key("a", "p"), pod("a", "p", "n", json!({}))).await.unwrap();
    storage.create("/configmaps/a/c", Bytes::from_static(b"{\"metadata\":{}}")).await.unwrap();
    let got = cacher.get(&key("a", "p"), ReadVersion::Consistent).await.unwrap();
    assert_eq!(got.map(|object| object.revision), Some(written.mod_revision));
    assert!(cacher.stats().storage_fallbacks >= 1, "a consistent read trusted unreliable progress");
    // Watches are served from the cache all the same.
    let mut watch = cacher
        .watch(WatchFilter::everything(), WatchStart::After(written.mod_revision - 1), false)
        .await
        .unwrap();
    assert_eq!(events(&mut watch, 1).await[0].revision, written.mod_revision);
    let error = storage.create(&key("a", "p"), pod("a", "p", "n", json!({}))).await.unwrap_err();
    assert!(matches!(error, StorageError::AlreadyExists { .. }));
}
