//! Validation of object metadata, with kube-apiserver's messages, as causes of a 422 Invalid.

use serde::Serialize;
use serde_json::Value;

use crate::selector::{validate_label_key, validate_label_value};

/// One reason an object is invalid (`details.causes` of a 422 Status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueTooLong`, `FieldValueForbidden`.
    pub reason: String,
    /// What is wrong, e.g. `Invalid value: "Foo": a lowercase RFC 1123 subdomain must ...`.
    pub message: String,
    /// The field, e.g. `metadata.name`.
    pub field: String,
}

/// How a resource's names are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most resources).
    Dns1123Subdomain,
    /// A DNS-1123 label (namespaces, services).
    Dns1123Label,
    /// Anything usable as a path segment (custom resources).
    PathSegment,
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.starts_with(is_label_char)
        && label.ends_with(is_label_char)
        && label.chars().all(|c| is_label_char(c) || c == '-')
}

/// kube's `IsDNS1123Label`.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errors.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !label_ok(value) {
        errors.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start \
             and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    errors
}

/// kube's `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if !value.split('.').all(label_ok) {
        errors.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_owned(),
        );
    }
    errors
}

/// kube's `ValidatePathSegmentName`.
pub fn path_segment_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value == "." || value == ".." {
        errors.push(format!("may not be '{value}'"));
    }
    for forbidden in ["/", "%"] {
        if value.contains(forbidden) {
            errors.push(format!("may not contain '{forbidden}'"));
        }
    }
    errors
}

fn check_name(value: &str, rule: NameRule) -> Vec<String> {
    match rule {
        NameRule::Dns1123Subdomain => dns1123_subdomain(value),
        NameRule::Dns1123Label => dns1123_label(value),
        NameRule::PathSegment => path_segment_name(value),
    }
}

fn invalid(field: &str, value: &str, message: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!(
            "Invalid value: {}: {message}",
            serde_json::to_string(value).expect("a string encodes")
        ),
        field: field.into(),
    }
}

fn required(field: &str, message: &str) -> Cause {
    let message =
        if message.is_empty() { "Required value".to_owned() } else { format!("Required value: {message}") };
    Cause { reason: "FieldValueRequired".into(), message, field: field.into() }
}

/// Validates the metadata of an object being created (`creating`) or updated: name (or
/// generateName on create), namespace presence, labels and annotations.
pub fn validate_metadata(object: &Value, rule: NameRule, namespaced: bool, creating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(metadata) = object.get("metadata").and_then(Value::as_object) else {
        causes.push(required("metadata", ""));
        return causes;
    };
    let text = |field: &str| metadata.get(field).and_then(Value::as_str).unwrap_or_default();
    let name = text("name");
    let generate_name = text("generateName");
    if name.is_empty() {
        if !creating || generate_name.is_empty() {
            causes.push(required("metadata.name", "name or generateName is required"));
        }
    } else {
        for message in check_name(name, rule) {
            causes.push(invalid("metadata.name", name, &message));
        }
    }
    if creating && name.is_empty() && !generate_name.is_empty() {
        // The generated name is the prefix plus five characters; a trailing '-' is allowed.
        let prefix = generate_name.strip_suffix('-').unwrap_or(generate_name);
        for message in check_name(prefix, rule) {
            causes.push(invalid("metadata.generateName", generate_name, &message));
        }
    }
    let namespace = text("namespace");
    if namespaced && namespace.is_empty() {
        causes.push(required("metadata.namespace", ""));
    } else if !namespaced && !namespace.is_empty() {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: not allowed on this type".into(),
            field: "metadata.namespace".into(),
        });
    } else if namespaced {
        for message in dns1123_label(namespace) {
            causes.push(invalid("metadata.namespace", namespace, &message));
        }
    }
    match metadata.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                if let Err(error) = validate_label_key(key) {
                    causes.push(invalid("metadata.labels", key, &error.to_string()));
                }
                match value.as_str() {
                    Some(value) => {
                        if let Err(error) = validate_label_value(value) {
                            causes.push(invalid(
                                &format!("metadata.labels.{key}"),
                                value,
                                &error.to_string(),
                            ));
                        }
                    }
                    None => causes.push(invalid(
                        &format!("metadata.labels.{key}"),
                        &value.to_string(),
                        "must be a string",
                    )),
                }
            }
        }
        Some(other) => causes.push(invalid("metadata.labels", &other.to_string(), "must be an object")),
    }
    match metadata.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(annotations)) => {
            let mut total = 0;
            for (key, value) in annotations {
                if let Err(error) = validate_label_key(&key.to_lowercase()) {
                    causes.push(invalid("metadata.annotations", key, &error.to_string()));
                }
                match value.as_str() {
                    Some(value) => total += key.len() + value.len(),
                    None => causes.push(invalid(
                        &format!("metadata.annotations.{key}"),
                        &value.to_string(),
                        "must be a string",
                    )),
                }
            }
            if total > ANNOTATIONS_MAX_BYTES {
                causes.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    message: format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
                    field: "metadata.annotations".into(),
                });
            }
        }
        Some(other) => causes.push(invalid("metadata.annotations", &other.to_string(), "must be an object")),
    }
    for field in ["finalizers"] {
        if let Some(value) = metadata.get(field) {
            if !value.is_null() && !value.as_array().is_some_and(|items| items.iter().all(Value::is_string)) {
                causes.push(invalid(
                    &format!("metadata.{field}"),
                    &value.to_string(),
                    "must be a list of strings",
                ));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|cause| cause.field.as_str()).collect()
    }

    #[test]
    fn names_follow_their_rule() {
        assert!(dns1123_subdomain("a.b-c.d9").is_empty());
        assert!(!dns1123_subdomain("Upper").is_empty());
        assert!(!dns1123_subdomain("-start").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(dns1123_label("web-1").is_empty());
        assert!(!dns1123_label("a.b").is_empty(), "labels have no dots");
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
        assert!(path_segment_name("Any_Thing").is_empty());
        assert!(!path_segment_name("..").is_empty());
        assert!(!path_segment_name("a/b").is_empty());
    }

    #[test]
    fn metadata_problems_are_causes() {
        let ok = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web"}}});
        assert!(validate_metadata(&ok, NameRule::Dns1123Subdomain, true, true).is_empty());
        let bad = json!({"metadata": {"name": "Bad_Name", "labels": {"bad key!": "x", "ok": "bad value!"}}});
        let causes = validate_metadata(&bad, NameRule::Dns1123Subdomain, true, true);
        assert_eq!(
            fields(&causes),
            ["metadata.name", "metadata.namespace", "metadata.labels", "metadata.labels.ok"]
        );
        assert!(causes[0].message.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        let generated = json!({"metadata": {"generateName": "web-", "namespace": "ns"}});
        assert!(validate_metadata(&generated, NameRule::Dns1123Subdomain, true, true).is_empty());
        let nameless = json!({"metadata": {"namespace": "ns"}});
        assert_eq!(
            fields(&validate_metadata(&nameless, NameRule::Dns1123Subdomain, true, true)),
            ["metadata.name"]
        );
        let cluster = json!({"metadata": {"name": "n", "namespace": "ns"}});
        assert_eq!(
            fields(&validate_metadata(&cluster, NameRule::Dns1123Label, false, true)),
            ["metadata.namespace"]
        );
        let big = json!({"metadata": {"name": "a", "annotations": {"k": "x".repeat(ANNOTATIONS_MAX_BYTES)}}});
        let causes = validate_metadata(&big, NameRule::Dns1123Subdomain, false, true);
        assert_eq!(causes[0].reason, "FieldValueTooLong");
        assert_eq!(fields(&validate_metadata(&json!({}), NameRule::PathSegment, false, true)), ["metadata"]);
    }
}
