//! PATCH bodies: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) through the
//! `json-patch` crate, and Kubernetes' strategic merge patch for the built-in types.
//!
//! The strategic merge patch here follows what kubectl sends (`label`, `annotate`, `edit`,
//! `apply`, `patch`): maps merge recursively (`null` deletes a key); a list whose path has a merge
//! key (`spec.containers` by `name`, ...) merges element by element, an element carrying
//! `"$patch": "delete"` removing its match; other lists are replaced. The directives
//! `$patch: replace|delete`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` are honoured and never stored. Simplified against kube: the
//! merge keys come from a fixed table of the built-in types rather than their Go struct tags, and
//! `$setElementOrder` only reorders, it never adds.

use serde_json::{Map, Value};

/// The kinds of PATCH body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a Content-Type (parameters ignored); `None` if unsupported.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a valid patch of its type (400 BadRequest).
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch operation failed: a `test` that does not hold, a missing path (422).
    #[error("the patch cannot be applied: {0}")]
    Failed(String),
}

/// Applies `patch` to `original`.
pub fn apply(
    original: &Value,
    patch: &[u8],
    patch_type: PatchType,
    merge_keys: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<Value, PatchError> {
    let body: Value =
        serde_json::from_slice(patch).map_err(|error| PatchError::Invalid(error.to_string()))?;
    let mut result = original.clone();
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(body).map_err(|error| PatchError::Invalid(error.to_string()))?;
            json_patch::patch(&mut result, &operations)
                .map_err(|error| PatchError::Failed(error.to_string()))?;
        }
        PatchType::Merge => {
            if !body.is_object() {
                return Err(PatchError::Invalid("a merge patch must be a JSON object".into()));
            }
            json_patch::merge(&mut result, &body);
        }
        PatchType::StrategicMerge => {
            let Value::Object(body) = body else {
                return Err(PatchError::Invalid("a strategic merge patch must be a JSON object".into()));
            };
            result = strategic_merge(original, &body, "", merge_keys)?;
        }
    }
    Ok(result)
}

fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn strategic_merge(
    original: &Value,
    patch: &Map<String, Value>,
    path: &str,
    merge_keys: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<Value, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(Value::Object(strip_directives(patch))),
        Some("delete") => return Ok(Value::Null),
        Some(other) if other != "merge" => {
            return Err(PatchError::Invalid(format!("unknown $patch directive {other:?}")))
        }
        _ => {}
    }
    let mut result = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if let Some(Value::Array(retained)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retained.iter().filter_map(Value::as_str).collect();
        result.retain(|key, _| keep.contains(&key.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
                if let (Some(Value::Array(items)), Value::Array(doomed)) = (result.get_mut(field), value) {
                    items.retain(|item| !doomed.contains(item));
                }
            }
            continue;
        }
        let field_path = child(path, key);
        match value {
            Value::Null => {
                result.remove(key);
            }
            Value::Object(patch_map) => {
                let current = result.get(key).cloned().unwrap_or(Value::Null);
                let merged = strategic_merge(&current, patch_map, &field_path, merge_keys)?;
                if merged.is_null() {
                    result.remove(key);
                } else {
                    result.insert(key.clone(), merged);
                }
            }
            Value::Array(patch_items) => {
                let current = result.get(key).cloned().unwrap_or(Value::Null);
                let merged = match merge_keys(&field_path) {
                    Some(merge_key) => merge_list(&current, patch_items, merge_key, &field_path, merge_keys)?,
                    None => Value::Array(patch_items.iter().map(strip_value).collect()),
                };
                result.insert(key.clone(), merged);
            }
            other => {
                result.insert(key.clone(), other.clone());
            }
        }
    }
    // Reorder a merged list as `$setElementOrder/<field>` says.
    for (key, order) in patch {
        if let (Some(field), Value::Array(order)) = (key.strip_prefix("$setElementOrder/"), order) {
            let Some(merge_key) = merge_keys(&child(path, field)) else { continue };
            if let Some(Value::Array(items)) = result.get_mut(field) {
                let position = |item: &Value| {
                    order
                        .iter()
                        .position(|wanted| wanted.get(merge_key) == item.get(merge_key))
                        .unwrap_or(usize::MAX)
                };
                items.sort_by_key(position);
            }
        }
    }
    Ok(Value::Object(result))
}

fn merge_list(
    original: &Value,
    patch_items: &[Value],
    merge_key: &str,
    path: &str,
    merge_keys: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<Value, PatchError> {
    let mut items: Vec<Value> = original.as_array().cloned().unwrap_or_default();
    for patch_item in patch_items {
        let Value::Object(patch_map) = patch_item else {
            // A list of primitives under a merge key: union.
            if !items.contains(patch_item) {
                items.push(patch_item.clone());
            }
            continue;
        };
        if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
            return Ok(Value::Array(patch_items.iter().map(strip_value).collect()));
        }
        let key = patch_map.get(merge_key);
        let found = key.and_then(|key| items.iter().position(|item| item.get(merge_key) == Some(key)));
        let deleting = patch_map.get("$patch").and_then(Value::as_str) == Some("delete");
        match (found, deleting) {
            (Some(index), true) => {
                items.remove(index);
            }
            (None, true) => {}
            (Some(index), false) => {
                items[index] = strategic_merge(&items[index], patch_map, path, merge_keys)?;
            }
            (None, false) => items.push(strategic_merge(&Value::Null, patch_map, path, merge_keys)?),
        }
    }
    Ok(Value::Array(items))
}

fn strip_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_directives(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

fn strip_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(key, _)| !key.starts_with('$'))
        .map(|(key, value)| (key.clone(), strip_value(value)))
        .collect()
}

/// The merge keys of the built-in types' lists, by dotted field path from the object's root.
pub fn builtin_merge_key(path: &str) -> Option<&'static str> {
    // Pod specs appear at the root of a pod and in workload templates.
    let pod_spec = path
        .strip_prefix("spec.template.spec.")
        .or_else(|| path.strip_prefix("spec.jobTemplate.spec.template.spec."))
        .or_else(|| path.strip_prefix("spec."));
    if let Some(rest) = pod_spec {
        let rest = rest
            .strip_prefix("containers.")
            .or_else(|| rest.strip_prefix("initContainers."))
            .or_else(|| rest.strip_prefix("ephemeralContainers."))
            .map(|container| ("container", container))
            .unwrap_or(("spec", rest));
        match rest {
            (
                "spec",
                "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "imagePullSecrets",
            ) => return Some("name"),
            ("spec", "hostAliases") => return Some("ip"),
            ("container", "env" | "envFrom") => return Some("name"),
            ("container", "ports") => return Some("containerPort"),
            ("container", "volumeMounts") => return Some("mountPath"),
            ("container", "volumeDevices") => return Some("devicePath"),
            _ => {}
        }
    }
    match path {
        "metadata.ownerReferences" => Some("uid"),
        "status.conditions" | "status.addresses" => Some("type"),
        "spec.ports" => Some("port"),
        "spec.template.metadata.ownerReferences" => Some("uid"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strategic(original: Value, patch: Value) -> Value {
        apply(&original, patch.to_string().as_bytes(), PatchType::StrategicMerge, &builtin_merge_key).unwrap()
    }

    #[test]
    fn content_types_name_patch_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), None);
    }

    #[test]
    fn json_and_merge_patches() {
        let original = json!({"a": {"b": 1, "c": 2}, "list": [1, 2]});
        let merged =
            apply(&original, br#"{"a":{"b":null,"d":4}}"#, PatchType::Merge, &builtin_merge_key).unwrap();
        assert_eq!(merged, json!({"a": {"c": 2, "d": 4}, "list": [1, 2]}));
        let patched = apply(
            &original,
            br#"[{"op":"add","path":"/list/-","value":3},{"op":"replace","path":"/a/b","value":9},{"op":"move","from":"/a/c","path":"/e"},{"op":"copy","from":"/e","path":"/f"},{"op":"test","path":"/f","value":2}]"#,
            PatchType::Json,
            &builtin_merge_key,
        )
        .unwrap();
        assert_eq!(patched, json!({"a": {"b": 9}, "list": [1, 2, 3], "e": 2, "f": 2}));
        let failed = apply(
            &original,
            br#"[{"op":"test","path":"/a/b","value":7}]"#,
            PatchType::Json,
            &builtin_merge_key,
        );
        assert!(matches!(failed, Err(PatchError::Failed(_))));
        let missing =
            apply(&original, br#"[{"op":"remove","path":"/nope"}]"#, PatchType::Json, &builtin_merge_key);
        assert!(matches!(missing, Err(PatchError::Failed(_))));
        for bad in [&b"[1]"[..], b"{}", b"nope"] {
            assert!(matches!(
                apply(&original, bad, PatchType::Json, &builtin_merge_key),
                Err(PatchError::Invalid(_))
            ));
        }
        assert!(matches!(
            apply(&original, b"[]", PatchType::Merge, &builtin_merge_key),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn strategic_merge_follows_kubectl() {
        let pod = json!({
            "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "b:1"},
            ], "tolerations": [{"key": "t"}]},
        });
        let labelled = strategic(pod.clone(), json!({"metadata": {"labels": {"tier": "front"}}}));
        assert_eq!(labelled["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
        let patched = strategic(
            pod.clone(),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                "containers": [
                    {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                    {"name": "b", "$patch": "delete"},
                    {"name": "c", "image": "c:1"},
                ],
                "tolerations": [{"key": "u"}],
            }}),
        );
        let containers = patched["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(), ["c", "a"]);
        assert_eq!(containers[1]["image"], "a:2");
        assert_eq!(containers[1]["env"], json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]));
        assert_eq!(
            patched["spec"]["tolerations"],
            json!([{"key": "u"}]),
            "lists without a merge key are replaced"
        );
        assert!(!patched.to_string().contains('$'), "no directive is stored: {patched}");
        let retained = strategic(
            json!({"spec": {"a": 1, "b": 2}}),
            json!({"spec": {"$retainKeys": ["a", "c"], "c": 3}}),
        );
        assert_eq!(retained, json!({"spec": {"a": 1, "c": 3}}));
        let replaced =
            strategic(json!({"spec": {"a": 1, "b": 2}}), json!({"spec": {"$patch": "replace", "c": 3}}));
        assert_eq!(replaced, json!({"spec": {"c": 3}}));
        let deployment =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
        let bumped = strategic(
            deployment,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}),
        );
        assert_eq!(bumped["spec"]["template"]["spec"]["containers"], json!([{"name": "a", "image": "2"}]));
    }
}
