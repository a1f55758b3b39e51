//! The storage conformance suite: every contract of `storage::Storage`, run against every
//! backend (embedded, in-memory, and a real etcd server).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Backend;
use watchcache::storage::{
    guaranteed_update, Event, EventKind, KeyValue, ListOptions, StorageError, WatchMessage, WatchStream,
    MAX_VALUE_BYTES,
};

/// Generates one test per (backend, contract).
macro_rules! conformance {
    ($($contract:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $contract() {
                    super::$contract(super::Backend::embedded()).await
                }
            )*
        }
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $contract() {
                    super::$contract(super::Backend::in_memory()).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $contract() {
                    super::$contract(super::Backend::etcd().await).await
                }
            )*
        }
    };
}

conformance!(
    create_get_and_already_exists,
    update_is_compare_and_swap,
    delete_honours_preconditions,
    list_by_prefix_at_latest_and_past_revisions,
    list_pages_with_limit_and_continue,
    pagination_under_concurrent_writes_returns_each_key_once,
    guaranteed_update_loses_no_increment,
    watch_delivers_exactly_the_writes_after_a_revision,
    watch_from_a_compacted_revision_is_compacted,
    idle_watch_reports_progress,
    count_and_current_revision,
    bad_input_gets_typed_errors_and_writes_nothing,
    large_values_up_to_the_limit,
);

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

const WAIT: Duration = Duration::from_secs(10);

/// Reads watch messages until `count` events arrived; fails on an error or a timeout.
async fn collect_events(watch: &mut WatchStream, count: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {count} events", events.len()))
            .expect("watch ended early")
            .expect("watch failed");
        if let WatchMessage::Events(batch) = message {
            events.extend(batch);
        }
    }
    assert_eq!(events.len(), count, "more events than written");
    events
}

async fn create_get_and_already_exists(backend: Backend) {
    let storage = &backend.storage;
    let before = storage.current_revision().await.unwrap();
    let created = storage.create("/things/default/a", value("one")).await.unwrap();
    assert_eq!(created.key, "/things/default/a");
    assert_eq!(created.value, value("one"));
    assert!(created.mod_revision > before, "{}: revision must grow", backend.name);
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(storage.current_revision().await.unwrap(), created.mod_revision);

    assert_eq!(storage.get("/things/default/a").await.unwrap(), Some(created.clone()));
    assert_eq!(storage.get("/things/default/missing").await.unwrap(), None);

    let again = storage.create("/things/default/a", value("two")).await;
    assert_eq!(again, Err(StorageError::AlreadyExists { key: "/things/default/a".into() }));
    assert_eq!(storage.get("/things/default/a").await.unwrap(), Some(created.clone()));
    assert_eq!(
        storage.current_revision().await.unwrap(),
        created.mod_revision,
        "a failed write used a revision"
    );
}

async fn update_is_compare_and_swap(backend: Backend) {
    let storage = &backend.storage;
    let created = storage.create("/things/a", value("v1")).await.unwrap();
    let updated = storage.update("/things/a", value("v2"), created.mod_revision).await.unwrap();
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.value, value("v2"));
    assert_eq!(storage.get("/things/a").await.unwrap(), Some(updated.clone()));

    let stale = storage.update("/things/a", value("v3"), created.mod_revision).await;
    assert_eq!(
        stale,
        Err(StorageError::Conflict {
            key: "/things/a".into(),
            expected: created.mod_revision,
            actual: updated.mod_revision
        })
    );
    let missing = storage.update("/things/missing", value("x"), updated.mod_revision).await;
    assert_eq!(missing, Err(StorageError::NotFound { key: "/things/missing".into() }));
    let missing_zero = storage.update("/things/missing", value("x"), 0).await;
    assert_eq!(missing_zero, Err(StorageError::NotFound { key: "/things/missing".into() }));
    assert_eq!(storage.get("/things/a").await.unwrap(), Some(updated.clone()));
    assert_eq!(storage.current_revision().await.unwrap(), updated.mod_revision);
}

async fn delete_honours_preconditions(backend: Backend) {
    let storage = &backend.storage;
    let created = storage.create("/things/a", value("v1")).await.unwrap();
    let wrong = storage.delete("/things/a", Some(created.mod_revision + 100)).await;
    assert_eq!(
        wrong,
        Err(StorageError::Conflict {
            key: "/things/a".into(),
            expected: created.mod_revision + 100,
            actual: created.mod_revision
        })
    );
    assert_eq!(storage.get("/things/a").await.unwrap(), Some(created.clone()));

    let deleted = storage.delete("/things/a", Some(created.mod_revision)).await.unwrap();
    assert_eq!(deleted.prev, created);
    assert!(deleted.revision > created.mod_revision);
    assert_eq!(storage.current_revision().await.unwrap(), deleted.revision);
    assert_eq!(storage.get("/things/a").await.unwrap(), None);
    assert_eq!(
        storage.delete("/things/a", None).await,
        Err(StorageError::NotFound { key: "/things/a".into() })
    );
    assert_eq!(
        storage.delete("/things/a", Some(deleted.revision)).await,
        Err(StorageError::NotFound { key: "/things/a".into() })
    );

    // Recreated keys get a new create revision; an unconditional delete works.
    let recreated = storage.create("/things/a", value("v2")).await.unwrap();
    assert!(recreated.create_revision > deleted.revision);
    let deleted = storage.delete("/things/a", None).await.unwrap();
    assert_eq!(deleted.prev, recreated);
}

async fn list_by_prefix_at_latest_and_past_revisions(backend: Backend) {
    let storage = &backend.storage;
    let mut old = Vec::new();
    for name in ["c", "a", "b"] {
        old.push(storage.create(&format!("/list/{name}"), value(name)).await.unwrap());
    }
    storage.create("/listx/d", value("outside")).await.unwrap();
    storage.create("/lis/e", value("outside")).await.unwrap();
    old.sort_by(|x, y| x.key.cmp(&y.key));
    let at = storage.current_revision().await.unwrap();

    let listed = storage.list("/list/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.items, old);
    assert_eq!(listed.revision, at);
    assert!(!listed.more);

    // Change everything, then read the past.
    let b = &old[1];
    storage.update("/list/b", value("b2"), b.mod_revision).await.unwrap();
    storage.delete("/list/c", None).await.unwrap();
    storage.create("/list/0", value("new")).await.unwrap();
    storage.create("/list/d", value("new")).await.unwrap();
    storage.delete("/list/a", None).await.unwrap();
    storage.create("/list/a", value("again")).await.unwrap();

    let past =
        storage.list("/list/", ListOptions { revision: Some(at), ..Default::default() }).await.unwrap();
    assert_eq!(past.items, old, "{}: list at a past revision", backend.name);
    assert_eq!(past.revision, at);

    let now = storage.list("/list/", ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/list/0", "/list/a", "/list/b", "/list/d"]);
    assert_eq!(now.items[2].value, value("b2"));
    assert_eq!(now.revision, storage.current_revision().await.unwrap());

    let current = now.revision;
    let future =
        storage.list("/list/", ListOptions { revision: Some(current + 10), ..Default::default() }).await;
    assert!(matches!(future, Err(StorageError::FutureRevision { .. })), "{}: {future:?}", backend.name);

    // A past list with a limit and a continue key.
    let first = storage
        .list("/list/", ListOptions { revision: Some(at), limit: Some(2), continue_after: None })
        .await
        .unwrap();
    assert_eq!(first.items, old[..2]);
    assert!(first.more);
    let rest = storage
        .list(
            "/list/",
            ListOptions {
                revision: Some(at),
                limit: Some(2),
                continue_after: Some(first.items[1].key.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items, old[2..]);
    assert!(!rest.more);
}

async fn list_pages_with_limit_and_continue(backend: Backend) {
    let storage = &backend.storage;
    let mut expected = Vec::new();
    for i in 0..25 {
        expected.push(storage.create(&format!("/pages/k{i:03}"), value(&i.to_string())).await.unwrap());
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = storage
            .list("/pages/", ListOptions { revision: None, limit: Some(10), continue_after: after.clone() })
            .await
            .unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().cloned());
        if !page.more {
            break;
        }
        after = Some(page.items.last().unwrap().key.clone());
    }
    assert_eq!(seen, expected);
    let unlimited =
        storage.list("/pages/", ListOptions { limit: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(unlimited.items.len(), 25);
    assert!(!unlimited.more);
}

async fn pagination_under_concurrent_writes_returns_each_key_once(backend: Backend) {
    let storage = Arc::clone(&backend.storage);
    for i in 0..120 {
        storage.create(&format!("/paged/k{i:03}"), value(&format!("original-{i}"))).await.unwrap();
    }
    let writer = {
        let storage = Arc::clone(&storage);
        tokio::spawn(async move {
            for i in 0..60 {
                let key = format!("/paged/k{:03}", (i * 7) % 120);
                let current = storage.get(&key).await.unwrap();
                match current {
                    Some(kv) if i % 3 == 0 => {
                        let _ = storage.delete(&key, Some(kv.mod_revision)).await;
                    }
                    Some(kv) => {
                        let _ = storage.update(&key, value("changed"), kv.mod_revision).await;
                    }
                    None => {}
                }
                storage.create(&format!("/paged/n{i:03}"), value("new")).await.unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let first = storage.list("/paged/", ListOptions { limit: Some(7), ..Default::default() }).await.unwrap();
    let revision = first.revision;
    let mut page = first;
    loop {
        seen.extend(page.items.iter().cloned());
        if !page.more {
            break;
        }
        page = storage
            .list(
                "/paged/",
                ListOptions {
                    revision: Some(revision),
                    limit: Some(7),
                    continue_after: Some(page.items.last().unwrap().key.clone()),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, revision);
    }
    writer.await.unwrap();
    let snapshot = storage
        .list("/paged/", ListOptions { revision: Some(revision), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(seen, snapshot.items, "{}: pages must add up to the snapshot", backend.name);
    let keys: BTreeSet<&str> = seen.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.len(), seen.len(), "a key was returned twice");
    assert!(seen.windows(2).all(|pair| pair[0].key < pair[1].key));
    assert!(seen.iter().all(|kv| kv.mod_revision <= revision));
}

async fn guaranteed_update_loses_no_increment(backend: Backend) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let storage = Arc::clone(&backend.storage);
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                guaranteed_update::<StorageError, _>(storage.as_ref(), "/counters/c", |current| {
                    let count: u64 = match current {
                        Some(kv) => std::str::from_utf8(&kv.value).unwrap().parse().unwrap(),
                        None => 0,
                    };
                    Ok(value(&(count + 1).to_string()))
                })
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let counter = backend.storage.get("/counters/c").await.unwrap().unwrap();
    assert_eq!(counter.value, value(&(TASKS * INCREMENTS).to_string()), "{}", backend.name);

    // An error from the closure ends the loop and writes nothing.
    let before = backend.storage.current_revision().await.unwrap();
    let refused = guaranteed_update(backend.storage.as_ref(), "/counters/c", |_| {
        Err(StorageError::Internal("refused by the caller".into()))
    })
    .await;
    assert_eq!(refused, Err(StorageError::Internal("refused by the caller".into())));
    assert_eq!(backend.storage.current_revision().await.unwrap(), before);
}

/// The model of one acknowledged write, to compare watch events with.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    kind: EventKind,
    key: String,
    value: Bytes,
    revision: u64,
    prev: Option<KeyValue>,
}

async fn watch_delivers_exactly_the_writes_after_a_revision(backend: Backend) {
    let storage = Arc::clone(&backend.storage);
    let mut early = Vec::new();
    for i in 0..5 {
        early.push(storage.create(&format!("/watched/e{i}"), value("early")).await.unwrap());
    }
    let start = storage.current_revision().await.unwrap();

    // Writes race with the start of the watch.
    let writer = {
        let storage = Arc::clone(&storage);
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut current: BTreeMap<String, KeyValue> = BTreeMap::new();
            for i in 0..60u32 {
                let key = format!("/watched/k{}", i % 7);
                // Writes outside the prefix must not show up.
                storage.create(&format!("/unwatched/k{i}"), value("noise")).await.unwrap();
                match current.get(&key).cloned() {
                    None => {
                        let kv = storage.create(&key, value(&format!("v{i}"))).await.unwrap();
                        written.push(Written {
                            kind: EventKind::Put,
                            key: key.clone(),
                            value: kv.value.clone(),
                            revision: kv.mod_revision,
                            prev: None,
                        });
                        current.insert(key, kv);
                    }
                    Some(prev) if i % 4 == 0 => {
                        let deleted = storage.delete(&key, Some(prev.mod_revision)).await.unwrap();
                        written.push(Written {
                            kind: EventKind::Delete,
                            key: key.clone(),
                            value: Bytes::new(),
                            revision: deleted.revision,
                            prev: Some(prev),
                        });
                        current.remove(&key);
                    }
                    Some(prev) => {
                        let kv =
                            storage.update(&key, value(&format!("v{i}")), prev.mod_revision).await.unwrap();
                        written.push(Written {
                            kind: EventKind::Put,
                            key: key.clone(),
                            value: kv.value.clone(),
                            revision: kv.mod_revision,
                            prev: Some(prev),
                        });
                        current.insert(key, kv);
                    }
                }
            }
            written
        })
    };
    let mut watch = storage.watch("/watched/", start).await.unwrap();
    let written = writer.await.unwrap();
    let events = collect_events(&mut watch, written.len()).await;
    let seen: Vec<Written> = events
        .iter()
        .map(|event| Written {
            kind: event.kind,
            key: event.kv.key.clone(),
            value: event.kv.value.clone(),
            revision: event.revision(),
            prev: event.prev.clone(),
        })
        .collect();
    assert_eq!(seen, written, "{}: watch must see exactly the writes after {start}", backend.name);
    for event in &events {
        if event.kind == EventKind::Put {
            assert!(event.kv.create_revision > 0 && event.kv.create_revision <= event.kv.mod_revision);
        }
    }

    // From an earlier revision, the early creates come first.
    let mut from_start = storage.watch("/watched/", early[0].mod_revision - 1).await.unwrap();
    let all = collect_events(&mut from_start, 5 + written.len()).await;
    for (event, kv) in all.iter().zip(&early) {
        assert_eq!((event.kind, &event.kv, &event.prev), (EventKind::Put, kv, &None));
    }
    assert!(all.windows(2).all(|pair| pair[0].revision() < pair[1].revision()));
}

async fn watch_from_a_compacted_revision_is_compacted(backend: Backend) {
    let storage = &backend.storage;
    let first = storage.create("/compact/a", value("0")).await.unwrap();
    let mut last = first.clone();
    for i in 1..10 {
        last = storage.update("/compact/a", value(&i.to_string()), last.mod_revision).await.unwrap();
    }
    let compact_to = last.mod_revision - 2;
    storage.compact(compact_to).await.unwrap();

    // A watch that starts before the compacted revision fails, at once or as its last message.
    match storage.watch("/compact/", first.mod_revision).await {
        Err(error) => assert!(matches!(error, StorageError::Compacted { .. }), "{}: {error:?}", backend.name),
        Ok(mut watch) => {
            let message = tokio::time::timeout(WAIT, watch.next()).await.expect("no answer").expect("ended");
            assert!(
                matches!(message, Err(StorageError::Compacted { .. })),
                "{}: expected Compacted, got {message:?}",
                backend.name
            );
            assert!(tokio::time::timeout(WAIT, watch.next()).await.unwrap().is_none(), "watch goes on");
        }
    }
    // A list before it too, and compacting again to the same revision.
    let old = storage
        .list("/compact/", ListOptions { revision: Some(first.mod_revision), ..Default::default() })
        .await;
    assert!(matches!(old, Err(StorageError::Compacted { .. })), "{}: {old:?}", backend.name);
    let again = storage.compact(compact_to).await;
    assert!(matches!(again, Err(StorageError::Compacted { .. })), "{}: {again:?}", backend.name);
    let future = storage.compact(last.mod_revision + 100).await;
    assert!(matches!(future, Err(StorageError::FutureRevision { .. })), "{}: {future:?}", backend.name);

    // From the compacted revision on, history is still there; the current value is kept.
    let mut watch = storage.watch("/compact/", compact_to - 1).await.unwrap();
    let events = collect_events(&mut watch, 3).await;
    assert_eq!(
        events.iter().map(Event::revision).collect::<Vec<_>>(),
        [compact_to, compact_to + 1, compact_to + 2]
    );
    let at = storage
        .list("/compact/", ListOptions { revision: Some(compact_to), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(at.items[0].mod_revision, compact_to);
    assert_eq!(storage.get("/compact/a").await.unwrap(), Some(last));
}

async fn idle_watch_reports_progress(backend: Backend) {
    let storage = &backend.storage;
    let start = storage.current_revision().await.unwrap();
    let mut watch = storage.watch("/quiet/", start).await.unwrap();
    let elsewhere = storage.create("/busy/a", value("x")).await.unwrap();
    // Progress must reach the write to another prefix, without any event.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        watch.request_progress();
        let message = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no progress notification", backend.name))
            .expect("watch ended")
            .expect("watch failed");
        match message {
            WatchMessage::Progress(revision) if revision >= elsewhere.mod_revision => break,
            WatchMessage::Progress(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            WatchMessage::Events(events) => panic!("unexpected events {events:?}"),
        }
    }
    // And events still arrive after it.
    let here = storage.create("/quiet/a", value("y")).await.unwrap();
    let events = collect_events(&mut watch, 1).await;
    assert_eq!(events[0].kv, here);
}

async fn count_and_current_revision(backend: Backend) {
    let storage = &backend.storage;
    assert_eq!(storage.count("/counted/").await.unwrap(), 0);
    let mut last = storage.current_revision().await.unwrap();
    for i in 0..12 {
        let kv = storage.create(&format!("/counted/k{i}"), value("x")).await.unwrap();
        assert!(kv.mod_revision > last);
        last = kv.mod_revision;
    }
    storage.create("/countedx/k", value("x")).await.unwrap();
    storage.delete("/counted/k3", None).await.unwrap();
    assert_eq!(storage.count("/counted/").await.unwrap(), 11);
    assert_eq!(storage.count("/").await.unwrap(), 12);
}

async fn bad_input_gets_typed_errors_and_writes_nothing(backend: Backend) {
    let storage = &backend.storage;
    storage.create("/good/a", value("x")).await.unwrap();
    let before = storage.current_revision().await.unwrap();
    let invalid = |result: Result<_, StorageError>| matches!(result, Err(StorageError::InvalidKey { .. }));

    for key in ["", "relative/key", "/a/../b", "/a//b", "/a/./b", "/a/\u{0}b", "/"] {
        assert!(invalid(storage.create(key, value("x")).await.map(drop)), "{}: create {key:?}", backend.name);
        assert!(invalid(storage.get(key).await.map(drop)), "get {key:?}");
        assert!(invalid(storage.update(key, value("x"), before).await.map(drop)), "update {key:?}");
        assert!(invalid(storage.delete(key, None).await.map(drop)), "delete {key:?}");
    }
    for prefix in ["", "nope/", "/x/../"] {
        assert!(invalid(storage.list(prefix, ListOptions::default()).await.map(drop)), "list {prefix:?}");
        assert!(invalid(storage.watch(prefix, before).await.map(drop)), "watch {prefix:?}");
        assert!(invalid(storage.count(prefix).await.map(drop)), "count {prefix:?}");
    }
    let outside = ListOptions { continue_after: Some("/other/a".into()), ..Default::default() };
    assert!(invalid(storage.list("/good/", outside).await.map(drop)), "continue key outside the prefix");

    let too_big = Bytes::from(vec![b'x'; MAX_VALUE_BYTES + 1]);
    let error = storage.create("/good/big", too_big.clone()).await.unwrap_err();
    assert_eq!(
        error,
        StorageError::ValueTooLarge {
            key: "/good/big".into(),
            size: MAX_VALUE_BYTES + 1,
            limit: MAX_VALUE_BYTES
        }
    );
    let current = storage.get("/good/a").await.unwrap().unwrap();
    let error = storage.update("/good/a", too_big, current.mod_revision).await.unwrap_err();
    assert!(matches!(error, StorageError::ValueTooLarge { .. }));

    assert_eq!(
        storage.current_revision().await.unwrap(),
        before,
        "{}: bad input wrote something",
        backend.name
    );
    assert_eq!(storage.get("/good/a").await.unwrap(), Some(current));
    assert_eq!(storage.count("/").await.unwrap(), 1);
}

async fn large_values_up_to_the_limit(backend: Backend) {
    let storage = &backend.storage;
    let big = Bytes::from((0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let kv = storage.create("/big/a", big.clone()).await.unwrap();
    assert_eq!(storage.get("/big/a").await.unwrap().unwrap().value, big);
    let mut watch = storage.watch("/big/", kv.mod_revision - 1).await.unwrap();
    assert_eq!(collect_events(&mut watch, 1).await[0].kv.value, big);
}
