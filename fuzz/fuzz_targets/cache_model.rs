//! The watch cache against a model: after any sequence of creates, updates and deletes (with
//! labels that move objects in and out of a selector), a consistent list from the cache equals
//! the model, and a watch from the start (with a selector, tiny queues and ring) delivers exactly
//! kube's events for that selector — or is shed with 410 having delivered a prefix of them.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use watchcache::cacher::object::ResourceConfig;
use watchcache::cacher::ring::RingLimits;
use watchcache::cacher::{CacheConfig, Cacher, ListRequest, ReadVersion, WatchFilter, WatchItem, WatchStart};
use watchcache::selector::{FieldSelector, LabelSelector};
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::Storage;

#[derive(Arbitrary, Debug)]
struct Write {
    key: u8,
    delete: bool,
    selected: bool,
}

fn object(name: &str, selected: bool) -> Bytes {
    let value = serde_json::json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "ns", "labels": {"pick": if selected { "yes" } else { "no" }}},
    });
    Bytes::from(serde_json::to_vec(&value).unwrap())
}

fuzz_target!(|writes: Vec<Write>| {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let storage: Arc<dyn Storage> =
            Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
        let resource = ResourceConfig {
            prefix: "/pods/".into(),
            kind: "Pod".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec![],
            indexed_field: None,
        };
        let config = CacheConfig {
            watcher_queue: 2,
            ring: RingLimits { min_events: 4, max_events: 16, ..RingLimits::default() },
            ..CacheConfig::default()
        };
        let cacher = Cacher::start(Arc::clone(&storage), resource, config);
        assert!(cacher.wait_ready(Duration::from_secs(10)).await);
        let start = storage.current_revision().await.unwrap();
        let filter = || WatchFilter {
            namespace: None,
            labels: LabelSelector::parse("pick=yes").unwrap(),
            fields: FieldSelector::everything(),
        };
        let mut watch = cacher.watch(filter(), WatchStart::After(start), false).await.unwrap();

        // name -> (selected, revision)
        let mut model: BTreeMap<String, (bool, u64)> = BTreeMap::new();
        let mut expected = Vec::new();
        for write in writes.into_iter().take(48) {
            let name = format!("p{}", write.key % 5);
            let key = format!("/pods/ns/{name}");
            match (model.get(&name).copied(), write.delete) {
                (None, true) => {}
                (None, false) => {
                    let kv = storage.create(&key, object(&name, write.selected)).await.unwrap();
                    if write.selected {
                        expected.push(("ADDED", name.clone(), kv.mod_revision));
                    }
                    model.insert(name, (write.selected, kv.mod_revision));
                }
                (Some((was, revision)), true) => {
                    let deleted = storage.delete(&key, Some(revision)).await.unwrap();
                    if was {
                        expected.push(("DELETED", name.clone(), deleted.revision));
                    }
                    model.remove(&name);
                }
                (Some((was, revision)), false) => {
                    let kv = storage.update(&key, object(&name, write.selected), revision).await.unwrap();
                    match (was, write.selected) {
                        (true, true) => expected.push(("MODIFIED", name.clone(), kv.mod_revision)),
                        (false, true) => expected.push(("ADDED", name.clone(), kv.mod_revision)),
                        (true, false) => expected.push(("DELETED", name.clone(), kv.mod_revision)),
                        (false, false) => {}
                    }
                    model.insert(name, (write.selected, kv.mod_revision));
                }
            }
        }
        let request = ListRequest {
            filter: filter(),
            limit: None,
            continue_from: None,
            version: ReadVersion::Consistent,
        };
        let listed = cacher.list(&request).await.unwrap();
        let got: Vec<(String, u64)> = listed.items.iter().map(|o| (o.name.clone(), o.revision)).collect();
        let want: Vec<(String, u64)> = model
            .iter()
            .filter(|(_, (selected, _))| *selected)
            .map(|(name, (_, rev))| (name.clone(), *rev))
            .collect();
        assert_eq!(got, want);

        let mut seen: Vec<(String, String, u64)> = Vec::new();
        while seen.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("watch stalled") {
                Some(WatchItem::Lines(lines)) => {
                    for line in lines {
                        let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
                        let metadata = &event["object"]["metadata"];
                        seen.push((
                            event["type"].as_str().unwrap().to_owned(),
                            metadata["name"].as_str().unwrap().to_owned(),
                            metadata["resourceVersion"].as_str().unwrap().parse().unwrap(),
                        ));
                    }
                }
                Some(WatchItem::Expired(_)) => break,
                None => panic!("the watch ended without a reason"),
            }
        }
        let expected: Vec<(String, String, u64)> =
            expected.into_iter().map(|(kind, name, rev)| (kind.to_owned(), name, rev)).collect();
        assert_eq!(seen[..], expected[..seen.len()], "the watch diverged from the model");
        cacher.stop();
    });
});
