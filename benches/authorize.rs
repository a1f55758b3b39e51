//! `RbacAuthorizer::authorize` against a realistic policy, read from real watch caches: the
//! bootstrap roles and bindings, plus 1,000 RoleBindings (10 in each of 100 namespaces, each to
//! the aggregated `edit` ClusterRole for one user). Cases:
//!
//! - `allowed-rolebinding`: a user bound in its namespace (the last of its 10 bindings);
//! - `denied`: a user with no binding (every ClusterRoleBinding and the namespace's RoleBindings
//!   visited);
//! - `masters`: system:masters (short-circuit).
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
