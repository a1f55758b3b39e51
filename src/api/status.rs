//! Errors as Kubernetes `Status` objects: the one place errors of every layer become HTTP.

use bytes::Bytes;
use http::{header, StatusCode};
use serde_json::{json, Value};

use crate::cacher::object::Wire;
use crate::cacher::CacheError;
use crate::storage::StorageError;
use crate::validation::Cause;

/// An error answered with a `metav1.Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status code (also the Status's `code`).
    pub code: StatusCode,
    /// The Status's `reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details`, when the error is about one object.
    pub details: Option<Box<Value>>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

/// What an error is about, for its message and details.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// API group of the resource.
    pub group: &'a str,
    /// Plural resource name, e.g. `pods`.
    pub plural: &'a str,
    /// Kind, e.g. `Pod`.
    pub kind: &'a str,
    /// The object's name.
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut details = json!({ "name": self.name, "kind": self.plural });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None, retry_after: None }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(subject: Subject<'_>) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{}\" not found", subject.qualified(), subject.name),
        );
        error.details = Some(Box::new(subject.details()));
        error
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &http::Method) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(subject: Subject<'_>) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{}\" already exists", subject.qualified(), subject.name),
        );
        error.details = Some(Box::new(subject.details()));
        error
    }

    /// 409 Conflict on a stale resourceVersion or a failed precondition.
    pub fn conflict(subject: Subject<'_>, why: &str) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{}\": {why}", subject.qualified(), subject.name),
        );
        error.details = Some(Box::new(subject.details()));
        error
    }

    /// 422 Invalid with the causes.
    pub fn invalid(subject: Subject<'_>, causes: &[Cause]) -> ApiError {
        let summary: Vec<String> =
            causes.iter().map(|cause| format!("{}: {}", cause.field, cause.message)).collect();
        let message = if summary.len() == 1 {
            format!("{} \"{}\" is invalid: {}", subject.kind, subject.name, summary[0])
        } else {
            format!("{} \"{}\" is invalid: [{}]", subject.kind, subject.name, summary.join(", "))
        };
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
        let mut details = json!({ "name": subject.name, "kind": subject.kind, "causes": causes });
        if !subject.group.is_empty() {
            details["group"] = json!(subject.group);
        }
        error.details = Some(Box::new(details));
        error
    }

    /// 410 Gone (reason Expired): a resourceVersion or continue token too old.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }

    /// 431 Request Header Fields Too Large (kube has no reason for it: the reason is empty, as
    /// client-go's StatusReasonUnknown).
    pub fn headers_too_large(size: usize, limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "",
            format!("the request's headers are {size} bytes, more than the limit of {limit}"),
        )
    }

    /// 414 URI Too Long (kube has no reason for it either).
    pub fn uri_too_long(size: usize, limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            "",
            format!("the request URI is {size} bytes, more than the limit of {limit}"),
        )
    }

    /// 413 RequestEntityTooLarge, with kube-apiserver's message for a body over its limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 UnsupportedMediaType; `accepted` lists the media types the resource takes.
    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted} (got {content_type:?})"),
        )
    }

    /// 406 NotAcceptable; `accepted` lists the media types the resource is served in.
    pub fn not_acceptable(accepted: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!("only the following media types are accepted: {accepted}"),
        )
    }

    /// 429 TooManyRequests with Retry-After (`--max-requests-inflight` reached).
    pub fn too_many_requests() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        error.details = Some(Box::new(json!({ "retryAfterSeconds": 1 })));
        error.retry_after = Some(1);
        error
    }

    /// 429 TooManyRequests for an eviction a PodDisruptionBudget forbids, in kube's words, with
    /// the budget's reason as the cause.
    pub fn disruption_budget(cause: &str) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
        error.details = Some(Box::new(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]})));
        error
    }

    /// 429 TooManyRequests with Retry-After: the resource's cache has not synced yet
    /// (kube-apiserver 1.34's answer while its watch cache initializes).
    pub fn initializing() -> ApiError {
        let mut error =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "storage is (re)initializing");
        error.details = Some(Box::new(json!({ "retryAfterSeconds": 1 })));
        error.retry_after = Some(1);
        error
    }

    /// 401 Unauthorized: no valid credentials.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden: the authorizer refused `attributes`, in kube-apiserver's words, e.g.
    /// `pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" in the
    /// namespace "default"`, followed by `: <reason>` when the authorizer gave one.
    pub fn forbidden(attributes: &crate::auth::Attributes<'_>, reason: &str) -> ApiError {
        let user = &attributes.user.name;
        let verb = attributes.verb;
        let mut message = if !attributes.resource_request {
            format!("forbidden: User {user:?} cannot {verb} path {:?}", attributes.path)
        } else {
            let mut resource = attributes.resource.to_owned();
            if !attributes.subresource.is_empty() {
                resource = format!("{resource}/{}", attributes.subresource);
            }
            let qualified = if attributes.api_group.is_empty() {
                attributes.resource.to_owned()
            } else {
                format!("{}.{}", attributes.resource, attributes.api_group)
            };
            let subject = if attributes.name.is_empty() {
                qualified
            } else {
                format!("{qualified} {:?}", attributes.name)
            };
            let scope = if attributes.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", attributes.namespace)
            };
            format!(
                "{subject} is forbidden: User {user:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
                attributes.api_group
            )
        };
        if !reason.is_empty() {
            message = format!("{message}: {reason}");
        }
        let mut error = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
        if attributes.resource_request {
            let mut details = json!({ "name": attributes.name, "kind": attributes.resource });
            if !attributes.api_group.is_empty() {
                details["group"] = json!(attributes.api_group);
            }
            error.details = Some(Box::new(details));
        }
        error
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// 503 ServiceUnavailable with Retry-After.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
        error.retry_after = Some(1);
        error
    }

    /// 403 Forbidden about `subject`, for a reason other than authorization (kube's admission
    /// refusals): `configmaps "x" is forbidden: why`.
    pub fn forbidden_subject(subject: Subject<'_>, why: &str) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} \"{}\" is forbidden: {why}", subject.qualified(), subject.name),
        );
        error.details = Some(Box::new(subject.details()));
        error
    }

    /// Adds `causes` to the error's details.
    pub fn set_causes(&mut self, causes: &[crate::validation::Cause]) {
        let details = self.details.get_or_insert_with(|| Box::new(json!({})));
        details["causes"] = json!(causes);
    }

    /// 507 Insufficient Storage: storage has no space left for the write. Not retried by clients
    /// (no Retry-After): space comes back only when an operator frees it.
    pub fn insufficient_storage(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", message)
    }

    /// 504 Timeout: "Too large resource version".
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        );
        error.details = Some(Box::new(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        })));
        error.retry_after = Some(1);
        error
    }

    /// A storage error about `subject`.
    pub fn from_storage(error: StorageError, subject: Subject<'_>) -> ApiError {
        match error {
            StorageError::NotFound { .. } => ApiError::not_found(subject),
            StorageError::AlreadyExists { .. } => ApiError::already_exists(subject),
            StorageError::Conflict { .. } => ApiError::conflict(
                subject,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            StorageError::Compacted { requested, compacted } => ApiError::expired(format!(
                "The resourceVersion for the provided list is too old: {requested} (oldest: {compacted})"
            )),
            StorageError::FutureRevision { requested, current } => {
                ApiError::too_large_resource_version(requested, current)
            }
            StorageError::ValueTooLarge { size, limit, .. } => {
                let mut error = ApiError::too_large(limit);
                error.message =
                    format!("the object is {size} bytes, over the storage limit of {limit} bytes");
                error
            }
            StorageError::InvalidKey { key, reason } => {
                ApiError::bad_request(format!("invalid object key {key:?}: {reason}"))
            }
            StorageError::Unavailable(message) => ApiError::unavailable(message),
            StorageError::NoSpace(message) => ApiError::insufficient_storage(message),
            other => ApiError::internal(other.to_string()),
        }
    }

    /// A cache error about `subject`.
    pub fn from_cache(error: CacheError, subject: Subject<'_>) -> ApiError {
        match error {
            CacheError::TooOld(too_old) => ApiError::expired(too_old.to_string()),
            CacheError::Expired { revision } => ApiError::expired(format!(
                "The provided continue parameter is too old to display a consistent list result (revision {revision}). You can start a new list without the continue parameter."
            )),
            CacheError::TooLargeResourceVersion { requested, current } => {
                ApiError::too_large_resource_version(requested, current)
            }
            CacheError::Storage(error) => ApiError::from_storage(error, subject),
            CacheError::NotReady => ApiError::initializing(),
            CacheError::Closed => ApiError::unavailable("the server is shutting down"),
            other => ApiError::internal(other.to_string()),
        }
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = (**details).clone();
        }
        status
    }

    /// The HTTP response, with a JSON Status.
    pub fn to_response(&self) -> http::Response<super::Body> {
        self.to_response_in(Wire::Json)
    }

    /// The HTTP response, with the Status in `wire`'s form.
    pub fn to_response_in(&self, wire: Wire) -> http::Response<super::Body> {
        let mut response = http::Response::builder()
            .status(self.code)
            .header(header::CONTENT_TYPE, super::negotiate::content_type(wire))
            .header(header::CACHE_CONTROL, "no-cache, private");
        if let Some(seconds) = self.retry_after {
            response = response.header(header::RETRY_AFTER, seconds.to_string());
        }
        let body = match wire {
            Wire::Json => serde_json::to_vec(&self.to_status()).expect("Status encodes"),
            Wire::Protobuf => {
                crate::protobuf::schema().encode_object(&self.to_status()).expect("Status encodes")
            }
        };
        response.body(super::full(Bytes::from(body))).expect("valid response")
    }
}
