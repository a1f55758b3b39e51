//! The kube crate against the real `watchcache` binary:
//! - a typed `Api<ConfigMap>`: create, get, list with a label selector, replace, merge / JSON /
//!   strategic patches, delete, and the `kube::Error::Api` of a missing object (404 NotFound), a
//!   duplicate create (409 AlreadyExists) and a stale replace (409 Conflict); on the embedded
//!   store and on etcd;
//! - a `kube_runtime` watcher + reflector that stays in sync through creates, updates and
//!   deletes; through watches the server ends (`timeoutSeconds`); and through a 410 Gone that
//!   the server forces on a watcher that fell behind a tiny watch cache.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use serde_json::json;
use watchcache_e2e::{Etcd, Server};

/// Every test ends within this, whatever the server does.
const TEST_LIMIT: Duration = Duration::from_secs(180);

fn client(server: &Server) -> Client {
    let config = Config::new(server.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn configmap(name: &str, labels: serde_json::Value, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"key": value},
    }))
    .unwrap()
}

/// `(code, reason)` of a `kube::Error::Api`; panics on any other error.
fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn data(cm: &ConfigMap, key: &str) -> String {
    cm.data
        .as_ref()
        .and_then(|data| data.get(key))
        .cloned()
        .unwrap_or_else(|| panic!("no data.{key} in {cm:?}"))
}

async fn typed_client(client: Client) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api.create(&PostParams::default(), &configmap("one", json!({"app": "web"}), "1")).await?;
    assert!(created.metadata.resource_version.is_some(), "no resourceVersion: {created:?}");
    assert!(created.metadata.uid.is_some(), "no uid: {created:?}");
    assert_eq!(data(&created, "key"), "1");
    api.create(&PostParams::default(), &configmap("two", json!({"app": "db"}), "2")).await?;

    let duplicate = api.create(&PostParams::default(), &configmap("one", json!({}), "x")).await.unwrap_err();
    assert_eq!(api_error(duplicate), (409, "AlreadyExists".to_owned()));

    let got = api.get("one").await?;
    assert_eq!(data(&got, "key"), "1");
    assert_eq!(got.metadata.uid, created.metadata.uid);

    let web = api.list(&ListParams::default().labels("app=web")).await?;
    let names: Vec<String> = web.items.iter().map(|cm| cm.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["one"]);
    assert!(web.metadata.resource_version.is_some(), "a list has a resourceVersion");
    let all = api.list(&ListParams::default()).await?;
    assert_eq!(all.items.len(), 2);

    let mut replacement = got.clone();
    replacement.data = Some(BTreeMap::from([("key".to_owned(), "replaced".to_owned())]));
    let replaced = api.replace("one", &PostParams::default(), &replacement).await?;
    assert_eq!(data(&replaced, "key"), "replaced");
    assert_ne!(replaced.metadata.resource_version, got.metadata.resource_version);
    // A replace with a stale resourceVersion conflicts.
    let stale = api.replace("one", &PostParams::default(), &created).await.unwrap_err();
    assert_eq!(api_error(stale), (409, "Conflict".to_owned()));

    let merged =
        api.patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"merge": "m"}}))).await?;
    assert_eq!(data(&merged, "merge"), "m");
    assert_eq!(data(&merged, "key"), "replaced");

    let operations: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/json", "value": "j"}]))?;
    let patched = api.patch("one", &PatchParams::default(), &Patch::Json::<()>(operations)).await?;
    assert_eq!(data(&patched, "json"), "j");
    assert_eq!(data(&patched, "merge"), "m");

    let strategic = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"tier": "front"}}, "data": {"sm": "s"}})),
        )
        .await?;
    let labels = strategic.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(labels.get("app").map(String::as_str), Some("web"), "a strategic patch keeps other labels");
    assert_eq!(data(&strategic, "sm"), "s");
    assert_eq!(api.get("one").await?, strategic);

    // A patch of a missing object is a 404.
    let missing_patch =
        api.patch("nope", &PatchParams::default(), &Patch::Merge(json!({"data": {}}))).await.unwrap_err();
    assert_eq!(api_error(missing_patch), (404, "NotFound".to_owned()));

    api.delete("one", &DeleteParams::default()).await?;
    let missing = api.get("one").await.unwrap_err();
    assert_eq!(api_error(missing), (404, "NotFound".to_owned()));
    assert!(api.get_opt("one").await?.is_none());
    let deleted_again = api.delete("one", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(api_error(deleted_again), (404, "NotFound".to_owned()));
    let left = api.list(&ListParams::default()).await?;
    assert_eq!(left.items.iter().map(|cm| cm.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["two"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_on_the_embedded_store() {
    let server = Server::start(&[]);
    tokio::time::timeout(TEST_LIMIT, typed_client(client(&server))).await.expect("test timed out").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_on_etcd() {
    let etcd = Etcd::start();
    let server = Server::start(&["--etcd-endpoints", &etcd.url]);
    assert!(server.startup_line.contains("etcd"), "not on etcd: {}", server.startup_line);
    tokio::time::timeout(TEST_LIMIT, typed_client(client(&server))).await.expect("test timed out").unwrap();
}

/// The reflector's store as name → `data.key`.
fn contents(store: &reflector::Store<ConfigMap>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|cm| {
            let value = cm.data.as_ref().and_then(|data| data.get("key")).cloned().unwrap_or_default();
            (cm.metadata.name.clone().unwrap(), value)
        })
        .collect()
}

/// Waits (30 s at most) until the reflector's store holds exactly `expected`.
async fn converges(store: &reflector::Store<ConfigMap>, expected: &BTreeMap<String, String>, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = contents(store);
        if &seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: the reflector did not converge in 30 s:\n seen {seen:?}\n want {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reflector over `api`'s ConfigMaps, driven by a background task whose polling `gate`
/// pauses (false) and resumes (true). Returns the store, the gate, and the task.
fn reflect(
    api: &Api<ConfigMap>,
    config: watcher::Config,
) -> (reflector::Store<ConfigMap>, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (store, writer) = reflector::store();
    let (gate, mut open) = tokio::sync::watch::channel(true);
    let stream = watcher(api.clone(), config).default_backoff().reflect(writer).applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        loop {
            if open.wait_for(|open| *open).await.is_err() {
                return;
            }
            match stream.next().await {
                Some(Ok(_)) => {}
                // The watcher retries (with backoff) after an error such as a 410 Gone.
                Some(Err(error)) => eprintln!("watcher error (retried): {error}"),
                None => return,
            }
        }
    });
    (store, gate, task)
}

/// Creates `c0..c5`, replaces and patches some, deletes others, creating again one that was
/// deleted; checks the store after each step.
async fn creates_updates_deletes(
    api: &Api<ConfigMap>,
    store: &reflector::Store<ConfigMap>,
    expected: &mut BTreeMap<String, String>,
    pause_between: Duration,
) -> anyhow::Result<()> {
    for i in 0..6 {
        api.create(&PostParams::default(), &configmap(&format!("c{i}"), json!({"set": "s"}), "0")).await?;
        expected.insert(format!("c{i}"), "0".to_owned());
    }
    converges(store, expected, "after creates").await;
    tokio::time::sleep(pause_between).await;

    let mut replacement = api.get("c1").await?;
    replacement.data = Some(BTreeMap::from([("key".to_owned(), "replaced".to_owned())]));
    api.replace("c1", &PostParams::default(), &replacement).await?;
    expected.insert("c1".to_owned(), "replaced".to_owned());
    api.patch("c3", &PatchParams::default(), &Patch::Merge(json!({"data": {"key": "merged"}}))).await?;
    expected.insert("c3".to_owned(), "merged".to_owned());
    converges(store, expected, "after updates").await;
    tokio::time::sleep(pause_between).await;

    for i in [0, 2, 4] {
        api.delete(&format!("c{i}"), &DeleteParams::default()).await?;
        expected.remove(&format!("c{i}"));
    }
    converges(store, expected, "after deletes").await;
    tokio::time::sleep(pause_between).await;

    api.create(&PostParams::default(), &configmap("c2", json!({}), "again")).await?;
    expected.insert("c2".to_owned(), "again".to_owned());
    api.patch("c5", &PatchParams::default(), &Patch::Merge(json!({"data": {"key": "last"}}))).await?;
    expected.insert("c5".to_owned(), "last".to_owned());
    converges(store, expected, "after a re-create").await;

    // What the reflector holds is what the server lists.
    let listed: BTreeMap<String, String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|cm| (cm.metadata.name.clone().unwrap(), data(cm, "key")))
        .collect();
    assert_eq!(&listed, expected, "the server's list differs from what was written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_stays_in_sync_through_creates_updates_and_deletes() {
    let server = Server::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let (store, _gate, task) = reflect(&api, watcher::Config::default());
    tokio::time::timeout(TEST_LIMIT, async {
        store.wait_until_ready().await.expect("the reflector's first list");
        assert!(store.state().is_empty());
        creates_updates_deletes(&api, &store, &mut BTreeMap::new(), Duration::ZERO).await
    })
    .await
    .expect("test timed out")
    .unwrap();
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_re_watches_after_the_server_ends_its_watches() {
    let server = Server::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    tokio::time::timeout(TEST_LIMIT, async {
        // The server ends a watch at its timeoutSeconds.
        let started = Instant::now();
        let stream = api.watch(&WatchParams::default().timeout(1), "0").await?;
        futures::pin_mut!(stream);
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = stream.next().await {
                if let WatchEvent::Error(status) = event? {
                    panic!("a watch with timeoutSeconds=1 got an error event: {status:?}");
                }
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        assert!(ended.is_ok(), "a watch with timeoutSeconds=1 was still open after 10 s");
        ended.unwrap()?;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "the watch ended early: {:?}",
            started.elapsed()
        );

        // A reflector whose watches last 2 s: with 2.5 s between steps, each step's events come
        // through a new watch, resumed from the last resourceVersion seen.
        let (store, _gate, task) = reflect(&api, watcher::Config::default().timeout(2));
        store.wait_until_ready().await.expect("the reflector's first list");
        creates_updates_deletes(&api, &store, &mut BTreeMap::new(), Duration::from_millis(2500)).await?;
        task.abort();
        Ok::<_, anyhow::Error>(())
    })
    .await
    .expect("test timed out")
    .unwrap();
}

/// `watchcache_watchers_shed_total` for configmaps, from `/metrics`.
async fn configmap_watchers_shed(address: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let line = response
        .lines()
        .find(|line| line.starts_with("watchcache_watchers_shed_total{") && line.contains("configmaps"))
        .unwrap_or_else(|| {
            panic!("no watchcache_watchers_shed_total for configmaps in /metrics:\n{response}")
        });
    line.rsplit(' ').next().and_then(|value| value.parse().ok()).expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_relists_after_the_server_sheds_its_watch_with_410() {
    // A watch cache of 8 events; the reflector stops reading while 40 writes of 512 KiB each
    // (20 MiB: far more than loopback's socket buffers hold) go by, so the server cannot send
    // them, its queue for the watch fills, the watch falls behind the 8-event ring and the server
    // ends it with 410 Gone: the reflector must relist and still converge.
    let server = Server::start(&["--watch-cache-capacity", "8"]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let (store, gate, task) = reflect(&api, watcher::Config::default());
    tokio::time::timeout(TEST_LIMIT, async {
        store.wait_until_ready().await.expect("the reflector's first list");
        let mut expected = BTreeMap::new();
        creates_updates_deletes(&api, &store, &mut expected, Duration::ZERO).await?;
        let shed_before = configmap_watchers_shed(&server.address).await;

        gate.send(false)?;
        let big = "x".repeat(512 * 1024);
        for i in 0..40 {
            let mut cm = configmap(&format!("big{}", i % 20), json!({}), &format!("{i}"));
            cm.data.as_mut().unwrap().insert("padding".to_owned(), big.clone());
            if i < 20 {
                api.create(&PostParams::default(), &cm).await?;
            } else {
                api.patch(&format!("big{}", i % 20), &PatchParams::default(), &Patch::Merge(&cm)).await?;
            }
            expected.insert(format!("big{}", i % 20), format!("{i}"));
        }
        api.delete("c1", &DeleteParams::default()).await?;
        expected.remove("c1");
        gate.send(true)?;

        converges(&store, &expected, "after the burst").await;
        let shed_after = configmap_watchers_shed(&server.address).await;
        assert!(
            shed_after > shed_before,
            "no watcher was shed (watchcache_watchers_shed_total stayed {shed_before}): the 410 path did not run"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await
    .expect("test timed out")
    .unwrap();
    task.abort();
}

/// A client from the kubeconfig `--write-kubeconfig` wrote (HTTPS, its CA, its admin token).
async fn client_from_kubeconfig(path: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.scheme_str(), Some("https"));
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_and_reflector_over_tls_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let _server =
        Server::start(&["--tls-self-signed", &format!("--write-kubeconfig={}", kubeconfig.display())]);
    let client = client_from_kubeconfig(&kubeconfig).await;
    tokio::time::timeout(TEST_LIMIT, typed_client(client.clone())).await.expect("test timed out").unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "kube-public");
    let (store, _gate, task) = reflect(&api, watcher::Config::default());
    tokio::time::timeout(TEST_LIMIT, async {
        store.wait_until_ready().await.expect("the reflector's first list");
        creates_updates_deletes(&api, &store, &mut BTreeMap::new(), Duration::ZERO).await
    })
    .await
    .expect("test timed out")
    .unwrap();
    task.abort();
}
