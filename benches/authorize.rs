//! `RbacAuthorizer::authorize` against a realistic policy, read from real watch caches: the
//! bootstrap roles and bindings, plus 1,000 RoleBindings (10 in each of 100 namespaces, each to
//! the aggregated `edit` ClusterRole for one user). Cases:
//!
//! - `allowed-rolebinding`: a user bound in its namespace (the last of its 10 bindings);
//! - `denied`: a user with no binding (every ClusterRoleBinding and the namespace's RoleBindings
//!   visited);
//! - `masters`: system:masters (short-circuit).
//!
//! And the audit log's cost per request (`--audit-log-path`): `audit/request-path`, what a
//! request does (an audit ID, the record of what it knows, the queueing: `try_send`), and
//! `audit/encode`, what the writer thread then does per event (the JSON line).
//!
//! To compare with a cached GET's cost (BENCHMARKS.md). Run: `cargo bench --bench authorize`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use watchcache::auth::rbac::RbacAuthorizer;
use watchcache::auth::{Attributes, Authorizer, Decision, UserInfo};
use watchcache::cacher::CacheConfig;
use watchcache::registry::Registry;
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::Storage;

fn policy(runtime: &tokio::runtime::Runtime) -> (Arc<Registry>, RbacAuthorizer) {
    runtime.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
        watchcache::auth::bootstrap::ensure_policy(&storage).await.unwrap();
        for namespace in 0..100 {
            for index in 0..10 {
                let binding = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": format!("edit-{index}"), "namespace": format!("ns-{namespace}")},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"kind": "User", "name": format!("user-{namespace}-{index}")}],
                });
                let key = format!("/rolebindings/ns-{namespace}/edit-{index}");
                storage.create(&key, serde_json::to_vec(&binding).unwrap().into()).await.unwrap();
            }
        }
        let registry = Arc::new(Registry::new(storage, CacheConfig::default()));
        for resource in registry.all() {
            assert!(resource.cacher.wait_ready(Duration::from_secs(60)).await);
        }
        let authorizer = RbacAuthorizer::from_registry(Arc::clone(&registry));
        (registry, authorizer)
    })
}

fn attributes<'a>(user: &'a UserInfo, namespace: &'a str) -> Attributes<'a> {
    Attributes {
        user,
        verb: "update",
        resource_request: true,
        path: "",
        api_group: "apps",
        api_version: "v1",
        namespace,
        resource: "deployments",
        subresource: "",
        name: "web",
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (_registry, rbac) = policy(&runtime);
    let bound = UserInfo {
        name: "user-50-9".into(),
        groups: vec!["system:authenticated".into()],
        ..UserInfo::default()
    };
    let stranger = UserInfo {
        name: "stranger".into(),
        groups: vec!["system:authenticated".into()],
        ..UserInfo::default()
    };
    let admin = UserInfo::loopback_admin();
    assert_eq!(rbac.authorize(&attributes(&bound, "ns-50")), Decision::Allow);
    assert_eq!(rbac.authorize(&attributes(&stranger, "ns-50")), Decision::Deny(String::new()));
    let mut group = c.benchmark_group("rbac_authorize");
    group.bench_function("allowed-rolebinding", |b| b.iter(|| rbac.authorize(&attributes(&bound, "ns-50"))));
    group.bench_function("denied", |b| b.iter(|| rbac.authorize(&attributes(&stranger, "ns-50"))));
    group.bench_function("masters", |b| b.iter(|| rbac.authorize(&attributes(&admin, "ns-50"))));
    group.finish();

    use watchcache::api::audit::{AuditLog, Record, Stage};
    let uri: http::Uri = "/api/v1/namespaces/ns-50/configmaps/web".parse().unwrap();
    let user = Arc::new(bound.clone());
    let mut request_headers = http::HeaderMap::new();
    request_headers.insert(http::header::HOST, http::HeaderValue::from_static("127.0.0.1:6443"));
    request_headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json"));
    request_headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("kubectl/v1.32.0 (linux/amd64) kubernetes/abcdef0"),
    );
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    // What api::handle does per request with the audit log on: the request's audit ID and
    // headers, the record, the queueing, the response's Audit-Id header.
    let request_path = |log: &AuditLog, response_headers: &mut http::HeaderMap| {
        let audit_id = request_headers.get("audit-id").cloned().unwrap_or_else(|| log.new_id());
        let user_agent = request_headers.get(http::header::USER_AGENT).cloned();
        let forwarded_for = request_headers.get("x-forwarded-for").cloned();
        let received = std::time::SystemTime::now();
        response_headers.insert("audit-id", audit_id.clone());
        log.record(Record {
            audit_id,
            stage: Stage::ResponseComplete,
            method: http::Method::GET,
            uri: uri.clone(),
            is_watch: false,
            user: Some(Arc::clone(&user)),
            peer: Some(peer),
            forwarded_for,
            user_agent,
            created: None,
            code: 200,
            failure: None,
            decision: Some(("allow", String::new())),
            received,
            at: std::time::SystemTime::now(),
        });
    };
    let log = AuditLog::discarding();
    let mut group = c.benchmark_group("audit");
    group.bench_function("request-path", |b| {
        b.iter_custom(|iterations| {
            // Timed in batches the queue holds, the writer emptying it between them: the cost
            // of queueing, never of dropping on a full queue.
            let mut response_headers = http::HeaderMap::new();
            let mut total = std::time::Duration::ZERO;
            let mut left = iterations;
            while left > 0 {
                let batch = left.min(5_000);
                let started = std::time::Instant::now();
                for _ in 0..batch {
                    request_path(&log, &mut response_headers);
                }
                total += started.elapsed();
                left -= batch;
                while log.queued() > 0 {
                    std::thread::yield_now();
                }
            }
            total
        })
    });
    let sample = Record {
        audit_id: log.new_id(),
        stage: Stage::ResponseComplete,
        method: http::Method::GET,
        uri: uri.clone(),
        is_watch: false,
        user: Some(Arc::clone(&user)),
        peer: Some(peer),
        forwarded_for: None,
        user_agent: request_headers.get(http::header::USER_AGENT).cloned(),
        created: None,
        code: 200,
        failure: None,
        decision: Some(("allow", String::new())),
        received: std::time::SystemTime::now(),
        at: std::time::SystemTime::now(),
    };
    let mut line = Vec::with_capacity(1024);
    group.bench_function("encode", |b| {
        b.iter(|| {
            line.clear();
            watchcache::api::audit::encode(&sample, &mut line);
        })
    });
    group.finish();
    let dropped = log.stats().dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 0, "the request-path case measured drops, not queueing");
}

criterion_group!(benches, bench);
criterion_main!(benches);
