//! PATCH bodies applied to a JSON object, as kube-apiserver applies them.
//!
//! Three patch types are served, chosen by the request's Content-Type ([`PatchType`]):
//!
//! - JSON patch (RFC 6902, `application/json-patch+json`) and JSON merge patch (RFC 7386,
//!   `application/merge-patch+json`) go through the `json-patch` crate.
//! - Strategic merge patch (`application/strategic-merge-patch+json`) is implemented here,
//!   simplified but faithful to what kubectl sends (`label`, `annotate`, `edit`, `apply`,
//!   `patch`). Maps merge recursively as in a merge patch, and `null` deletes a key. A list whose
//!   path has a merge key (`spec.containers` by `name`, see [`builtin_merge_key`]) merges element
//!   by element: a patch element merges into the element with the same key, a new one is
//!   appended, and an element carrying `"$patch": "delete"` removes its match. A list of
//!   primitives with a merge strategy (`metadata.finalizers`) merges as a set. Every other list is
//!   replaced.
//!
//! The strategic merge directives are honoured and never stored:
//!
//! - `"$patch": "replace"` in a map replaces the original map with the rest of the patch map; as
//!   an element `{"$patch": "replace"}` of a list it replaces the original list with the other
//!   elements.
//! - `"$patch": "delete"` in a map deletes the field holding it (the whole object becomes `{}` at
//!   the root); in a list element it deletes the element with the same merge key.
//! - `"$retainKeys": [...]` drops the original map's fields that are not listed.
//! - `"$deleteFromPrimitiveList/<field>": [...]` removes the listed values from the list `field`.
//! - `"$setElementOrder/<field>": [...]` reorders the list `field` after the merge.
//!
//! Simplified against kube-apiserver: merge keys come from a table of the built-in types' lists
//! rather than from their Go struct tags (custom resources have none, so their lists are replaced,
//! as kube does for them); any other key starting with `$` is dropped rather than stored;
//! `$retainKeys` does not check that the patch's own fields are listed; and `$setElementOrder`
//! only reorders (listed elements in the listed order, each unlisted element kept after the
//! element that preceded it), it never adds or removes elements.

use serde_json::{Map, Value};

/// The kinds of PATCH body kube-apiserver accepts, less server-side apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// A JSON patch (RFC 6902): `application/json-patch+json`.
    Json,
    /// A JSON merge patch (RFC 7386): `application/merge-patch+json`.
    Merge,
    /// A Kubernetes strategic merge patch: `application/strategic-merge-patch+json`.
    StrategicMerge,
}

impl PatchType {
    /// The patch media types, for a 415's message.
    pub const ACCEPTED: &'static str =
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json";

    /// The patch type a Content-Type names, ignoring parameters such as `charset` and the case of
    /// the media type; `None` for anything else (`application/apply-patch+yaml`, server-side
    /// apply, is not supported).
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchType::Json)
        } else if media_type.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchType::Merge)
        } else if media_type.eq_ignore_ascii_case("application/strategic-merge-patch+json") {
            Some(PatchType::StrategicMerge)
        } else {
            None
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not valid for its type (400 BadRequest at the API).
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch operation could not be carried out: a `test` that does not hold, or a path
    /// that does not exist (kube-apiserver answers 422 Invalid for those).
    #[error("the patch cannot be applied: {0}")]
    Failed(String),
}

/// The merge key of a list, given the dotted path of field names from the object root.
type MergeKeys<'a> = &'a dyn Fn(&str) -> Option<&'static str>;

/// Applies `patch` (the raw request body) of type `patch_type` to `original` and returns the
/// patched object; `original` is left as it is.
///
/// `merge_keys` tells, for a strategic merge patch, the merge key of the list at a dotted path
/// of field names from the object root without list indices (`spec.containers.env`); `None`
/// means the list is replaced, and `Some("")` that it is a list of primitive values merged as a
/// set. [`builtin_merge_key`] answers for the built-in types.
pub fn apply(
    original: &Value,
    patch: &[u8],
    patch_type: PatchType,
    merge_keys: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<Value, PatchError> {
    let body: Value = serde_json::from_slice(patch)
        .map_err(|error| PatchError::Invalid(format!("the body is not JSON: {error}")))?;
    match patch_type {
        PatchType::Json => {
            if !body.is_array() {
                return Err(PatchError::Invalid("a JSON patch must be a JSON array of operations".into()));
            }
            let operations: json_patch::Patch =
                serde_json::from_value(body).map_err(|error| PatchError::Invalid(error.to_string()))?;
            let mut result = original.clone();
            json_patch::patch(&mut result, &operations)
                .map_err(|error| PatchError::Failed(error.to_string()))?;
            Ok(result)
        }
        PatchType::Merge => {
            if !body.is_object() {
                return Err(PatchError::Invalid("a merge patch must be a JSON object".into()));
            }
            let mut result = original.clone();
            json_patch::merge(&mut result, &body);
            Ok(result)
        }
        PatchType::StrategicMerge => {
            let Value::Object(body) = body else {
                return Err(PatchError::Invalid("a strategic merge patch must be a JSON object".into()));
            };
            let base = match original {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            let merged = merge_map(base, &body, "", merge_keys)?;
            Ok(Value::Object(merged.unwrap_or_default()))
        }
    }
}

/// The dotted path of `field` under `path`.
fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// The `$patch` directive of a patch map, if it has one; an error if it is not a string.
fn directive(patch: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match patch.get("$patch") {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.as_str())),
        Some(other) => Err(PatchError::Invalid(format!("unknown patch type: {other} in map"))),
    }
}

/// The strings of a directive's list value, or an error naming the directive.
fn string_list<'a>(name: &str, value: &'a Value) -> Result<Vec<&'a str>, PatchError> {
    value
        .as_array()
        .and_then(|items| items.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| PatchError::Invalid(format!("{name} must be a list of strings, not {value}")))
}

/// Merges the patch map `patch` into `original`, the map at `path`. `None` means the patch
/// deletes the map (`"$patch": "delete"`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
    merge_keys: MergeKeys<'_>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match directive(patch)? {
        None | Some("merge") => {}
        Some("replace") => original = Map::new(),
        Some("delete") => return Ok(None),
        Some(other) => return Err(PatchError::Invalid(format!("unknown patch type: {other} in map"))),
    }
    if let Some(retained) = patch.get("$retainKeys") {
        let retained = string_list("$retainKeys", retained)?;
        original.retain(|key, _| retained.contains(&key.as_str()));
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if !value.is_array() {
                return Err(PatchError::Invalid(format!("{key} must be a list, not {value}")));
            }
            if let (Some(Value::Array(items)), Value::Array(doomed)) = (original.get_mut(field), value) {
                items.retain(|item| !doomed.contains(item));
            }
        }
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            original.shift_remove(key);
            continue;
        }
        let field_path = child(path, key);
        match original.get_mut(key) {
            Some(slot) => match merge_value(Some(std::mem::take(slot)), value, &field_path, merge_keys)? {
                Some(merged) => *slot = merged,
                None => {
                    original.shift_remove(key);
                }
            },
            None => {
                if let Some(merged) = merge_value(None, value, &field_path, merge_keys)? {
                    original.insert(key.clone(), merged);
                }
            }
        }
    }
    for (key, order) in patch {
        let Some(field) = key.strip_prefix("$setElementOrder/") else { continue };
        let Value::Array(order) = order else {
            return Err(PatchError::Invalid(format!("{key} must be a list, not {order}")));
        };
        let merge_key = merge_keys(&child(path, field));
        if let Some(Value::Array(items)) = original.get_mut(field) {
            reorder(items, order, merge_key);
        }
    }
    Ok(Some(original))
}

/// Merges the patch value `patch` into `original`, the value at `path` if there is one. `None`
/// means the field is to be deleted.
fn merge_value(
    original: Option<Value>,
    patch: &Value,
    path: &str,
    merge_keys: MergeKeys<'_>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(patch) => {
            let base = match original {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            Ok(merge_map(base, patch, path, merge_keys)?.map(Value::Object))
        }
        Value::Array(patch) => {
            let base = match original {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            Ok(Some(Value::Array(merge_list(base, patch, path, merge_keys)?)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

/// The `$patch` directive of a list element, if the element is a map that has one.
fn element_directive(element: &Value) -> Result<Option<&str>, PatchError> {
    match element {
        Value::Object(map) => directive(map),
        _ => Ok(None),
    }
}

/// Merges the patch list `patch` into `original`, the list at `path`.
fn merge_list(
    mut original: Vec<Value>,
    patch: &[Value],
    path: &str,
    merge_keys: MergeKeys<'_>,
) -> Result<Vec<Value>, PatchError> {
    let mut replace = false;
    for element in patch {
        if element_directive(element)? == Some("replace") {
            replace = true;
        }
    }
    let merge_key = if replace { None } else { merge_keys(path) };
    let Some(merge_key) = merge_key else {
        // A replaced list: the patch's elements, less directive elements and with directives
        // stripped from the rest.
        let mut items = Vec::with_capacity(patch.len());
        for element in patch {
            if matches!(element_directive(element)?, Some("replace" | "delete")) {
                continue;
            }
            if let Some(item) = merge_value(None, element, path, merge_keys)? {
                items.push(item);
            }
        }
        return Ok(items);
    };
    for element in patch {
        let Value::Object(element) = element else {
            // A list of primitives with a merge strategy merges as a set.
            if !original.contains(element) {
                original.push(element.clone());
            }
            continue;
        };
        let deleting = match directive(element)? {
            None | Some("merge") => false,
            Some("delete") => true,
            Some(other) => return Err(PatchError::Invalid(format!("unknown patch type: {other} in list"))),
        };
        let key = match element.get(merge_key) {
            Some(key) if !merge_key.is_empty() => key,
            _ => {
                return Err(PatchError::Invalid(format!(
                    "map: {} does not contain declared merge key: {merge_key}",
                    Value::Object(element.clone())
                )))
            }
        };
        if deleting {
            original.retain(|item| item.get(merge_key) != Some(key));
            continue;
        }
        match original.iter().position(|item| item.get(merge_key) == Some(key)) {
            Some(index) => {
                let base = match std::mem::take(&mut original[index]) {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                match merge_map(base, element, path, merge_keys)? {
                    Some(merged) => original[index] = Value::Object(merged),
                    None => {
                        original.remove(index);
                    }
                }
            }
            None => {
                if let Some(merged) = merge_map(Map::new(), element, path, merge_keys)? {
                    original.push(Value::Object(merged));
                }
            }
        }
    }
    Ok(original)
}

/// Reorders `items` as `$setElementOrder` lists them: the listed elements in the listed order,
/// each unlisted element kept right after the element that preceded it (or first, if none did).
/// Elements are matched by `merge_key` when there is a non-empty one, else by value.
fn reorder(items: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let identity = |value: &Value| -> Option<Value> {
        match merge_key {
            Some(key) if !key.is_empty() => value.get(key).cloned(),
            _ => Some(value.clone()),
        }
    };
    let ranks: Vec<Option<Value>> = order.iter().map(identity).collect();
    let rank = |item: &Value| {
        let id = identity(item)?;
        ranks.iter().position(|wanted| wanted.as_ref() == Some(&id))
    };
    // Each group is a listed element's rank (none for the leading unlisted elements) and the
    // elements that travel with it.
    let mut groups: Vec<(Option<usize>, Vec<Value>)> = Vec::new();
    for item in std::mem::take(items) {
        match rank(&item) {
            Some(position) => groups.push((Some(position), vec![item])),
            None => match groups.last_mut() {
                Some((_, group)) => group.push(item),
                None => groups.push((None, vec![item])),
            },
        }
    }
    groups.sort_by_key(|(position, _)| *position);
    items.extend(groups.into_iter().flat_map(|(_, group)| group));
}

/// The lists of a pod spec that merge, by their path inside the pod spec.
fn pod_spec_merge_key(path: &str) -> Option<&'static str> {
    let container_field = ["containers.", "initContainers.", "ephemeralContainers."]
        .iter()
        .find_map(|container| path.strip_prefix(container));
    if let Some(field) = container_field {
        return match field {
            "env" => Some("name"),
            "ports" => Some("containerPort"),
            "volumeMounts" => Some("mountPath"),
            "volumeDevices" => Some("devicePath"),
            _ => None,
        };
    }
    match path {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => Some("name"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// The merge keys of the built-in types' lists (their `patchMergeKey` struct tags), by dotted
/// field path from the object root without list indices; `Some("")` marks a list of primitive
/// values with the merge strategy, merged as a set; `None` a list that a patch replaces.
///
/// Covered: object metadata (`ownerReferences` by `uid`, `finalizers` as a set) at the root and in
/// pod templates; pod specs at `spec` (Pod), `template.spec` (PodTemplate), `spec.template.spec`
/// (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController) and
/// `spec.jobTemplate.spec.template.spec` (CronJob): containers, init and ephemeral containers,
/// volumes, image pull secrets, resource claims and scheduling gates by `name`, host aliases by
/// `ip`, topology spread constraints by `topologyKey`, and in each container `env` by `name`,
/// `ports` by `containerPort`, `volumeMounts` by `mountPath` and `volumeDevices` by
/// `devicePath`; Service `spec.ports` by `port`; `status.conditions` by `type` (pods, nodes,
/// workloads, namespaces); Node `status.addresses` by `type` and `spec.podCIDRs` as a set; Pod
/// `status.podIPs` and `status.hostIPs` by `ip`. Tolerations, args, command and every other list
/// are replaced.
pub fn builtin_merge_key(path: &str) -> Option<&'static str> {
    let metadata = [
        "metadata.",
        "template.metadata.",
        "spec.template.metadata.",
        "spec.jobTemplate.metadata.",
        "spec.jobTemplate.spec.template.metadata.",
    ]
    .iter()
    .find_map(|prefix| path.strip_prefix(prefix));
    match metadata {
        Some("ownerReferences") => return Some("uid"),
        Some("finalizers") => return Some(""),
        _ => {}
    }
    match path {
        "spec.ports" => return Some("port"),
        "spec.podCIDRs" => return Some(""),
        "status.conditions" | "status.addresses" => return Some("type"),
        "status.podIPs" | "status.hostIPs" => return Some("ip"),
        _ => {}
    }
    ["spec.jobTemplate.spec.template.spec.", "spec.template.spec.", "template.spec.", "spec."]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .and_then(pod_spec_merge_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies a patch of `patch_type` with the built-in merge keys.
    fn patched(original: &Value, patch: &Value, patch_type: PatchType) -> Result<Value, PatchError> {
        apply(original, patch.to_string().as_bytes(), patch_type, &builtin_merge_key)
    }

    /// Applies a strategic merge patch that must succeed.
    fn strategic(original: Value, patch: Value) -> Value {
        patched(&original, &patch, PatchType::StrategicMerge)
            .unwrap_or_else(|error| panic!("{patch} should apply: {error}"))
    }

    /// Applies a JSON patch that must succeed.
    fn json_patch(original: Value, patch: Value) -> Value {
        patched(&original, &patch, PatchType::Json)
            .unwrap_or_else(|error| panic!("{patch} should apply: {error}"))
    }

    /// Tells whether any key anywhere in `value` starts with `$`.
    fn has_directive(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(key, value)| key.starts_with('$') || has_directive(value)),
            Value::Array(items) => items.iter().any(has_directive),
            _ => false,
        }
    }

    /// The names of the containers of a pod.
    fn container_names(pod: &Value) -> Vec<&str> {
        pod["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
    }

    /// A pod with two containers, the first with an environment variable and a port.
    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"app": "web"}, "finalizers": ["a/x"]},
            "spec": {
                "containers": [
                    {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}],
                     "ports": [{"containerPort": 80, "name": "http"}], "args": ["--one"]},
                    {"name": "b", "image": "b:1"},
                ],
                "tolerations": [{"key": "t", "operator": "Exists"}],
            },
        })
    }

    #[test]
    fn content_types_name_patch_types() {
        assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type(" Application/JSON-Patch+JSON ;x=y"), Some(PatchType::Json));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), None);
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
    }

    #[test]
    fn json_patch_operations() {
        let original = json!({"a": {"b": 1, "c": 2}, "list": [1, 2]});
        assert_eq!(
            json_patch(original.clone(), json!([{"op": "add", "path": "/list/-", "value": 3}])),
            json!({"a": {"b": 1, "c": 2}, "list": [1, 2, 3]})
        );
        assert_eq!(
            json_patch(original.clone(), json!([{"op": "add", "path": "/list/0", "value": 0}])),
            json!({"a": {"b": 1, "c": 2}, "list": [0, 1, 2]})
        );
        assert_eq!(
            json_patch(original.clone(), json!([{"op": "remove", "path": "/a/b"}])),
            json!({"a": {"c": 2}, "list": [1, 2]})
        );
        assert_eq!(
            json_patch(original.clone(), json!([{"op": "replace", "path": "/a/b", "value": {"x": 1}}])),
            json!({"a": {"b": {"x": 1}, "c": 2}, "list": [1, 2]})
        );
        assert_eq!(
            json_patch(original.clone(), json!([{"op": "move", "from": "/a/c", "path": "/e"}])),
            json!({"a": {"b": 1}, "list": [1, 2], "e": 2})
        );
        assert_eq!(
            json_patch(original.clone(), json!([{"op": "copy", "from": "/list", "path": "/a/l"}])),
            json!({"a": {"b": 1, "c": 2, "l": [1, 2]}, "list": [1, 2]})
        );
        assert_eq!(
            json_patch(
                original.clone(),
                json!([{"op": "test", "path": "/a/b", "value": 1}, {"op": "add", "path": "/ok", "value": true}])
            ),
            json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "ok": true})
        );
        assert_eq!(json_patch(original.clone(), json!([])), original, "an empty JSON patch changes nothing");
        // Keys with `/` and `~` are escaped in pointers.
        assert_eq!(
            json_patch(
                json!({"metadata": {"labels": {}}}),
                json!([{"op": "add", "path": "/metadata/labels/example.com~1a~0b", "value": "v"}])
            ),
            json!({"metadata": {"labels": {"example.com/a~b": "v"}}})
        );
    }

    #[test]
    fn json_patch_failures_are_failed() {
        let original = json!({"a": {"b": 1}, "list": [1]});
        for patch in [
            json!([{"op": "test", "path": "/a/b", "value": 7}]),
            json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/a/b", "value": 7}]),
            json!([{"op": "remove", "path": "/nope"}]),
            json!([{"op": "replace", "path": "/nope/deeper", "value": 1}]),
            json!([{"op": "add", "path": "/missing/child", "value": 1}]),
            json!([{"op": "add", "path": "/list/5", "value": 1}]),
            json!([{"op": "move", "from": "/nope", "path": "/x"}]),
            json!([{"op": "copy", "from": "/nope", "path": "/x"}]),
            json!([{"op": "test", "path": "/nope", "value": null}]),
        ] {
            match patched(&original, &patch, PatchType::Json) {
                Err(PatchError::Failed(message)) => assert!(!message.is_empty()),
                other => panic!("{patch} should fail, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_bodies_are_invalid() {
        let original = json!({"a": 1});
        let invalid = |body: &[u8], patch_type| {
            matches!(apply(&original, body, patch_type, &builtin_merge_key), Err(PatchError::Invalid(_)))
        };
        for patch_type in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            assert!(invalid(b"", patch_type));
            assert!(invalid(b"not json", patch_type));
            assert!(invalid(b"{\"a\":", patch_type));
            assert!(invalid(b"42", patch_type));
            assert!(invalid(b"null", patch_type));
        }
        assert!(invalid(b"{}", PatchType::Json));
        assert!(invalid(b"[1]", PatchType::Json));
        assert!(invalid(br#"[{"op":"frobnicate","path":"/a"}]"#, PatchType::Json));
        assert!(invalid(br#"[{"op":"add","path":"/a"}]"#, PatchType::Json), "add needs a value");
        assert!(invalid(br#"[{"op":"add","path":"a","value":1}]"#, PatchType::Json), "a bad pointer");
        assert!(invalid(b"[]", PatchType::Merge));
        assert!(invalid(b"[]", PatchType::StrategicMerge));
        assert!(invalid(b"\"text\"", PatchType::StrategicMerge));
    }

    #[test]
    fn merge_patch_merges_maps_and_deletes_nulls() {
        let original = json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "s": "x"});
        let merged = patched(
            &original,
            &json!({"a": {"b": null, "d": 4}, "list": [3], "s": null, "n": {"m": null}}),
            PatchType::Merge,
        )
        .unwrap();
        assert_eq!(merged, json!({"a": {"c": 2, "d": 4}, "list": [3], "n": {}}));
        assert_eq!(patched(&original, &json!({}), PatchType::Merge).unwrap(), original);
        // Merge patch knows no merge keys: lists are replaced.
        let replaced =
            patched(&pod(), &json!({"spec": {"containers": [{"name": "c"}]}}), PatchType::Merge).unwrap();
        assert_eq!(replaced["spec"]["containers"], json!([{"name": "c"}]));
    }

    #[test]
    fn strategic_merge_of_labels_and_annotations_as_kubectl_sends_them() {
        let labelled = strategic(pod(), json!({"metadata": {"labels": {"tier": "front"}}}));
        assert_eq!(labelled["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
        assert_eq!(labelled["spec"], pod()["spec"], "the rest is untouched");
        let relabelled = strategic(pod(), json!({"metadata": {"labels": {"app": "api"}}}));
        assert_eq!(relabelled["metadata"]["labels"], json!({"app": "api"}));
        let unlabelled = strategic(pod(), json!({"metadata": {"labels": {"app": null}}}));
        assert_eq!(unlabelled["metadata"]["labels"], json!({}));
        let annotated = strategic(pod(), json!({"metadata": {"annotations": {"note": "hi"}}}));
        assert_eq!(annotated["metadata"]["annotations"], json!({"note": "hi"}));
        // Deleting one key keeps the order of the others.
        let ordered = strategic(json!({"m": {"a": 1, "b": 2, "c": 3}}), json!({"m": {"a": null}}));
        assert_eq!(ordered["m"].as_object().unwrap().keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(strategic(json!({"a": {"b": 1}}), json!({"a": null})), json!({}));
        assert_eq!(strategic(json!({"a": 1}), json!({"gone": null})), json!({"a": 1}));
    }

    #[test]
    fn strategic_merge_of_containers_by_name() {
        let updated = strategic(pod(), json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}));
        assert_eq!(container_names(&updated), ["a", "b"]);
        assert_eq!(updated["spec"]["containers"][1], json!({"name": "b", "image": "b:2"}));
        assert_eq!(updated["spec"]["containers"][0], pod()["spec"]["containers"][0]);

        let added = strategic(pod(), json!({"spec": {"containers": [{"name": "c", "image": "c:1"}]}}));
        assert_eq!(container_names(&added), ["a", "b", "c"]);

        let deleted = strategic(pod(), json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}));
        assert_eq!(container_names(&deleted), ["b"]);
        assert!(!has_directive(&deleted));

        let deleting_missing =
            strategic(pod(), json!({"spec": {"containers": [{"name": "zz", "$patch": "delete"}]}}));
        assert_eq!(deleting_missing, pod());

        // A container's own lists merge by their keys, and its args (no merge key) are replaced.
        let nested = strategic(
            pod(),
            json!({"spec": {"containers": [{
                "name": "a",
                "env": [{"name": "X", "value": "9"}, {"name": "Y", "value": "2"}],
                "ports": [{"containerPort": 443}],
                "args": ["--two"],
            }]}}),
        );
        let a = &nested["spec"]["containers"][0];
        assert_eq!(a["env"], json!([{"name": "X", "value": "9"}, {"name": "Y", "value": "2"}]));
        assert_eq!(a["ports"], json!([{"containerPort": 80, "name": "http"}, {"containerPort": 443}]));
        assert_eq!(a["args"], json!(["--two"]));
        assert_eq!(a["image"], "a:1");

        let env_deleted = strategic(
            pod(),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]}}),
        );
        assert_eq!(env_deleted["spec"]["containers"][0]["env"], json!([]));

        // A field of a container set to null is deleted.
        let unset = strategic(pod(), json!({"spec": {"containers": [{"name": "a", "ports": null}]}}));
        assert!(unset["spec"]["containers"][0].get("ports").is_none());
    }

    #[test]
    fn strategic_merge_in_workload_templates() {
        let deployment = json!({"spec": {"replicas": 1, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]},
        }}});
        let bumped = strategic(
            deployment.clone(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}),
        );
        assert_eq!(
            bumped["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "2"}, {"name": "b", "image": "1"}])
        );
        // `kubectl rollout restart` adds an annotation to the template.
        let restarted = strategic(
            deployment,
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}),
        );
        assert_eq!(restarted["spec"]["template"]["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "now"
        );
    }

    #[test]
    fn strategic_merge_replaces_lists_without_merge_key() {
        let patched = strategic(pod(), json!({"spec": {"tolerations": [{"key": "u"}]}}));
        assert_eq!(patched["spec"]["tolerations"], json!([{"key": "u"}]));
        let emptied = strategic(pod(), json!({"spec": {"tolerations": []}}));
        assert_eq!(emptied["spec"]["tolerations"], json!([]));
        // Custom resources have no merge keys at all.
        let custom = apply(
            &json!({"spec": {"containers": [{"name": "a"}]}}),
            br#"{"spec":{"containers":[{"name":"b"}]}}"#,
            PatchType::StrategicMerge,
            &|_| None,
        )
        .unwrap();
        assert_eq!(custom, json!({"spec": {"containers": [{"name": "b"}]}}));
    }

    #[test]
    fn strategic_merge_of_primitive_sets() {
        let added = strategic(pod(), json!({"metadata": {"finalizers": ["b/y", "a/x"]}}));
        assert_eq!(added["metadata"]["finalizers"], json!(["a/x", "b/y"]));
        let removed = strategic(
            added,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"], "finalizers": ["c/z"]}}),
        );
        assert_eq!(removed["metadata"]["finalizers"], json!(["b/y", "c/z"]));
        assert!(!has_directive(&removed));
    }

    #[test]
    fn strategic_merge_directives() {
        // `$patch: replace` in a map.
        let replaced = strategic(
            json!({"spec": {"a": 1, "b": {"c": 2}}}),
            json!({"spec": {"$patch": "replace", "d": 3}}),
        );
        assert_eq!(replaced, json!({"spec": {"d": 3}}));
        // `$patch: replace` as a list element.
        let list_replaced = strategic(
            pod(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "z:1"}]}}),
        );
        assert_eq!(list_replaced["spec"]["containers"], json!([{"name": "z", "image": "z:1"}]));
        // `$patch: delete` in a map deletes the field, and the whole object at the root.
        let deleted =
            strategic(json!({"spec": {"a": 1}, "keep": true}), json!({"spec": {"$patch": "delete"}}));
        assert_eq!(deleted, json!({"keep": true}));
        assert_eq!(strategic(json!({"a": 1}), json!({"$patch": "delete"})), json!({}));
        // `$retainKeys` drops the unlisted fields (kubectl apply on a Deployment's strategy).
        let retained = strategic(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(retained, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        // `$setElementOrder` reorders, and is not stored.
        let ordered = strategic(
            pod(),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                "containers": [{"name": "c", "image": "c:1"}],
            }}),
        );
        assert_eq!(container_names(&ordered), ["c", "b", "a"]);
        assert!(!has_directive(&ordered), "{ordered}");
        // An unlisted element stays after the element that preceded it.
        let partial = strategic(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "sidecar"}, {"name": "b"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
        );
        assert_eq!(container_names(&partial), ["b", "a", "sidecar"]);
        // A `$setElementOrder` for a field that is not there is ignored.
        let absent = strategic(json!({}), json!({"spec": {"$setElementOrder/volumes": [{"name": "v"}]}}));
        assert_eq!(absent, json!({"spec": {}}));
        // Directives inside new fields are stripped too.
        let fresh = strategic(
            json!({}),
            json!({"spec": {
                "containers": [{"name": "a", "$patch": "merge", "env": [{"name": "X", "$patch": "delete"}]}],
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                "tolerations": [{"key": "t", "$unknown": 1}],
            }}),
        );
        assert_eq!(
            fresh,
            json!({"spec": {
                "containers": [{"name": "a", "env": []}],
                "strategy": {"type": "Recreate"},
                "tolerations": [{"key": "t"}],
            }})
        );
        assert!(!has_directive(&fresh));
    }

    #[test]
    fn strategic_merge_rejects_bad_directives() {
        for patch in [
            json!({"spec": {"$patch": "explode"}}),
            json!({"spec": {"$patch": 1}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "explode"}]}}),
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            json!({"spec": {"$retainKeys": "a"}}),
            json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a/x"}}),
        ] {
            assert!(
                matches!(patched(&pod(), &patch, PatchType::StrategicMerge), Err(PatchError::Invalid(_))),
                "{patch} should be invalid"
            );
        }
    }

    #[test]
    fn strategic_merge_of_type_changes_and_non_object_originals() {
        assert_eq!(strategic(json!({"a": [1]}), json!({"a": {"b": 1}})), json!({"a": {"b": 1}}));
        assert_eq!(strategic(json!({"a": {"b": 1}}), json!({"a": 5})), json!({"a": 5}));
        assert_eq!(strategic(json!({"a": 5}), json!({"a": [1]})), json!({"a": [1]}));
        assert_eq!(strategic(json!(null), json!({"a": 1})), json!({"a": 1}));
        assert_eq!(strategic(pod(), json!({})), pod());
    }

    #[test]
    fn builtin_merge_keys() {
        for (path, key) in [
            ("spec.containers", Some("name")),
            ("spec.initContainers", Some("name")),
            ("spec.ephemeralContainers", Some("name")),
            ("spec.containers.env", Some("name")),
            ("spec.initContainers.ports", Some("containerPort")),
            ("spec.containers.volumeMounts", Some("mountPath")),
            ("spec.containers.volumeDevices", Some("devicePath")),
            ("spec.volumes", Some("name")),
            ("spec.imagePullSecrets", Some("name")),
            ("spec.hostAliases", Some("ip")),
            ("spec.topologySpreadConstraints", Some("topologyKey")),
            ("spec.template.spec.containers", Some("name")),
            ("spec.template.spec.containers.env", Some("name")),
            ("spec.template.spec.volumes", Some("name")),
            ("template.spec.containers", Some("name")),
            ("spec.jobTemplate.spec.template.spec.containers.ports", Some("containerPort")),
            ("metadata.ownerReferences", Some("uid")),
            ("spec.template.metadata.ownerReferences", Some("uid")),
            ("metadata.finalizers", Some("")),
            ("status.conditions", Some("type")),
            ("status.addresses", Some("type")),
            ("status.podIPs", Some("ip")),
            ("spec.ports", Some("port")),
            ("spec.tolerations", None),
            ("spec.template.spec.tolerations", None),
            ("spec.containers.args", None),
            ("spec.containers.envFrom", None),
            ("subsets", None),
            ("metadata.labels", None),
            ("spec.template.spec.ports", None),
            ("containers", None),
        ] {
            assert_eq!(builtin_merge_key(path), key, "{path}");
        }
    }
}
