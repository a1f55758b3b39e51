//! The embedded store (its in-memory variant) against a `BTreeMap` model: creates, updates
//! (current and stale), deletes (guarded or not), compactions, lists at past revisions with
//! limits, and a final watch from the oldest kept revision must all agree with the model.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Mutex;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{EventKind, ListOptions, Storage, StorageError, WatchMessage};

#[derive(Arbitrary, Debug)]
enum Op {
    Create { key: u8, value: u8 },
    Update { key: u8, value: u8, stale: bool },
    Delete { key: u8, guarded: bool },
    Compact { back: u8 },
    List { back: u8, limit: u8 },
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    value: Bytes,
    create: u64,
    modified: u64,
}

/// What inputs share: one runtime and one store, replaced after [`INPUTS_PER_STORE`] inputs so
/// that it stays small. Each input works under its own key prefix, from the store's revision
/// and compaction as the previous inputs left them.
struct Shared {
    runtime: tokio::runtime::Runtime,
    storage: Option<EmbeddedStorage>,
    /// Inputs run on the current store.
    inputs: u64,
    /// Every input so far (its prefix).
    serial: u64,
    /// The store's compacted revision.
    compacted: u64,
}

const INPUTS_PER_STORE: u64 = 256;

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

fuzz_target!(|ops: Vec<Op>| {
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let shared = shared.get_or_insert_with(|| Shared {
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        storage: None,
        inputs: 0,
        serial: 0,
        compacted: 0,
    });
    if shared.storage.is_none() || shared.inputs == INPUTS_PER_STORE {
        // The old store (and its writer thread) goes first.
        shared.storage = None;
        shared.storage = Some(
            EmbeddedStorage::in_memory_volatile(EmbeddedOptions { history_revisions: 1_000_000 }).unwrap(),
        );
        shared.inputs = 0;
        shared.compacted = 0;
    }
    shared.inputs += 1;
    shared.serial += 1;
    let prefix = format!("/things/{}/", shared.serial);
    let key = |index: u8| format!("{prefix}k{}", index % 6);
    let Shared { runtime, storage, compacted, .. } = shared;
    let storage = storage.as_ref().expect("opened above");
    runtime.block_on(async {
        let mut model: BTreeMap<String, Entry> = BTreeMap::new();
        // (revision, key, state after)
        let mut history: Vec<(u64, String, Option<Entry>)> = Vec::new();
        let start = storage.current_revision().await.unwrap();
        let mut revision = start;
        for op in ops.into_iter().take(32) {
            match op {
                Op::Create { key: k, value } => {
                    let key = key(k);
                    let result = storage.create(&key, Bytes::from(vec![value])).await;
                    if model.contains_key(&key) {
                        assert!(matches!(result, Err(StorageError::AlreadyExists { .. })), "{result:?}");
                    } else {
                        revision += 1;
                        let kv = result.unwrap();
                        assert_eq!((kv.create_revision, kv.mod_revision), (revision, revision));
                        let entry =
                            Entry { value: Bytes::from(vec![value]), create: revision, modified: revision };
                        model.insert(key.clone(), entry.clone());
                        history.push((revision, key, Some(entry)));
                    }
                }
                Op::Update { key: k, value, stale } => {
                    let key = key(k);
                    let expected = model.get(&key).map_or(1, |entry| entry.modified + u64::from(stale));
                    let result = storage.update(&key, Bytes::from(vec![value]), expected).await;
                    match model.get(&key).cloned() {
                        None => assert!(matches!(result, Err(StorageError::NotFound { .. })), "{result:?}"),
                        Some(_) if stale => {
                            assert!(matches!(result, Err(StorageError::Conflict { .. })), "{result:?}")
                        }
                        Some(old) => {
                            revision += 1;
                            let kv = result.unwrap();
                            assert_eq!((kv.create_revision, kv.mod_revision), (old.create, revision));
                            let entry = Entry {
                                value: Bytes::from(vec![value]),
                                create: old.create,
                                modified: revision,
                            };
                            model.insert(key.clone(), entry.clone());
                            history.push((revision, key, Some(entry)));
                        }
                    }
                }
                Op::Delete { key: k, guarded } => {
                    let key = key(k);
                    let expected = guarded.then(|| model.get(&key).map_or(1, |entry| entry.modified));
                    let result = storage.delete(&key, expected).await;
                    match model.remove(&key) {
                        None => assert!(matches!(result, Err(StorageError::NotFound { .. })), "{result:?}"),
                        Some(old) => {
                            revision += 1;
                            let deleted = result.unwrap();
                            assert_eq!(
                                (deleted.revision, deleted.prev.mod_revision),
                                (revision, old.modified)
                            );
                            history.push((revision, key, None));
                        }
                    }
                }
                Op::Compact { back } => {
                    let target = revision.saturating_sub(u64::from(back % 8));
                    let result = storage.compact(target).await;
                    if target <= *compacted {
                        assert!(matches!(result, Err(StorageError::Compacted { .. })), "{result:?}");
                    } else {
                        result.unwrap();
                        *compacted = target;
                    }
                }
                Op::List { back, limit } => {
                    let at = revision.saturating_sub(u64::from(back % 10)).max(1);
                    let limit = usize::from(limit % 4);
                    let result = storage
                        .list(
                            &prefix,
                            ListOptions { revision: Some(at), limit: Some(limit), continue_after: None },
                        )
                        .await;
                    if at < *compacted {
                        assert!(matches!(result, Err(StorageError::Compacted { .. })), "{result:?}");
                        continue;
                    }
                    let listed = result.unwrap();
                    let mut state: BTreeMap<String, Entry> = BTreeMap::new();
                    for (rev, key, entry) in history.iter().filter(|(rev, _, _)| *rev <= at) {
                        let _ = rev;
                        match entry {
                            Some(entry) => state.insert(key.clone(), entry.clone()),
                            None => state.remove(key),
                        };
                    }
                    let expected: Vec<(String, Entry)> =
                        state.into_iter().take(if limit == 0 { usize::MAX } else { limit }).collect();
                    let got: Vec<(String, Entry)> = listed
                        .items
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                Entry {
                                    value: kv.value.clone(),
                                    create: kv.create_revision,
                                    modified: kv.mod_revision,
                                },
                            )
                        })
                        .collect();
                    assert_eq!(got, expected, "list at {at}");
                }
            }
        }
        // A watch from the oldest kept revision replays exactly the history after it.
        // (From the input's start at the earliest: the store's log before it is other inputs'.)
        let from = compacted.saturating_sub(1).max(start).max(1);
        let expected: Vec<(u64, String, bool)> = history
            .iter()
            .filter(|(rev, _, _)| *rev > from)
            .map(|(rev, key, entry)| (*rev, key.clone(), entry.is_some()))
            .collect();
        let mut watch = storage.watch(&prefix, from).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            match watch.next().await.unwrap().unwrap() {
                WatchMessage::Events(events) => seen.extend(
                    events
                        .into_iter()
                        .map(|event| (event.revision(), event.kv.key.clone(), event.kind == EventKind::Put)),
                ),
                WatchMessage::Progress(_) => {}
            }
        }
        assert_eq!(seen, expected);
    });
});
