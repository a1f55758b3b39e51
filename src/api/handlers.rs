//! The resource verbs: get, list, watch, create, update, patch, delete, deletecollection, and
//! the status subresource.
//!
//! Reads and watches are served by the resource's watch cache. Writes go to storage with a
//! compare-and-swap on the revision they read (retried on a conflict unless the client gave a
//! resourceVersion); the cache sees them through its watch like any other write.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::negotiate;
use super::printers::{self, TableOptions};
use super::request::{ContinueToken, Query, ResourcePath};
use super::status::{ApiError, Subject};
use super::{full, ApiState, Body};
use crate::cacher::object::{CachedObject, Wire};
use crate::cacher::{ListRequest, ReadVersion, WatchFilter};
use crate::patch::{self, PatchType};
use crate::protobuf;
use crate::registry::{Resource, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{KeyValue, StorageError};
use crate::validation::{self, Cause};

/// The largest request body accepted: 3 MiB (kube-apiserver's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// One request on a resource, resolved.
pub struct Target {
    /// The resource type and its cache.
    pub resource: Arc<Resource>,
    /// The namespace from the path.
    pub namespace: Option<String>,
    /// The name from the path.
    pub name: Option<String>,
    /// The subresource from the path.
    pub subresource: Option<String>,
}

impl Target {
    /// Resolves a parsed path against the registry.
    pub fn resolve(state: &ApiState, path: &ResourcePath) -> Result<Target, ApiError> {
        let plural = path.plural.as_deref().ok_or_else(ApiError::no_route)?;
        // The legacy `POST /api/v1/namespaces/NS/bindings` is the pods' `binding` subresource
        // with the pod's name in the body.
        if path.group.is_empty() && plural == "bindings" && path.name.is_none() && path.namespace.is_some() {
            let resource = state.registry.get("", &path.version, "pods").ok_or_else(ApiError::no_route)?;
            return Ok(Target {
                resource,
                namespace: path.namespace.clone(),
                name: None,
                subresource: Some("binding".into()),
            });
        }
        let resource =
            state.registry.get(&path.group, &path.version, plural).ok_or_else(ApiError::no_route)?;
        if path.namespace.is_some() && !resource.ty.namespaced {
            return Err(ApiError::no_route());
        }
        if let Some(subresource) = &path.subresource {
            let served = match subresource.as_str() {
                "status" => resource.ty.status_subresource,
                "scale" => resource.ty.scale_subresource,
                other => resource.ty.post_subresources.iter().any(|served| served == other),
            };
            if !served || path.name.is_none() {
                return Err(ApiError::no_route());
            }
        }
        Ok(Target {
            resource,
            namespace: path.namespace.clone(),
            name: path.name.clone(),
            subresource: path.subresource.clone(),
        })
    }

    fn ty(&self) -> &ResourceType {
        &self.resource.ty
    }

    fn scale(&self) -> bool {
        self.subresource.as_deref() == Some("scale")
    }

    fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject { group: &self.ty().group, plural: &self.ty().plural, kind: &self.ty().kind, name }
    }

    fn key(&self, name: &str) -> String {
        self.ty().key(self.namespace.as_deref(), name)
    }
}

/// A JSON response.
pub fn json_response(code: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response")
}

/// A response body in `wire`'s form.
fn wire_response(wire: Wire, code: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, negotiate::content_type(wire))
        .body(full(body))
        .expect("valid response")
}

/// An object in `wire`'s form (its JSON carries `apiVersion` and `kind`).
fn object_response(wire: Wire, code: StatusCode, object: &Value) -> Response<Body> {
    match wire {
        Wire::Json => {
            json_response(code, Bytes::from(serde_json::to_vec(object).expect("JSON value encodes")))
        }
        Wire::Protobuf => match protobuf::schema().encode_object(object) {
            Ok(encoded) => wire_response(wire, code, Bytes::from(encoded)),
            Err(error) => ApiError::internal(format!("the object cannot be encoded as protobuf: {error}"))
                .to_response_in(wire),
        },
    }
}

/// A cached object in `wire`'s form, from the bytes the cache keeps for it.
fn cached_response(wire: Wire, ty: &ResourceType, object: &CachedObject) -> Result<Response<Body>, ApiError> {
    Ok(match wire {
        Wire::Json => json_response(StatusCode::OK, object.json.clone()),
        Wire::Protobuf => {
            let encoded = object.protobuf(&ty.cache_config()).map_err(|error| {
                ApiError::internal(format!(
                    "the object {} cannot be encoded as protobuf: {error}",
                    object.key
                ))
            })?;
            wire_response(wire, StatusCode::OK, encoded.clone())
        }
    })
}

/// The decoded body of a write, after the content type and size checks: JSON, or protobuf
/// for a built-in type.
pub fn decode_body(headers: &HeaderMap, body: &[u8], ty: &ResourceType) -> Result<Value, ApiError> {
    decode_in(negotiate::request_wire(headers, ty.protobuf())?, body)
}

fn decode_in(wire: Wire, body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = match wire {
        Wire::Json => serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("the request body is not valid JSON: {error}")))?,
        Wire::Protobuf => protobuf::schema().decode_object(body).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid protobuf: {error}"))
        })?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(value)
}

/// A built-in object must have the shape of its Go type (kube-apiserver could not decode it
/// otherwise): checked by encoding it, before it is stored.
fn check_schema(object: &Value, ty: &ResourceType) -> Result<(), ApiError> {
    if !ty.protobuf() {
        return Ok(());
    }
    protobuf::schema().encode_object(object).map(drop).map_err(|error| {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {error}",
            kind = ty.kind,
            version = ty.version
        ))
    })
}

/// The body of a DELETE: `DeleteOptions` in JSON or protobuf (which every resource takes).
fn decode_options(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    decode_in(negotiate::request_wire(headers, true)?, body)
}

/// Checks (and fills in, when missing) `apiVersion` and `kind`.
fn check_type(object: &mut Value, ty: &ResourceType) -> Result<(), ApiError> {
    let api_version = ty.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(api_version),
        Some(given) if given == api_version => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
            "the API version in the data ({given}) does not match the expected API version ({api_version})"
        )))
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(ty.kind),
        Some(given) if given == ty.kind => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                ty.kind
            )))
        }
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        if object.get("metadata").is_some_and(|metadata| !metadata.is_null()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        object["metadata"] = json!({});
    }
    Ok(())
}

/// The defaults kube-apiserver's decoding gives the fields that clients may leave out and
/// that readers rely on: a Secret's `type` is `Opaque`.
fn apply_defaults(object: &mut Value, ty: &ResourceType) {
    if ty.group.is_empty()
        && ty.plural == "secrets"
        && object.get("type").and_then(Value::as_str).is_none_or(str::is_empty)
    {
        object["type"] = json!("Opaque");
    }
    for (group, plural, defaults) in DEFAULTS {
        if ty.group == *group && ty.plural == *plural {
            defaults(object);
        }
    }
}

/// kube-apiserver's defaulting functions (`SetDefaults_*` of pkg/apis/*/v1), per type.
type Defaulter = fn(&mut Value);

const DEFAULTS: &[(&str, &str, Defaulter)] = &[
    ("", "pods", default_pod),
    ("", "services", default_service),
    ("", "namespaces", default_namespace),
    ("apps", "deployments", default_deployment),
];

/// Sets `object[field]` when it is absent or null (an object is made of a non-object first).
fn default_field(object: &mut Value, field: &str, value: Value) {
    if !object.is_object() {
        *object = json!({});
    }
    if object.get(field).is_none_or(Value::is_null) {
        object[field] = value;
    }
}

fn default_pod_spec(spec: &mut Value) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers.iter_mut().filter(|container| container.is_object()) {
                let image = container.get("image").and_then(Value::as_str).unwrap_or("");
                // The tag is what follows the last ':' after the last '/' (a registry port is not a tag).
                let without_digest = image.split('@').next().unwrap_or("");
                let last_part = without_digest.rsplit('/').next().unwrap_or("");
                let tag = last_part.split_once(':').map(|(_, tag)| tag);
                let policy = if image.contains('@') {
                    "IfNotPresent"
                } else {
                    match tag {
                        None | Some("latest") => "Always",
                        Some(_) => "IfNotPresent",
                    }
                };
                default_field(container, "imagePullPolicy", json!(policy));
                default_field(container, "terminationMessagePath", json!("/dev/termination-log"));
                default_field(container, "terminationMessagePolicy", json!("File"));
            }
        }
    }
}

fn default_pod(pod: &mut Value) {
    default_field(pod, "spec", json!({}));
    default_pod_spec(&mut pod["spec"]);
    default_field(pod, "status", json!({}));
    default_field(&mut pod["status"], "phase", json!("Pending"));
}

fn default_service(service: &mut Value) {
    default_field(service, "spec", json!({}));
    let spec = &mut service["spec"];
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter(|port| port.is_object()) {
            default_field(port, "protocol", json!("TCP"));
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(number)) => number.as_i64() == Some(0),
                Some(Value::String(text)) => text.is_empty(),
                Some(_) => false,
            };
            if unset {
                if let Some(number) = port.get("port").cloned() {
                    port["targetPort"] = number;
                }
            }
        }
    }
}

fn default_namespace(namespace: &mut Value) {
    if let Some(name) = namespace.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned) {
        default_field(&mut namespace["metadata"], "labels", json!({}));
        // Labels that are not an object are left to validation (a 4xx), not indexed.
        if let Some(labels) = namespace["metadata"]["labels"].as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    default_field(namespace, "spec", json!({}));
    default_field(&mut namespace["spec"], "finalizers", json!(["kubernetes"]));
    default_field(namespace, "status", json!({}));
    default_field(&mut namespace["status"], "phase", json!("Active"));
}

fn default_deployment(deployment: &mut Value) {
    default_field(deployment, "spec", json!({}));
    let spec = &mut deployment["spec"];
    default_field(spec, "replicas", json!(1));
    default_field(spec, "strategy", json!({}));
    default_field(&mut spec["strategy"], "type", json!("RollingUpdate"));
    if spec["strategy"]["type"] == "RollingUpdate" {
        default_field(&mut spec["strategy"], "rollingUpdate", json!({}));
        default_field(&mut spec["strategy"]["rollingUpdate"], "maxUnavailable", json!("25%"));
        default_field(&mut spec["strategy"]["rollingUpdate"], "maxSurge", json!("25%"));
    }
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "progressDeadlineSeconds", json!(600));
    if let Some(template_spec) = spec.pointer_mut("/template/spec") {
        default_pod_spec(template_spec);
    }
}

fn metadata(object: &Value) -> &Map<String, Value> {
    object["metadata"].as_object().expect("checked to be an object")
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    object["metadata"].as_object_mut().expect("checked to be an object")
}

fn text<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    map.get(field).and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// Checks the namespace in the body against the path, filling it in when missing.
fn check_namespace(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let given = text(metadata(object), "namespace").map(str::to_owned);
    match (&target.namespace, given) {
        (Some(path), Some(given)) if *path != given => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        (Some(path), None) => {
            metadata_mut(object).insert("namespace".into(), json!(path));
            Ok(())
        }
        (None, Some(_)) if !target.ty().namespaced => {
            metadata_mut(object).remove("namespace");
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn random_suffix() -> String {
    // kube's alphabet for generated names: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5].iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect()
}

/// Stamps `metadata.resourceVersion` on a stored value, for a response.
fn stamped(kv: &KeyValue, revision: u64) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|error| ApiError::internal(format!("stored object at {} is not JSON: {error}", kv.key)))?;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("resourceVersion".into(), json!(revision.to_string()));
    }
    Ok(object)
}

fn encode_for_storage(object: &Value) -> Bytes {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        // Storage's revision is the resourceVersion; it is never stored.
        metadata.remove("resourceVersion");
        metadata.remove("selfLink");
    }
    Bytes::from(serde_json::to_vec(&object).expect("JSON value encodes"))
}

fn validate(object: &Value, ty: &ResourceType, creating: bool, name: &str) -> Result<(), ApiError> {
    let causes = validation::validate_metadata(object, ty.name_rule, ty.namespaced, creating);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            Subject { group: &ty.group, plural: &ty.plural, kind: &ty.kind, name },
            &causes,
        ))
    }
}

/// Checks that the namespace of a create exists and is not being deleted (kube's
/// NamespaceLifecycle admission); `created` names the object for the 403.
async fn require_namespace(state: &ApiState, namespace: &str, created: Subject<'_>) -> Result<(), ApiError> {
    let namespaces = state.registry.get("", "v1", "namespaces").expect("namespaces are built in");
    let key = namespaces.ty.key(None, namespace);
    let found = namespaces
        .cacher
        .get(&key, ReadVersion::Any)
        .await
        .map_err(|error| ApiError::from_cache(error, namespace_subject(namespace)))?;
    let stored = match found {
        Some(object) => object.json.clone(),
        // The cache may lag a namespace created a moment ago: ask storage before refusing.
        None => match state.registry.storage().get(&key).await {
            Ok(Some(kv)) => kv.value,
            Ok(None) => return Err(ApiError::not_found(namespace_subject(namespace))),
            Err(error) => return Err(ApiError::from_storage(error, namespace_subject(namespace))),
        },
    };
    let terminating = serde_json::from_slice::<Value>(&stored)
        .is_ok_and(|object| super::namespaces::is_terminating_now(&object));
    if terminating {
        return Err(super::namespaces::terminating(created, namespace));
    }
    Ok(())
}

fn namespace_subject(name: &str) -> Subject<'_> {
    Subject { group: "", plural: "namespaces", kind: "Namespace", name }
}

// ---------------------------------------------------------------------------------------------
// Reads

/// GET of one object (a one-row Table for `kubectl get <kind> <name>`).
pub async fn get(
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let name = target.name.as_deref().expect("an item path");
    let version = query.read_version()?;
    let table = table_options(headers, query)?;
    let object = target
        .resource
        .cacher
        .get(&target.key(name), version)
        .await
        .map_err(|error| ApiError::from_cache(error, target.subject(name)))?
        .ok_or_else(|| ApiError::not_found(target.subject(name)))?;
    if target.scale() {
        let decoded: Value = serde_json::from_slice(&object.json).map_err(|error| {
            ApiError::internal(format!("the cached object {} is not JSON: {error}", object.key))
        })?;
        return Ok(object_response(wire, StatusCode::OK, &scale_of(&decoded)));
    }
    if let Some(options) = table {
        let decoded: Value = serde_json::from_slice(&object.json).map_err(|error| {
            ApiError::internal(format!("the cached object {} is not JSON: {error}", object.key))
        })?;
        return Ok(object_response(
            Wire::Json,
            StatusCode::OK,
            &printers::object_table(target.ty(), &decoded, &options),
        ));
    }
    cached_response(wire, target.ty(), &object)
}

/// POST of an authentication.k8s.io/v1 TokenRequest on `serviceaccounts/NAME/token`: a
/// signed ServiceAccount token for the (existing) service account.
async fn token_request(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let name = target.name.as_deref().expect("an item path");
    let namespace = target.namespace.as_deref().unwrap_or("");
    // TokenRequest is a built-in type: JSON or protobuf, as kubectl sends it.
    let wire = negotiate::response_wire(headers, true)?;
    let issuer =
        state.authenticator.service_accounts().filter(|issuer| issuer.can_issue()).ok_or_else(|| {
            ApiError::not_found(Subject {
                group: "",
                plural: "serviceaccounts/token",
                kind: "TokenRequest",
                name,
            })
        })?;
    let account = target
        .resource
        .cacher
        .get(&target.key(name), query.read_version()?)
        .await
        .map_err(|error| ApiError::from_cache(error, target.subject(name)))?
        .ok_or_else(|| ApiError::not_found(target.subject(name)))?;
    let account: Value = serde_json::from_slice(&account.json)
        .map_err(|error| ApiError::internal(format!("the cached service account is not JSON: {error}")))?;
    let uid = account.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut request: Value =
        if body.is_empty() { json!({}) } else { decode_in(negotiate::request_wire(headers, true)?, body)? };
    let seconds = match request.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(value) => match value.as_u64() {
            Some(seconds) if seconds >= 600 => seconds.min(48 * 3600),
            _ => {
                return Err(ApiError::bad_request(
                    "spec.expirationSeconds: may not specify a duration less than 10 minutes",
                ))
            }
        },
    };
    let audiences: Vec<String> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|audiences| audiences.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .filter(|audiences: &Vec<String>| !audiences.is_empty())
        .unwrap_or_else(|| issuer.audiences().to_vec());
    let bound = match request.pointer("/spec/boundObjectRef").filter(|bound| !bound.is_null()) {
        None => None,
        Some(reference) => Some(bound_object(state, namespace, name, reference)?),
    };
    let issued = issuer
        .issue(namespace, name, &uid, bound.as_ref(), audiences.clone(), seconds)
        .ok_or_else(|| ApiError::internal("the token could not be signed"))?;
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_secs(issued.expires);
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    let metadata = request.as_object_mut().expect("an object").entry("metadata").or_insert_with(|| json!({}));
    if metadata.is_object() {
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(namespace);
        metadata["creationTimestamp"] =
            json!(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    }
    let mut spec = json!({"audiences": audiences, "expirationSeconds": seconds});
    if let Some(reference) = request.pointer("/spec/boundObjectRef").filter(|bound| !bound.is_null()) {
        spec["boundObjectRef"] = reference.clone();
        if let Some(
            crate::auth::authn::BoundObject::Pod(_, uid) | crate::auth::authn::BoundObject::Secret(_, uid),
        ) = &bound
        {
            spec["boundObjectRef"]["uid"] = json!(uid);
        }
    }
    request["spec"] = spec;
    request["status"] = json!({
        "token": issued.token,
        "expirationTimestamp": humantime::format_rfc3339_seconds(expires).to_string(),
    });
    Ok(object_response(wire, StatusCode::CREATED, &request))
}

/// The Pod or Secret a TokenRequest's `boundObjectRef` names, as the watch cache has it, with
/// kube-apiserver's errors: 404 if it is not there, 400 for another kind or a Pod of another
/// service account, 409 if the reference's uid is not the object's.
fn bound_object(
    state: &ApiState,
    namespace: &str,
    account: &str,
    reference: &Value,
) -> Result<crate::auth::authn::BoundObject, ApiError> {
    let text = |field: &str| reference[field].as_str().unwrap_or_default();
    let (kind, name) = (text("kind"), text("name"));
    let api_version = reference["apiVersion"].as_str().unwrap_or("v1");
    let plural = match (api_version, kind) {
        ("v1", "Pod") => "pods",
        ("v1", "Secret") => "secrets",
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {api_version}, Kind={kind}"
            )))
        }
    };
    let subject = Subject { group: "", plural, kind, name };
    let resource = state.registry.get("", "v1", plural).ok_or_else(|| ApiError::not_found(subject))?;
    let snapshot = resource.cacher.current_snapshot();
    let object =
        snapshot.get(&resource.ty.key(Some(namespace), name)).ok_or_else(|| ApiError::not_found(subject))?;
    let object: Value = serde_json::from_slice(&object.json)
        .map_err(|error| ApiError::internal(format!("the cached {kind} is not JSON: {error}")))?;
    let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned();
    if plural == "pods" {
        let runs_as = object.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
        if runs_as != account {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
            )));
        }
    }
    let wanted = text("uid");
    if !wanted.is_empty() && wanted != uid {
        return Err(ApiError::conflict(
            subject,
            &format!("the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"),
        ));
    }
    Ok(match plural {
        "pods" => crate::auth::authn::BoundObject::Pod(name.to_owned(), uid),
        _ => crate::auth::authn::BoundObject::Secret(name.to_owned(), uid),
    })
}

/// The cache filter for a list or watch request.
pub fn watch_filter(target: &Target, query: &Query) -> Result<WatchFilter, ApiError> {
    let labels = LabelSelector::parse(&query.label_selector)
        .map_err(|error| ApiError::bad_request(format!("unable to parse labelSelector: {error}")))?;
    let config = target.ty().cache_config();
    let fields = FieldSelector::parse(&query.field_selector, &config.allowed_fields())
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(WatchFilter { namespace: target.namespace.clone(), labels, fields })
}

/// The list answer: `{"kind":...,"metadata":{...},"items":[...]}`, items' bytes reused as
/// encoded by the cache.
fn list_body(ty: &ResourceType, items: &[Arc<CachedObject>], revision: u64, next: Option<String>) -> Bytes {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let head = format!(
        r#"{{"kind":{},"apiVersion":{},"metadata":{},"items":["#,
        json!(ty.list_kind),
        json!(ty.api_version()),
        metadata
    );
    let size = head.len() + items.iter().map(|item| item.json.len() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(size);
    body.put_slice(head.as_bytes());
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&item.json);
    }
    body.put_slice(b"]}");
    body.freeze()
}

/// The list answer in `wire`'s form.
fn list_response(
    wire: Wire,
    ty: &ResourceType,
    items: &[Arc<CachedObject>],
    revision: u64,
    next: Option<String>,
) -> Result<Response<Body>, ApiError> {
    if wire == Wire::Json {
        return Ok(json_response(StatusCode::OK, list_body(ty, items, revision, next)));
    }
    let config = ty.cache_config();
    let schema = protobuf::schema();
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        let encoded = item.protobuf(&config).map_err(|error| {
            ApiError::internal(format!("the object {} cannot be encoded as protobuf: {error}", item.key))
        })?;
        messages.push(schema.message_bytes(encoded).expect("the cache's own encoding unwraps").to_vec());
    }
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let body = schema
        .encode_list(&ty.api_version(), &ty.list_kind, &metadata, messages.iter().map(Vec::as_slice))
        .map_err(|error| ApiError::internal(format!("the list cannot be encoded as protobuf: {error}")))?;
    Ok(wire_response(wire, StatusCode::OK, Bytes::from(body)))
}

/// LIST of a collection.
pub async fn list(
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let filter = watch_filter(target, query)?;
    let table_options = table_options(headers, query)?;
    let prefix = match &target.namespace {
        Some(namespace) => format!("{}{namespace}/", target.ty().storage_prefix),
        None => target.ty().storage_prefix.clone(),
    };
    let continue_from = match &query.continue_token {
        Some(token) => {
            if query.resource_version.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            if !token.within(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid for this list"));
            }
            Some((token.revision, token.after.clone()))
        }
        None => None,
    };
    let request = ListRequest { filter, limit: query.limit, continue_from, version: query.read_version()? };
    let listed = target
        .resource
        .cacher
        .list(&request)
        .await
        .map_err(|error| ApiError::from_cache(error, target.subject("")))?;
    let next = listed.continue_after.map(|after| ContinueToken { revision: listed.revision, after }.encode());
    if let Some(options) = table_options {
        return Ok(object_response(
            Wire::Json,
            StatusCode::OK,
            &table(target.ty(), &listed.items, listed.revision, next, &options),
        ));
    }
    list_response(wire, target.ty(), &listed.items, listed.revision, next)
}

/// The `meta.k8s.io` Table version the client asked for (kubectl get sends
/// `application/json;as=Table;v=v1;g=meta.k8s.io, ..., application/json`), or `None` when it
/// asked for the object itself: as kube-apiserver negotiates, the client's most preferred entry
/// of `Accept` that the server can serve decides.
pub fn wants_table(headers: &HeaderMap) -> Option<&'static str> {
    /// An entry of `Accept`: quality, media type, other parameters.
    type Entry<'a> = (f32, &'a str, Vec<(&'a str, &'a str)>);
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let mut entries: Vec<Entry<'_>> = accept
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().filter(|media| !media.is_empty())?;
            let mut quality = 1.0;
            let mut params = Vec::new();
            for param in parts {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                match name.trim() {
                    "q" => quality = value.trim().parse().unwrap_or(0.0),
                    name => params.push((name, value.trim())),
                }
            }
            (quality > 0.0).then_some((quality, media, params))
        })
        .collect();
    entries.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for (_, media, params) in entries {
        let param = |wanted: &str| params.iter().find(|(name, _)| *name == wanted).map(|(_, value)| *value);
        let json = matches!(media, "application/json" | "application/*" | "*/*");
        match param("as") {
            None if json || media == protobuf::MEDIA_TYPE => return None,
            Some("Table") if json && param("g") == Some("meta.k8s.io") => match param("v") {
                Some("v1") => return Some("meta.k8s.io/v1"),
                Some("v1beta1") => return Some("meta.k8s.io/v1beta1"),
                _ => {}
            },
            _ => {}
        }
    }
    None
}

/// How to print a Table, when the client asked for one: its version and `includeObject`.
pub fn table_options(headers: &HeaderMap, query: &Query) -> Result<Option<TableOptions>, ApiError> {
    match wants_table(headers) {
        None => Ok(None),
        Some(api_version) => {
            Ok(Some(TableOptions { api_version, include: query.include_object()?, no_headers: false }))
        }
    }
}

/// A Table of a list's items, with kube-apiserver's columns for the type (`printers`).
fn table(
    ty: &ResourceType,
    items: &[Arc<CachedObject>],
    revision: u64,
    next: Option<String>,
    options: &TableOptions,
) -> Value {
    let objects: Vec<Value> =
        items.iter().map(|item| serde_json::from_slice(&item.json).unwrap_or(Value::Null)).collect();
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    printers::table(ty, &objects, metadata, options)
}

/// kube's `duration.HumanDuration`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            rest => format!("{days}d{rest}h"),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            rest => format!("{}y{rest}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// POST to a collection.
pub async fn create(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let ty = target.ty();
    let mut object = decode_body(headers, body, ty)?;
    check_type(&mut object, ty)?;
    apply_defaults(&mut object, ty);
    check_namespace(&mut object, target)?;
    if ty.namespaced && text(metadata(&object), "namespace").is_none() {
        // A namespaced object posted to the all-namespaces path without a namespace.
        let name = text(metadata(&object), "name").unwrap_or_default().to_owned();
        return Err(ApiError::invalid(
            target.subject(&name),
            &[Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "metadata.namespace".into(),
            }],
        ));
    }
    if text(metadata(&object), "name").is_none() {
        if let Some(prefix) = text(metadata(&object), "generateName").map(str::to_owned) {
            metadata_mut(&mut object).insert("name".into(), json!(format!("{prefix}{}", random_suffix())));
        }
    }
    let name = text(metadata(&object), "name").unwrap_or_default().to_owned();
    validate(&object, ty, true, &name)?;
    check_schema(&object, ty)?;
    let namespace = text(metadata(&object), "namespace").map(str::to_owned);
    if let (true, Some(namespace)) = (ty.namespaced, &namespace) {
        require_namespace(state, namespace, target.subject(&name)).await?;
    }
    {
        let metadata = metadata_mut(&mut object);
        metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            metadata.remove(field);
        }
    }
    if object.get("spec").is_some() {
        metadata_mut(&mut object).insert("generation".into(), json!(1));
    }
    if ty.group == "batch" && ty.plural == "jobs" {
        generate_job_selector(&mut object);
    }
    if ty.group.is_empty() && ty.plural == "namespaces" {
        super::namespaces::prepare_for_create(&mut object);
    }
    if ty.group == "apiextensions.k8s.io" && ty.plural == "customresourcedefinitions" {
        super::crd::validate(&object).map_err(|causes| ApiError::invalid(target.subject(&name), &causes))?;
        object["status"] = super::crd::initial_status(&object);
    }
    if query.dry_run {
        return Ok(object_response(wire, StatusCode::CREATED, &object));
    }
    let key = ty.key(namespace.as_deref(), &name);
    let stored = state
        .registry
        .storage()
        .create(&key, encode_for_storage(&object))
        .await
        .map_err(|error| ApiError::from_storage(error, target.subject(&name)))?;
    let response = stamped(&stored, stored.mod_revision)?;
    super::crd::after_write(state, ty, Some(&response)).await;
    let mut response = object_response(wire, StatusCode::CREATED, &response);
    // The audit event names the object, as kube's does from the request object.
    response.extensions_mut().insert(super::audit::CreatedName(name.into()));
    Ok(response)
}

/// kube's Job strategy on create, unless `spec.manualSelector`: the pod template gets the
/// job-name and controller-uid labels (legacy and `batch.kubernetes.io/` ones) it lacks, and the
/// selector matches `batch.kubernetes.io/controller-uid`. A Job without labels of its own shows
/// its template's, as kube's defaulting gives it when it is read back.
fn generate_job_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector") == Some(&Value::Bool(true)) || !job["spec"].is_object() {
        return;
    }
    let name = job.pointer("/metadata/name").cloned().unwrap_or_else(|| json!(""));
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or_else(|| json!(""));
    let spec = &mut job["spec"];
    if !spec["template"].is_object() {
        spec["template"] = json!({});
    }
    let template = &mut spec["template"];
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    let labels = template["metadata"]["labels"].as_object_mut().expect("made an object");
    for (label, value) in [
        ("job-name", &name),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/controller-uid", &uid),
    ] {
        labels.entry(label).or_insert_with(|| value.clone());
    }
    let template_labels = Value::Object(labels.clone());
    if !spec["selector"].is_object() {
        spec["selector"] = json!({});
    }
    if !spec["selector"]["matchLabels"].is_object() {
        spec["selector"]["matchLabels"] = json!({});
    }
    let selector = spec["selector"]["matchLabels"].as_object_mut().expect("made an object");
    selector.entry("batch.kubernetes.io/controller-uid").or_insert(uid);
    let metadata = job["metadata"].as_object_mut().expect("checked to be an object");
    if metadata.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty) {
        metadata.insert("labels".into(), template_labels);
    }
}

/// What a replacement changes: the object as it will be stored, given the current one.
fn merge_update(current: &Value, mut new: Value, ty: &ResourceType, status_only: bool) -> Value {
    if status_only {
        let mut merged = current.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if merged["status"].is_null() {
            merged.as_object_mut().expect("an object").remove("status");
        }
        return merged;
    }
    // Fields of metadata clients cannot change.
    let current_metadata = current["metadata"].as_object().cloned().unwrap_or_default();
    {
        let metadata = metadata_mut(&mut new);
        for field in
            ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"]
        {
            match current_metadata.get(field) {
                Some(value) => metadata.insert(field.into(), value.clone()),
                None => metadata.remove(field),
            };
        }
        metadata.remove("resourceVersion");
    }
    if ty.status_subresource {
        match current.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                new.as_object_mut().expect("an object").remove("status");
            }
        }
    }
    if new.get("spec").is_some() && new.get("spec") != current.get("spec") {
        let generation = current_metadata.get("generation").and_then(Value::as_i64).unwrap_or(0);
        metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
    }
    new
}

fn parse_resource_version(object: &Value) -> Result<Option<u64>, ApiError> {
    match object.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {text:?}: must be an integer"))
        }),
        Some(other) => {
            Err(ApiError::bad_request(format!("invalid resourceVersion {other}: must be a string")))
        }
    }
}

/// How a write computes the new object from the current one.
enum Change<'a> {
    Replace(Value),
    Patch { body: &'a [u8], patch_type: PatchType },
}

/// An object's autoscaling/v1 Scale: its `spec.replicas`, `status.replicas` and its selector
/// as a label-selector string.
fn scale_of(object: &Value) -> Value {
    let metadata = metadata(object);
    let mut scale_metadata = Map::new();
    for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(value) = metadata.get(field) {
            scale_metadata.insert(field.into(), value.clone());
        }
    }
    let selector = match object.pointer("/spec/selector") {
        Some(Value::Object(selector)) if object["apiVersion"] == "v1" => {
            let pairs: Vec<String> = selector
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or("")))
                .collect();
            pairs.join(",")
        }
        Some(selector) => super::printers::label_selector(selector).unwrap_or_default(),
        None => String::new(),
    };
    let mut status =
        json!({"replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": status,
    })
}

/// The parent object with the replicas (and resourceVersion precondition) of `scale`.
fn scaled(current: &Value, scale: &Value) -> Result<Value, ApiError> {
    match (scale.get("apiVersion").and_then(Value::as_str), scale.get("kind").and_then(Value::as_str)) {
        (None | Some("" | "autoscaling/v1"), None | Some("" | "Scale")) => {}
        (api_version, kind) => {
            return Err(ApiError::bad_request(format!(
                "expected autoscaling/v1 Scale, got {}/{}",
                api_version.unwrap_or(""),
                kind.unwrap_or("")
            )))
        }
    }
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(value) => {
            value.as_i64().ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?
        }
    };
    let mut new = current.clone();
    new["spec"]["replicas"] = json!(replicas);
    match scale.pointer("/metadata/resourceVersion") {
        Some(version) => metadata_mut(&mut new).insert("resourceVersion".into(), version.clone()),
        None => metadata_mut(&mut new).remove("resourceVersion"),
    };
    Ok(new)
}

/// PUT of an object (or its status).
pub async fn update(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let ty = target.ty();
    let name = target.name.clone().expect("an item path");
    let mut object = decode_body(headers, body, ty)?;
    if target.scale() {
        return write_existing(state, target, query, Change::Replace(object), wire).await;
    }
    check_type(&mut object, ty)?;
    apply_defaults(&mut object, ty);
    check_namespace(&mut object, target)?;
    match text(metadata(&object), "name") {
        Some(given) if given != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )))
        }
        Some(_) => {}
        None => {
            metadata_mut(&mut object).insert("name".into(), json!(name));
        }
    }
    write_existing(state, target, query, Change::Replace(object), wire).await
}

/// PATCH of an object (or its status).
pub async fn patch(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type, PatchType::ACCEPTED))?;
    write_existing(state, target, query, Change::Patch { body, patch_type }, wire).await
}

async fn write_existing(
    state: &ApiState,
    target: &Target,
    query: &Query,
    change: Change<'_>,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let ty = target.ty();
    let name = target.name.clone().expect("an item path");
    let key = target.key(&name);
    let storage = state.registry.storage();
    let status_only = target.subresource.as_deref() == Some("status");
    let shown = |object: &Value| if target.scale() { scale_of(object) } else { object.clone() };
    loop {
        let current = storage
            .get(&key)
            .await
            .map_err(|error| ApiError::from_storage(error, target.subject(&name)))?
            .ok_or_else(|| ApiError::not_found(target.subject(&name)))?;
        let current_object = stamped(&current, current.mod_revision)?;
        let patched_from = if target.scale() { scale_of(&current_object) } else { current_object.clone() };
        let mut new = match &change {
            Change::Replace(object) => object.clone(),
            Change::Patch { body, patch_type } => {
                let patched = patch::apply(&patched_from, body, *patch_type, &patch::builtin_merge_key)
                    .map_err(|error| match error {
                        patch::PatchError::Invalid(message) => ApiError::bad_request(message),
                        patch::PatchError::Failed(message) => ApiError::invalid(
                            target.subject(&name),
                            &[Cause { reason: "FieldValueInvalid".into(), message, field: "patch".into() }],
                        ),
                    })?;
                if !patched.is_object() {
                    return Err(ApiError::bad_request("the patched object is not a JSON object"));
                }
                patched
            }
        };
        if target.scale() {
            new = scaled(&current_object, &new)?;
        }
        check_type(&mut new, ty)?;
        apply_defaults(&mut new, ty);
        // A resourceVersion in the request is a precondition; without one, the write retries.
        let precondition = parse_resource_version(&new)?;
        if let Some(expected) = precondition {
            if expected != current.mod_revision {
                return Err(ApiError::conflict(
                    target.subject(&name),
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        if text(metadata(&new), "name") != Some(name.as_str()) {
            return Err(ApiError::bad_request("the name of the object cannot be changed"));
        }
        if ty.namespaced && text(metadata(&new), "namespace") != target.namespace.as_deref() {
            return Err(ApiError::bad_request("the namespace of the object cannot be changed"));
        }
        let merged = merge_update(&current_object, new, ty, status_only);
        validate(&merged, ty, false, &name)?;
        check_schema(&merged, ty)?;
        if ty.group == "apiextensions.k8s.io" && ty.plural == "customresourcedefinitions" {
            super::crd::validate(&merged)
                .map_err(|causes| ApiError::invalid(target.subject(&name), &causes))?;
        }
        let unchanged = {
            let mut current_without_version = current_object.clone();
            metadata_mut(&mut current_without_version).remove("resourceVersion");
            current_without_version == merged
        };
        if unchanged || query.dry_run {
            let mut response = merged;
            metadata_mut(&mut response)
                .insert("resourceVersion".into(), json!(current.mod_revision.to_string()));
            return Ok(object_response(wire, StatusCode::OK, &shown(&response)));
        }
        // An object being deleted goes once its last finalizer is removed (unless it is a pod in
        // its grace period, which its kubelet deletes).
        if super::deletion::delete_during_update(&current_object, &merged) {
            match storage.delete(&key, Some(current.mod_revision)).await {
                Ok(deleted) => {
                    let mut response = merged;
                    metadata_mut(&mut response)
                        .insert("resourceVersion".into(), json!(deleted.revision.to_string()));
                    super::crd::after_delete(state, ty, &response).await;
                    return Ok(object_response(wire, StatusCode::OK, &shown(&response)));
                }
                Err(StorageError::Conflict { .. } | StorageError::NotFound { .. })
                    if precondition.is_none() =>
                {
                    continue
                }
                Err(error) => return Err(ApiError::from_storage(error, target.subject(&name))),
            }
        }
        match storage.update(&key, encode_for_storage(&merged), current.mod_revision).await {
            Ok(stored) => {
                let response = stamped(&stored, stored.mod_revision)?;
                super::crd::after_write(state, ty, Some(&response)).await;
                return Ok(object_response(wire, StatusCode::OK, &shown(&response)));
            }
            Err(StorageError::Conflict { .. }) if precondition.is_none() => continue,
            Err(error) => return Err(ApiError::from_storage(error, target.subject(&name))),
        }
    }
}

/// kube's answer to a POST that creates no object of its own: 201 with a Success Status.
fn created_success(wire: Wire) -> Response<Body> {
    object_response(
        wire,
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// POST of a v1 Binding (`pods/NAME/binding`, or a namespace's `bindings`): sets the pod's
/// `spec.nodeName` once, and its PodScheduled condition, as kube's BindingREST does.
async fn bind(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let binding = decode_body(headers, body, target.ty())?;
    let name = match (&target.name, binding.pointer("/metadata/name").and_then(Value::as_str)) {
        (Some(path), Some(given)) if !given.is_empty() && given != path => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({path})"
            )))
        }
        (Some(path), _) => path.clone(),
        (None, Some(given)) if !given.is_empty() => given.to_owned(),
        (None, _) => return Err(ApiError::bad_request("name is required for a Binding")),
    };
    let binding_subject = Subject { group: "", plural: "pods/binding", kind: "Binding", name: &name };
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_owned();
    let kind = binding.pointer("/target/kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        let cause = Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: \"{kind}\": supported values: \"Node\""),
            field: "target.kind".into(),
        };
        return Err(ApiError::invalid(binding_subject, &[cause]));
    }
    if node.is_empty() {
        let cause = Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "target.name".into(),
        };
        return Err(ApiError::invalid(binding_subject, &[cause]));
    }
    let key = target.key(&name);
    let storage = state.registry.storage();
    loop {
        let current = storage
            .get(&key)
            .await
            .map_err(|error| ApiError::from_storage(error, target.subject(&name)))?
            .ok_or_else(|| ApiError::not_found(target.subject(&name)))?;
        let mut pod = stamped(&current, current.mod_revision)?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                binding_subject,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let assigned = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
        if !assigned.is_empty() {
            return Err(ApiError::conflict(
                binding_subject,
                &format!("pod {name} is already assigned to node \"{assigned}\""),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        if let Some(Value::Object(annotations)) = binding.pointer("/metadata/annotations") {
            let metadata = metadata_mut(&mut pod);
            let existing = metadata.entry("annotations").or_insert_with(|| json!({}));
            for (key, value) in annotations {
                existing[key] = value.clone();
            }
        }
        if !pod.get("status").is_some_and(Value::is_object) {
            pod["status"] = json!({});
        }
        let conditions = pod["status"]
            .as_object_mut()
            .expect("an object")
            .entry("conditions")
            .or_insert_with(|| json!([]));
        if !conditions.is_array() {
            *conditions = json!([]);
        }
        let conditions = conditions.as_array_mut().expect("an array");
        match conditions.iter_mut().find(|condition| condition["type"] == "PodScheduled") {
            Some(condition) => {
                if condition["status"] != "True" {
                    condition["status"] = json!("True");
                    condition["lastTransitionTime"] = json!(now_rfc3339());
                }
            }
            None => conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()})),
        }
        metadata_mut(&mut pod).remove("resourceVersion");
        if query.dry_run {
            return Ok(created_success(wire));
        }
        match storage.update(&key, encode_for_storage(&pod), current.mod_revision).await {
            Ok(_) => return Ok(created_success(wire)),
            Err(StorageError::Conflict { .. }) => continue,
            Err(error) => return Err(ApiError::from_storage(error, target.subject(&name))),
        }
    }
}

/// The PodDisruptionBudgets of the pod's namespace whose selector selects it, with their
/// storage keys and revisions.
async fn disruption_budgets(
    state: &ApiState,
    namespace: &str,
    pod: &Value,
) -> Result<Vec<(KeyValue, Value)>, ApiError> {
    let Some(budgets) = state.registry.get("policy", "v1", "poddisruptionbudgets") else {
        return Ok(Vec::new());
    };
    let prefix = budgets.ty.key(Some(namespace), "");
    let options = crate::storage::ListOptions { revision: None, limit: None, continue_after: None };
    let listed = state.registry.storage().list(&prefix, options).await.map_err(|error| {
        ApiError::from_storage(
            error,
            Subject {
                group: "policy",
                plural: "poddisruptionbudgets",
                kind: "PodDisruptionBudget",
                name: "",
            },
        )
    })?;
    let labels: std::collections::BTreeMap<String, String> = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels.iter().map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_owned())).collect()
        })
        .unwrap_or_default();
    let mut selecting = Vec::new();
    for kv in listed.items {
        let budget = stamped(&kv, kv.mod_revision)?;
        // kube: a budget with a nil or empty selector selects nothing (policy/v1).
        let selector = match budget.pointer("/spec/selector") {
            Some(selector @ Value::Object(fields)) if !fields.is_empty() => selector.clone(),
            _ => continue,
        };
        let Ok(text) = super::printers::label_selector(&selector) else { continue };
        if text.is_empty() {
            continue;
        }
        let Ok(parsed) = crate::selector::LabelSelector::parse(&text) else { continue };
        if parsed.matches(&labels) {
            selecting.push((kv, budget));
        }
    }
    Ok(selecting)
}

/// POST of a policy/v1 Eviction (`pods/NAME/eviction`): deletes the pod unless a
/// PodDisruptionBudget that selects it allows no disruption (429); an allowed disruption is
/// taken from the budget's status (a write with its revision as precondition) before the delete.
async fn evict(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let eviction = decode_body(headers, body, target.ty())?;
    let name = target.name.clone().expect("an item path");
    if let Some(given) = eviction.pointer("/metadata/name").and_then(Value::as_str) {
        if !given.is_empty() && given != name {
            return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
        }
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    let storage = state.registry.storage();
    loop {
        let current = storage
            .get(&target.key(&name))
            .await
            .map_err(|error| ApiError::from_storage(error, target.subject(&name)))?
            .ok_or_else(|| ApiError::not_found(target.subject(&name)))?;
        let pod = stamped(&current, current.mod_revision)?;
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        // A pod that is done, or being deleted, needs no budget.
        let guarded =
            !matches!(phase, "Succeeded" | "Failed") && pod.pointer("/metadata/deletionTimestamp").is_none();
        if guarded {
            let budgets = disruption_budgets(state, &namespace, &pod).await?;
            if budgets.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some((kv, mut budget)) = budgets.into_iter().next() {
                let allowed =
                    budget.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
                if allowed <= 0 {
                    let budget_name = budget.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                    let desired =
                        budget.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0);
                    let healthy =
                        budget.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0);
                    return Err(ApiError::disruption_budget(&format!(
                        "The disruption budget {budget_name} needs {desired} healthy pods and has {healthy} currently"
                    )));
                }
                if !query.dry_run {
                    budget["status"]["disruptionsAllowed"] = json!(allowed - 1);
                    metadata_mut(&mut budget).remove("resourceVersion");
                    match storage.update(&kv.key, encode_for_storage(&budget), kv.mod_revision).await {
                        Ok(_) => {}
                        Err(StorageError::Conflict { .. }) => continue,
                        Err(error) => {
                            let subject = Subject {
                                group: "policy",
                                plural: "poddisruptionbudgets",
                                kind: "PodDisruptionBudget",
                                name: "",
                            };
                            return Err(ApiError::from_storage(error, subject));
                        }
                    }
                }
            }
        }
        let pod_target = Target {
            resource: Arc::clone(&target.resource),
            namespace: target.namespace.clone(),
            name: Some(name.clone()),
            subresource: None,
        };
        delete(state, &pod_target, query, &HeaderMap::new(), b"", wire).await?;
        return Ok(created_success(wire));
    }
}

/// DELETE of an object.
pub async fn delete(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let ty = target.ty();
    let name = target.name.clone().expect("an item path");
    let key = target.key(&name);
    let options =
        if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { decode_options(headers, body)? };
    let dry_run = query.dry_run
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|values| values.iter().any(|v| v == "All"));
    let delete_options = super::deletion::DeleteOptions::parse(&options, query)?;
    let uid_precondition = options.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_owned);
    let version_precondition =
        match options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion precondition {text:?}"))
            })?),
            None => None,
        };
    let storage = state.registry.storage();
    loop {
        let current = storage
            .get(&key)
            .await
            .map_err(|error| ApiError::from_storage(error, target.subject(&name)))?
            .ok_or_else(|| ApiError::not_found(target.subject(&name)))?;
        let object = stamped(&current, current.mod_revision)?;
        if let Some(uid) = &uid_precondition {
            let actual = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
            if actual != uid {
                return Err(ApiError::conflict(
                    target.subject(&name),
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(expected) = version_precondition {
            if expected != current.mod_revision {
                return Err(ApiError::conflict(
                    target.subject(&name),
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {expected}, ResourceVersion in object meta: {}",
                        current.mod_revision
                    ),
                ));
            }
        }
        if dry_run {
            return Ok(object_response(wire, StatusCode::OK, &object));
        }
        if ty.group.is_empty() && ty.plural == "namespaces" {
            match super::namespaces::delete_step(&object, &now_rfc3339())? {
                super::namespaces::DeleteStep::Terminate(marked) => {
                    match storage.update(&key, encode_for_storage(&marked), current.mod_revision).await {
                        Ok(stored) => {
                            super::namespaces::marked(&marked);
                            return Ok(object_response(
                                wire,
                                StatusCode::OK,
                                &stamped(&stored, stored.mod_revision)?,
                            ));
                        }
                        Err(StorageError::Conflict { .. }) if version_precondition.is_none() => continue,
                        Err(error) => return Err(ApiError::from_storage(error, target.subject(&name))),
                    }
                }
                super::namespaces::DeleteStep::AlreadyTerminating => {
                    return Err(super::namespaces::already_terminating(&name))
                }
                super::namespaces::DeleteStep::Delete => {}
            }
        }
        let pod = ty.group.is_empty() && ty.plural == "pods";
        match super::deletion::plan(&object, pod, &delete_options, SystemTime::now()) {
            super::deletion::Plan::Pending => {
                return Ok(object_response(wire, delete_options.pending_code(), &object));
            }
            super::deletion::Plan::Mark(marked) => {
                match storage.update(&key, encode_for_storage(&marked), current.mod_revision).await {
                    Ok(stored) => {
                        return Ok(object_response(
                            wire,
                            delete_options.pending_code(),
                            &stamped(&stored, stored.mod_revision)?,
                        ))
                    }
                    Err(StorageError::Conflict { .. }) if version_precondition.is_none() => continue,
                    Err(error) => return Err(ApiError::from_storage(error, target.subject(&name))),
                }
            }
            super::deletion::Plan::DeleteNow => {}
        }
        match storage.delete(&key, Some(current.mod_revision)).await {
            Ok(_) => {
                super::crd::after_delete(state, ty, &object).await;
                return Ok(object_response(wire, StatusCode::OK, &object));
            }
            Err(StorageError::Conflict { .. }) if version_precondition.is_none() => continue,
            Err(StorageError::NotFound { .. }) => return Err(ApiError::not_found(target.subject(&name))),
            Err(error) => return Err(ApiError::from_storage(error, target.subject(&name))),
        }
    }
}

/// DELETE of a collection.
pub async fn delete_collection(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let filter = watch_filter(target, query)?;
    let request = ListRequest { filter, limit: None, continue_from: None, version: ReadVersion::Consistent };
    let listed = target
        .resource
        .cacher
        .list(&request)
        .await
        .map_err(|error| ApiError::from_cache(error, target.subject("")))?;
    let mut deleted = Vec::new();
    for object in &listed.items {
        let item = Target {
            resource: Arc::clone(&target.resource),
            namespace: (!object.namespace.is_empty()).then(|| object.namespace.to_string()),
            name: Some(object.name.to_string()),
            subresource: None,
        };
        match delete(state, &item, query, headers, body, wire).await {
            Ok(_) => deleted.push(Arc::clone(object)),
            Err(error) if error.code == StatusCode::NOT_FOUND => {}
            Err(error) => return Err(error),
        }
    }
    let revision = state.registry.storage().current_revision().await.unwrap_or(listed.revision);
    list_response(wire, target.ty(), &deleted, revision, None)
}

/// Which handler a method on a path goes to.
pub async fn dispatch(
    state: &ApiState,
    target: &Target,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let item = target.name.is_some();
    let status = target.subresource.is_some();
    if target.subresource.as_deref() == Some("token") {
        return match method {
            &Method::POST => token_request(state, target, query, headers, body).await,
            method => Err(ApiError::method_not_allowed(method)),
        };
    }
    let wire = negotiate::response_wire(headers, target.ty().protobuf())?;
    if let Some(subresource) = target.subresource.as_deref() {
        if target.ty().post_subresources.iter().any(|served| served == subresource) {
            return match (method, subresource) {
                (&Method::POST, "binding") => bind(state, target, query, headers, body, wire).await,
                (&Method::POST, "eviction") => evict(state, target, query, headers, body, wire).await,
                (method, _) => Err(ApiError::method_not_allowed(method)),
            };
        }
    }
    match (method, item, status) {
        (&Method::GET, true, _) => get(target, query, headers, wire).await,
        (&Method::GET, false, _) if query.watch => {
            super::watch::watch(state, target, query, headers, wire).await
        }
        (&Method::GET, false, _) => list(target, query, headers, wire).await,
        (&Method::POST, false, _) => create(state, target, query, headers, body, wire).await,
        (&Method::PUT, true, _) => update(state, target, query, headers, body, wire).await,
        (&Method::PATCH, true, _) => patch(state, target, query, headers, body, wire).await,
        (&Method::DELETE, true, false) => delete(state, target, query, headers, body, wire).await,
        (&Method::DELETE, false, _) => delete_collection(state, target, query, headers, body, wire).await,
        (method, _, _) => Err(ApiError::method_not_allowed(method)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kubes() {
        let ty = |plural: &str| {
            crate::registry::builtin_types().into_iter().find(|ty| ty.plural == plural).unwrap()
        };
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx:latest"},
            {"name": "c", "image": "nginx:1.27"}, {"name": "d", "image": "localhost:5000/app"},
            {"name": "e", "image": "localhost:5000/app:v2"}, {"name": "f", "image": "nginx@sha256:abc"},
            {"name": "g", "image": "nginx:1.27", "imagePullPolicy": "Never"}]}});
        apply_defaults(&mut pod, &ty("pods"));
        let policies: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["imagePullPolicy"].as_str().unwrap())
            .collect();
        assert_eq!(
            policies,
            ["Always", "Always", "IfNotPresent", "Always", "IfNotPresent", "IfNotPresent", "Never"]
        );
        for (field, value) in [
            ("restartPolicy", json!("Always")),
            ("dnsPolicy", json!("ClusterFirst")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("schedulerName", json!("default-scheduler")),
            ("enableServiceLinks", json!(true)),
            ("securityContext", json!({})),
        ] {
            assert_eq!(pod["spec"][field], value, "{field}");
        }
        assert_eq!(pod["spec"]["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(pod["spec"]["containers"][0]["terminationMessagePolicy"], "File");
        assert_eq!(pod["status"]["phase"], "Pending");

        let mut service = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply_defaults(&mut service, &ty("services"));
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["sessionAffinity"], "None");
        assert_eq!(
            service["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}])
        );

        let mut namespace = json!({"metadata": {"name": "team-a"}});
        apply_defaults(&mut namespace, &ty("namespaces"));
        assert_eq!(namespace["metadata"]["labels"], json!({"kubernetes.io/metadata.name": "team-a"}));
        assert_eq!(namespace["spec"], json!({"finalizers": ["kubernetes"]}));
        assert_eq!(namespace["status"], json!({"phase": "Active"}));
        // Labels that are not an object are left for validation to refuse, never indexed.
        let mut odd = json!({"metadata": {"name": "team-b", "labels": 5}});
        apply_defaults(&mut odd, &ty("namespaces"));
        assert_eq!(odd["metadata"]["labels"], 5);

        let mut deployment = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
        apply_defaults(&mut deployment, &ty("deployments"));
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert_eq!(
            deployment["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(deployment["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(deployment["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut recreate =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 0, "strategy": {"type": "Recreate"}}});
        apply_defaults(&mut recreate, &ty("deployments"));
        assert_eq!(recreate["spec"]["replicas"], 0);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn secrets_default_to_opaque() {
        let secrets = crate::registry::builtin_types().into_iter().find(|ty| ty.plural == "secrets").unwrap();
        for given in [json!({}), json!({"type": ""})] {
            let mut secret = given;
            apply_defaults(&mut secret, &secrets);
            assert_eq!(secret["type"], "Opaque");
        }
        let mut tls = json!({"type": "kubernetes.io/tls"});
        apply_defaults(&mut tls, &secrets);
        assert_eq!(tls["type"], "kubernetes.io/tls");
        let configmaps =
            crate::registry::builtin_types().into_iter().find(|ty| ty.plural == "configmaps").unwrap();
        let mut configmap = json!({});
        apply_defaults(&mut configmap, &configmaps);
        assert_eq!(configmap, json!({}));
    }

    #[test]
    fn jobs_get_kubes_generated_selector() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u1"},
                             "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}}});
        generate_job_selector(&mut job);
        let labels = json!({"job-name": "pi", "batch.kubernetes.io/job-name": "pi",
                            "controller-uid": "u1", "batch.kubernetes.io/controller-uid": "u1"});
        assert_eq!(job["spec"]["template"]["metadata"]["labels"], labels);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        assert_eq!(job["metadata"]["labels"], labels, "an unlabelled Job shows its template's labels");

        let mut labelled = json!({"metadata": {"name": "pi", "uid": "u2", "labels": {"team": "a"}},
                                  "spec": {"selector": {"matchLabels": {"app": "x"}},
                                           "template": {"metadata": {"labels": {"app": "x", "job-name": "mine"}}}}});
        generate_job_selector(&mut labelled);
        assert_eq!(labelled["metadata"]["labels"], json!({"team": "a"}));
        assert_eq!(
            labelled["spec"]["template"]["metadata"]["labels"]["job-name"], "mine",
            "given labels stay"
        );
        assert_eq!(
            labelled["spec"]["selector"]["matchLabels"],
            json!({"app": "x", "batch.kubernetes.io/controller-uid": "u2"})
        );

        let mut manual = json!({"metadata": {"name": "pi", "uid": "u3"},
                                "spec": {"manualSelector": true, "selector": {"matchLabels": {"app": "x"}}, "template": {}}});
        let before = manual.clone();
        generate_job_selector(&mut manual);
        assert_eq!(manual, before, "manualSelector leaves the Job alone");
    }

    #[test]
    fn durations_read_like_kubectl() {
        for (seconds, text) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86_400, "3d"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(seconds)), text);
        }
    }

    #[test]
    fn updates_keep_what_clients_cannot_change() {
        let ty = crate::registry::builtin_types().into_iter().find(|ty| ty.plural == "deployments").unwrap();
        let current = json!({"metadata": {"name": "d", "uid": "u1", "creationTimestamp": "t", "generation": 3, "resourceVersion": "9"}, "spec": {"replicas": 1}, "status": {"ready": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "other", "labels": {"a": "b"}}, "spec": {"replicas": 2}, "status": {"ready": 5}});
        let merged = merge_update(&current, new, &ty, false);
        assert_eq!(merged["metadata"]["uid"], "u1");
        assert_eq!(merged["metadata"]["generation"], 4, "a spec change bumps the generation");
        assert_eq!(merged["status"]["ready"], 1, "status changes only through /status");
        assert_eq!(merged["metadata"]["labels"]["a"], "b");
        let status =
            merge_update(&current, json!({"metadata": {"name": "d"}, "status": {"ready": 5}}), &ty, true);
        assert_eq!(
            (status["status"]["ready"].clone(), status["spec"]["replicas"].clone()),
            (json!(5), json!(1))
        );
    }
}
