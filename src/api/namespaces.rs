//! The namespace lifecycle, as kube-apiserver and kube-controller-manager's namespace controller
//! run it.
//!
//! - **Create**: the namespace starts `Active`, with the `kubernetes` finalizer in
//!   `spec.finalizers` (added if the client left it out), which holds it until its content is
//!   gone.
//! - **Delete**: the first DELETE only marks it: `metadata.deletionTimestamp` and
//!   `status.phase: Terminating`, answered with 200 and the namespace. A DELETE while it is
//!   terminating gets 409, with kube's words. `default`, `kube-system` and `kube-public` may not
//!   be deleted (403).
//! - **New content** in a terminating namespace is refused with 403 and the cause
//!   `NamespaceTerminating` (kube's NamespaceLifecycle admission), so nothing is created behind
//!   the controller's back.
//! - **The controller** ([`spawn`]) finds terminating namespaces in the cache and removes their
//!   content from storage: an object without finalizers is deleted on the condition that it is
//!   unchanged (a concurrent update is seen on the next pass, never overwritten), an object with
//!   finalizers is marked for deletion and waited for. The namespace's `status.conditions` say
//!   what remains, as kube's do. Once two passes at least [`SETTLE`] apart find nothing, so that
//!   a create admitted just before the namespace turned terminating has landed and is removed
//!   too, the `kubernetes` finalizer is removed, and the namespace is deleted once no finalizer
//!   is left. Every write is conditional on the revision it read, so several replicas may run
//!   the controller at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Notify;

use super::status::{ApiError, Subject};
use crate::cacher::{ListRequest, ReadVersion, WatchFilter};
use crate::registry::Registry;
use crate::storage::{KeyValue, ListOptions, StorageError};
use crate::validation::Cause;

/// The finalizer that holds a namespace until its content is gone.
pub const FINALIZER: &str = "kubernetes";
/// How often the controller looks for terminating namespaces besides being woken.
const POLL: Duration = Duration::from_millis(500);
/// How long an empty namespace must stay empty before it is finalized.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Namespaces that may not be deleted.
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Wakes the controller at once after a namespace is marked for deletion in this process.
static WAKE: Notify = Notify::const_new();
/// The namespaces this process marked for deletion lately (name → uid, when), so that a create
/// right after the DELETE is refused even while the cache still shows the namespace `Active`.
static MARKED: std::sync::Mutex<Vec<(String, String, Instant)>> = std::sync::Mutex::new(Vec::new());
/// How long [`MARKED`] remembers a namespace: far longer than the cache lags.
const REMEMBER: Duration = Duration::from_secs(60);

/// Whether `namespace` is being deleted.
pub fn is_terminating(namespace: &Value) -> bool {
    namespace.pointer("/metadata/deletionTimestamp").is_some_and(|stamp| !stamp.is_null())
        || namespace.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

/// What a new namespace gets on create, whatever the client sent: phase `Active` and the
/// `kubernetes` finalizer.
pub fn prepare_for_create(namespace: &mut Value) {
    namespace["status"] = json!({"phase": "Active"});
    if !namespace["spec"].is_object() {
        namespace["spec"] = json!({});
    }
    let finalizers = &mut namespace["spec"]["finalizers"];
    if !finalizers.is_array() {
        *finalizers = json!([]);
    }
    let list = finalizers.as_array_mut().expect("an array");
    if !list.iter().any(|finalizer| finalizer == FINALIZER) {
        list.push(json!(FINALIZER));
    }
}

/// What a DELETE does to a namespace.
pub enum DeleteStep {
    /// Store this (the namespace marked for deletion) and answer 200 with it.
    Terminate(Value),
    /// It is being deleted already and waits for its finalizers: 409.
    AlreadyTerminating,
    /// Nothing holds it: delete it as any object.
    Delete,
}

/// The step a DELETE of `namespace` (as stored) takes, or the 403 for a namespace that may not
/// be deleted.
pub fn delete_step(namespace: &Value, now: &str) -> Result<DeleteStep, ApiError> {
    let name = namespace.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if IMMORTAL.contains(&name) {
        return Err(ApiError::forbidden_subject(subject(name), "this namespace may not be deleted"));
    }
    let finalizers_left = !spec_finalizers(namespace).is_empty()
        || namespace
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|list| !list.is_empty());
    let marked = namespace.pointer("/metadata/deletionTimestamp").is_some_and(|stamp| !stamp.is_null());
    if marked {
        return Ok(if finalizers_left { DeleteStep::AlreadyTerminating } else { DeleteStep::Delete });
    }
    if spec_finalizers(namespace).is_empty() {
        return Ok(DeleteStep::Delete);
    }
    let mut marked = namespace.clone();
    marked["metadata"]["deletionTimestamp"] = json!(now);
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    if !marked["status"].is_object() {
        marked["status"] = json!({});
    }
    marked["status"]["phase"] = json!("Terminating");
    Ok(DeleteStep::Terminate(marked))
}

/// The 409 for a DELETE of a namespace that is being deleted.
pub fn already_terminating(name: &str) -> ApiError {
    ApiError::conflict(
        subject(name),
        "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.",
    )
}

/// The 403 for creating `created` in the terminating `namespace`.
pub fn terminating(created: Subject<'_>, namespace: &str) -> ApiError {
    let message =
        format!("unable to create new content in namespace {namespace} because it is being terminated");
    let mut error = ApiError::forbidden_subject(created, &message);
    error.set_causes(&[Cause {
        reason: "NamespaceTerminating".into(),
        message,
        field: "metadata.namespace".into(),
    }]);
    error
}

/// Records that `marked` (as stored) was just marked for deletion, and wakes the controller.
pub fn marked(marked: &Value) {
    let field = |path| marked.pointer(path).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut list = MARKED.lock().expect("not poisoned");
    list.retain(|(_, _, at)| at.elapsed() < REMEMBER);
    list.push((field("/metadata/name"), field("/metadata/uid"), Instant::now()));
    drop(list);
    WAKE.notify_one();
}

/// Whether `namespace` (as read, perhaps from a cache that lags) is being deleted: it says so,
/// or this process marked it (the same namespace, by uid) a moment ago.
pub fn is_terminating_now(namespace: &Value) -> bool {
    if is_terminating(namespace) {
        return true;
    }
    let name = namespace.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let uid = namespace.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    MARKED
        .lock()
        .expect("not poisoned")
        .iter()
        .any(|(marked, marked_uid, at)| marked == name && marked_uid == uid && at.elapsed() < REMEMBER)
}

fn subject(name: &str) -> Subject<'_> {
    Subject { group: "", plural: "namespaces", kind: "Namespace", name }
}

fn spec_finalizers(namespace: &Value) -> Vec<String> {
    namespace
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Starts the namespace controller (see the module docs).
pub fn spawn(registry: Arc<Registry>) {
    tokio::spawn(async move {
        let mut first_empty: HashMap<String, Instant> = HashMap::new();
        loop {
            let _ = tokio::time::timeout(POLL, WAKE.notified()).await;
            let Some(namespaces) = registry.get("", "v1", "namespaces") else { return };
            if !namespaces.cacher.is_ready() {
                continue;
            }
            let request = ListRequest {
                filter: WatchFilter::everything(),
                limit: None,
                continue_from: None,
                version: ReadVersion::Any,
            };
            let Ok(listed) = namespaces.cacher.list(&request).await else { continue };
            let mut terminating = Vec::new();
            for object in &listed.items {
                // Most namespaces are not being deleted: skip them without parsing their JSON.
                if !object.json.windows(19).any(|window| window == b"\"deletionTimestamp\"") {
                    continue;
                }
                if let Ok(namespace) = serde_json::from_slice::<Value>(&object.json) {
                    if namespace.pointer("/metadata/deletionTimestamp").is_some_and(|stamp| !stamp.is_null())
                    {
                        terminating.push(object.name.to_string());
                    }
                }
            }
            first_empty.retain(|name, _| terminating.contains(name));
            for name in terminating {
                if let Err(error) = finalize(&registry, &name, &mut first_empty).await {
                    tracing::warn!(namespace = %name, %error, "namespace deletion will be retried");
                }
            }
        }
    });
}

/// What is left in a namespace after a pass.
#[derive(Default)]
struct Remaining {
    /// `plural.group` → objects left.
    objects: BTreeMap<String, usize>,
    /// finalizer → objects that carry it.
    finalizers: BTreeMap<String, usize>,
}

/// One pass over the terminating namespace `name`.
async fn finalize(
    registry: &Registry,
    name: &str,
    first_empty: &mut HashMap<String, Instant>,
) -> Result<(), StorageError> {
    let storage = registry.storage();
    let namespaces = registry.get("", "v1", "namespaces").expect("namespaces are built in");
    let key = namespaces.ty.key(None, name);
    let Some(current) = storage.get(&key).await? else { return Ok(()) };
    let Some(mut namespace) = decode(&current) else { return Ok(()) };
    if namespace.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
        return Ok(());
    }
    let mut revision = current.mod_revision;
    if spec_finalizers(&namespace).iter().any(|finalizer| finalizer == FINALIZER) {
        let remaining = remove_content(registry, name).await?;
        let empty = remaining.objects.is_empty();
        let settled = match first_empty.get(name) {
            Some(since) => empty && since.elapsed() >= SETTLE,
            None => {
                if empty {
                    first_empty.insert(name.to_owned(), Instant::now());
                }
                false
            }
        };
        if !empty {
            first_empty.remove(name);
        }
        let mut updated = namespace.clone();
        updated["status"]["conditions"] = conditions(&remaining, &namespace);
        if settled {
            let kept: Vec<String> =
                spec_finalizers(&namespace).into_iter().filter(|finalizer| finalizer != FINALIZER).collect();
            updated["spec"]["finalizers"] = json!(kept);
        }
        if updated != namespace {
            if let Some(metadata) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resourceVersion");
            }
            let stored = storage.update(&key, encode(&updated), revision).await?;
            revision = stored.mod_revision;
            namespace = updated;
        }
        if !settled {
            return Ok(());
        }
        first_empty.remove(name);
        tracing::info!(namespace = %name, "namespace content removed");
    }
    let held = !spec_finalizers(&namespace).is_empty()
        || namespace
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|list| !list.is_empty());
    if !held {
        match storage.delete(&key, Some(revision)).await {
            Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
            Err(StorageError::NotFound { .. } | StorageError::Conflict { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Deletes or marks every object in namespace `name`; returns what is still there.
async fn remove_content(registry: &Registry, name: &str) -> Result<Remaining, StorageError> {
    let storage = registry.storage();
    let mut remaining = Remaining::default();
    for resource in registry.all() {
        if !resource.ty.namespaced {
            continue;
        }
        let resource_name = format!("{}.{}", resource.ty.plural, resource.ty.group);
        let prefix = format!("{}{name}/", resource.ty.storage_prefix);
        let mut options = ListOptions { limit: Some(500), ..Default::default() };
        loop {
            let page = storage.list(&prefix, options.clone()).await?;
            for kv in &page.items {
                let Some(mut object) = decode(kv) else {
                    *remaining.objects.entry(resource_name.clone()).or_default() += 1;
                    continue;
                };
                let finalizers: Vec<String> = object
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default();
                let gone = if finalizers.is_empty() {
                    match storage.delete(&kv.key, Some(kv.mod_revision)).await {
                        Ok(_) | Err(StorageError::NotFound { .. }) => true,
                        Err(StorageError::Conflict { .. }) => false,
                        Err(error) => return Err(error),
                    }
                } else {
                    for finalizer in finalizers {
                        *remaining.finalizers.entry(finalizer).or_default() += 1;
                    }
                    if object.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
                        object["metadata"]["deletionTimestamp"] = json!(super::handlers::now_rfc3339());
                        object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                        match storage.update(&kv.key, encode(&object), kv.mod_revision).await {
                            Ok(_) | Err(StorageError::NotFound { .. } | StorageError::Conflict { .. }) => {}
                            Err(error) => return Err(error),
                        }
                    }
                    false
                };
                if !gone {
                    *remaining.objects.entry(resource_name.clone()).or_default() += 1;
                }
            }
            match page.items.last() {
                Some(last) if page.more => options.continue_after = Some(last.key.clone()),
                _ => break,
            }
        }
    }
    Ok(remaining)
}

/// The namespace's `status.conditions` for what `remaining` holds, in kube's words; a condition
/// keeps its transition time while its status does not change.
fn conditions(remaining: &Remaining, namespace: &Value) -> Value {
    let previous =
        namespace.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = super::handlers::now_rfc3339();
    let condition = |kind: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|condition| condition["type"] == kind && condition["status"] == status)
            .and_then(|condition| condition.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": kind, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let objects: Vec<String> = remaining
        .objects
        .iter()
        .map(|(resource, count)| format!("{resource} has {count} resource instances"))
        .collect();
    let finalizers: Vec<String> = remaining
        .finalizers
        .iter()
        .map(|(finalizer, count)| format!("{finalizer} in {count} resource instances"))
        .collect();
    json!([
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into()
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into()
        ),
        condition(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into()
        ),
        if objects.is_empty() {
            condition(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            condition(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", objects.join(", ")),
            )
        },
        if finalizers.is_empty() {
            condition(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            condition(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!("Some content in the namespace has finalizers remaining: {}", finalizers.join(", ")),
            )
        },
    ])
}

fn decode(kv: &KeyValue) -> Option<Value> {
    serde_json::from_slice(&kv.value).ok()
}

fn encode(object: &Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(object).expect("JSON value encodes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_delete_marks_the_namespace_terminating_and_a_second_is_a_conflict() {
        let mut namespace = json!({"metadata": {"name": "team"}, "spec": {"finalizers": ["example.com/x"]}});
        prepare_for_create(&mut namespace);
        assert_eq!(namespace["spec"]["finalizers"], json!(["example.com/x", "kubernetes"]));
        assert_eq!(namespace["status"], json!({"phase": "Active"}));
        let Ok(DeleteStep::Terminate(marked)) = delete_step(&namespace, "2026-01-01T00:00:00Z") else {
            panic!("not marked")
        };
        assert_eq!(marked["status"]["phase"], "Terminating");
        assert_eq!(marked["metadata"]["deletionTimestamp"], "2026-01-01T00:00:00Z");
        assert!(is_terminating(&marked));
        assert!(matches!(delete_step(&marked, "later"), Ok(DeleteStep::AlreadyTerminating)));
        let mut finalized = marked.clone();
        finalized["spec"]["finalizers"] = json!([]);
        assert!(matches!(delete_step(&finalized, "later"), Ok(DeleteStep::Delete)));
        let default = json!({"metadata": {"name": "default"}, "spec": {"finalizers": ["kubernetes"]}});
        let Err(error) = delete_step(&default, "now") else { panic!("default may not be deleted") };
        assert_eq!(error.code, http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_namespace_this_replica_just_marked_reads_as_terminating_from_a_lagging_cache() {
        let active = json!({"metadata": {"name": "lagging", "uid": "u1"}, "status": {"phase": "Active"}});
        assert!(!is_terminating_now(&active));
        let mut marked_copy = active.clone();
        marked_copy["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        marked(&marked_copy);
        assert!(is_terminating_now(&active), "the cache's stale copy, same uid");
        let recreated = json!({"metadata": {"name": "lagging", "uid": "u2"}, "status": {"phase": "Active"}});
        assert!(!is_terminating_now(&recreated), "a namespace of the same name created since");
    }

    #[test]
    fn conditions_say_what_remains_in_kubes_words() {
        let mut remaining = Remaining::default();
        remaining.objects.insert("configmaps.".into(), 2);
        remaining.finalizers.insert("example.com/hold".into(), 1);
        let conditions = conditions(&remaining, &json!({}));
        assert_eq!(
            conditions[3]["message"],
            "Some resources are remaining: configmaps. has 2 resource instances"
        );
        assert_eq!(
            conditions[4]["message"],
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        let done = super::conditions(&Remaining::default(), &json!({"status": {"conditions": conditions}}));
        assert_eq!(done[3]["status"], "False");
        assert_eq!(done[0]["lastTransitionTime"], conditions[0]["lastTransitionTime"]);
    }
}
