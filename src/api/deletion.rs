//! What a DELETE does to an object, as kube-apiserver's generic registry decides it
//! (`rest.BeforeDelete` and `Store.Delete`): graceful deletion of pods, the garbage collector's
//! `orphan` and `foregroundDeletion` finalizers from `propagationPolicy`, and finalizers that
//! hold an object marked for deletion.
//!
//! - **Pods are deleted gracefully.** The grace period is the request's `gracePeriodSeconds`, or
//!   the pod's `spec.terminationGracePeriodSeconds`; a pod that is not scheduled (no
//!   `spec.nodeName`) or has finished (`Succeeded`, `Failed`) has none. With a grace period the pod
//!   is only marked: `deletionTimestamp` is now plus the period and `deletionGracePeriodSeconds`
//!   the period, and its kubelet deletes it with grace 0 once its containers stopped. A later
//!   DELETE may only shorten the period; one with a longer or no period changes nothing.
//! - **`propagationPolicy`** (or the legacy `orphanDependents`): `Orphan` adds the `orphan`
//!   finalizer, `Foreground` the `foregroundDeletion` one, `Background` removes both; the
//!   garbage collector (kube-controller-manager) acts on them. Both fields at once, or another
//!   policy, is 422 with kube's message.
//! - **An object with finalizers** is marked for deletion (`deletionTimestamp` now, grace 0) and
//!   goes when its last finalizer is removed.
//! - Everything else is deleted at once.
//!
//! The answer is 200 with the object in every case where it stays, and 202 only when the client
//! asked `orphanDependents: false`, as kube-apiserver does.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::request::Query;
use super::status::{ApiError, Subject};
use crate::validation::Cause;

/// The garbage collector's propagation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents stay (the `orphan` finalizer).
    Orphan,
    /// The object goes now; the garbage collector deletes its dependents afterwards.
    Background,
    /// Dependents go first (the `foregroundDeletion` finalizer).
    Foreground,
}

/// The DeleteOptions that decide what a DELETE does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds` (negative values are 1, as kube treats them).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`, or the legacy `orphanDependents` as a policy.
    pub propagation: Option<Propagation>,
    /// `orphanDependents` as sent (only `false` changes the answer's code).
    pub orphan_dependents: Option<bool>,
}

impl DeleteOptions {
    /// The options of a DELETE: the body's `DeleteOptions` when there is one, else the query's
    /// parameters; 422 for what kube's `ValidateDeleteOptions` refuses.
    pub fn parse(body: &Value, query: &Query) -> Result<DeleteOptions, ApiError> {
        let has_body = body.as_object().is_some_and(|fields| !fields.is_empty());
        let grace = if has_body {
            body.get("gracePeriodSeconds").and_then(Value::as_i64)
        } else {
            query.grace_period_seconds
        };
        let policy = if has_body {
            body.get("propagationPolicy").and_then(Value::as_str).map(str::to_owned)
        } else {
            query.propagation_policy.clone()
        };
        let orphan = if has_body {
            body.get("orphanDependents").and_then(Value::as_bool)
        } else {
            query.orphan_dependents
        };
        let mut causes = Vec::new();
        if orphan.is_some() && policy.is_some() {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: OrphanDependents and DeletionPropagation cannot be both set",
                    orphan.unwrap_or_default()
                ),
                field: "orphanDependents".into(),
            });
        }
        let propagation = match policy.as_deref() {
            None => orphan.map(|orphan| if orphan { Propagation::Orphan } else { Propagation::Background }),
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                causes.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                    field: "propagationPolicy".into(),
                });
                None
            }
        };
        if !causes.is_empty() {
            let subject =
                Subject { group: "meta.k8s.io", plural: "deleteoptions", kind: "DeleteOptions", name: "" };
            return Err(ApiError::invalid(subject, &causes));
        }
        Ok(DeleteOptions {
            grace_period_seconds: grace.map(|grace| if grace < 0 { 1 } else { grace }),
            propagation,
            orphan_dependents: orphan,
        })
    }

    /// The answer's code when the object stays: 202 only for `orphanDependents: false`.
    pub fn pending_code(&self) -> http::StatusCode {
        if self.orphan_dependents == Some(false) {
            http::StatusCode::ACCEPTED
        } else {
            http::StatusCode::OK
        }
    }
}

/// What to do with the object.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Store this (the object marked for deletion, or with a shorter grace period) and answer
    /// with it; it stays.
    Mark(Value),
    /// Deletion is under way already and this request changes nothing: answer with the object.
    Pending,
    /// Delete it now.
    DeleteNow,
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn bump_generation(object: &mut Value) {
    if let Some(generation) = object.pointer("/metadata/generation").and_then(Value::as_i64) {
        if generation > 0 {
            object["metadata"]["generation"] = json!(generation + 1);
        }
    }
}

/// The plan for a DELETE of `object` (as stored) with `options`, at `now`; `pod` for the pods
/// resource (the only built-in type with graceful deletion).
pub fn plan(object: &Value, pod: bool, options: &DeleteOptions, now: SystemTime) -> Plan {
    let mut marked = object.clone();
    let deletion_timestamp = object.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let mut graceful_period = None;
    if pod {
        match deletion_timestamp {
            Some(stamp) => {
                let current = object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
                if let Some(current) = current.filter(|&current| current > 0) {
                    match options.grace_period_seconds {
                        Some(shorter) if shorter < current => {
                            let marked_at = humantime::parse_rfc3339_weak(stamp).unwrap_or(now);
                            let started =
                                marked_at.checked_sub(Duration::from_secs(current as u64)).unwrap_or(now);
                            let deadline = started + Duration::from_secs(shorter as u64);
                            marked["metadata"]["deletionTimestamp"] = json!(timestamp(deadline));
                            marked["metadata"]["deletionGracePeriodSeconds"] = json!(shorter);
                            graceful_period = Some(shorter);
                        }
                        _ => return Plan::Pending,
                    }
                }
            }
            None => {
                let mut period = options.grace_period_seconds.unwrap_or_else(|| {
                    object.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0)
                });
                let scheduled = object
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|node| !node.is_empty());
                let phase = object.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
                if !scheduled || matches!(phase, "Succeeded" | "Failed") {
                    period = 0;
                }
                let period = period.max(0);
                marked["metadata"]["deletionTimestamp"] =
                    json!(timestamp(now + Duration::from_secs(period as u64)));
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(period);
                bump_generation(&mut marked);
                graceful_period = Some(period);
            }
        }
    }
    // The garbage collector's finalizers, unless the deletion is already under way.
    if deletion_timestamp.is_none() {
        if let Some(policy) = options.propagation {
            let mut list = finalizers(&marked);
            list.retain(|finalizer| finalizer != "orphan" && finalizer != "foregroundDeletion");
            match policy {
                Propagation::Orphan => list.push("orphan".into()),
                Propagation::Foreground => list.push("foregroundDeletion".into()),
                Propagation::Background => {}
            }
            if list != finalizers(&marked) {
                marked["metadata"]["finalizers"] = json!(list);
            }
        }
    }
    let pending_finalizers = !finalizers(&marked).is_empty();
    match graceful_period {
        Some(period) if period > 0 || pending_finalizers => Plan::Mark(marked),
        Some(_) => Plan::DeleteNow,
        None if pending_finalizers => {
            // kube's markAsDeleting: grace 0, and a deletionTimestamp no later than now.
            if deletion_timestamp.is_none() {
                bump_generation(&mut marked);
            }
            let later = deletion_timestamp
                .and_then(|stamp| humantime::parse_rfc3339_weak(stamp).ok())
                .is_none_or(|at| at > now);
            if later {
                marked["metadata"]["deletionTimestamp"] = json!(timestamp(now));
            }
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if marked == *object {
                Plan::Pending
            } else {
                Plan::Mark(marked)
            }
        }
        None => Plan::DeleteNow,
    }
}

/// Whether an update of an object being deleted removes it: its last finalizer is gone and its
/// grace period was 0 (kube's `ShouldDeleteDuringUpdate`). A pod in its grace period stays until
/// its kubelet deletes it.
pub fn delete_during_update(old: &Value, new: &Value) -> bool {
    finalizers(new).is_empty()
        && new.pointer("/metadata/deletionTimestamp").is_some_and(|stamp| !stamp.is_null())
        && old.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64) == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn options(grace: Option<i64>, propagation: Option<Propagation>) -> DeleteOptions {
        DeleteOptions { grace_period_seconds: grace, propagation, orphan_dependents: None }
    }

    fn pod(node: &str, phase: &str) -> Value {
        json!({
            "metadata": {"name": "p", "generation": 1},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30},
            "status": {"phase": phase},
        })
    }

    #[test]
    fn a_scheduled_running_pod_is_marked_with_its_grace_period() {
        let now = at("2026-01-01T00:00:00Z");
        let Plan::Mark(marked) = plan(&pod("node-1", "Running"), true, &options(None, None), now) else {
            panic!("not marked")
        };
        assert_eq!(marked["metadata"]["deletionTimestamp"], "2026-01-01T00:00:30Z");
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert_eq!(marked["metadata"]["generation"], 2);
        // The request's period wins; a negative one is 1 s.
        let Plan::Mark(marked) = plan(&pod("node-1", "Running"), true, &options(Some(5), None), now) else {
            panic!("not marked")
        };
        assert_eq!(marked["metadata"]["deletionTimestamp"], "2026-01-01T00:00:05Z");
        let query = Query { grace_period_seconds: Some(-3), ..Query::default() };
        assert_eq!(DeleteOptions::parse(&json!({}), &query).unwrap().grace_period_seconds, Some(1));
    }

    #[test]
    fn unscheduled_finished_and_grace_0_pods_go_at_once() {
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(plan(&pod("", "Pending"), true, &options(None, None), now), Plan::DeleteNow);
        assert_eq!(plan(&pod("node-1", "Succeeded"), true, &options(None, None), now), Plan::DeleteNow);
        assert_eq!(plan(&pod("node-1", "Running"), true, &options(Some(0), None), now), Plan::DeleteNow);
        // Not a pod: no grace period.
        assert_eq!(plan(&pod("node-1", "Running"), false, &options(Some(30), None), now), Plan::DeleteNow);
    }

    #[test]
    fn a_later_delete_may_only_shorten_the_grace_period() {
        let now = at("2026-01-01T00:00:00Z");
        let Plan::Mark(marked) = plan(&pod("node-1", "Running"), true, &options(None, None), now) else {
            panic!("not marked")
        };
        let later = at("2026-01-01T00:00:10Z");
        assert_eq!(plan(&marked, true, &options(None, None), later), Plan::Pending);
        assert_eq!(plan(&marked, true, &options(Some(60), None), later), Plan::Pending);
        let Plan::Mark(shorter) = plan(&marked, true, &options(Some(10), None), later) else {
            panic!("not shortened")
        };
        assert_eq!(shorter["metadata"]["deletionTimestamp"], "2026-01-01T00:00:10Z");
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 10);
        // The kubelet's final delete, with grace 0.
        assert_eq!(plan(&marked, true, &options(Some(0), None), later), Plan::DeleteNow);
    }

    #[test]
    fn propagation_policies_set_the_garbage_collectors_finalizers() {
        let now = at("2026-01-01T00:00:00Z");
        let object = json!({"metadata": {"name": "rs", "finalizers": ["orphan"]}});
        let Plan::Mark(marked) = plan(&object, false, &options(None, Some(Propagation::Foreground)), now)
        else {
            panic!("not marked")
        };
        assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert_eq!(marked["metadata"]["deletionTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(plan(&object, false, &options(None, Some(Propagation::Background)), now), Plan::DeleteNow);
        // Marked already with the same finalizers: nothing changes.
        assert_eq!(plan(&marked, false, &options(None, None), at("2026-01-01T00:01:00Z")), Plan::Pending);
    }

    #[test]
    fn delete_options_are_validated_as_kube_validates_them() {
        let both = DeleteOptions::parse(
            &json!({"orphanDependents": true, "propagationPolicy": "Orphan"}),
            &Query::default(),
        );
        let error = both.unwrap_err();
        assert_eq!(error.code, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            error.message.contains("OrphanDependents and DeletionPropagation cannot be both set"),
            "{}",
            error.message
        );
        let bad =
            DeleteOptions::parse(&json!({"propagationPolicy": "Sideways"}), &Query::default()).unwrap_err();
        assert!(
            bad.message.contains("propagationPolicy: Unsupported value: \"Sideways\""),
            "{}",
            bad.message
        );
        let legacy = DeleteOptions::parse(&json!({"orphanDependents": false}), &Query::default()).unwrap();
        assert_eq!(legacy.propagation, Some(Propagation::Background));
        assert_eq!(legacy.pending_code(), http::StatusCode::ACCEPTED);
    }

    #[test]
    fn only_an_object_with_grace_0_goes_when_its_last_finalizer_is_removed() {
        let held = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0, "finalizers": ["x"]}});
        let released = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}});
        assert!(delete_during_update(&held, &released));
        let graceful = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30}});
        assert!(!delete_during_update(&graceful, &graceful));
    }
}
