//! Discovery documents, generated from the registry: `/api`, `/api/v1`, `/apis`,
//! `/apis/<group>`, `/apis/<group>/<version>`, and the OpenAPI v3 index kubectl consults to learn
//! that the server validates fields itself.
//!
//! Aggregated discovery (`apidiscovery.k8s.io/v2`, and `v2beta1` for older clients): when a
//! GET of `/api` or `/apis` accepts `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`,
//! the answer is one `APIGroupDiscoveryList` with every group, version and resource (and its
//! subresources), so that kubectl and client-go learn the whole API in two requests instead of
//! one per group-version. It is built from the same resource lists as the per-version documents.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::registry::Registry;

/// `/api`.
pub fn core_versions(host: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    })
}

/// The groups (other than core) and their versions, in order.
fn groups(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for resource in registry.all() {
        if resource.ty.group.is_empty() {
            continue;
        }
        let versions = groups.entry(resource.ty.group.clone()).or_default();
        if !versions.contains(&resource.ty.version) {
            versions.push(resource.ty.version.clone());
        }
    }
    for review in super::reviews::REVIEWS {
        let versions = groups.entry(review.group.to_owned()).or_default();
        if !versions.iter().any(|version| version == "v1") {
            versions.push("v1".to_owned());
        }
    }
    groups
}

fn group_document(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
        .collect();
    json!({ "name": group, "versions": versions, "preferredVersion": versions[0] })
}

/// `/apis`.
pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> =
        groups(registry).iter().map(|(group, versions)| group_document(group, versions)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/<group>`, if served.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    let groups = groups(registry);
    let versions = groups.get(group)?;
    let mut document = group_document(group, versions);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Some(document)
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for resource in registry.all() {
        let ty = &resource.ty;
        if ty.group != group || ty.version != version {
            continue;
        }
        resources.push(json!({
            "name": ty.plural,
            "singularName": ty.singular,
            "namespaced": ty.namespaced,
            "kind": ty.kind,
            "verbs": ty.verbs(),
            "shortNames": ty.short_names,
            "categories": ty.categories,
        }));
        if ty.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "kind": ty.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        for subresource in &ty.post_subresources {
            let (group, version, kind) = match subresource.as_str() {
                "eviction" => ("policy", "v1", "Eviction"),
                "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
                _ => ("", "v1", "Binding"),
            };
            let mut entry = json!({
                "name": format!("{}/{subresource}", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "kind": kind,
                "verbs": ["create"],
            });
            if !group.is_empty() {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            resources.push(entry);
        }
        if ty.scale_subresource {
            resources.push(json!({
                "name": format!("{}/scale", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if version == "v1" {
        for review in super::reviews::REVIEWS.iter().filter(|review| review.group == group) {
            resources.push(json!({
                "name": review.plural,
                "singularName": review.kind.to_lowercase(),
                "namespaced": review.namespaced,
                "kind": review.kind,
                "verbs": ["create"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

/// `/openapi/v3`: one entry per served group-version.
pub fn openapi_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for resource in registry.all() {
        let ty = &resource.ty;
        let path = if ty.group.is_empty() {
            format!("api/{}", ty.version)
        } else {
            format!("apis/{}/{}", ty.group, ty.version)
        };
        let url = format!("/openapi/v3/{path}");
        paths.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/<group-version path>`: the operations of each resource, each declaring the
/// `fieldValidation` parameter (the server accepts it), without schemas.
pub fn openapi_group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let field_validation =
        json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut paths = serde_json::Map::new();
    for resource in registry.all() {
        let ty = &resource.ty;
        if ty.group != group || ty.version != version {
            continue;
        }
        let base =
            if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
        let collection = if ty.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", ty.plural)
        } else {
            format!("{base}/{}", ty.plural)
        };
        let gvk = json!({"group": ty.group, "version": ty.version, "kind": ty.kind});
        let operation = |id: String| json!({"operationId": id, "parameters": [field_validation.clone()], "x-kubernetes-group-version-kind": gvk.clone()});
        paths.insert(collection.clone(), json!({ "post": operation(format!("create{}", ty.kind)) }));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({ "put": operation(format!("replace{}", ty.kind)), "patch": operation(format!("patch{}", ty.kind)) }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// The aggregated discovery version a request's `Accept` asks for (`v2` or `v2beta1`), if any:
/// the first JSON media type with `g=apidiscovery.k8s.io` and `as=APIGroupDiscoveryList`.
pub fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    for media in accept?.split(',') {
        let mut parts = media.split(';').map(str::trim);
        if parts.next() != Some("application/json") {
            continue;
        }
        let (mut group, mut version, mut kind) = (None, None, None);
        for parameter in parts {
            match parameter.split_once('=') {
                Some(("g", value)) => group = Some(value),
                Some(("v", value)) => version = Some(value),
                Some(("as", value)) => kind = Some(value),
                _ => {}
            }
        }
        if group == Some("apidiscovery.k8s.io") && kind == Some("APIGroupDiscoveryList") {
            match version {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => {}
            }
        }
    }
    None
}

/// The `Content-Type` of an aggregated discovery answer in `version`.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// One version of a group, aggregated: its resources with their subresources nested.
fn aggregated_group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let list = resource_list(registry, group, version)?;
    let mut resources: Vec<Value> = Vec::new();
    for entry in list["resources"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default();
        let response_kind = json!({
            "group": entry.get("group").cloned().unwrap_or_else(|| json!(group)),
            "version": entry.get("version").cloned().unwrap_or_else(|| json!(version)),
            "kind": entry["kind"],
        });
        match name.split_once('/') {
            Some((parent, subresource)) => {
                let parent = resources.iter_mut().find(|resource| resource["resource"] == parent);
                if let Some(parent) = parent {
                    let subresources = parent["subresources"].as_array_mut().expect("an array");
                    subresources.push(json!({
                        "subresource": subresource,
                        "responseKind": response_kind,
                        "verbs": entry["verbs"],
                    }));
                }
            }
            None => {
                let mut resource = json!({
                    "resource": name,
                    "responseKind": response_kind,
                    "scope": if entry["namespaced"] == true { "Namespaced" } else { "Cluster" },
                    "singularResource": entry["singularName"],
                    "verbs": entry["verbs"],
                    "subresources": [],
                });
                for field in ["shortNames", "categories"] {
                    if entry[field].as_array().is_some_and(|values| !values.is_empty()) {
                        resource[field] = entry[field].clone();
                    }
                }
                resources.push(resource);
            }
        }
    }
    for resource in &mut resources {
        if resource["subresources"].as_array().is_some_and(Vec::is_empty) {
            resource.as_object_mut().expect("an object").remove("subresources");
        }
    }
    Some(json!({"version": version, "resources": resources, "freshness": "Current"}))
}

/// `/api` (`core`) or `/apis` as one aggregated `APIGroupDiscoveryList` in `version`.
pub fn aggregated(registry: &Registry, core: bool, version: &str) -> Value {
    let groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_owned()])]
    } else {
        groups(registry).into_iter().collect()
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .filter_map(|served| aggregated_group_version(registry, group, served))
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = json!(group);
            }
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregated_version_comes_from_accept() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(kubectl)), Some("v2"));
        let older =
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList, application/json";
        assert_eq!(aggregated_version(Some(older)), Some("v2beta1"));
        let protobuf_only =
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        assert_eq!(aggregated_version(Some(protobuf_only)), None);
        assert_eq!(aggregated_version(Some("application/json")), None);
        assert_eq!(aggregated_version(None), None);
    }
}
