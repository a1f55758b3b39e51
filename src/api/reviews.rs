//! The review APIs: create-only virtual resources that are evaluated, answered and never
//! stored (no watch cache, no storage). SubjectAccessReview, the namespaced
//! LocalSubjectAccessReview, SelfSubjectAccessReview and SelfSubjectRulesReview
//! (authorization.k8s.io/v1: `kubectl auth can-i`, `--list`), and
//! SelfSubjectReview (authentication.k8s.io/v1: `kubectl auth whoami`).
//!
//! The requesting user is the authenticated `Arc<UserInfo>` in the request's extensions, or the
//! loopback admin when there is none (no authentication). Bodies are JSON or Kubernetes
//! protobuf, as for stored built-in types.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::status::ApiError;
use super::{negotiate, ApiState, Body};
use crate::auth::{Attributes, Decision, UserInfo};
use crate::cacher::object::Wire;

/// A review resource, as discovery lists it.
pub struct Review {
    /// API group.
    pub group: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether it is created in a namespace (LocalSubjectAccessReview).
    pub namespaced: bool,
}

/// Every review resource (all `v1`, verbs [create]).
pub const REVIEWS: &[Review] = &[
    Review {
        group: "authentication.k8s.io",
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        plural: "localsubjectaccessreviews",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
    },
    Review {
        group: "authorization.k8s.io",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
    },
];

/// The review at `group`/`version`/`plural`, for a collection path in a namespace or not.
pub fn find(group: &str, version: &str, plural: &str, namespaced: bool) -> Option<&'static Review> {
    (version == "v1").then(|| {
        REVIEWS.iter().find(|review| {
            review.group == group && review.plural == plural && review.namespaced == namespaced
        })
    })?
}

/// 422 Invalid for one field of a review, worded as kube-apiserver words it.
fn invalid(review: &Review, field: &str, value: &Value, why: &str) -> ApiError {
    let value = match value {
        Value::String(text) => format!("{text:?}"),
        Value::Null => "\"\"".to_owned(),
        other => other.to_string(),
    };
    let cause = crate::validation::Cause {
        reason: "FieldValueInvalid".to_owned(),
        message: format!("Invalid value: {value}: {why}"),
        field: field.to_owned(),
    };
    let subject =
        super::status::Subject { group: review.group, plural: review.plural, kind: review.kind, name: "" };
    let mut error = ApiError::invalid(subject, std::slice::from_ref(&cause));
    error.message = format!("{}.{} \"\" is invalid: {field}: {}", review.kind, review.group, cause.message);
    error
}

/// The subject of a (Local)SubjectAccessReview's spec: 422 unless it names a user or a group.
fn subject_of(review: &Review, spec: &Value) -> Result<UserInfo, ApiError> {
    let user_name = spec["user"].as_str().unwrap_or_default();
    let groups: Vec<String> = strings(&spec["groups"]);
    if user_name.is_empty() && groups.is_empty() {
        return Err(invalid(
            review,
            "spec.user",
            &json!(""),
            "at least one of user or group must be specified",
        ));
    }
    Ok(UserInfo {
        name: user_name.to_owned(),
        uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
        groups,
        extra: spec["extra"]
            .as_object()
            .map(|extra| extra.iter().map(|(key, values)| (key.clone(), strings(values))).collect())
            .unwrap_or_default(),
    })
}

/// Evaluates the review in `body` (posted in `namespace`, for a namespaced review) and
/// answers it.
pub fn handle(
    state: &ApiState,
    review: &Review,
    namespace: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    user: &UserInfo,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(method));
    }
    let response_wire = negotiate::response_wire(headers, true)?;
    let mut object: Value = match negotiate::request_wire(headers, true)? {
        Wire::Json => serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("the request body is not valid JSON: {error}")))?,
        Wire::Protobuf => crate::protobuf::schema().decode_object(body).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid protobuf: {error}"))
        })?,
    };
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body is not an object"));
    }
    object["apiVersion"] = json!(format!("{}/v1", review.group));
    object["kind"] = json!(review.kind);
    let status = match review.kind {
        "SelfSubjectReview" => json!({"userInfo": user_info(user)}),
        "SubjectAccessReview" => {
            let subject = subject_of(review, &object["spec"])?;
            access(state, review, &subject, &object["spec"])?
        }
        "LocalSubjectAccessReview" => {
            let namespace = namespace.unwrap_or_default();
            if object.get("metadata").is_none_or(|metadata| !metadata.is_object()) {
                object["metadata"] = json!({});
            }
            // As kube's create handler: the object's namespace is the request's.
            match object["metadata"]["namespace"].as_str().unwrap_or_default() {
                "" => object["metadata"]["namespace"] = json!(namespace),
                given if given == namespace => {}
                _ => return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                )),
            }
            let spec = &object["spec"];
            let subject = subject_of(review, spec)?;
            if spec["nonResourceAttributes"].is_object() {
                return Err(invalid(
                    review,
                    "spec.nonResourceAttributes",
                    &spec["nonResourceAttributes"],
                    "disallowed on this kind of request",
                ));
            }
            let asked = &spec["resourceAttributes"]["namespace"];
            if spec["resourceAttributes"].is_object() && asked.as_str().unwrap_or_default() != namespace {
                return Err(invalid(
                    review,
                    "spec.resourceAttributes.namespace",
                    asked,
                    "must match metadata.namespace",
                ));
            }
            access(state, review, &subject, spec)?
        }
        "SelfSubjectAccessReview" => access(state, review, user, &object["spec"])?,
        "SelfSubjectRulesReview" => {
            let namespace = object["spec"]["namespace"].as_str().unwrap_or_default();
            let rules = state.authorizer.rules_for(user, namespace);
            let mut status = json!({
                "resourceRules": rules.resource_rules,
                "nonResourceRules": rules.non_resource_rules,
                "incomplete": rules.incomplete,
            });
            if !rules.evaluation_error.is_empty() {
                status["evaluationError"] = json!(rules.evaluation_error);
            }
            status
        }
        _ => return Err(ApiError::no_route()),
    };
    object["status"] = status;
    if object.get("metadata").is_none_or(|metadata| !metadata.is_object()) {
        object["metadata"] = json!({});
    }
    object["metadata"]["creationTimestamp"] = Value::Null;
    let bytes = match response_wire {
        Wire::Json => Bytes::from(serde_json::to_vec(&object).expect("JSON value encodes")),
        Wire::Protobuf => Bytes::from(
            crate::protobuf::schema()
                .encode_object(&object)
                .map_err(|error| ApiError::bad_request(format!("cannot encode the review: {error}")))?,
        ),
    };
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header(http::header::CONTENT_TYPE, negotiate::content_type(response_wire))
        .body(super::full(bytes))
        .expect("valid response"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn user_info(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// The status of a (Self)SubjectAccessReview with `spec`, asked as `user`.
fn access(state: &ApiState, review: &Review, user: &UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let resource = &spec["resourceAttributes"];
    let non_resource = &spec["nonResourceAttributes"];
    let text = |value: &Value, field: &str| value[field].as_str().unwrap_or_default().to_owned();
    let (resource_request, source) = match (resource.is_object(), non_resource.is_object()) {
        (true, false) => (true, resource),
        (false, true) => (false, non_resource),
        (true, true) => {
            return Err(invalid(
                review,
                "spec.nonResourceAttributes",
                non_resource,
                "cannot be specified in combination with resourceAttributes",
            ))
        }
        (false, false) => {
            return Err(invalid(
                review,
                "spec.resourceAttributes",
                &Value::Null,
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    let (verb, path, group, version, namespace, plural, subresource, name) = (
        text(source, "verb"),
        text(source, "path"),
        text(source, "group"),
        text(source, "version"),
        text(source, "namespace"),
        text(source, "resource"),
        text(source, "subresource"),
        text(source, "name"),
    );
    let attributes = Attributes {
        user,
        verb: &verb,
        resource_request,
        path: &path,
        api_group: &group,
        api_version: &version,
        namespace: &namespace,
        resource: &plural,
        subresource: &subresource,
        name: &name,
    };
    Ok(match state.authorizer.authorize(&attributes) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    })
}

/// The requesting user: the authenticated one, or the loopback admin without authentication.
pub fn requesting_user<T>(request: &http::Request<T>) -> Arc<UserInfo> {
    request
        .extensions()
        .get::<Arc<UserInfo>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(UserInfo::loopback_admin()))
}
