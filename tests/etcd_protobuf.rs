//! The etcd backend on data as kube-apiserver writes it: built-in objects as Kubernetes protobuf
//! (`k8s\0` + `runtime.Unknown`), custom resources as JSON. Objects are Kubernetes' own Go-written
//! fixtures (tests/fixtures/kube-api-testdata), put straight into a real etcd and read through the
//! real binary; `--storage-media-type=protobuf` writes what kube-apiserver would. Every test that
//! needs etcd fails without it (see `common::etcd_binary`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{http_get, EtcdCluster, Http, ServerProcess};
use serde_json::{json, Value};
use watchcache::protobuf::{schema, MAGIC};
use watchcache::storage::etcd::{EtcdOptions, EtcdStorage, StorageMediaType};
use watchcache::storage::{EventKind, ListOptions, Storage, StorageError, WatchMessage};

/// A fixture: its JSON and the protobuf Go wrote for it.
fn fixture(name: &str) -> (Value, Vec<u8>) {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-api-testdata");
    let json = std::fs::read(directory.join(format!("{name}.json"))).unwrap();
    let pb = std::fs::read(directory.join(format!("{name}.pb"))).unwrap();
    assert!(pb.starts_with(&MAGIC), "{name}.pb is enveloped protobuf");
    (serde_json::from_slice(&json).unwrap(), pb)
}

fn without_resource_version(object: &Value) -> Value {
    let mut object = object.clone();
    object["metadata"].as_object_mut().expect("an object with metadata").remove("resourceVersion");
    object
}

fn resource_version(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {object}"))
}

/// Asserts that `served` is `expected` apart from metadata.resourceVersion, which must be
/// `revision`.
fn assert_object(served: &Value, expected: &Value, revision: i64) {
    assert_eq!(resource_version(served), revision as u64, "resourceVersion of {served}");
    assert_eq!(without_resource_version(served), without_resource_version(expected));
}

async fn raw_client(cluster: &EtcdCluster) -> etcd_client::Client {
    etcd_client::Client::connect(cluster.client_urls(), None).await.unwrap()
}

/// Puts `value` at `key` as another writer (kube-apiserver) would; the write's revision.
async fn put(client: &mut etcd_client::Client, key: &str, value: impl Into<Vec<u8>>) -> i64 {
    client.put(key, value, None).await.unwrap().header().unwrap().revision()
}

async fn raw_value(client: &mut etcd_client::Client, key: &str) -> Vec<u8> {
    let found = client.get(key, None).await.unwrap();
    found.kvs().first().unwrap_or_else(|| panic!("{key} is not in etcd")).value().to_vec()
}

const CM: &str = "/api/v1/namespaces/namespaceValue/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_kube_apiserver_wrote_as_protobuf_are_served_as_json() {
    let cluster = EtcdCluster::start(1);
    let mut etcd = raw_client(&cluster).await;
    let (configmap, configmap_pb) = fixture("core.v1.ConfigMap");
    let (deployment, deployment_pb) = fixture("apps.v1.Deployment");
    let (pod, pod_pb) = fixture("core.v1.Pod");
    let configmap_rev = put(&mut etcd, "/registry/configmaps/namespaceValue/nameValue", configmap_pb).await;
    let deployment_rev =
        put(&mut etcd, "/registry/deployments/namespaceValue/nameValue", deployment_pb).await;
    // kube-apiserver with --storage-media-type=application/json (or a custom resource): JSON.
    let plain = json!({
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "plain", "namespace": "namespaceValue", "uid": "u-plain"},
        "data": {"stored": "as JSON"},
    });
    let plain_rev =
        put(&mut etcd, "/registry/configmaps/namespaceValue/plain", serde_json::to_vec(&plain).unwrap())
            .await;

    let server = ServerProcess::start(&["--etcd-endpoints", &cluster.client_urls()[0]]);
    let http = Http::new(&server.address, false);

    let got = http.get(&format!("{CM}/nameValue")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert!(got.content_type.starts_with("application/json"), "{}", got.content_type);
    assert_object(&got.json(), &configmap, configmap_rev);
    let got = http.get("/apis/apps/v1/namespaces/namespaceValue/deployments/nameValue").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_object(&got.json(), &deployment, deployment_rev);
    assert_object(&http.get(&format!("{CM}/plain")).await.json(), &plain, plain_rev);

    // Lists, from the cache (resourceVersion=0) and consistent (from the cache or etcd).
    for path in [format!("{CM}?resourceVersion=0"), CM.to_owned()] {
        let list = http.get(&path).await;
        assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
        let list = list.json();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{list}");
        assert_object(&items[0], &configmap, configmap_rev);
        assert_object(&items[1], &plain, plain_rev);
    }
    let list = http.get("/apis/apps/v1/deployments").await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_object(&list["items"][0], &deployment, deployment_rev);

    // Watches see protobuf writes made while they are open.
    let pods = "/api/v1/namespaces/namespaceValue/pods";
    let rv = http.get(pods).await.json()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let mut pod_watch = http.watch(&format!("{pods}?watch=true&resourceVersion={rv}")).await;
    let rv = http.get(CM).await.json()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let mut configmap_watch = http.watch(&format!("{CM}?watch=true&resourceVersion={rv}")).await;

    let pod_rev = put(&mut etcd, "/registry/pods/namespaceValue/nameValue", pod_pb).await;
    let added = pod_watch.next_event().await.unwrap();
    assert_eq!(added["type"], "ADDED", "{added}");
    assert_object(&added["object"], &pod, pod_rev);

    let mut changed = configmap.clone();
    changed["data"]["dataKey"] = json!("changedValue");
    changed["metadata"]["labels"]["changed"] = json!("true");
    let changed_pb = schema().encode_object(&changed).unwrap();
    let changed_rev = put(&mut etcd, "/registry/configmaps/namespaceValue/nameValue", changed_pb).await;
    let mut second = configmap.clone();
    second["metadata"]["name"] = json!("second");
    second["metadata"]["uid"] = json!("u-second");
    let second_pb = schema().encode_object(&second).unwrap();
    let second_rev = put(&mut etcd, "/registry/configmaps/namespaceValue/second", second_pb).await;
    let deleted = etcd.delete("/registry/configmaps/namespaceValue/nameValue", None).await.unwrap();
    let delete_rev = deleted.header().unwrap().revision();

    let modified = configmap_watch.next_event().await.unwrap();
    assert_eq!(modified["type"], "MODIFIED", "{modified}");
    assert_object(&modified["object"], &changed, changed_rev);
    let added = configmap_watch.next_event().await.unwrap();
    assert_eq!(added["type"], "ADDED", "{added}");
    assert_object(&added["object"], &second, second_rev);
    let gone = configmap_watch.next_event().await.unwrap();
    assert_eq!(gone["type"], "DELETED", "{gone}");
    assert_object(&gone["object"], &changed, delete_rev);

    // The cache agrees with the watch.
    assert_object(&http.get(&format!("{CM}/second")).await.json(), &second, second_rev);
    assert_eq!(http.get(&format!("{CM}/nameValue")).await.status, 404);
    assert_object(&http.get(&format!("{pods}/nameValue")).await.json(), &pod, pod_rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_media_type_writes_built_in_objects_as_kube_apiserver_does() {
    let cluster = EtcdCluster::start(1);
    let mut etcd = raw_client(&cluster).await;
    let url = cluster.client_urls()[0].clone();
    let mut server = ServerProcess::start(&["--etcd-endpoints", &url, "--storage-media-type=protobuf"]);
    assert!(server.startup_line.contains("writing protobuf"), "{}", server.startup_line);
    let http = Http::new(&server.address, false);

    // The namespaces the server creates at start.
    let namespace = raw_value(&mut etcd, "/registry/namespaces/default").await;
    assert!(namespace.starts_with(&MAGIC), "{}", String::from_utf8_lossy(&namespace));
    assert_eq!(schema().decode_object(&namespace).unwrap()["metadata"]["name"], "default");

    let cm = "/api/v1/namespaces/default/configmaps";
    let rv = http.get(cm).await.json()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let mut watch = http.watch(&format!("{cm}?watch=true&resourceVersion={rv}")).await;
    let object = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "web"}},
        "data": {"key": "value"},
    });
    let created = http.send_json("POST", cm, &object).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let created = created.json();
    let key = "/registry/configmaps/default/settings";
    let stored = raw_value(&mut etcd, key).await;
    assert!(stored.starts_with(&MAGIC), "stored as {}", String::from_utf8_lossy(&stored));
    let decoded = schema().decode_object(&stored).unwrap();
    assert_eq!(decoded["metadata"].get("resourceVersion"), None, "{decoded}");
    assert_eq!(without_resource_version(&created), decoded);
    let got = http.get(&format!("{cm}/settings")).await;
    assert!(got.content_type.starts_with("application/json"), "{}", got.content_type);
    assert_eq!(got.json(), created);
    let added = watch.next_event().await.unwrap();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"], created);

    // An update stays protobuf.
    let patched = http
        .request(
            "PATCH",
            &format!("{cm}/settings"),
            "application/merge-patch+json",
            br#"{"data":{"key":"v2"}}"#,
        )
        .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    let patched = patched.json();
    let stored = raw_value(&mut etcd, key).await;
    assert!(stored.starts_with(&MAGIC));
    assert_eq!(schema().decode_object(&stored).unwrap(), without_resource_version(&patched));
    assert_eq!(patched["data"]["key"], "v2");
    let modified = watch.next_event().await.unwrap();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"], patched);

    // A CustomResourceDefinition is a built-in object; its custom resources stay JSON.
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    });
    let made = http.send_json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let made = made.json();
    let stored = raw_value(
        &mut etcd,
        "/registry/apiextensions.k8s.io/customresourcedefinitions/crontabs.stable.example.com",
    )
    .await;
    assert!(stored.starts_with(&MAGIC), "the CRD is stored as {}", String::from_utf8_lossy(&stored));
    assert_eq!(schema().decode_object(&stored).unwrap(), without_resource_version(&made));

    let crontabs = "/apis/stable.example.com/v1/namespaces/default/crontabs";
    let crontab = json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "nightly"}, "spec": {"schedule": "0 0 * * *"},
    });
    let made = http.send_json("POST", crontabs, &crontab).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let made = made.json();
    let stored = raw_value(&mut etcd, "/registry/stable.example.com/crontabs/default/nightly").await;
    assert!(!stored.starts_with(&MAGIC));
    let stored: Value = serde_json::from_slice(&stored).expect("a custom resource is stored as JSON");
    assert_eq!(stored, without_resource_version(&made));
    assert_eq!(http.get(&format!("{crontabs}/nightly")).await.json(), made);

    // A restarted server reads it all back, the CRD (protobuf) included.
    assert!(server.terminate(Duration::from_secs(15)).success());
    let server = ServerProcess::start(&["--etcd-endpoints", &url, "--storage-media-type=protobuf"]);
    let http = Http::new(&server.address, false);
    assert_eq!(http.get(&format!("{cm}/settings")).await.json(), patched);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http.get(&format!("{crontabs}/nightly")).await;
        if got.status == 200 {
            assert_eq!(got.json(), made);
            break;
        }
        assert!(Instant::now() < deadline, "the custom resource type never came back: {}", got.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_the_default_media_type() {
    let cluster = EtcdCluster::start(1);
    let mut etcd = raw_client(&cluster).await;
    let server = ServerProcess::start(&["--etcd-endpoints", &cluster.client_urls()[0]]);
    assert!(server.startup_line.contains("writing JSON"), "{}", server.startup_line);
    let http = Http::new(&server.address, false);
    let object =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}, "data": {"k": "v"}});
    let created = http.send_json("POST", "/api/v1/namespaces/default/configmaps", &object).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    for key in ["/registry/configmaps/default/plain", "/registry/namespaces/default"] {
        let stored = raw_value(&mut etcd, key).await;
        let parsed: Value = serde_json::from_slice(&stored).unwrap_or_else(|error| {
            panic!("{key} is not JSON ({error}): {:?}", String::from_utf8_lossy(&stored))
        });
        assert_eq!(parsed["apiVersion"], "v1");
    }
    let stored: Value =
        serde_json::from_slice(&raw_value(&mut etcd, "/registry/configmaps/default/plain").await).unwrap();
    assert_eq!(stored, without_resource_version(&created.json()));
}

/// Storage errors name the key; the cache and the API turn them into errors, not crashes or
/// wrong data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_protobuf_value_is_a_clear_error() {
    let cluster = EtcdCluster::start(1);
    let mut etcd = raw_client(&cluster).await;
    let (configmap, configmap_pb) = fixture("core.v1.ConfigMap");
    let good_rev =
        put(&mut etcd, "/registry/configmaps/namespaceValue/nameValue", configmap_pb.clone()).await;
    // A protobuf value cut short, as a torn or mangled write would leave it.
    let broken_key = "/registry/configmaps/namespaceValue/broken";
    put(&mut etcd, broken_key, configmap_pb[..configmap_pb.len() / 2].to_vec()).await;

    let mut server = ServerProcess::start(&["--etcd-endpoints", &cluster.client_urls()[0]]);
    let http = Http::new(&server.address, false);
    let assert_names_the_key = |reply: &common::Reply, key: &str| {
        assert_eq!(reply.status, 500, "{}", String::from_utf8_lossy(&reply.body));
        let status = reply.json();
        assert_eq!(status["kind"], "Status", "{status}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(key) && message.contains("protobuf"), "{message}");
    };

    // The configmap cache cannot list: reads of configmaps go to etcd, and only those that meet
    // the corrupt value fail.
    assert_names_the_key(&http.get(&format!("{CM}/broken")).await, broken_key);
    assert_names_the_key(&http.get(CM).await, broken_key);
    assert_object(&http.get(&format!("{CM}/nameValue")).await.json(), &configmap, good_rev);
    // Other resources and the server itself are unaffected.
    assert_eq!(http.get("/api/v1/namespaces/default").await.status, 200);
    assert_eq!(http_get(&server.address, "/healthz").0, 200);
    assert!(server.child.try_wait().unwrap().is_none(), "the server exited");

    // Once the value is repaired and the history holding the corrupt write compacted (as
    // kube-apiserver compacts every few minutes), the cache serves everything again.
    let mut repaired = configmap.clone();
    repaired["metadata"]["name"] = json!("broken");
    let repaired_rev = put(&mut etcd, broken_key, schema().encode_object(&repaired).unwrap()).await;
    etcd.compact(repaired_rev, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let list = http.get(&format!("{CM}?resourceVersion=0")).await;
        if list.status == 200 && list.json()["items"].as_array().is_some_and(|items| items.len() == 2) {
            break list.json();
        }
        assert!(
            Instant::now() < deadline,
            "the cache never recovered: {}",
            String::from_utf8_lossy(&list.body)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_object(&list["items"][0], &repaired, repaired_rev);
    assert_object(&list["items"][1], &configmap, good_rev);

    // A corrupt write while the cache watches: reads that meet it fail the same way.
    let later_key = "/registry/configmaps/namespaceValue/later";
    put(&mut etcd, later_key, b"k8s\0\x0a\x04\x0a\x02v1".to_vec()).await;
    assert_names_the_key(&http.get(&format!("{CM}/later")).await, later_key);
    assert_names_the_key(&http.get(CM).await, later_key);
    assert_eq!(http_get(&server.address, "/healthz").0, 200);
    assert!(server.terminate(Duration::from_secs(15)).success(), "the server shuts down cleanly");
}

async fn etcd_storage(cluster: &EtcdCluster, media_type: StorageMediaType) -> EtcdStorage {
    let options = EtcdOptions { media_type, ..EtcdOptions::default() };
    EtcdStorage::connect(&cluster.client_urls(), options).await.expect("etcd backend connects")
}

/// Every value that leaves the backend is JSON: get, list, watch events and their previous
/// values, and what create, update and delete return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_leaving_the_backend_is_json() {
    let cluster = EtcdCluster::start(1);
    let mut etcd = raw_client(&cluster).await;
    let storage = etcd_storage(&cluster, StorageMediaType::Protobuf).await;
    let (configmap, _) = fixture("core.v1.ConfigMap");
    let mut object = without_resource_version(&configmap);
    object["metadata"].as_object_mut().unwrap().remove("selfLink");
    let key = "/configmaps/namespaceValue/nameValue";
    let start = storage.current_revision().await.unwrap();
    let mut watch = storage.watch("/configmaps/", start).await.unwrap();

    let json = |value: &Bytes| -> Value {
        assert!(!value.starts_with(&MAGIC), "a protobuf value left the backend");
        serde_json::from_slice(value).unwrap()
    };
    let created = storage.create(key, Bytes::from(serde_json::to_vec(&object).unwrap())).await.unwrap();
    assert_eq!(json(&created.value), object);
    assert!(raw_value(&mut etcd, &format!("/registry{key}")).await.starts_with(&MAGIC));
    assert_eq!(json(&storage.get(key).await.unwrap().unwrap().value), object);
    let listed = storage.list("/configmaps/", ListOptions::default()).await.unwrap();
    assert_eq!(json(&listed.items[0].value), object);

    let mut changed = object.clone();
    changed["data"]["dataKey"] = json!("changed");
    let updated = storage
        .update(key, Bytes::from(serde_json::to_vec(&changed).unwrap()), created.mod_revision)
        .await
        .unwrap();
    assert_eq!(json(&updated.value), changed);
    let at_create = storage
        .list("/configmaps/", ListOptions { revision: Some(created.mod_revision), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(json(&at_create.items[0].value), object);
    let deleted = storage.delete(key, Some(updated.mod_revision)).await.unwrap();
    assert_eq!(json(&deleted.prev.value), changed);

    let mut events = Vec::new();
    while events.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap() {
            WatchMessage::Events(batch) => events.extend(batch),
            WatchMessage::Progress(_) => {}
        }
    }
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(json(&events[0].kv.value), object);
    assert_eq!(json(&events[1].kv.value), changed);
    assert_eq!(json(&events[1].prev.as_ref().unwrap().value), object);
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(json(&events[2].prev.as_ref().unwrap().value), changed);

    // Anything that is not a built-in object is stored as given.
    let crontab = br#"{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{"name":"n"}}"#;
    storage.create("/stable.example.com/crontabs/default/n", Bytes::from_static(crontab)).await.unwrap();
    assert_eq!(raw_value(&mut etcd, "/registry/stable.example.com/crontabs/default/n").await, crontab);
    for (key, value) in [("/leases/default/opaque", &b"not JSON"[..]), ("/pods/default/nokind", b"{\"a\":1}")]
    {
        storage.create(key, Bytes::from_static(value)).await.unwrap();
        assert_eq!(raw_value(&mut etcd, &format!("/registry{key}")).await, value);
        assert_eq!(storage.get(key).await.unwrap().unwrap().value, value);
    }
    // A built-in object that does not fit its type is refused, and nothing is written.
    let bad = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bad"},"data":{"k":5}}"#;
    let error = storage.create("/configmaps/default/bad", Bytes::from_static(bad)).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Internal(message) if message.contains("/configmaps/default/bad")),
        "{error}"
    );
    assert_eq!(storage.get("/configmaps/default/bad").await.unwrap(), None);

    // With the JSON media type, a built-in object stays JSON, and protobuf is still read.
    let json_storage = etcd_storage(&cluster, StorageMediaType::Json).await;
    let value = Bytes::from(serde_json::to_vec(&object).unwrap());
    json_storage.create("/configmaps/default/j", value.clone()).await.unwrap();
    assert_eq!(raw_value(&mut etcd, "/registry/configmaps/default/j").await, value);
    storage.create("/configmaps/default/p", value).await.unwrap();
    assert_eq!(json(&json_storage.get("/configmaps/default/p").await.unwrap().unwrap().value), object);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_are_storage_errors_naming_the_key() {
    let cluster = EtcdCluster::start(1);
    let mut etcd = raw_client(&cluster).await;
    let storage = etcd_storage(&cluster, StorageMediaType::Json).await;
    let start = storage.current_revision().await.unwrap();
    let (_, good) = fixture("core.v1.ConfigMap");
    let good_rev = put(&mut etcd, "/registry/configmaps/default/good", good).await;
    // An envelope naming a kind no schema has.
    let corrupt = b"k8s\0\x0a\x10\x0a\x02v1\x12\x0aNoSuchKind\x12\x00".to_vec();
    put(&mut etcd, "/registry/configmaps/default/corrupt", corrupt.clone()).await;
    let names_the_key = |error: &StorageError| {
        matches!(error, StorageError::Internal(message)
            if message.contains("/registry/configmaps/default/corrupt") && message.contains("NoSuchKind"))
    };

    let error = storage.get("/configmaps/default/corrupt").await.unwrap_err();
    assert!(names_the_key(&error), "{error}");
    let error = storage.list("/configmaps/", ListOptions::default()).await.unwrap_err();
    assert!(names_the_key(&error), "{error}");
    // A watch delivers the writes before the corrupt one, then fails.
    let mut watch = storage.watch("/configmaps/", start).await.unwrap();
    let mut delivered = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap() {
            Some(Ok(WatchMessage::Events(events))) => delivered.extend(events),
            Some(Ok(WatchMessage::Progress(_))) => {}
            Some(Err(error)) => {
                assert!(names_the_key(&error), "{error}");
                break;
            }
            None => panic!("the watch ended without an error"),
        }
    }
    let revisions: Vec<u64> = delivered.iter().map(|event| event.revision()).collect();
    assert_eq!(revisions, [good_rev as u64]);
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap();
    assert!(ended.is_none(), "the watch ends after its error");
    // Nothing that does not decode is written either.
    let error = storage.create("/configmaps/default/new", Bytes::from(corrupt)).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Internal(message) if message.contains("/configmaps/default/new")),
        "{error}"
    );
    assert_eq!(etcd.get("/registry/configmaps/default/new", None).await.unwrap().kvs().len(), 0);
    // Deleting it works, and says what was deleted could not be read.
    let error = storage.delete("/configmaps/default/corrupt", None).await.unwrap_err();
    assert!(matches!(&error, StorageError::Internal(message) if message.contains("was deleted")), "{error}");
    assert_eq!(storage.get("/configmaps/default/corrupt").await.unwrap(), None);
}

fn watchcache(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchcache")).args(args).output().unwrap()
}

#[test]
fn the_media_type_flag_is_checked_and_documented() {
    let help = String::from_utf8(watchcache(&["serve", "--help"]).stdout).unwrap();
    assert!(help.contains("--storage-media-type"), "{help}");
    assert!(help.contains("embedded store always keeps JSON"), "{help}");
    for (args, expected) in [
        (
            &["serve", "--etcd-endpoints=http://127.0.0.1:1", "--storage-media-type=yaml"][..],
            "invalid value 'yaml'",
        ),
        (&["serve", "--storage-media-type=protobuf"], "--etcd-endpoints"),
        (&["serve", "--in-memory", "--storage-media-type=json"], "cannot be used with"),
    ] {
        let output = watchcache(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("error:") && stderr.contains(expected), "{args:?}: {stderr}");
    }
}
