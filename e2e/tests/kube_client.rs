//! The kube crate against the real `watchcache` binary: a typed client (create, get, list with a
//! label selector, replace, merge / JSON / strategic patches, delete, and the errors of each),
//! and a `kube_runtime` watcher + reflector that stays in sync through creates, updates and
//! deletes, through watches the server ends, and through a server-forced 410 (a tiny watch cache
//! and a burst of writes). On the embedded store, and the typed client also on etcd.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use serde_json::json;

/// The `watchcache` binary of this build (`cargo test --workspace` builds it beside the tests).
fn binary() -> PathBuf {
    // target/<profile>/deps/kube_client-<hash> -> target/<profile>/watchcache
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("watchcache");
    assert!(
        binary.is_file(),
        "{} is missing: build it first (`cargo build --bin watchcache`, or run `cargo test --workspace`)",
        binary.display()
    );
    binary
}

struct Server {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in stdout.lines() {});
        Server { child, address, _dir: dir }
    }

    async fn client(&self) -> Client {
        let config = Config::new(format!("http://{}", self.address).parse().unwrap());
        Client::try_from(config).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real etcd on free loopback ports (Debian's etcd-server); killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let free = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (format!("http://127.0.0.1:{}", free()), format!("http://127.0.0.1:{}", free()));
        let child = Command::new("etcd")
            .arg("--name=e2e")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=e2e={peer}"))
            .arg("--max-request-bytes=2097152")
            .arg("--log-level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("etcd is not installed ({error}): apt-get install etcd-server"));
        let address = client.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd { child, url: client, _dir: dir }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn typed_client(client: Client) {
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created =
        api.create(&PostParams::default(), &configmap("one", json!({"app": "web"}), "1")).await.unwrap();
    assert!(created.metadata.resource_version.is_some());
    assert!(created.metadata.uid.is_some());
    api.create(&PostParams::default(), &configmap("two", json!({"app": "db"}), "2")).await.unwrap();
    let duplicate = api.create(&PostParams::default(), &configmap("one", json!({}), "x")).await.unwrap_err();
    assert_eq!(api_error(duplicate), (409, "AlreadyExists".to_owned()));

    let got = api.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["key"], "1");
    let web = api.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(web.items.iter().map(|cm| cm.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["one"]);

    let mut replaced = api.get("one").await.unwrap();
    replaced.data = Some(BTreeMap::from([("key".to_owned(), "replaced".to_owned())]));
    let replaced = api.replace("one", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(replaced.data.as_ref().unwrap()["key"], "replaced");
    // A replace with a stale resourceVersion conflicts.
    let stale = api.replace("one", &PostParams::default(), &created).await.unwrap_err();
    assert_eq!(api_error(stale), (409, "Conflict".to_owned()));

    let merge = api
        .patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"merge": "m"}})))
        .await
        .unwrap();
    assert_eq!(merge.data.as_ref().unwrap()["merge"], "m");
    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/json", "value": "j"}])).unwrap();
    let patched = api.patch("one", &PatchParams::default(), &Patch::Json::<()>(json_patch)).await.unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["json"], "j");
    let strategic = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.metadata.labels.unwrap()["tier"], "front");

    api.delete("one", &DeleteParams::default()).await.unwrap();
    let missing = api.get("one").await.unwrap_err();
    assert_eq!(api_error(missing), (404, "NotFound".to_owned()));
    assert!(api.get_opt("one").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_on_the_embedded_store() {
    let server = Server::start(&[]);
    typed_client(server.client().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_on_etcd() {
    let etcd = Etcd::start();
    let server = Server::start(&["--etcd-endpoints", &etcd.url]);
    typed_client(server.client().await).await;
}

/// Waits until the reflector's store holds exactly `expected` (name → data value).
async fn converges(store: &reflector::Store<ConfigMap>, expected: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: BTreeMap<String, String> = store
            .state()
            .iter()
            .map(|cm| (cm.metadata.name.clone().unwrap(), cm.data.as_ref().unwrap()["key"].clone()))
            .collect();
        if &seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the reflector did not converge:\n seen {seen:?}\n want {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_stays_in_sync_through_watch_ends_and_a_forced_410() {
    // A watch cache of 8 events: a burst of writes outruns a watcher and the server sheds it
    // with 410 Gone, so the reflector must relist.
    let server = Server::start(&["--watch-cache-capacity", "8"]);
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (store, writer) = reflector::store();
    // Watches the server ends every 2 s.
    let stream = watcher(api.clone(), watcher::Config::default().timeout(2))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            // Errors (a 410) are retried by the watcher; keep going.
            let _ = item;
        }
    });

    let mut expected = BTreeMap::new();
    for i in 0..5 {
        api.create(&PostParams::default(), &configmap(&format!("c{i}"), json!({}), "0")).await.unwrap();
        expected.insert(format!("c{i}"), "0".to_owned());
    }
    converges(&store, &expected).await;
    // Updates and deletes, across at least one server-ended watch.
    for i in 0..5 {
        if i % 2 == 0 {
            api.delete(&format!("c{i}"), &DeleteParams::default()).await.unwrap();
            expected.remove(&format!("c{i}"));
        } else {
            api.patch(
                &format!("c{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"key": "1"}})),
            )
            .await
            .unwrap();
            expected.insert(format!("c{i}"), "1".to_owned());
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    converges(&store, &expected).await;
    // A burst far beyond the 8-event watch cache.
    let writes = (0..200).map(|i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &configmap(&format!("burst{i}"), json!({}), "b"))
                .await
                .unwrap()
        }
    });
    futures::future::join_all(writes).await;
    for i in 0..200 {
        expected.insert(format!("burst{i}"), "b".to_owned());
    }
    converges(&store, &expected).await;

    // The server did shed a watcher on the way (the 410 path was exercised).
    let metrics = reqwest_free_get(&server.address, "/metrics").await;
    let shed: f64 = metrics
        .lines()
        .find(|line| line.starts_with("watchcache_watchers_shed_total{resource=\"configmaps\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    assert!(shed >= 1.0, "no watcher was shed, the 410 path did not run:\n{metrics}");
    task.abort();
}

/// A plain HTTP/1.1 GET over a fresh connection.
async fn reqwest_free_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
