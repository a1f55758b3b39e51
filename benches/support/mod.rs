//! Fixtures shared by the benches: the pods resource and a realistic ~1 KiB pod.
#![allow(dead_code)]

use serde_json::json;
use watchcache::cacher::object::ResourceConfig;

/// The pods resource as the cache sees it.
pub fn pods() -> ResourceConfig {
    ResourceConfig {
        prefix: "/pods/".into(),
        kind: "Pod".into(),
        api_version: "v1".into(),
        namespaced: true,
        selectable_fields: vec!["spec.nodeName".into(), "status.phase".into()],
        indexed_field: Some("spec.nodeName".into()),
    }
}

/// A pod whose JSON is about 1 KiB.
pub fn pod_json(namespace: &str, name: &str) -> Vec<u8> {
    let object = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "6f1d7c1e-3f4a-4b8e-9a51-2d3c4b5a6f70",
            "resourceVersion": "1",
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "7d9f8c6b5d"},
            "annotations": {"kubernetes.io/psp": "restricted", "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5d",
                "uid": "0b6c1a2d-8e9f-4a3b-b2c1-d4e5f6a7b8c9", "controller": true}],
        },
        "spec": {
            "nodeName": "node-17",
            "serviceAccountName": "default",
            "containers": [{
                "name": "web",
                "image": "registry.example.com/web:1.27.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"}},
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
            }],
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.3.17",
            "podIP": "10.244.3.42",
            "startTime": "2024-05-01T12:00:02Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T12:00:09Z"}],
        },
    });
    serde_json::to_vec(&object).unwrap()
}
