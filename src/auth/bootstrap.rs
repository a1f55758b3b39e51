//! kube's bootstrap RBAC policy (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`), written at
//! startup when absent, as kube-apiserver's `rbac/bootstrap-roles` post-start hook does. An
//! object that exists is left as it is, so changes made by users survive restarts.
//!
//! A subset of the roles, each as kube has it (rule for rule, as in kube's
//! `testdata/cluster-roles.yaml`, including rules for groups not served here, such as
//! `extensions`): cluster-admin, the aggregated admin/edit/view roles and the
//! `system:aggregate-to-*` roles they aggregate, system:basic-user, system:discovery,
//! system:public-info-viewer, and their ClusterRoleBindings.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::storage::{Storage, StorageError};

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 5] = ["create", "delete", "deletecollection", "patch", "update"];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn cluster_role(
    name: &str,
    labels: &[(&str, &str)],
    aggregate_from: Option<&str>,
    rules: Vec<Value>,
) -> Value {
    let mut all_labels = serde_json::Map::new();
    all_labels.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for (key, value) in labels {
        all_labels.insert((*key).into(), (*value).into());
    }
    let mut role = json!({
        "kind": "ClusterRole",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    });
    if let Some(label) = aggregate_from {
        role["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]});
    }
    role
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|group| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}))
        .collect();
    json!({
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let rw: Vec<&str> = READ.iter().chain(WRITE.iter()).copied().collect();
    vec![
        cluster_role("cluster-admin", &[], None, vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        cluster_role("admin", &[], Some(AGGREGATE_TO_ADMIN), vec![]),
        cluster_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], Some(AGGREGATE_TO_EDIT), vec![]),
        cluster_role("view", &[(AGGREGATE_TO_EDIT, "true")], Some(AGGREGATE_TO_VIEW), vec![]),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            None,
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                rule(&rw, &["rbac.authorization.k8s.io"], &["rolebindings", "roles"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            None,
            vec![
                rule(
                    &READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(&WRITE, &[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    &WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    &WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(&WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(&WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    &WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "ingresses",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(&WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(&WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
                rule(&rw, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            None,
            vec![
                rule(
                    &READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    &READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(&READ, &[""], &["namespaces"]),
                rule(&READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    &READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    &READ,
                    &["autoscaling"],
                    &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
                ),
                rule(&READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
                rule(
                    &READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(&READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
                rule(&READ, &["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"]),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            None,
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            None,
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            None,
            vec![urls(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])],
        ),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_role_binding("cluster-admin", "cluster-admin", &[super::MASTERS_GROUP]),
        cluster_role_binding("system:basic-user", "system:basic-user", &[super::AUTHENTICATED_GROUP]),
        cluster_role_binding("system:discovery", "system:discovery", &[super::AUTHENTICATED_GROUP]),
        cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[super::AUTHENTICATED_GROUP, super::UNAUTHENTICATED_GROUP],
        ),
    ]
}

/// Writes every bootstrap object that does not exist yet; existing ones are left alone.
pub async fn ensure_policy(storage: &Arc<dyn Storage>) -> Result<(), StorageError> {
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let objects = cluster_roles()
        .into_iter()
        .map(|role| ("clusterroles", role))
        .chain(cluster_role_bindings().into_iter().map(|binding| ("clusterrolebindings", binding)));
    for (plural, mut object) in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        object["metadata"]["creationTimestamp"] = json!(created);
        let value = bytes::Bytes::from(serde_json::to_vec(&object).expect("JSON value encodes"));
        match storage.create(&format!("/{plural}/{name}"), value).await {
            Ok(_) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::{RbacAuthorizer, StaticPolicy};
    use crate::auth::{Attributes, Authorizer, Decision, UserInfo};

    fn policy() -> RbacAuthorizer {
        let mut policy = StaticPolicy::default();
        cluster_roles().into_iter().chain(cluster_role_bindings()).for_each(|object| policy.add(object));
        RbacAuthorizer::new(Box::new(policy))
    }

    fn ask(
        rbac: &RbacAuthorizer,
        user: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        path: &str,
    ) -> bool {
        let attributes = Attributes {
            user,
            verb,
            resource_request: path.is_empty(),
            path,
            api_group: group,
            api_version: "v1",
            namespace: "default",
            resource,
            subresource: "",
            name: "",
        };
        rbac.authorize(&attributes) == Decision::Allow
    }

    #[test]
    fn the_bootstrap_policy_grants_what_kube_grants() {
        let rbac = policy();
        let authenticated = UserInfo {
            name: "u".into(),
            groups: vec![crate::auth::AUTHENTICATED_GROUP.into()],
            ..UserInfo::default()
        };
        let anonymous = UserInfo::anonymous();
        assert!(ask(&rbac, &authenticated, "get", "", "", "/apis/apps/v1"));
        assert!(ask(&rbac, &authenticated, "create", "authorization.k8s.io", "selfsubjectaccessreviews", ""));
        assert!(!ask(&rbac, &authenticated, "list", "", "pods", ""));
        assert!(ask(&rbac, &anonymous, "get", "", "", "/version"));
        assert!(!ask(&rbac, &anonymous, "get", "", "", "/apis"));
        // view ⊂ edit ⊂ admin through aggregation
        let mut policy = StaticPolicy::default();
        cluster_roles().into_iter().for_each(|object| policy.add(object));
        for (role, user) in [("view", "v"), ("edit", "e"), ("admin", "a")] {
            policy.add(json!({"kind": "RoleBinding", "metadata": {"name": role, "namespace": "default"},
                "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": [{"kind": "User", "name": user}]}));
        }
        let rbac = RbacAuthorizer::new(Box::new(policy));
        let user = |name: &str| UserInfo { name: name.into(), ..UserInfo::default() };
        assert!(ask(&rbac, &user("v"), "list", "apps", "deployments", ""));
        assert!(!ask(&rbac, &user("v"), "create", "apps", "deployments", ""));
        assert!(!ask(&rbac, &user("v"), "get", "", "secrets", ""));
        assert!(ask(&rbac, &user("e"), "create", "apps", "deployments", ""));
        assert!(ask(&rbac, &user("e"), "list", "batch", "jobs", ""));
        assert!(!ask(&rbac, &user("e"), "create", "rbac.authorization.k8s.io", "rolebindings", ""));
        assert!(ask(&rbac, &user("a"), "create", "rbac.authorization.k8s.io", "rolebindings", ""));
        assert!(ask(&rbac, &user("a"), "list", "", "pods", ""));
        // As kube since CVE-2021-25740: edit reads endpoints but does not write them.
        assert!(ask(&rbac, &user("e"), "list", "", "endpoints", ""));
        assert!(!ask(&rbac, &user("e"), "create", "", "endpoints", ""));
        assert!(!ask(&rbac, &user("a"), "update", "", "endpoints", ""));
        // The groups kube's roles cover beyond core, apps and batch.
        for (group, resource) in [
            ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "networkpolicies"),
            ("extensions", "deployments"),
        ] {
            assert!(ask(&rbac, &user("v"), "list", group, resource, ""), "view lists {group}/{resource}");
            assert!(ask(&rbac, &user("e"), "create", group, resource, ""), "edit creates {group}/{resource}");
        }
        assert!(ask(&rbac, &user("v"), "watch", "discovery.k8s.io", "endpointslices", ""));
        assert!(!ask(&rbac, &user("e"), "create", "discovery.k8s.io", "endpointslices", ""));
        // Leases: edit reads and writes them; view does not see them.
        assert!(ask(&rbac, &user("e"), "get", "coordination.k8s.io", "leases", ""));
        assert!(ask(&rbac, &user("e"), "update", "coordination.k8s.io", "leases", ""));
        assert!(!ask(&rbac, &user("v"), "get", "coordination.k8s.io", "leases", ""));
    }
}
