//! Kubernetes protobuf over HTTP against the real binary: request and response bodies, lists,
//! `Status` errors, content negotiation (406/415 where kube gives them), the schema check on
//! writes, and protobuf watch streams next to JSON ones on the same resource.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use watchcache::protobuf::{schema, MEDIA_TYPE};

use common::{Http, ServerProcess};

type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Api {
    client: Client,
    base: String,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Answer {
    /// The body as an object, decoded from protobuf (the content type must say protobuf).
    fn object(&self) -> Value {
        assert_eq!(
            self.content_type,
            MEDIA_TYPE,
            "{}: {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        schema().decode_object(&self.body).unwrap()
    }
}

impl Api {
    fn new(address: &str) -> Api {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Api { client, base: format!("http://{address}") }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if !accept.is_empty() {
            request = request.header("accept", accept);
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            self.client.request(request.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .expect("request timed out")
        .expect("request failed");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, content_type, body }
    }

    /// A protobuf request with a protobuf body, accepting protobuf then JSON, as kubectl sends it.
    async fn protobuf(&self, method: &str, path: &str, object: &Value) -> Answer {
        let body = schema().encode_object(object).unwrap();
        self.send(method, path, "application/vnd.kubernetes.protobuf,application/json", MEDIA_TYPE, body)
            .await
    }

    async fn get(&self, path: &str, accept: &str) -> Answer {
        self.send("GET", path, accept, "", Vec::new()).await
    }

    async fn watch(&self, path: &str, accept: &str) -> (String, hyper::body::Incoming) {
        let request = http::Request::builder()
            .uri(format!("{}{path}", self.base))
            .header("accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        (content_type, response.into_body())
    }
}

/// Reads length-prefixed protobuf watch frames.
struct Frames {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl Frames {
    /// The next event's type and object.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if self.buffer.len() >= 4 {
                let len = u32::from_be_bytes(self.buffer[..4].try_into().unwrap()) as usize;
                if self.buffer.len() >= 4 + len {
                    let frame: Vec<u8> = self.buffer.drain(..4 + len).collect();
                    return schema().decode_watch_event(&frame[4..]).unwrap();
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("no watch frame within 10 s")
                .expect("the stream ended")
                .expect("the stream broke");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_requests_responses_lists_and_errors() {
    let server = ServerProcess::start(&["--in-memory"]);
    let api = Api::new(&server.address);
    let json_api = Http::new(&server.address, false);

    // Create in protobuf: the answer is protobuf, and the object reads back the same in JSON.
    let created = api
        .protobuf(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &config_map("pb", json!({"a": "1", "b": ""})),
        )
        .await;
    assert_eq!(created.status, 201);
    let created = created.object();
    assert_eq!((created["kind"].as_str(), created["data"]["a"].as_str()), (Some("ConfigMap"), Some("1")));
    assert!(created["metadata"]["uid"].as_str().is_some_and(|uid| !uid.is_empty()));
    let as_json = json_api.get("/api/v1/namespaces/default/configmaps/pb").await.json();
    assert_eq!(as_json, created, "the protobuf and JSON forms are one object");

    // GET and LIST in protobuf.
    let fetched = api.get("/api/v1/namespaces/default/configmaps/pb", MEDIA_TYPE).await.object();
    assert_eq!(fetched, created);
    api.protobuf("POST", "/api/v1/namespaces/default/configmaps", &config_map("pb2", json!({"c": "3"})))
        .await;
    let list = api.get("/api/v1/namespaces/default/configmaps", MEDIA_TYPE).await.object();
    assert_eq!(list["kind"], "ConfigMapList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pb", "pb2"]);
    assert!(list["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()));
    // A paginated list carries its continue token in the protobuf ListMeta.
    let page = api.get("/api/v1/namespaces/default/configmaps?limit=1", MEDIA_TYPE).await.object();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["metadata"]["continue"].as_str().is_some_and(|token| !token.is_empty()));

    // Update in protobuf, then a Secret's bytes and a Deployment's IntOrString and pointers.
    let mut changed = fetched.clone();
    changed["data"]["a"] = json!("2");
    let updated = api.protobuf("PUT", "/api/v1/namespaces/default/configmaps/pb", &changed).await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.object()["data"]["a"], "2");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
        "type": "Opaque", "data": {"key": "AAEC/w=="}});
    let secret = api.protobuf("POST", "/api/v1/namespaces/default/secrets", &secret).await.object();
    assert_eq!(secret["data"]["key"], "AAEC/w==", "bytes survive protobuf as base64 in JSON");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}}});
    let created = api.protobuf("POST", "/apis/apps/v1/namespaces/default/deployments", &deployment).await;
    assert_eq!(created.status, 201, "{:?}", String::from_utf8_lossy(&created.body));
    let stored = json_api.get("/apis/apps/v1/namespaces/default/deployments/web").await.json();
    assert_eq!(stored["spec"]["replicas"], 0, "a zero pointer survives protobuf");
    assert_eq!(stored["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": "25%", "maxUnavailable": 1}));
    assert_eq!(stored["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"], "500m");

    // Errors come back as a protobuf Status to a client that prefers protobuf.
    let missing = api
        .get(
            "/api/v1/namespaces/default/configmaps/nope",
            "application/vnd.kubernetes.protobuf,application/json",
        )
        .await;
    assert_eq!(missing.status, 404);
    let status = missing.object();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str(), status["code"].as_i64()),
        (Some("Status"), Some("NotFound"), Some(404))
    );
    assert_eq!(status["details"]["name"], "nope");
    // ...and as JSON to one that prefers JSON.
    let missing = api.get("/api/v1/namespaces/default/configmaps/nope", "application/json").await;
    assert_eq!((missing.status, missing.content_type.as_str()), (404, "application/json"));

    // A protobuf body that is not protobuf is a 400, and nothing is stored.
    let garbage = api
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            MEDIA_TYPE,
            MEDIA_TYPE,
            b"k8s\0\x0a\xff".to_vec(),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert!(garbage.object()["message"].as_str().unwrap().contains("not valid protobuf"));

    // A JSON write whose fields do not fit the Go type is refused (kube could not decode it).
    let wrong = json_api
        .send_json("POST", "/api/v1/namespaces/default/configmaps", &config_map("wrong", json!({"a": 1})))
        .await;
    assert_eq!(wrong.status, 400);
    let message = wrong.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("ConfigMap in version \"v1\" cannot be handled as a ConfigMap")
            && message.contains("data.a"),
        "{message}"
    );
    assert_eq!(json_api.get("/api/v1/namespaces/default/configmaps/wrong").await.status, 404);
    let mut patch_wrong = api
        .send(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web",
            "application/json",
            "application/merge-patch+json",
            br#"{"spec":{"replicas":"three"}}"#.to_vec(),
        )
        .await;
    assert_eq!(patch_wrong.status, 400, "{:?}", String::from_utf8_lossy(&patch_wrong.body));
    patch_wrong.body = Bytes::new();
    assert_eq!(
        json_api.get("/apis/apps/v1/namespaces/default/deployments/web").await.json()["spec"]["replicas"],
        0
    );

    // Protobuf DeleteOptions, as kube's Go clients send them.
    let options =
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "not-the-uid"}});
    let refused = api.protobuf("DELETE", "/api/v1/namespaces/default/configmaps/pb2", &options).await;
    assert_eq!(refused.status, 409, "the precondition in the protobuf body is read");
    let deleted =
        api.send("DELETE", "/api/v1/namespaces/default/configmaps/pb2", MEDIA_TYPE, "", Vec::new()).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.object()["metadata"]["name"], "pb2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_and_tables_stay_json() {
    let server = ServerProcess::start(&["--in-memory"]);
    let api = Api::new(&server.address);
    let json_api = Http::new(&server.address, false);
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    // The CRD itself is a built-in: protobuf works for it, JSONSchemaProps included.
    let created = api.protobuf("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd).await;
    assert_eq!(created.status, 201, "{:?}", String::from_utf8_lossy(&created.body));
    let created = created.object();
    assert_eq!(
        created["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    let path = "/apis/example.com/v1/namespaces/default/widgets";
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}});
    let mut created = json_api.send_json("POST", path, &widget).await;
    for _ in 0..50 {
        if created.status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        created = json_api.send_json("POST", path, &widget).await;
    }
    assert_eq!(created.status, 201);

    // A protobuf body for a custom resource: 415, naming what is accepted.
    let body = serde_json::to_vec(&widget).unwrap();
    let refused = api.send("POST", path, "application/json", MEDIA_TYPE, body).await;
    assert_eq!(refused.status, 415);
    let message = refused.body.clone();
    assert!(String::from_utf8_lossy(&message).contains("accepted media types include: application/json"));
    // Accepting only protobuf: 406. Accepting protobuf or anything: JSON.
    let refused = api.get(&format!("{path}/w"), MEDIA_TYPE).await;
    assert_eq!(refused.status, 406);
    assert_eq!(schema().decode_object(&refused.body).unwrap()["reason"], "NotAcceptable");
    let fallback = api.get(&format!("{path}/w"), "application/vnd.kubernetes.protobuf, */*").await;
    assert_eq!((fallback.status, fallback.content_type.as_str()), (200, "application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&fallback.body).unwrap()["spec"]["size"], 3);

    // kubectl's Table request stays JSON; a protobuf-only Table request is 406.
    let table =
        api.get("/api/v1/namespaces", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json").await;
    assert_eq!(serde_json::from_slice::<Value>(&table.body).unwrap()["kind"], "Table");
    let refused = api
        .get("/api/v1/namespaces", "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io")
        .await;
    assert_eq!(refused.status, 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_json_watchers_see_the_same_events() {
    let server = ServerProcess::start(&["--in-memory"]);
    let api = Api::new(&server.address);
    let json_api = Http::new(&server.address, false);
    json_api
        .send_json("POST", "/api/v1/namespaces/default/configmaps", &config_map("before", json!({"x": "0"})))
        .await;

    let path = "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&allowWatchBookmarks=true";
    let (content_type, body) = api.watch(path, "application/vnd.kubernetes.protobuf;stream=watch").await;
    assert_eq!(content_type, "application/vnd.kubernetes.protobuf;stream=watch");
    let mut frames = Frames { body, buffer: Vec::new() };
    let mut lines = json_api.watch(path).await;

    let (kind, object) = frames.next().await;
    assert_eq!((kind.as_str(), object["metadata"]["name"].as_str()), ("ADDED", Some("before")));
    assert_eq!(lines.next_event().await.unwrap()["object"], object);

    json_api
        .send_json("POST", "/api/v1/namespaces/default/configmaps", &config_map("c", json!({"v": "1"})))
        .await;
    json_api
        .request(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/c",
            "application/merge-patch+json",
            br#"{"data":{"v":"2"}}"#,
        )
        .await;
    json_api.request("DELETE", "/api/v1/namespaces/default/configmaps/c", "application/json", b"").await;
    for expected in ["ADDED", "MODIFIED", "DELETED"] {
        let (kind, object) = loop {
            let (kind, object) = frames.next().await;
            if kind != "BOOKMARK" {
                break (kind, object);
            }
            assert_eq!(object["kind"], "ConfigMap", "a bookmark carries the resource's kind");
        };
        let line = lines.next_event().await.unwrap();
        assert_eq!(kind, expected);
        assert_eq!(line["type"], expected);
        assert_eq!(object, line["object"], "{expected}: both forms carry the same object");
    }
}
