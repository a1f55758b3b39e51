//! RBAC over real sockets: the real binary with `--authorization-mode=RBAC`. Without
//! authentication every request is the loopback admin's (system:masters), so other users are
//! asked about through SubjectAccessReview, which runs the same evaluator.

mod common;

use std::time::Duration;

use common::{Http, ServerProcess};
use serde_json::{json, Value};

async fn can(http: &Http, user: &str, groups: &[&str], verb: &str, resource: &str, namespace: &str) -> Value {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {"verb": verb, "group": "", "resource": resource, "namespace": namespace},
        },
    });
    let reply = http.send_json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", &review).await;
    assert_eq!(reply.status, 201, "{}", reply.json());
    let answer = reply.json();
    assert_eq!(answer["kind"], "SubjectAccessReview");
    answer["status"].clone()
}

/// Makes sure the RBAC caches have seen every write so far: a consistent list is served once
/// the cache has reached storage's current revision.
async fn settle(http: &Http) {
    for path in [
        "/apis/rbac.authorization.k8s.io/v1/rolebindings",
        "/apis/rbac.authorization.k8s.io/v1/roles",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    ] {
        assert_eq!(http.get(path).await.status, 200);
    }
}

#[tokio::test]
async fn subject_access_reviews_follow_bindings_as_they_change() {
    let server = ServerProcess::start(&["--in-memory", "--authorization-mode=RBAC"]);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    settle(&http).await;

    // The bootstrap policy is there.
    let admin = http.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin").await;
    assert_eq!(admin.status, 200);
    let binding =
        http.get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin").await.json();
    assert_eq!(binding["subjects"][0]["name"], "system:masters");

    assert_eq!(can(&http, "alice", &[], "list", "pods", "default").await, json!({"allowed": false}));
    assert_eq!(can(&http, "root", &["system:masters"], "delete", "pods", "default").await["allowed"], true);
    let discovery = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "u", "groups": ["system:authenticated"], "nonResourceAttributes": {"verb": "get", "path": "/apis"}},
    });
    let reply =
        http.send_json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", &discovery).await;
    assert_eq!(reply.json()["status"]["allowed"], true);

    // A RoleBinding to the bootstrap view role grants it in its namespace only.
    let view = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    });
    let created = http
        .send_json("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", &view)
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    settle(&http).await;
    assert_eq!(can(&http, "alice", &[], "list", "pods", "default").await, json!({"allowed": true}));
    assert_eq!(can(&http, "alice", &[], "list", "pods", "kube-system").await["allowed"], false);
    assert_eq!(can(&http, "alice", &[], "create", "pods", "default").await["allowed"], false);
    assert_eq!(can(&http, "alice", &[], "get", "secrets", "default").await["allowed"], false);

    // A ServiceAccount subject through a namespaced Role.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "cm-writer", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}],
    });
    let sa_binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "builder", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "builder"}],
    });
    assert_eq!(
        http.send_json("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", &role)
            .await
            .status,
        201
    );
    assert_eq!(
        http.send_json(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            &sa_binding
        )
        .await
        .status,
        201
    );
    settle(&http).await;
    assert_eq!(
        can(&http, "system:serviceaccount:default:builder", &[], "create", "configmaps", "default").await
            ["allowed"],
        true
    );
    assert_eq!(
        can(&http, "system:serviceaccount:other:builder", &[], "create", "configmaps", "default").await
            ["allowed"],
        false
    );

    // Deleted: denied again.
    let deleted = http
        .request(
            "DELETE",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/alice-view",
            "",
            b"",
        )
        .await;
    assert_eq!(deleted.status, 200);
    settle(&http).await;
    assert_eq!(can(&http, "alice", &[], "list", "pods", "default").await, json!({"allowed": false}));

    // A review names a user or a group: 422 Invalid otherwise, as kube-apiserver's validation.
    let empty = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
    let reply = http.send_json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", &empty).await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.json()["message"],
        r#"SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid value: "": at least one of user or group must be specified"#
    );
}

#[tokio::test]
async fn reviews_are_create_only_in_discovery_and_not_stored() {
    let server = ServerProcess::start(&["--in-memory", "--authorization-mode=RBAC"]);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    let authorization = http.get("/apis/authorization.k8s.io/v1").await.json();
    let names: Vec<&str> =
        authorization["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "localsubjectaccessreviews",
            "selfsubjectaccessreviews",
            "selfsubjectrulesreviews",
            "subjectaccessreviews"
        ]
    );
    for resource in authorization["resources"].as_array().unwrap() {
        assert_eq!(resource["verbs"], json!(["create"]));
        assert_eq!(resource["namespaced"], resource["name"] == "localsubjectaccessreviews", "{resource}");
    }
    let authentication = http.get("/apis/authentication.k8s.io/v1").await.json();
    assert_eq!(authentication["resources"][0]["name"], "selfsubjectreviews");
    let rbac = http.get("/apis/rbac.authorization.k8s.io/v1").await.json();
    let names: Vec<&str> =
        rbac["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["clusterrolebindings", "clusterroles", "rolebindings", "roles"]);
    let groups = http.get("/apis").await.json().to_string();
    assert!(groups.contains("authorization.k8s.io/v1") && groups.contains("authentication.k8s.io/v1"));

    let listed = http.get("/apis/authorization.k8s.io/v1/subjectaccessreviews").await;
    assert_eq!(listed.status, 405);

    let whoami = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let reply = http.send_json("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", &whoami).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["status"]["userInfo"]["username"], "system:admin");

    let rules = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}});
    let reply = http.send_json("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", &rules).await;
    assert_eq!(reply.json()["status"]["resourceRules"][0]["verbs"], json!(["*"]));

    // A watch is authorized like any request: the loopback admin may watch roles.
    let mut watch = http.watch("/apis/rbac.authorization.k8s.io/v1/clusterroles?watch=true").await;
    let first = watch.next_event().await.expect("an ADDED event");
    assert_eq!(first["type"], "ADDED");
}

/// A ClusterRole's rules, its own and those it aggregates, are resolved once per change of the
/// ClusterRoles: a change to the role, or a new role its selector matches, is seen by the next
/// decision after the cache has it.
#[tokio::test]
async fn changes_to_cluster_roles_and_their_aggregation_take_effect() {
    let server = ServerProcess::start(&["--in-memory", "--authorization-mode=RBAC"]);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    let roles = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    let reader = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "reader"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-reader": "true"}}]},
        "rules": [],
    });
    assert_eq!(http.send_json("POST", roles, &reader).await.status, 201);
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bob-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
    });
    let created =
        http.send_json("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", &binding).await;
    assert_eq!(created.status, 201);
    settle(&http).await;
    assert_eq!(can(&http, "bob", &[], "list", "secrets", "default").await["allowed"], false);

    // A role that the selector matches brings its rules in.
    let secrets = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "secret-lister", "labels": {"example.com/aggregate-to-reader": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
    });
    assert_eq!(http.send_json("POST", roles, &secrets).await.status, 201);
    settle(&http).await;
    assert_eq!(can(&http, "bob", &[], "list", "secrets", "default").await["allowed"], true);
    assert_eq!(can(&http, "bob", &[], "list", "pods", "default").await["allowed"], false);

    // A change to the aggregating role's own rules.
    let mut updated = http.get(&format!("{roles}/reader")).await.json();
    updated["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]);
    assert_eq!(http.send_json("PUT", &format!("{roles}/reader"), &updated).await.status, 200);
    settle(&http).await;
    assert_eq!(can(&http, "bob", &[], "list", "pods", "default").await["allowed"], true);

    // The aggregated role loses its label: its rules go.
    let mut unlabelled = http.get(&format!("{roles}/secret-lister")).await.json();
    unlabelled["metadata"]["labels"] = json!({});
    assert_eq!(http.send_json("PUT", &format!("{roles}/secret-lister"), &unlabelled).await.status, 200);
    settle(&http).await;
    assert_eq!(can(&http, "bob", &[], "list", "secrets", "default").await["allowed"], false);
    assert_eq!(can(&http, "bob", &[], "list", "pods", "default").await["allowed"], true);
}

/// POSTs a LocalSubjectAccessReview to `namespace` asking whether `user` may `verb` pods in
/// `asked` (the spec's namespace): the reply.
async fn local_review(http: &Http, namespace: &str, user: &str, verb: &str, asked: &str) -> common::Reply {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "LocalSubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": {"verb": verb, "resource": "pods", "namespace": asked}},
    });
    let path = format!("/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews");
    http.send_json("POST", &path, &review).await
}

#[tokio::test]
async fn local_subject_access_reviews_answer_in_their_namespace_only() {
    let server = ServerProcess::start(&["--in-memory", "--authorization-mode=RBAC"]);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    let edit = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-edit", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    });
    let created = http
        .send_json("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", &edit)
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    settle(&http).await;
    let reply = local_review(&http, "default", "alice", "create", "default").await;
    assert_eq!(reply.status, 201, "{}", reply.json());
    let answer = reply.json();
    assert_eq!(answer["kind"], "LocalSubjectAccessReview");
    assert_eq!(answer["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(answer["metadata"]["namespace"], "default");
    assert_eq!(answer["status"]["allowed"], true);
    let reply = local_review(&http, "kube-system", "alice", "create", "kube-system").await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["status"]["allowed"], false);
    // The spec may not ask about another namespace than the review's.
    let reply = local_review(&http, "default", "alice", "create", "kube-system").await;
    assert_eq!(reply.status, 422, "{}", reply.json());
    let status = reply.json();
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        r#"LocalSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes.namespace: Invalid value: "kube-system": must match metadata.namespace"#
    );
    assert_eq!(status["details"]["causes"][0]["field"], "spec.resourceAttributes.namespace");
    // Nor be about a non-resource path, nor name no one, nor be of another namespace.
    let path = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
    let non_resource = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "spec": {"user": "alice", "nonResourceAttributes": {"verb": "get", "path": "/healthz"}},
    });
    let reply = http.send_json("POST", path, &non_resource).await;
    assert_eq!(reply.status, 422, "{}", reply.json());
    assert!(reply.json()["message"].as_str().unwrap().contains("disallowed on this kind of request"));
    let nobody = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}},
    });
    let reply = http.send_json("POST", path, &nobody).await;
    assert_eq!(reply.status, 422, "{}", reply.json());
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("at least one of user or group must be specified"));
    let elsewhere = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": "kube-system"},
        "spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}},
    });
    let reply = http.send_json("POST", path, &elsewhere).await;
    assert_eq!(reply.status, 400, "{}", reply.json());
    // It is namespaced only; SubjectAccessReview is cluster-scoped only.
    let cluster =
        http.send_json("POST", "/apis/authorization.k8s.io/v1/localsubjectaccessreviews", &nobody).await;
    assert_eq!(cluster.status, 404);
    let namespaced = http
        .send_json("POST", "/apis/authorization.k8s.io/v1/namespaces/default/subjectaccessreviews", &nobody)
        .await;
    assert_eq!(namespaced.status, 404);
}
