//! CustomResourceDefinitions: validating them, and registering the resource types they define
//! so that their objects are served (with a watch cache) as soon as the definition is stored.

use std::sync::Arc;

use serde_json::{json, Value};

use super::ApiState;
use crate::cacher::{ReadVersion, WatchFilter, WatchItem, WatchStart};
use crate::registry::{PrinterColumn, Registry, ResourceType};
use crate::validation::{Cause, NameRule};

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_PLURAL: &str = "customresourcedefinitions";

fn is_crd(ty: &ResourceType) -> bool {
    ty.group == CRD_GROUP && ty.plural == CRD_PLURAL
}

fn cause(field: &str, message: &str) -> Cause {
    Cause { reason: "FieldValueInvalid".into(), message: message.into(), field: field.into() }
}

/// Checks what the server needs of a definition: group, names, scope, versions, and a name of
/// `<plural>.<group>`.
pub fn validate(object: &Value) -> Result<(), Vec<Cause>> {
    let mut causes = Vec::new();
    let spec = &object["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if group.is_empty() || !group.contains('.') {
        causes.push(cause("spec.group", "should be a domain with at least one dot"));
    }
    if plural.is_empty()
        || plural.chars().any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        causes.push(cause("spec.names.plural", "a lowercase RFC 1123 label is required"));
    }
    if spec["names"]["kind"].as_str().unwrap_or_default().is_empty() {
        causes.push(cause("spec.names.kind", "Required value"));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        causes.push(cause("spec.scope", "Unsupported value: must be \"Namespaced\" or \"Cluster\""));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.iter().filter(|version| version["storage"] == true).count() != 1 {
        causes.push(cause("spec.versions", "must have exactly one version marked as storage version"));
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(cause(
            "metadata.name",
            &format!("must be spec.names.plural+\".\"+spec.group ({plural}.{group})"),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// The status the server gives a definition it accepted.
pub fn initial_status(object: &Value) -> Value {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let storage_version = object["spec"]["versions"]
        .as_array()
        .and_then(|versions| versions.iter().find(|version| version["storage"] == true))
        .and_then(|version| version["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": ""});
    json!({
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
        "acceptedNames": object["spec"]["names"],
        "storedVersions": [storage_version],
    })
}

/// The resource types a definition serves (one per served version).
pub fn types_of(object: &Value) -> Vec<ResourceType> {
    let spec = &object["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_owned();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_owned();
    let kind = names["kind"].as_str().unwrap_or_default().to_owned();
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    spec["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|version| version["served"] != false)
        .filter_map(|version| version["name"].as_str().map(|name| (name.to_owned(), version.clone())))
        .map(|(version, definition)| ResourceType {
            group: group.clone(),
            version,
            plural: plural.clone(),
            singular: names["singular"].as_str().map(str::to_owned).unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            list_kind: names["listKind"].as_str().map(str::to_owned).unwrap_or_else(|| format!("{kind}List")),
            namespaced: spec["scope"] == "Namespaced",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            storage_prefix: format!("/{group}/{plural}/"),
            selectable_fields: Vec::new(),
            indexed_field: None,
            name_rule: NameRule::PathSegment,
            status_subresource: definition["subresources"]["status"].is_object(),
            scale_subresource: false,
            post_subresources: Vec::new(),
            printer_columns: printer_columns(&definition),
        })
        .collect()
}

/// A version's `additionalPrinterColumns`.
fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    version["additionalPrinterColumns"]
        .as_array()
        .map(|columns| {
            columns
                .iter()
                .map(|column| PrinterColumn {
                    name: text(&column["name"]),
                    kind: text(&column["type"]),
                    format: text(&column["format"]),
                    description: text(&column["description"]),
                    priority: column["priority"].as_i64().unwrap_or(0),
                    json_path: text(&column["jsonPath"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn register(registry: &Registry, object: &Value) {
    let group = object["spec"]["group"].as_str().unwrap_or_default().to_owned();
    let plural = object["spec"]["names"]["plural"].as_str().unwrap_or_default().to_owned();
    let types = types_of(object);
    if types.is_empty() || object["metadata"]["deletionTimestamp"].is_string() {
        registry.unregister(&group, &plural).await;
        return;
    }
    for ty in types {
        registry.register(ty).await;
    }
}

/// After a write: a written definition's types are served at once (read-your-writes).
pub async fn after_write(state: &ApiState, ty: &ResourceType, object: Option<&Value>) {
    if let (true, Some(object)) = (is_crd(ty), object) {
        register(&state.registry, object).await;
    }
}

/// After a delete: a deleted definition's types and objects go.
pub async fn after_delete(state: &ApiState, ty: &ResourceType, object: &Value) {
    if !is_crd(ty) {
        return;
    }
    let group = object["spec"]["group"].as_str().unwrap_or_default();
    let plural = object["spec"]["names"]["plural"].as_str().unwrap_or_default();
    state.registry.unregister(group, plural).await;
    let storage = state.registry.storage();
    let prefix = format!("/{group}/{plural}/");
    // Each delete is conditional on the revision listed: an object written meanwhile is listed
    // again, with its new revision, and deleted on the next pass, never overwritten unseen.
    loop {
        let Ok(page) = storage
            .list(&prefix, crate::storage::ListOptions { limit: Some(500), ..Default::default() })
            .await
        else {
            break;
        };
        let mut changed = false;
        for kv in &page.items {
            if let Err(crate::storage::StorageError::Conflict { .. }) =
                storage.delete(&kv.key, Some(kv.mod_revision)).await
            {
                changed = true;
            }
        }
        if page.items.is_empty() || (!page.more && !changed) {
            break;
        }
    }
}

/// Keeps the registry in step with the stored definitions, including those written by other
/// replicas: registers every definition at startup and follows changes.
pub fn spawn_sync(registry: Arc<Registry>) {
    tokio::spawn(async move {
        loop {
            let Some(crds) = registry.get(CRD_GROUP, "v1", CRD_PLURAL) else { return };
            if !crds.cacher.wait_ready(std::time::Duration::from_secs(30)).await {
                continue;
            }
            let start = WatchStart::InitialState { version: ReadVersion::Any, initial_events_end: false };
            let Ok(mut watch) = crds.cacher.watch(WatchFilter::everything(), start, false).await else {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            };
            while let Some(item) = watch.next().await {
                let WatchItem::Lines(lines) = item else { break };
                for line in lines {
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
                    let object = &event["object"];
                    match event["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => register(&registry, object).await,
                        Some("DELETED") => {
                            let group = object["spec"]["group"].as_str().unwrap_or_default();
                            let plural = object["spec"]["names"]["plural"].as_str().unwrap_or_default();
                            registry.unregister(group, plural).await;
                        }
                        _ => {}
                    }
                }
            }
        }
    });
}
