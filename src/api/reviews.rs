//! The review APIs: create-only virtual resources that are evaluated, answered and never
//! stored (no watch cache, no storage). SubjectAccessReview, SelfSubjectAccessReview and
//! SelfSubjectRulesReview (authorization.k8s.io/v1: `kubectl auth can-i`, `--list`), and
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
}

/// Every review resource (all `v1`, cluster-scoped, verbs [create]).
pub const REVIEWS: &[Review] = &[
    Review { group: "authentication.k8s.io", plural: "selfsubjectreviews", kind: "SelfSubjectReview" },
    Review {
        group: "authorization.k8s.io",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
    },
    Review {
        group: "authorization.k8s.io",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
    },
    Review { group: "authorization.k8s.io", plural: "subjectaccessreviews", kind: "SubjectAccessReview" },
];

/// The review at `group`/`version`/`plural`, for a cluster-scoped collection path.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Review> {
    (version == "v1")
        .then(|| REVIEWS.iter().find(|review| review.group == group && review.plural == plural))?
}

/// Evaluates the review in `body` and answers it.
pub fn handle(
    state: &ApiState,
    review: &Review,
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
            let spec = &object["spec"];
            let user_name = spec["user"].as_str().unwrap_or_default();
            let groups: Vec<String> = strings(&spec["groups"]);
            if user_name.is_empty() && groups.is_empty() {
                return Err(ApiError::bad_request(
                    "SubjectAccessReview.authorization.k8s.io is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            let subject = UserInfo {
                name: user_name.to_owned(),
                uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
                groups,
                extra: spec["extra"]
                    .as_object()
                    .map(|extra| extra.iter().map(|(key, values)| (key.clone(), strings(values))).collect())
                    .unwrap_or_default(),
            };
            access(state, &subject, spec)?
        }
        "SelfSubjectAccessReview" => access(state, user, &object["spec"])?,
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
fn access(state: &ApiState, user: &UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let resource = &spec["resourceAttributes"];
    let non_resource = &spec["nonResourceAttributes"];
    let text = |value: &Value, field: &str| value[field].as_str().unwrap_or_default().to_owned();
    let (resource_request, source) = match (resource.is_object(), non_resource.is_object()) {
        (true, false) => (true, resource),
        (false, true) => (false, non_resource),
        (true, true) => {
            return Err(ApiError::bad_request(
                "spec.nonResourceAttributes: Invalid value: cannot be specified in combination with resourceAttributes",
            ))
        }
        (false, false) => {
            return Err(ApiError::bad_request(
                "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
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
