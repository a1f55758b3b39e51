//! The Kubernetes API of the real binary over real sockets: discovery, CRUD and patch, errors as
//! Status objects, list semantics, watches over HTTP/1.1 and HTTP/2, subresources, finalizers,
//! namespaces and CRDs. Run on the embedded store; the core flow also on etcd.

mod common;

use std::time::Duration;

use common::{EtcdCluster, Http, ServerProcess};
use serde_json::{json, Value};

fn configmap(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value"},
    })
}

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn assert_status(reply: &common::Reply, code: u16, reason: &str) {
    let status = reply.json();
    assert_eq!(reply.status, code, "{status}");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["code"], code, "{status}");
    assert_eq!(status["reason"], reason, "{status}");
}

/// Sends `request` as is over a fresh connection and reads the response: (status, body).
fn raw_request(address: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = request.replacen("\r\n", &format!("\r\nHost: {address}\r\nConnection: close\r\n"), 1);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let code = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (code, response)
}

fn server() -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    (server, dir)
}

/// Aggregated discovery: `/api` and `/apis` as one `APIGroupDiscoveryList` each, as kubectl asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_lists_every_group_version_and_resource() {
    let (server, _dir) = server();
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let get = |path: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
            server.address
        );
        let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
        use std::io::{Read, Write};
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.to_ascii_lowercase(), serde_json::from_str::<Value>(body).unwrap())
    };
    let (head, apis) = get("/apis");
    assert!(
        head.contains("content-type: application/json;g=apidiscovery.k8s.io;v=v2;as=apigroupdiscoverylist"),
        "{head}"
    );
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
    let apps =
        apis["items"].as_array().unwrap().iter().find(|group| group["metadata"]["name"] == "apps").unwrap();
    let v1 = &apps["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["freshness"], "Current");
    let deployments =
        v1["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "deployments").unwrap();
    assert_eq!(deployments["responseKind"], json!({"group": "apps", "version": "v1", "kind": "Deployment"}));
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(deployments["singularResource"], "deployment");
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    let subresources = deployments["subresources"].as_array().unwrap();
    let scale = subresources.iter().find(|sub| sub["subresource"] == "scale").unwrap();
    assert_eq!(scale["responseKind"], json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
    assert!(subresources.iter().any(|sub| sub["subresource"] == "status"));

    let (_, core) = get("/api");
    let groups = core["items"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert!(groups[0]["metadata"].get("name").is_none(), "the core group has no name");
    let pods = groups[0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "pods")
        .unwrap();
    let nested: Vec<&str> = pods["subresources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sub| sub["subresource"].as_str().unwrap())
        .collect();
    for subresource in ["status", "binding", "eviction"] {
        assert!(nested.contains(&subresource), "{nested:?}");
    }
    let nodes = groups[0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "nodes")
        .unwrap();
    assert_eq!(nodes["scope"], "Cluster");
    // Without the aggregated media type, the legacy documents.
    let http = Http::new(&server.address, false);
    assert_eq!(http.get("/apis").await.json()["kind"], "APIGroupList");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_describes_the_served_resources() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let api = http.get("/api").await.json();
    assert_eq!(api["versions"], json!(["v1"]));
    let core = http.get("/api/v1").await.json();
    let pods = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap().clone();
    assert_eq!(pods["kind"], "Pod");
    assert_eq!(pods["namespaced"], true);
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert!(core["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods/status"));
    let groups = http.get("/apis").await.json();
    let names: Vec<&str> =
        groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    for group in [
        "apps",
        "batch",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "discovery.k8s.io",
        "policy",
        "storage.k8s.io",
        "scheduling.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "autoscaling",
        "certificates.k8s.io",
        "rbac.authorization.k8s.io",
        "authorization.k8s.io",
        "authentication.k8s.io",
    ] {
        assert!(names.contains(&group), "{names:?}");
    }
    let resources = |document: Value| -> Vec<(String, bool, Value)> {
        document["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["namespaced"].as_bool().unwrap(),
                    r["shortNames"].clone(),
                )
            })
            .collect()
    };
    let core_resources = resources(core.clone());
    for (name, namespaced, short) in [
        ("persistentvolumes", false, json!(["pv"])),
        ("persistentvolumeclaims", true, json!(["pvc"])),
        ("podtemplates", true, json!([])),
        ("replicationcontrollers", true, json!(["rc"])),
        ("resourcequotas", true, json!(["quota"])),
        ("limitranges", true, json!(["limits"])),
    ] {
        assert!(core_resources.contains(&(name.to_owned(), namespaced, short)), "{name}: {core_resources:?}");
    }
    assert!(core_resources.iter().any(|(name, ..)| name == "replicationcontrollers/status"));
    for name in ["pods/binding", "pods/eviction", "replicationcontrollers/scale"] {
        assert!(core_resources.iter().any(|(n, ..)| n == name), "{name}: {core_resources:?}");
    }
    let autoscaling = http.get("/apis/autoscaling").await.json();
    assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
    let hpa = resources(http.get("/apis/autoscaling/v2").await.json());
    assert!(hpa.contains(&("horizontalpodautoscalers".to_owned(), true, json!(["hpa"]))), "{hpa:?}");
    let policy = resources(http.get("/apis/policy/v1").await.json());
    assert!(policy.contains(&("poddisruptionbudgets".to_owned(), true, json!(["pdb"]))), "{policy:?}");
    let storage = resources(http.get("/apis/storage.k8s.io/v1").await.json());
    for name in ["storageclasses", "csinodes", "csidrivers", "volumeattachments", "volumeattachments/status"]
    {
        assert!(storage.iter().any(|(n, namespaced, _)| n == name && !namespaced), "{name}: {storage:?}");
    }
    let networking = resources(http.get("/apis/networking.k8s.io/v1").await.json());
    assert!(networking.contains(&("ingresses".to_owned(), true, json!(["ing"]))), "{networking:?}");
    assert!(networking.contains(&("networkpolicies".to_owned(), true, json!(["netpol"]))), "{networking:?}");
    assert!(networking.iter().any(|(n, namespaced, _)| n == "ingressclasses" && !namespaced));
    let csr = resources(http.get("/apis/certificates.k8s.io/v1").await.json());
    assert!(csr.contains(&("certificatesigningrequests".to_owned(), false, json!(["csr"]))), "{csr:?}");
    for (path, name) in [
        ("/apis/discovery.k8s.io/v1", "endpointslices"),
        ("/apis/scheduling.k8s.io/v1", "priorityclasses"),
        ("/apis/node.k8s.io/v1", "runtimeclasses"),
    ] {
        assert!(resources(http.get(path).await.json()).iter().any(|(n, ..)| n == name), "{path}");
    }
    let apps = http.get("/apis/apps/v1").await.json();
    assert!(apps["resources"].as_array().unwrap().iter().any(|r| r["name"] == "deployments"));
    let batch = http.get("/apis/batch/v1").await.json();
    let batch: Vec<(&str, &str, &Value)> = batch["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["kind"].as_str().unwrap(), &r["shortNames"]))
        .collect();
    assert_eq!(
        batch,
        [
            ("cronjobs", "CronJob", &json!(["cj"])),
            ("cronjobs/status", "CronJob", &Value::Null),
            ("jobs", "Job", &json!([])),
            ("jobs/status", "Job", &Value::Null),
        ]
    );
    let rbac = http.get("/apis/rbac.authorization.k8s.io/v1").await.json();
    let rbac: Vec<(&str, &str, bool)> = rbac["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["name"].as_str().unwrap(), r["kind"].as_str().unwrap(), r["namespaced"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        rbac,
        [
            ("clusterrolebindings", "ClusterRoleBinding", false),
            ("clusterroles", "ClusterRole", false),
            ("rolebindings", "RoleBinding", true),
            ("roles", "Role", true),
        ]
    );
    let openapi_batch = http.get("/openapi/v3/apis/batch/v1").await.json();
    assert!(openapi_batch["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs"]["post"].is_object());
    assert_eq!(http.get("/apis/apps").await.json()["preferredVersion"]["version"], "v1");
    assert_status(&http.get("/apis/nope.example.com/v1").await, 404, "NotFound");
    assert_status(&http.get("/api/v1/nopes").await, 404, "NotFound");
    assert_status(&http.request("PUT", CM, "application/json", b"{}").await, 405, "MethodNotAllowed");
    let openapi = http.get("/openapi/v3").await.json();
    assert!(openapi["paths"]["api/v1"]["serverRelativeURL"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_patch_delete() {
    let (server, _dir) = server();
    crud(&Http::new(&server.address, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_patch_delete_over_http2_on_etcd() {
    let cluster = EtcdCluster::start(1);
    let urls = cluster.client_urls();
    let server = ServerProcess::start(&["--etcd-endpoints", &urls[0]]);
    // List, then watch from the list's revision, while configmaps are idle and other writes
    // (the default namespaces) moved etcd's revision past the configmap cache's: the watch must
    // start (etcd progress brings the cache there), not time out.
    watch_sees_changes(&Http::new(&server.address, true)).await;
    crud(&Http::new(&server.address, true)).await;
    watch_sees_changes(&Http::new(&server.address, true)).await;
}

async fn crud(http: &Http) {
    let created = http.send_json("POST", CM, &configmap("settings", json!({"app": "web"}))).await;
    assert_eq!(created.status, 201, "{}", created.json());
    let created = created.json();
    let rv: u64 = created["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv > 0);
    assert!(created["metadata"]["uid"].as_str().unwrap().len() >= 32);
    assert!(created["metadata"]["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(created["metadata"]["namespace"], "default");

    let got = http.get(&format!("{CM}/settings")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["metadata"]["uid"], created["metadata"]["uid"]);

    assert_status(&http.send_json("POST", CM, &configmap("settings", json!({}))).await, 409, "AlreadyExists");

    // Update with the current resourceVersion, then with a stale one.
    let mut changed = created.clone();
    changed["data"]["key"] = json!("v2");
    let updated = http.send_json("PUT", &format!("{CM}/settings"), &changed).await;
    assert_eq!(updated.status, 200, "{}", updated.json());
    let updated = updated.json();
    assert_eq!(updated["data"]["key"], "v2");
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"], "uid cannot change");
    assert_status(&http.send_json("PUT", &format!("{CM}/settings"), &changed).await, 409, "Conflict");
    // Without a resourceVersion, an update is unconditional.
    let mut unconditional = updated.clone();
    unconditional["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    unconditional["data"]["key"] = json!("v3");
    assert_eq!(http.send_json("PUT", &format!("{CM}/settings"), &unconditional).await.status, 200);

    // Patches: merge, JSON, strategic.
    let merge = http
        .request(
            "PATCH",
            &format!("{CM}/settings"),
            "application/merge-patch+json",
            br#"{"data":{"other":"x"}}"#,
        )
        .await;
    assert_eq!(merge.status, 200, "{}", merge.json());
    assert_eq!(merge.json()["data"], json!({"key": "v3", "other": "x"}));
    let json_patch = http
        .request(
            "PATCH",
            &format!("{CM}/settings"),
            "application/json-patch+json",
            br#"[{"op":"remove","path":"/data/other"}]"#,
        )
        .await;
    assert_eq!(json_patch.json()["data"], json!({"key": "v3"}));
    let strategic = http
        .request(
            "PATCH",
            &format!("{CM}/settings"),
            "application/strategic-merge-patch+json",
            br#"{"metadata":{"labels":{"tier":"front"}}}"#,
        )
        .await;
    assert_eq!(strategic.json()["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
    assert_status(
        &http
            .request(
                "PATCH",
                &format!("{CM}/settings"),
                "application/json-patch+json",
                br#"[{"op":"test","path":"/data/key","value":"no"}]"#,
            )
            .await,
        422,
        "Invalid",
    );
    assert_status(
        &http.request("PATCH", &format!("{CM}/settings"), "text/plain", b"x").await,
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        &http.request("PATCH", &format!("{CM}/missing"), "application/merge-patch+json", b"{}").await,
        404,
        "NotFound",
    );

    let deleted = http.request("DELETE", &format!("{CM}/settings"), "application/json", b"").await;
    assert_eq!(deleted.status, 200, "{}", deleted.json());
    let gone = http.get(&format!("{CM}/settings")).await;
    assert_status(&gone, 404, "NotFound");
    assert_eq!(gone.json()["message"], "configmaps \"settings\" not found");
    assert_eq!(gone.json()["details"]["name"], "settings");
    assert_status(
        &http.request("DELETE", &format!("{CM}/settings"), "application/json", b"").await,
        404,
        "NotFound",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let invalid = http.send_json("POST", CM, &configmap("Not_Valid", json!({}))).await;
    assert_status(&invalid, 422, "Invalid");
    let causes = invalid.json()["details"]["causes"].clone();
    assert_eq!(causes[0]["field"], "metadata.name", "{causes}");
    assert_status(
        &http.send_json("POST", CM, &configmap("ok", json!({"bad key!": "x"}))).await,
        422,
        "Invalid",
    );
    assert_status(&http.request("POST", CM, "application/json", b"{not json").await, 400, "BadRequest");
    let mut wrong_kind = configmap("ok", json!({}));
    wrong_kind["kind"] = json!("Secret");
    assert_status(&http.send_json("POST", CM, &wrong_kind).await, 400, "BadRequest");
    let mut wrong_namespace = configmap("ok", json!({}));
    wrong_namespace["metadata"]["namespace"] = json!("other");
    assert_status(&http.send_json("POST", CM, &wrong_namespace).await, 400, "BadRequest");
    assert_status(&http.request("POST", CM, "text/plain", b"hello").await, 415, "UnsupportedMediaType");
    // A body over 3 MiB: refused from its Content-Length, before it is read.
    let (code, body) = raw_request(
        &server.address,
        &format!(
            "POST {CM} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{{}}"
        ),
    );
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("RequestEntityTooLarge"), "{body}");
    let missing =
        http.send_json("POST", "/api/v1/namespaces/nowhere/configmaps", &configmap("ok", json!({}))).await;
    assert_status(&missing, 404, "NotFound");
    assert_eq!(missing.json()["message"], "namespaces \"nowhere\" not found");
    // dryRun validates and stores nothing.
    let dry = http.send_json("POST", &format!("{CM}?dryRun=All"), &configmap("dry", json!({}))).await;
    assert_eq!(dry.status, 201);
    assert_status(&http.get(&format!("{CM}/dry")).await, 404, "NotFound");
    assert_status(&http.get(&format!("{CM}?dryRun=Some")).await, 400, "BadRequest");
    assert_status(&http.get(&format!("{CM}?labelSelector=a%20in%20(")).await, 400, "BadRequest");
    assert_status(&http.get(&format!("{CM}?fieldSelector=spec.nope%3Dx")).await, 400, "BadRequest");
    assert_status(&http.get(&format!("{CM}?limit=x")).await, 400, "BadRequest");
    assert_status(&http.get(&format!("{CM}?continue=garbage")).await, 400, "BadRequest");
    assert_status(&http.get(&format!("{CM}?resourceVersionMatch=Exact")).await, 400, "BadRequest");
    assert_status(&http.get(&format!("{CM}?resourceVersion=abc")).await, 400, "BadRequest");
    assert_status(
        &http.get(&format!("{CM}?resourceVersion=999999&resourceVersionMatch=NotOlderThan")).await,
        504,
        "Timeout",
    );
    // Nothing of the above was stored.
    assert_eq!(http.get(CM).await.json()["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_paginate() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    for i in 0..7 {
        let app = if i % 2 == 0 { "web" } else { "db" };
        assert_eq!(
            http.send_json("POST", CM, &configmap(&format!("c{i}"), json!({"app": app, "n": i.to_string()})))
                .await
                .status,
            201
        );
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = http.get(CM).await.json();
    assert_eq!(all["kind"], "ConfigMapList");
    assert_eq!(names(&all).len(), 7);
    assert!(all["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(
        names(&http.get(&format!("{CM}?labelSelector=app%3Dweb")).await.json()),
        ["c0", "c2", "c4", "c6"]
    );
    assert_eq!(names(&http.get(&format!("{CM}?labelSelector=app!%3Dweb")).await.json()), ["c1", "c3", "c5"]);
    assert_eq!(names(&http.get(&format!("{CM}?labelSelector=n%20in%20(1,2)")).await.json()), ["c1", "c2"]);
    assert_eq!(
        names(&http.get(&format!("{CM}?labelSelector=n%20notin%20(1,2),app")).await.json()),
        ["c0", "c3", "c4", "c5", "c6"]
    );
    assert_eq!(names(&http.get(&format!("{CM}?labelSelector=!app")).await.json()), Vec::<String>::new());
    assert_eq!(names(&http.get(&format!("{CM}?fieldSelector=metadata.name%3Dc3")).await.json()), ["c3"]);
    assert_eq!(
        names(&http.get("/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault").await.json()).len(),
        7
    );
    // Pages.
    let mut seen = Vec::new();
    let mut path = format!("{CM}?limit=3");
    let first_rv = loop {
        let page = http.get(&path).await.json();
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{CM}?limit=3&continue={token}"),
            None => break page["metadata"]["resourceVersion"].clone(),
        }
    };
    assert_eq!(seen, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    assert!(first_rv.is_string());
    // resourceVersion=0 is served from the cache as is.
    assert_eq!(names(&http.get(&format!("{CM}?resourceVersion=0")).await.json()).len(), 7);
    // The Table kubectl asks for.
    let table = http.request("GET", CM, "application/json", b"").await;
    assert_eq!(table.status, 200);
}

async fn watch_sees_changes(http: &Http) {
    let list = http.get(CM).await.json();
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let mut watch = http.watch(&format!("{CM}?watch=true&resourceVersion={rv}")).await;
    let created = http.send_json("POST", CM, &configmap("watched", json!({}))).await.json();
    let patched = http
        .request(
            "PATCH",
            &format!("{CM}/watched"),
            "application/merge-patch+json",
            br#"{"data":{"key":"new"}}"#,
        )
        .await
        .json();
    http.request("DELETE", &format!("{CM}/watched"), "application/json", b"").await;
    let added = watch.next_event().await.unwrap();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
    let modified = watch.next_event().await.unwrap();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["metadata"]["resourceVersion"], patched["metadata"]["resourceVersion"]);
    assert_eq!(modified["object"]["data"]["key"], "new");
    let deleted = watch.next_event().await.unwrap();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["metadata"]["name"], "watched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stream_events_bookmarks_and_errors() {
    let (mut server, _dir) = server();
    let http = Http::new(&server.address, false);
    watch_sees_changes(&http).await;

    // timeoutSeconds ends the stream.
    let mut short = http.watch(&format!("{CM}?watch=true&timeoutSeconds=1")).await;
    assert!(short.next_event().await.is_none(), "the stream ends at its timeout");

    // A watch-list: initial events, then the end bookmark.
    for name in ["a", "b"] {
        http.send_json("POST", CM, &configmap(name, json!({}))).await;
    }
    let mut watch_list = http
        .watch(&format!("{CM}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"))
        .await;
    let mut initial = Vec::new();
    loop {
        let event = watch_list.next().await.unwrap();
        if event["type"] == "BOOKMARK" {
            assert_eq!(event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
            break;
        }
        assert_eq!(event["type"], "ADDED");
        initial.push(event["object"]["metadata"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(initial, ["a", "b"]);

    // A resourceVersion older than the cache's history: an ERROR event with a 410 Status.
    let mut too_old = http.watch(&format!("{CM}?watch=true&resourceVersion=1")).await;
    let first = too_old.next().await;
    // Revision 1 may still be in the history of a fresh store; then events come instead.
    if let Some(event) = first.filter(|event| event["type"] == "ERROR") {
        assert_eq!(event["object"]["code"], 410);
        assert_eq!(event["object"]["reason"], "Expired");
        assert!(too_old.next().await.is_none());
    }
    // Invalid watch parameters.
    let reply = http.get(&format!("{CM}?watch=true&sendInitialEvents=true")).await;
    assert_status(&reply, 400, "BadRequest");

    // SIGTERM ends open watches cleanly and the server exits 0.
    let mut open = http.watch(&format!("{CM}?watch=true")).await;
    let _ = open.next().await; // initial ADDED events
    let status = server.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_finalizers_namespaces_and_deletecollection() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    });
    let created = http.send_json("POST", deployments, &deployment).await.json();
    assert_eq!(created["metadata"]["generation"], 1);
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 1});
    with_status["spec"]["replicas"] = json!(3);
    let updated = http.send_json("PUT", &format!("{deployments}/web"), &with_status).await.json();
    assert_eq!(updated["spec"]["replicas"], 3);
    assert!(updated.get("status").is_none(), "the main resource ignores status: {updated}");
    assert_eq!(updated["metadata"]["generation"], 2, "a spec change bumps the generation");
    let mut new_status = updated.clone();
    new_status["status"] = json!({"replicas": 1});
    new_status["spec"]["replicas"] = json!(7);
    let status = http.send_json("PUT", &format!("{deployments}/web/status"), &new_status).await.json();
    assert_eq!(status["status"]["replicas"], 1, "{status}");
    assert_eq!(status["spec"]["replicas"], 3, "the status subresource ignores spec");

    // Finalizers hold a delete until they are removed.
    let held = http.send_json("POST", CM, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})).await;
    assert_eq!(held.status, 201);
    let deleting = http.request("DELETE", &format!("{CM}/held"), "application/json", b"").await;
    assert_eq!(deleting.status, 200, "kube answers 200 with the object it keeps");
    assert!(deleting.json()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(http.get(&format!("{CM}/held")).await.status, 200);
    let released = http
        .request(
            "PATCH",
            &format!("{CM}/held"),
            "application/merge-patch+json",
            br#"{"metadata":{"finalizers":null}}"#,
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.json());
    assert_eq!(http.get(&format!("{CM}/held")).await.status, 404);

    // Preconditions on delete.
    let kept = http.send_json("POST", CM, &configmap("kept", json!({}))).await.json();
    let precondition = json!({"preconditions": {"uid": "not-the-uid"}});
    assert_status(&http.send_json("DELETE", &format!("{CM}/kept"), &precondition).await, 409, "Conflict");
    let precondition = json!({"preconditions": {"resourceVersion": kept["metadata"]["resourceVersion"]}});
    assert_eq!(http.send_json("DELETE", &format!("{CM}/kept"), &precondition).await.status, 200);

    // deletecollection with a selector.
    for (name, app) in [("x1", "x"), ("x2", "x"), ("y1", "y")] {
        http.send_json("POST", CM, &configmap(name, json!({"app": app}))).await;
    }
    let removed =
        http.request("DELETE", &format!("{CM}?labelSelector=app%3Dx"), "application/json", b"").await;
    assert_eq!(removed.status, 200);
    assert_eq!(removed.json()["items"].as_array().unwrap().len(), 2);
    let left: Vec<Value> = http.get(CM).await.json()["items"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1);

    // A namespace takes its objects with it.
    let ns = http
        .send_json(
            "POST",
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .await;
    assert_eq!(ns.status, 201);
    assert_eq!(ns.json()["status"]["phase"], "Active");
    assert_eq!(
        http.send_json("POST", "/api/v1/namespaces/team/configmaps", &configmap("c", json!({}))).await.status,
        201
    );
    assert_eq!(http.request("DELETE", "/api/v1/namespaces/team", "application/json", b"").await.status, 200);
    wait_gone(&http, "/api/v1/namespaces/team").await;
    assert_eq!(http.get("/api/v1/namespaces/team/configmaps/c").await.status, 404);
    assert_eq!(http.get("/api/v1/namespaces/default").await.status, 200, "default namespaces exist");
}

/// Polls `path` until it answers 404 (at most 30 s).
async fn wait_gone(http: &Http, path: &str) {
    for _ in 0..300 {
        if http.get(path).await.status == 404 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} is still there: {}", http.get(path).await.json());
}

/// The namespace lifecycle as on a real cluster: Terminating, no new content, content with
/// finalizers holding the namespace (and the conditions saying so), creates racing with the
/// deletion leaving no orphans, and the namespaces that may not be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_terminates_removes_content_and_leaves_no_orphans() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let namespace = |name: &str, finalizers: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {"finalizers": finalizers}});
    // The kubernetes finalizer is added on create, whatever the client sent.
    let created = http.send_json("POST", "/api/v1/namespaces", &namespace("doomed", json!([]))).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["spec"]["finalizers"], json!(["kubernetes"]));
    let in_doomed = "/api/v1/namespaces/doomed/configmaps";
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    assert_eq!(http.send_json("POST", in_doomed, &held).await.status, 201);
    for i in 0..20 {
        assert_eq!(
            http.send_json("POST", in_doomed, &configmap(&format!("c{i}"), json!({}))).await.status,
            201
        );
    }

    // The first DELETE marks it Terminating and answers with it.
    let deleted = http.request("DELETE", "/api/v1/namespaces/doomed", "application/json", b"").await;
    assert_eq!(deleted.status, 200);
    let marked = deleted.json();
    assert_eq!(marked["status"]["phase"], "Terminating", "{marked}");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    // No new content; a second DELETE is a conflict.
    let refused = http.send_json("POST", in_doomed, &configmap("late", json!({}))).await;
    assert_status(&refused, 403, "Forbidden");
    let status = refused.json();
    assert_eq!(
        status["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "NamespaceTerminating");
    let again = http.request("DELETE", "/api/v1/namespaces/doomed", "application/json", b"").await;
    assert_status(&again, 409, "Conflict");

    // The content goes, but the object with a finalizer is only marked and holds the namespace,
    // and the namespace's conditions say so.
    let mut conditions = Value::Null;
    for _ in 0..300 {
        let namespace = http.get("/api/v1/namespaces/doomed").await.json();
        conditions = namespace["status"]["conditions"].clone();
        let remaining = conditions.as_array().and_then(|list| {
            list.iter().find(|condition| condition["type"] == "NamespaceContentRemaining").cloned()
        });
        let listed = http.get(in_doomed).await.json();
        if listed["items"].as_array().unwrap().len() == 1
            && remaining.is_some_and(|condition| {
                condition["message"] == "Some resources are remaining: configmaps. has 1 resource instances"
            })
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finalizers = conditions
        .as_array()
        .and_then(|list| list.iter().find(|condition| condition["type"] == "NamespaceFinalizersRemaining"))
        .unwrap_or_else(|| panic!("no finalizer condition: {conditions}"));
    assert_eq!(finalizers["status"], "True");
    assert_eq!(
        finalizers["message"],
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    let held = http.get(&format!("{in_doomed}/held")).await.json();
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert_eq!(http.get("/api/v1/namespaces/doomed").await.status, 200, "held by the finalizer");
    // Its finalizer removed, the object goes, and then the namespace.
    let release = json!({"metadata": {"finalizers": null}});
    let patched = http
        .request(
            "PATCH",
            &format!("{in_doomed}/held"),
            "application/merge-patch+json",
            release.to_string().as_bytes(),
        )
        .await;
    assert!(matches!(patched.status, 200 | 404), "{}", String::from_utf8_lossy(&patched.body));
    wait_gone(&http, "/api/v1/namespaces/doomed").await;

    // Creates racing with the deletion leave nothing behind once it is gone.
    assert_eq!(http.send_json("POST", "/api/v1/namespaces", &namespace("racy", json!([]))).await.status, 201);
    let writer = {
        let http = Http::new(&server.address, false);
        tokio::spawn(async move {
            let mut created = 0;
            for i in 0..400 {
                let path = "/api/v1/namespaces/racy/configmaps";
                match http.send_json("POST", path, &configmap(&format!("r{i}"), json!({}))).await.status {
                    201 => created += 1,
                    403 | 404 => break,
                    other => panic!("create in a deleted namespace: {other}"),
                }
            }
            created
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http.request("DELETE", "/api/v1/namespaces/racy", "application/json", b"").await.status, 200);
    let created = writer.await.unwrap();
    assert!(created > 0, "nothing was created before the deletion");
    wait_gone(&http, "/api/v1/namespaces/racy").await;
    assert_eq!(http.send_json("POST", "/api/v1/namespaces", &namespace("racy", json!([]))).await.status, 201);
    let left = http.get("/api/v1/namespaces/racy/configmaps").await.json();
    assert_eq!(left["items"], json!([]), "orphans of {created} creates");

    for name in ["default", "kube-system", "kube-public"] {
        let refused =
            http.request("DELETE", &format!("/api/v1/namespaces/{name}"), "application/json", b"").await;
        assert_status(&refused, 403, "Forbidden");
        assert_eq!(
            refused.json()["message"],
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resource_definitions_serve_new_types() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}],
        },
    });
    let created =
        http.send_json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd).await;
    assert_eq!(created.status, 201, "{}", created.json());
    assert_eq!(created.json()["status"]["conditions"][1]["type"], "Established");
    let mut bad = crd.clone();
    bad["metadata"]["name"] = json!("wrong");
    assert_status(
        &http.send_json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &bad).await,
        422,
        "Invalid",
    );

    let crontabs = "/apis/stable.example.com/v1/namespaces/default/crontabs";
    let object = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "nightly"}, "spec": {"schedule": "0 0 * * *"}});
    let made = http.send_json("POST", crontabs, &object).await;
    assert_eq!(made.status, 201, "{}", made.json());
    assert_eq!(http.get(crontabs).await.json()["items"][0]["spec"]["schedule"], "0 0 * * *");
    let discovery = http.get("/apis/stable.example.com/v1").await.json();
    assert_eq!(discovery["resources"][0]["name"], "crontabs");

    assert_eq!(
        http.request(
            "DELETE",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com",
            "application/json",
            b""
        )
        .await
        .status,
        200
    );
    assert_status(&http.get(crontabs).await, 404, "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_is_410_gone() {
    // Little storage history, so that once the cache no longer keeps the list's snapshot,
    // storage cannot serve its revision either; and a short retention.
    let server = ServerProcess::start(&[
        "--in-memory",
        "--history-revisions",
        "10",
        "--paginated-list-retention",
        "1s",
    ]);
    let http = Http::new(&server.address, false);
    for i in 0..3 {
        assert_eq!(http.send_json("POST", CM, &configmap(&format!("c{i}"), json!({}))).await.status, 201);
    }
    let patch = |i: usize| format!(r#"{{"data":{{"n":"{i}"}}}}"#);
    let first = http.get(&format!("{CM}?limit=1")).await.json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    // Within the retention, many writes later, the list goes on from the cache at its revision
    // (storage keeps only 10 revisions: it could not have served it).
    for i in 0..200 {
        let reply = http
            .request("PATCH", &format!("{CM}/c0"), "application/merge-patch+json", patch(i).as_bytes())
            .await;
        assert_eq!(reply.status, 200);
    }
    let second = http.get(&format!("{CM}?limit=1&continue={token}")).await;
    assert_eq!(second.status, 200, "{}", String::from_utf8_lossy(&second.body));
    let second = second.json();
    assert_eq!(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
    assert_eq!(second["items"][0]["metadata"]["name"], "c1");
    let token = second["metadata"]["continue"].as_str().unwrap().to_owned();
    // Past the retention (the cache checks ages about once a second, on writes and ticks).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for i in 0..5 {
        let reply = http
            .request("PATCH", &format!("{CM}/c0"), "application/merge-patch+json", patch(i).as_bytes())
            .await;
        assert_eq!(reply.status, 200);
    }
    let expired = http.get(&format!("{CM}?limit=1&continue={token}")).await;
    assert_status(&expired, 410, "Expired");
    // A new list works.
    assert_eq!(http.get(&format!("{CM}?limit=1")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_inflight_limit_get_429() {
    let server = ServerProcess::start(&["--in-memory", "--max-requests-inflight", "1"]);
    let http = Http::new(&server.address, false);
    // Holds the one permit for up to 3 s: a list at a revision the cache will not reach.
    let slow = {
        let http = Http::new(&server.address, false);
        tokio::spawn(async move {
            http.get(&format!("{CM}?resourceVersion=999999&resourceVersionMatch=NotOlderThan")).await.status
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = http.get(CM).await;
    assert_status(&refused, 429, "TooManyRequests");
    // Watches and health checks are not limited.
    assert_eq!(http.get("/healthz").await.status, 200);
    let mut watch = http.watch(&format!("{CM}?watch=true&timeoutSeconds=1")).await;
    assert!(watch.next().await.is_none());
    assert_eq!(slow.await.unwrap(), 504);
    assert_eq!(http.get(CM).await.status, 200, "the permit came back");
}

/// Mutating requests have their own limit: a create that holds the one permit (its body not yet
/// sent) makes the next create 429, while reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_beyond_their_own_limit_get_429_and_reads_go_on() {
    use tokio::io::AsyncWriteExt;
    let server = ServerProcess::start(&["--in-memory", "--max-mutating-requests-inflight", "1"]);
    let http = Http::new(&server.address, false);
    // A create whose body never finishes holds the permit while the server waits for it.
    let mut held = tokio::net::TcpStream::connect(&server.address).await.unwrap();
    let head = format!(
        "POST {CM} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        server.address
    );
    held.write_all(head.as_bytes()).await.unwrap();
    let mut refused = None;
    for _ in 0..100 {
        let reply = http.send_json("POST", CM, &configmap("second", json!({}))).await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        // The held request may not have reached the server yet; the create went through.
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(
            http.request("DELETE", &format!("{CM}/second"), "application/json", b"").await.status,
            200
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a second create while the first holds the only permit gets 429");
    assert_status(&refused, 429, "TooManyRequests");
    assert_eq!(refused.json()["details"]["retryAfterSeconds"], 1);
    // Reads count against --max-requests-inflight, not the mutating limit.
    assert_eq!(http.get(CM).await.status, 200);
    drop(held);
    let mut created = 0;
    for _ in 0..100 {
        match http.send_json("POST", CM, &configmap("third", json!({}))).await.status {
            201 => {
                created = 201;
                break;
            }
            429 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 201, "the permit came back once the held request ended");
}

/// `--max-watches` counts open watches, each until its stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_the_watch_limit_get_429_until_one_ends() {
    let server = ServerProcess::start(&["--in-memory", "--max-watches", "1", "--max-requests-inflight", "1"]);
    let http = Http::new(&server.address, false);
    let first = http.watch(&format!("{CM}?watch=true&timeoutSeconds=30")).await;
    let refused = http.get(&format!("{CM}?watch=true&timeoutSeconds=30")).await;
    assert_status(&refused, 429, "TooManyRequests");
    // The open watch holds no request permit: a list still goes through the limit of 1.
    assert_eq!(http.get(CM).await.status, 200);
    drop(first);
    let mut reopened = false;
    for _ in 0..100 {
        let request = http::Request::builder()
            .uri(format!("{}{CM}?watch=true&timeoutSeconds=1", http.base))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let response = client.request(request).await.unwrap();
        if response.status() == 200 {
            reopened = true;
            break;
        }
        assert_eq!(response.status(), 429);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "the permit came back once the first watch ended");
}

/// The issue's reproduction: a watch from an old resourceVersion whose selector matches only an
/// object created after hundreds that it does not match (more than a batch of the ring) gets
/// that object at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_selector_from_an_old_revision_gets_its_event() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sparse"}});
    assert_eq!(http.send_json("POST", "/api/v1/namespaces", &namespace).await.status, 201);
    let path = "/api/v1/namespaces/sparse/configmaps";
    let rv = http.get(path).await.json()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    for index in 0..600 {
        let reply = http.send_json("POST", path, &configmap(&format!("plain-{index}"), json!({}))).await;
        assert_eq!(reply.status, 201);
    }
    let wanted = http.send_json("POST", path, &configmap("wanted", json!({"x": "1"}))).await.json();
    let mut watch = http
        .watch(&format!("{path}?watch=1&resourceVersion={rv}&labelSelector=x%3D1&timeoutSeconds=20"))
        .await;
    let started = std::time::Instant::now();
    let event = watch.next_event().await.expect("the matching event, not the end of the stream");
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "wanted");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], wanted["metadata"]["resourceVersion"]);
    // Not at the stream's timeout: the watch did not sleep with the event waiting.
    assert!(started.elapsed() < Duration::from_secs(10), "delivered after {:?}", started.elapsed());
}

/// Without timeoutSeconds a watch ends after a random time between --min-request-timeout and
/// twice that, as kube-apiserver's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_without_timeout_ends_after_the_minimum_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--min-request-timeout=1",
    ]);
    let http = Http::new(&server.address, false);
    let rv = http.get(CM).await.json()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let mut watch = http.watch(&format!("{CM}?watch=true&resourceVersion={rv}")).await;
    assert!(watch.next_event().await.is_none(), "the stream ends cleanly");
    let lasted = started.elapsed();
    assert!(lasted >= Duration::from_secs(1), "ended after {lasted:?}, before the minimum");
    // timeoutSeconds still rules when given, even above the minimum.
    let started = std::time::Instant::now();
    let mut watch = http.watch(&format!("{CM}?watch=true&resourceVersion={rv}&timeoutSeconds=3")).await;
    assert!(watch.next_event().await.is_none());
    assert!(started.elapsed() >= Duration::from_secs(3), "ended after {:?}", started.elapsed());
    // A bad value is refused at startup with a clear message.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_watchcache"))
        .args(["serve", "--min-request-timeout=0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--min-request-timeout"));
}

/// Every added built-in type is created, read back, listed by label and by field selector (where
/// kube has one), and its status changed through `/status` where it has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_added_builtin_types_are_served() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-shaped");
    for (file, path) in [
        ("persistentvolume.json", "/api/v1/persistentvolumes"),
        ("persistentvolumeclaim.json", "/api/v1/namespaces/default/persistentvolumeclaims"),
        ("podtemplate.json", "/api/v1/namespaces/default/podtemplates"),
        ("replicationcontroller.json", "/api/v1/namespaces/default/replicationcontrollers"),
        ("resourcequota.json", "/api/v1/namespaces/default/resourcequotas"),
        ("limitrange.json", "/api/v1/namespaces/default/limitranges"),
        ("endpointslice.json", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
        ("poddisruptionbudget.json", "/apis/policy/v1/namespaces/default/poddisruptionbudgets"),
        ("storageclass.json", "/apis/storage.k8s.io/v1/storageclasses"),
        ("csinode.json", "/apis/storage.k8s.io/v1/csinodes"),
        ("csidriver.json", "/apis/storage.k8s.io/v1/csidrivers"),
        ("volumeattachment.json", "/apis/storage.k8s.io/v1/volumeattachments"),
        ("priorityclass.json", "/apis/scheduling.k8s.io/v1/priorityclasses"),
        ("ingress.json", "/apis/networking.k8s.io/v1/namespaces/default/ingresses"),
        ("ingressclass.json", "/apis/networking.k8s.io/v1/ingressclasses"),
        ("networkpolicy.json", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"),
        ("runtimeclass.json", "/apis/node.k8s.io/v1/runtimeclasses"),
        ("horizontalpodautoscaler.json", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"),
        ("certificatesigningrequest.json", "/apis/certificates.k8s.io/v1/certificatesigningrequests"),
    ] {
        let mut object: Value = serde_json::from_slice(&std::fs::read(fixtures.join(file)).unwrap()).unwrap();
        let metadata = object["metadata"].as_object_mut().unwrap();
        for key in
            ["uid", "resourceVersion", "creationTimestamp", "managedFields", "ownerReferences", "generation"]
        {
            metadata.remove(key);
        }
        metadata.insert("labels".into(), json!({"fixture": "yes"}));
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let created = http.send_json("POST", path, &object).await;
        assert_eq!(created.status, 201, "{file}: {}", String::from_utf8_lossy(&created.body));
        let created = created.json();
        let read = http.get(&format!("{path}/{name}")).await;
        assert_eq!(read.status, 200, "{file}");
        assert_eq!(read.json()["spec"], created["spec"], "{file}");
        let listed = http.get(&format!("{path}?labelSelector=fixture%3Dyes")).await.json();
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{file}: {listed}");
        let status = http.get(&format!("{path}/{name}/status")).await;
        let has_status = [
            "persistentvolume.json",
            "persistentvolumeclaim.json",
            "replicationcontroller.json",
            "resourcequota.json",
            "poddisruptionbudget.json",
            "volumeattachment.json",
            "ingress.json",
            "horizontalpodautoscaler.json",
            "certificatesigningrequest.json",
        ]
        .contains(&file);
        assert_eq!(status.status == 200, has_status, "{file}: /status answered {}", status.status);
    }
    let by_signer = http
        .get("/apis/certificates.k8s.io/v1/certificatesigningrequests?fieldSelector=spec.signerName%3Dkubernetes.io%2Fkube-apiserver-client-kubelet")
        .await
        .json();
    assert_eq!(by_signer["items"].as_array().unwrap().len(), 1, "{by_signer}");
    let none = http
        .get("/apis/certificates.k8s.io/v1/certificatesigningrequests?fieldSelector=spec.signerName%3Dexample.com%2Fother")
        .await
        .json();
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");
    for (replicas, expected) in [("3", 1), ("1", 0)] {
        let path = format!(
            "/api/v1/namespaces/default/replicationcontrollers?fieldSelector=status.replicas%3D{replicas}"
        );
        let listed = http.get(&path).await.json();
        assert_eq!(listed["items"].as_array().unwrap().len(), expected, "{replicas}: {listed}");
    }
}

/// `scale`: autoscaling/v1 Scale over a deployment's and a replication controller's
/// `spec.replicas`, with resourceVersion preconditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    });
    assert_eq!(http.send_json("POST", deployments, &deployment).await.status, 201);
    let scale = http.get(&format!("{deployments}/web/scale")).await;
    assert_eq!(scale.status, 200, "{}", String::from_utf8_lossy(&scale.body));
    let scale = scale.json();
    assert_eq!(
        (scale["apiVersion"].clone(), scale["kind"].clone()),
        (json!("autoscaling/v1"), json!("Scale"))
    );
    assert_eq!(scale["spec"], json!({"replicas": 2}));
    assert_eq!(scale["status"], json!({"replicas": 0, "selector": "app=web"}));
    assert_eq!(scale["metadata"]["name"], "web");

    let mut put = scale.clone();
    put["spec"]["replicas"] = json!(5);
    let written = http.send_json("PUT", &format!("{deployments}/web/scale"), &put).await;
    assert_eq!(written.status, 200, "{}", String::from_utf8_lossy(&written.body));
    assert_eq!(written.json()["spec"]["replicas"], 5);
    let parent = http.get(&format!("{deployments}/web")).await.json();
    assert_eq!(parent["spec"]["replicas"], 5);
    assert_eq!(parent["metadata"]["generation"], 2);

    // The first Scale's resourceVersion is stale now.
    put["spec"]["replicas"] = json!(7);
    assert_status(&http.send_json("PUT", &format!("{deployments}/web/scale"), &put).await, 409, "Conflict");

    let patched = http
        .request(
            "PATCH",
            &format!("{deployments}/web/scale"),
            "application/merge-patch+json",
            br#"{"spec":{"replicas":1}}"#,
        )
        .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    assert_eq!(http.get(&format!("{deployments}/web")).await.json()["spec"]["replicas"], 1);

    let controllers = "/api/v1/namespaces/default/replicationcontrollers";
    let controller = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
        "spec": {"replicas": 1, "selector": {"app": "rc", "tier": "a"},
            "template": {"metadata": {"labels": {"app": "rc", "tier": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    assert_eq!(http.send_json("POST", controllers, &controller).await.status, 201);
    let scale = http.get(&format!("{controllers}/rc/scale")).await.json();
    assert_eq!(scale["status"]["selector"], "app=rc,tier=a");
    let patched = http
        .request(
            "PATCH",
            &format!("{controllers}/rc/scale"),
            "application/merge-patch+json",
            br#"{"spec":{"replicas":0}}"#,
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(http.get(&format!("{controllers}/rc")).await.json()["spec"]["replicas"], 0);

    // Types without a scale subresource do not route it.
    assert_status(&http.get("/apis/apps/v1/namespaces/default/daemonsets/x/scale").await, 404, "NotFound");
    let apps = http.get("/apis/apps/v1").await.json();
    let scale_entry = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .unwrap()
        .clone();
    assert_eq!(
        (scale_entry["group"].clone(), scale_entry["version"].clone(), scale_entry["kind"].clone()),
        (json!("autoscaling"), json!("v1"), json!("Scale"))
    );
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

/// Graceful deletion of pods, propagation policies and kube's DeleteOptions validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_deleted_gracefully_and_propagation_policies_set_finalizers() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let pods = "/api/v1/namespaces/default/pods";
    let mut scheduled = pod("running", json!({}));
    scheduled["spec"]["nodeName"] = json!("node-1");
    assert_eq!(http.send_json("POST", pods, &scheduled).await.status, 201);
    assert_eq!(http.send_json("POST", pods, &pod("pending", json!({}))).await.status, 201);

    // A scheduled pod is marked with its grace period (30 s by default) and stays.
    let deleted = http.request("DELETE", &format!("{pods}/running"), "application/json", b"").await;
    assert_eq!(deleted.status, 200);
    let marked = deleted.json();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30, "{marked}");
    let deadline =
        humantime::parse_rfc3339(marked["metadata"]["deletionTimestamp"].as_str().unwrap()).unwrap();
    let ahead = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(ahead > Duration::from_secs(20), "deletionTimestamp is {ahead:?} ahead");
    // Its kubelet's status updates during the grace period do not delete it.
    let status = json!({"status": {"phase": "Running"}});
    let updated = http
        .request(
            "PATCH",
            &format!("{pods}/running/status"),
            "application/merge-patch+json",
            status.to_string().as_bytes(),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", String::from_utf8_lossy(&updated.body));
    assert_eq!(http.get(&format!("{pods}/running")).await.status, 200);
    // A longer grace period changes nothing; a shorter one moves the deadline; 0 deletes it.
    let longer =
        http.send_json("DELETE", &format!("{pods}/running"), &json!({"gracePeriodSeconds": 60})).await;
    assert_eq!(longer.json()["metadata"]["deletionGracePeriodSeconds"], 30);
    let shorter =
        http.send_json("DELETE", &format!("{pods}/running"), &json!({"gracePeriodSeconds": 10})).await;
    assert_eq!(shorter.json()["metadata"]["deletionGracePeriodSeconds"], 10);
    let now = http
        .request("DELETE", &format!("{pods}/running?gracePeriodSeconds=0"), "application/json", b"")
        .await;
    assert_eq!(now.status, 200);
    assert_eq!(http.get(&format!("{pods}/running")).await.status, 404);
    // An unscheduled pod goes at once.
    assert_eq!(http.request("DELETE", &format!("{pods}/pending"), "application/json", b"").await.status, 200);
    assert_eq!(http.get(&format!("{pods}/pending")).await.status, 404);

    // Foreground and Orphan set the garbage collector's finalizers and keep the object;
    // orphanDependents=false is the one case answered with 202.
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    };
    for name in ["fg", "orphaned", "legacy", "bg"] {
        assert_eq!(http.send_json("POST", deployments, &deployment(name)).await.status, 201);
    }
    let fg = http
        .send_json("DELETE", &format!("{deployments}/fg"), &json!({"propagationPolicy": "Foreground"}))
        .await;
    assert_eq!(fg.status, 200);
    assert_eq!(fg.json()["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(fg.json()["metadata"]["deletionTimestamp"].is_string());
    let orphaned = http
        .request(
            "DELETE",
            &format!("{deployments}/orphaned?propagationPolicy=Orphan"),
            "application/json",
            b"",
        )
        .await;
    assert_eq!(orphaned.json()["metadata"]["finalizers"], json!(["orphan"]));
    let legacy =
        http.send_json("DELETE", &format!("{deployments}/legacy"), &json!({"orphanDependents": false})).await;
    assert_eq!(legacy.status, 200, "Background deletes at once");
    assert_eq!(http.get(&format!("{deployments}/legacy")).await.status, 404);
    let bg = http
        .send_json("DELETE", &format!("{deployments}/bg"), &json!({"propagationPolicy": "Background"}))
        .await;
    assert_eq!(bg.status, 200);
    assert_eq!(http.get(&format!("{deployments}/bg")).await.status, 404);
    // The garbage collector removes its finalizer, and the object goes.
    let released = http
        .request(
            "PATCH",
            &format!("{deployments}/fg"),
            "application/merge-patch+json",
            br#"{"metadata":{"finalizers":null}}"#,
        )
        .await;
    assert_eq!(released.status, 200);
    assert_eq!(http.get(&format!("{deployments}/fg")).await.status, 404);

    let invalid = http
        .send_json("DELETE", &format!("{deployments}/orphaned"), &json!({"propagationPolicy": "Sideways"}))
        .await;
    assert_status(&invalid, 422, "Invalid");
    let both = http
        .send_json(
            "DELETE",
            &format!("{deployments}/orphaned"),
            &json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
        )
        .await;
    assert_status(&both, 422, "Invalid");
}

/// `pods/NAME/binding` and the legacy `bindings` collection set spec.nodeName once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_a_pod_to_a_node_once() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let pods = "/api/v1/namespaces/default/pods";
    assert_eq!(http.send_json("POST", pods, &pod("a", json!({}))).await.status, 201);
    assert_eq!(http.send_json("POST", pods, &pod("b", json!({}))).await.status, 201);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "a"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let bound = http.send_json("POST", &format!("{pods}/a/binding"), &binding).await;
    assert_eq!(bound.status, 201, "{}", String::from_utf8_lossy(&bound.body));
    assert_eq!(bound.json()["status"], "Success");
    let a = http.get(&format!("{pods}/a")).await.json();
    assert_eq!(a["spec"]["nodeName"], "node-1");
    let scheduled = a["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(scheduled["status"], "True");
    let again = http.send_json("POST", &format!("{pods}/a/binding"), &binding).await;
    assert_status(&again, 409, "Conflict");
    assert_eq!(
        again.json()["message"],
        "Operation cannot be fulfilled on pods/binding \"a\": pod a is already assigned to node \"node-1\""
    );
    let legacy = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"}, "target": {"kind": "Node", "name": "node-2"}});
    assert_eq!(http.send_json("POST", "/api/v1/namespaces/default/bindings", &legacy).await.status, 201);
    assert_eq!(http.get(&format!("{pods}/b")).await.json()["spec"]["nodeName"], "node-2");
    let on_node = http.get(&format!("{pods}?fieldSelector=spec.nodeName%3Dnode-2")).await.json();
    assert_eq!(on_node["items"].as_array().unwrap().len(), 1);
    assert_status(
        &http.send_json("POST", &format!("{pods}/missing/binding"), &json!({"target": {"name": "n"}})).await,
        404,
        "NotFound",
    );
}

/// `pods/NAME/eviction`: deletes unless a PodDisruptionBudget that selects the pod allows no
/// disruption; an allowed one is taken from the budget's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_honours_disruption_budgets() {
    let (server, _dir) = server();
    let http = Http::new(&server.address, false);
    let pods = "/api/v1/namespaces/default/pods";
    let budgets = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    for (name, app) in [("free", "other"), ("guarded", "web"), ("second", "web")] {
        assert_eq!(http.send_json("POST", pods, &pod(name, json!({"app": app}))).await.status, 201);
    }
    let budget = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}});
    assert_eq!(http.send_json("POST", budgets, &budget).await.status, 201);
    let eviction =
        |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});

    let evicted = http.send_json("POST", &format!("{pods}/free/eviction"), &eviction("free")).await;
    assert_eq!(evicted.status, 201, "{}", String::from_utf8_lossy(&evicted.body));
    assert_eq!(evicted.json()["status"], "Success");
    assert_status(&http.get(&format!("{pods}/free")).await, 404, "NotFound");

    let refused = http.send_json("POST", &format!("{pods}/guarded/eviction"), &eviction("guarded")).await;
    assert_status(&refused, 429, "TooManyRequests");
    assert_eq!(
        refused.json()["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(refused.json()["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(http.get(&format!("{pods}/guarded")).await.status, 200);

    let status = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3, "observedGeneration": 1}});
    assert_eq!(http.send_json("PUT", &format!("{budgets}/web-pdb/status"), &status).await.status, 200);
    let evicted = http.send_json("POST", &format!("{pods}/guarded/eviction"), &eviction("guarded")).await;
    assert_eq!(evicted.status, 201, "{}", String::from_utf8_lossy(&evicted.body));
    assert_status(&http.get(&format!("{pods}/guarded")).await, 404, "NotFound");
    assert_eq!(http.get(&format!("{budgets}/web-pdb")).await.json()["status"]["disruptionsAllowed"], 0);
    assert_status(
        &http.send_json("POST", &format!("{pods}/second/eviction"), &eviction("second")).await,
        429,
        "TooManyRequests",
    );
}
