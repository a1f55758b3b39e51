//! Request bodies for every verb that takes one — create, update, the status subresource's
//! update, patch (JSON, merge, strategic merge; apply and other types are refused) and delete
//! (its DeleteOptions) — in every content type (JSON, protobuf, and YAML and others, which are
//! refused), through the server's own routing and handlers (`api::handlers::dispatch` on a real
//! registry over the in-memory store) for configmaps, pods, services, deployments and
//! namespaces. Every answer is a success or a client error (4xx) carrying a `Status` with the same
//! code, never a 5xx or a panic; after a successful write the stored object has the resource's
//! apiVersion and kind, a name and namespace that pass kube's checks, and sits at exactly the
//! key that name gives, under the resource's prefix.
//!
//! The input is four selector bytes (resource, verb, content type, body shape) and then the body,
//! whole or inside an object's or a patch's frame so that short inputs already reach validation.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use watchcache::api::handlers::{dispatch, Target};
use watchcache::api::request::{parse_path, parse_query};
use watchcache::api::{metrics::Metrics, ApiState};
use watchcache::cacher::CacheConfig;
use watchcache::registry::Registry;
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{validate_key, Storage};
use watchcache::validation::validate_metadata;

/// (group, version, plural, kind, namespaced, the object every input may update or patch)
fn resources() -> [(&'static str, &'static str, &'static str, Value); 5] {
    [
        ("", "configmaps", "ConfigMap", json!({"data": {"a": "b"}})),
        ("", "pods", "Pod", json!({"spec": {"containers": [{"name": "c", "image": "i"}]}})),
        ("", "services", "Service", json!({"spec": {"ports": [{"port": 80}]}})),
        (
            "apps",
            "deployments",
            "Deployment",
            json!({"spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            }}),
        ),
        ("", "namespaces", "Namespace", json!({})),
    ]
}

const CONTENT_TYPES: [&str; 9] = [
    "application/json",
    "application/vnd.kubernetes.protobuf",
    "application/yaml",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
    "application/json; charset=utf-8",
];

/// What inputs share: a runtime and a server state, replaced after [`INPUTS_PER_STATE`] inputs
/// so that the store stays small.
struct Shared {
    runtime: tokio::runtime::Runtime,
    state: Option<Arc<ApiState>>,
    inputs: u64,
}

const INPUTS_PER_STATE: u64 = 512;

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

async fn new_state() -> Arc<ApiState> {
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::in_memory_volatile(EmbeddedOptions::default()).unwrap());
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "uid": "u"}});
    storage.create("/namespaces/default", serde_json::to_vec(&namespace).unwrap().into()).await.unwrap();
    let registry = Arc::new(Registry::new(Arc::clone(&storage), CacheConfig::default()));
    for resource in registry.all() {
        assert!(resource.cacher.wait_ready(Duration::from_secs(10)).await);
    }
    Arc::new(ApiState {
        metrics: Metrics::new(Arc::clone(&registry)),
        registry,
        inflight: None,
        mutating_inflight: None,
        watches: None,
        min_request_timeout: Duration::from_secs(1800),
        authorizer: Arc::new(watchcache::auth::AlwaysAllow),
        authenticator: Arc::new(watchcache::auth::authn::Authenticator::new(false)),
        audit: None,
    })
}

/// `(status, body)` of one request, as the server answers it.
async fn request(
    state: &ApiState,
    method: Method,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let parsed = parse_path(path).expect("a resource path");
    let target = Target::resolve(state, &parsed).expect("a served resource");
    let query = parse_query(None).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    let response = match dispatch(state, &target, &method, &query, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.to_response(),
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

fn frame(group: &str, kind: &str, name: &str, namespaced: bool, rest: &Value) -> Value {
    let api_version = if group.is_empty() { "v1".to_owned() } else { format!("{group}/v1") };
    let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    if namespaced {
        object["metadata"]["namespace"] = json!("default");
    }
    for (field, value) in rest.as_object().unwrap() {
        object[field] = value.clone();
    }
    object
}

fuzz_target!(|input: &[u8]| {
    let [resource, verb, content_type, shape, body @ ..] = input else { return };
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let shared = shared.get_or_insert_with(|| Shared {
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        state: None,
        inputs: 0,
    });
    if shared.inputs == INPUTS_PER_STATE {
        if let Some(state) = shared.state.take() {
            state.registry.stop();
        }
        shared.inputs = 0;
    }
    shared.inputs += 1;
    let Shared { runtime, state, .. } = shared;
    runtime.block_on(async {
        if state.is_none() {
            *state = Some(new_state().await);
        }
        let state = state.as_ref().unwrap();
        let all = resources();
        let (group, plural, kind, spec) = &all[usize::from(*resource) % all.len()];
        let ty = state.registry.get(group, "v1", plural).expect("a built-in type").ty.clone();
        let base = if group.is_empty() { "/api/v1".to_owned() } else { format!("/apis/{group}/v1") };
        let collection = if ty.namespaced {
            format!("{base}/namespaces/default/{plural}")
        } else {
            format!("{base}/{plural}")
        };
        let item = format!("{collection}/existing");
        // The object that updates, patches and deletes work on, again if an input deleted it.
        let existing_key = ty.key(ty.namespaced.then_some("default"), "existing");
        if state.registry.storage().get(&existing_key).await.unwrap().is_none() {
            let object = frame(group, kind, "existing", ty.namespaced, spec);
            let (status, reply) = request(
                state,
                Method::POST,
                &collection,
                "application/json",
                &serde_json::to_vec(&object).unwrap(),
            )
            .await;
            assert!(status == 201 || status == 409, "{status}: {}", String::from_utf8_lossy(&reply));
        }
        let (method, path) = match verb % 6 {
            0 => (Method::POST, collection.clone()),
            1 => (Method::PUT, item.clone()),
            2 => (Method::PUT, format!("{item}/status")),
            3 | 4 => (Method::PATCH, item.clone()),
            _ => (Method::DELETE, item.clone()),
        };
        if path.ends_with("/status") && !ty.status_subresource {
            return;
        }
        let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
        let text = String::from_utf8_lossy(body);
        let framed: Vec<u8> = match shape % 4 {
            0 => body.to_vec(),
            // The body as an object's metadata.
            1 => {
                let api_version = if group.is_empty() { "v1".to_owned() } else { format!("{group}/v1") };
                format!(r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":{text}}}"#).into_bytes()
            }
            // The body as an object's labels, annotations or name.
            2 => {
                let encoded = frame(group, kind, "existing", ty.namespaced, spec).to_string();
                encoded
                    .replacen(r#""name":"existing""#, &format!(r#""name":"existing","labels":{text}"#), 1)
                    .into_bytes()
            }
            // The body as a JSON patch's operations.
            _ => format!(r#"[{{"op":"add","path":"/metadata/labels","value":{text}}}]"#).into_bytes(),
        };
        let (status, reply) = request(state, method.clone(), &path, content_type, &framed).await;
        let reply_text = String::from_utf8_lossy(&reply);
        assert!(status < 500, "{method} {path} ({content_type}): {status} {reply_text}");
        if status >= 400 {
            let error: Value =
                serde_json::from_slice(&reply).unwrap_or_else(|_| panic!("not a Status: {reply_text}"));
            assert_eq!(error["kind"], "Status", "{reply_text}");
            assert_eq!(error["code"], status, "{reply_text}");
            return;
        }
        if method == Method::DELETE {
            return;
        }
        // A write: the object the store holds now.
        let answered: Value = serde_json::from_slice(&reply).unwrap_or_else(|_| panic!("{reply_text}"));
        let name = answered["metadata"]["name"].as_str().expect("a written object has a name");
        let namespace = answered["metadata"]["namespace"].as_str();
        assert_eq!(namespace.is_some(), ty.namespaced, "{reply_text}");
        let key = ty.key(namespace, name);
        assert!(validate_key(&key).is_ok(), "{key:?}");
        assert!(key.starts_with(ty.storage_prefix.as_str()), "{key:?}");
        let stored = state
            .registry
            .storage()
            .get(&key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key:?} is not stored"));
        let object: Value = serde_json::from_slice(&stored.value).expect("a stored value is JSON");
        assert_eq!(object["apiVersion"], ty.api_version(), "{object}");
        assert_eq!(object["kind"], ty.kind, "{object}");
        assert_eq!(object["metadata"]["name"], name, "{object}");
        assert_eq!(object["metadata"]["namespace"].as_str(), namespace, "{object}");
        let causes = validate_metadata(&object, ty.name_rule, ty.namespaced, false);
        assert!(causes.is_empty(), "{object}: {causes:?}");
    });
});
