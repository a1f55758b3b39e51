//! Validation of object metadata with kube-apiserver's messages, as the causes of a 422 Invalid.
//!
//! The name checks follow `k8s.io/apimachinery/pkg/util/validation` (`IsDNS1123Subdomain`,
//! `IsDNS1123Label`) and `k8s.io/apimachinery/pkg/api/validation/path`
//! (`ValidatePathSegmentName`); [`validate_metadata`] follows `ValidateObjectMetaAccessor`. Each
//! problem is one [`Cause`] whose message is `field.Error.ErrorBody()`, word for word, e.g.
//! `Invalid value: "Foo": a lowercase RFC 1123 subdomain must consist of ...`, and whose field
//! is the path kube-apiserver reports (`metadata.name`, `metadata.labels`).
//!
//! Simplified against kube-apiserver: owner references and managed fields are not checked, and a
//! metadata field of the wrong JSON type is a cause here where kube-apiserver fails to decode the
//! body.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::selector::{validate_label_key, validate_label_value};

/// One reason an object is invalid, as an entry of a 422 Status's `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// The kind of problem: `FieldValueInvalid`, `FieldValueRequired`, `FieldValueForbidden` or
    /// `FieldValueTooLong`.
    #[serde(rename = "reason")]
    pub reason: String,
    /// What is wrong, e.g. `Invalid value: "Foo": a lowercase RFC 1123 subdomain must ...`.
    pub message: String,
    /// The field at fault, e.g. `metadata.name`.
    pub field: String,
}

/// How a resource's object names are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain of at most 253 characters (most resources).
    Dns1123Subdomain,
    /// A DNS-1123 label of at most 63 characters (namespaces, services).
    Dns1123Label,
    /// Anything usable as a URL path segment (custom resources).
    PathSegment,
}

/// The longest DNS-1123 label.
const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// The regular expression kube-apiserver quotes for a DNS-1123 label.
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
/// The explanation kube-apiserver gives for an invalid DNS-1123 label.
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character";

/// The longest DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// The regular expression kube-apiserver quotes for a DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
/// The explanation kube-apiserver gives for an invalid DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// The most bytes the keys and values of an object's annotations may add up to
/// (`TotalAnnotationSizeLimitB`).
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Builds the message of a failed regular expression check, as `validation.RegexError` does
/// (including its double space before `or`).
fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    let mut out = String::from(msg);
    if examples.is_empty() {
        out.push_str(&format!(" (regex used for validation is '{regex}')"));
        return out;
    }
    out.push_str(" (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{regex}')"));
    out
}

/// Builds the message of a failed length check, as `validation.MaxLenError` does.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Tells whether `s` matches `DNS1123_LABEL_FMT`: non-empty lower case alphanumerics and `-`,
/// starting and ending with an alphanumeric.
fn is_dns1123_label(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Tells whether `s` matches `DNS1123_SUBDOMAIN_FMT`: dot-separated DNS-1123 labels.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(is_dns1123_label)
}

/// The problems kube's `IsDNS1123Subdomain` finds with `value`, in its order and words: at
/// most 253 characters of dot-separated lower case alphanumeric labels.
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !is_dns1123_subdomain(value) {
        errs.push(regex_error(DNS1123_SUBDOMAIN_ERR_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// The problems kube's `IsDNS1123Label` finds with `value`, in its order and words: at most 63
/// lower case alphanumerics or `-`, alphanumeric at both ends; a valid subdomain with dots gets
/// `must not contain dots`.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !is_dns1123_label(value) {
        if is_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(DNS1123_LABEL_ERR_MSG, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errs
}

/// The problems kube's `ValidatePathSegmentName` finds with a full name: it may not be `.` or
/// `..`, nor contain `/` or `%`. An empty name passes (its absence is reported elsewhere).
pub fn path_segment_name(value: &str) -> Vec<String> {
    if value == "." || value == ".." {
        return vec![format!("may not be '{value}'")];
    }
    path_segment_prefix(value)
}

/// The problems kube's `IsValidPathSegmentPrefix` finds with a `generateName`: it may not
/// contain `/` or `%`.
fn path_segment_prefix(value: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|forbidden| value.contains(*forbidden))
        .map(|forbidden| format!("may not contain '{forbidden}'"))
        .collect()
}

/// Replaces a trailing `-` of a `generateName` so that the name checks accept it, as kube's
/// `maskTrailingDash` does (including its dropping of the character before the dash).
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        // Go slices bytes: a multi-byte character before the dash is cut in two, which no name
        // rule accepts, as the replacement character here is not accepted either.
        format!("{}a", String::from_utf8_lossy(&name.as_bytes()[..name.len() - 2]))
    } else {
        name.to_owned()
    }
}

/// The problems `rule` finds with `name`; `prefix` when `name` is a `generateName`, to which
/// five random characters will be appended.
fn name_errors(name: &str, rule: NameRule, prefix: bool) -> Vec<String> {
    match (rule, prefix) {
        (NameRule::Dns1123Subdomain, false) => dns1123_subdomain(name),
        (NameRule::Dns1123Subdomain, true) => dns1123_subdomain(&mask_trailing_dash(name)),
        (NameRule::Dns1123Label, false) => dns1123_label(name),
        (NameRule::Dns1123Label, true) => dns1123_label(&mask_trailing_dash(name)),
        (NameRule::PathSegment, false) => path_segment_name(name),
        (NameRule::PathSegment, true) => path_segment_prefix(name),
    }
}

/// Quotes `s` as Go's `%q` verb does, which kube-apiserver uses for a bad value in its messages.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `field.Invalid` cause for a string value.
fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    invalid_raw(field, &go_quote(value), detail)
}

/// A `field.Invalid` cause for a value already formatted as kube-apiserver prints it.
fn invalid_raw(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

/// A `field.Required` cause.
fn required(field: &str, detail: &str) -> Cause {
    let message =
        if detail.is_empty() { "Required value".to_owned() } else { format!("Required value: {detail}") };
    Cause { reason: "FieldValueRequired".into(), message, field: field.into() }
}

/// A `field.Forbidden` cause.
fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
}

/// Splits a selector validation error back into kube's separate messages.
fn messages(error: impl ToString) -> Vec<String> {
    error.to_string().split("; ").map(str::to_owned).collect()
}

/// The string map at `metadata.<field>`, with a cause for every entry that is not a string, or
/// `None` (and a cause if it is not `null`) when the field is not a map.
fn string_map<'a>(
    metadata: &'a Map<String, Value>,
    field: &str,
    causes: &mut Vec<Cause>,
) -> Option<Vec<(&'a str, &'a str)>> {
    match metadata.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                match value.as_str() {
                    Some(text) => entries.push((key.as_str(), text)),
                    None => causes.push(invalid_raw(
                        &format!("metadata.{field}"),
                        &value.to_string(),
                        "must be a string",
                    )),
                }
            }
            Some(entries)
        }
        Some(other) => {
            causes.push(invalid_raw(&format!("metadata.{field}"), &other.to_string(), "must be an object"));
            None
        }
    }
}

/// Validates the metadata of an object being created (`creating`) or updated, as kube's
/// `ValidateObjectMetaAccessor` does after a create has filled in a generated name, and returns
/// every problem found (none if the metadata is valid).
///
/// Checked: that `metadata` is an object; `name` by `rule`, or when creating with an empty name,
/// `generateName` by `rule` with a trailing `-` allowed (the stored name will be the prefix and
/// five random characters); a `generateName` is checked whenever present; `namespace` required
/// (a DNS-1123 label) when `namespaced` and forbidden otherwise; `generation` not negative;
/// label keys (qualified names) and values; annotation keys (qualified names, case ignored) and
/// their total size of keys and values (at most 256 KiB); finalizers (qualified names).
pub fn validate_metadata(object: &Value, rule: NameRule, namespaced: bool, creating: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let metadata = match object.get("metadata") {
        Some(Value::Object(metadata)) => metadata,
        None | Some(Value::Null) => {
            causes.push(required("metadata", ""));
            return causes;
        }
        Some(other) => {
            causes.push(invalid_raw("metadata", &other.to_string(), "must be an object"));
            return causes;
        }
    };
    let mut text = |field: &str| match metadata.get(field) {
        None | Some(Value::Null) => "",
        Some(Value::String(value)) => value.as_str(),
        Some(other) => {
            causes.push(invalid_raw(&format!("metadata.{field}"), &other.to_string(), "must be a string"));
            ""
        }
    };
    let name = text("name");
    let generate_name = text("generateName");
    let namespace = text("namespace");

    if !generate_name.is_empty() {
        for message in name_errors(generate_name, rule, true) {
            causes.push(invalid("metadata.generateName", generate_name, &message));
        }
    }
    if name.is_empty() {
        // On create, an empty name with a generateName is replaced by a generated one.
        if !creating || generate_name.is_empty() {
            causes.push(required("metadata.name", "name or generateName is required"));
        }
    } else {
        for message in name_errors(name, rule, false) {
            causes.push(invalid("metadata.name", name, &message));
        }
    }

    if namespaced {
        if namespace.is_empty() {
            causes.push(required("metadata.namespace", ""));
        } else {
            for message in dns1123_label(namespace) {
                causes.push(invalid("metadata.namespace", namespace, &message));
            }
        }
    } else if !namespace.is_empty() {
        causes.push(forbidden("metadata.namespace", "not allowed on this type"));
    }

    if let Some(generation) = metadata.get("generation").and_then(Value::as_i64) {
        if generation < 0 {
            causes.push(invalid_raw(
                "metadata.generation",
                &generation.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }

    if let Some(labels) = string_map(metadata, "labels", &mut causes) {
        for (key, value) in labels {
            if let Err(error) = validate_label_key(key) {
                for message in messages(error) {
                    causes.push(invalid("metadata.labels", key, &message));
                }
            }
            if let Err(error) = validate_label_value(value) {
                for message in messages(error) {
                    causes.push(invalid("metadata.labels", value, &message));
                }
            }
        }
    }

    if let Some(annotations) = string_map(metadata, "annotations", &mut causes) {
        let mut total = 0;
        for (key, value) in annotations {
            // Annotation keys are qualified names whose case does not matter.
            if let Err(error) = validate_label_key(&key.to_lowercase()) {
                for message in messages(error) {
                    causes.push(invalid("metadata.annotations", key, &message));
                }
            }
            total += key.len() + value.len();
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
                field: "metadata.annotations".into(),
            });
        }
    }

    match metadata.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(finalizers)) => {
            for finalizer in finalizers {
                match finalizer.as_str() {
                    Some(finalizer) => {
                        if let Err(error) = validate_label_key(finalizer) {
                            for message in messages(error) {
                                causes.push(invalid("metadata.finalizers", finalizer, &message));
                            }
                        }
                    }
                    None => causes.push(invalid_raw(
                        "metadata.finalizers",
                        &finalizer.to_string(),
                        "must be a string",
                    )),
                }
            }
        }
        Some(other) => causes.push(invalid_raw("metadata.finalizers", &other.to_string(), "must be a list")),
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// kube's message for an invalid DNS-1123 subdomain.
    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
         characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
         regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    /// kube's message for an invalid DNS-1123 label.
    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
         or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
         regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

    /// The fields of `causes`, in order.
    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|cause| cause.field.as_str()).collect()
    }

    /// The causes for `metadata` of a namespaced object with DNS-1123 subdomain names, on create.
    fn check(metadata: Value) -> Vec<Cause> {
        validate_metadata(&json!({"metadata": metadata}), NameRule::Dns1123Subdomain, true, true)
    }

    #[test]
    fn dns1123_subdomains() {
        for good in ["a", "a.b", "web-1", "0", "a.b-c.d9", &"a".repeat(253)] {
            assert!(dns1123_subdomain(good).is_empty(), "{good}");
        }
        for bad in ["", "Upper", "-start", "end-", "a..b", ".a", "a.", "a_b", "a b", "é"] {
            assert_eq!(dns1123_subdomain(bad), [SUBDOMAIN_MSG], "{bad:?}");
        }
        assert_eq!(dns1123_subdomain(&"a".repeat(254)), ["must be no more than 253 characters"]);
        assert_eq!(
            dns1123_subdomain(&format!("{}-", "a".repeat(254))),
            ["must be no more than 253 characters", SUBDOMAIN_MSG]
        );
    }

    #[test]
    fn dns1123_labels() {
        for good in ["a", "web-1", "123-abc", &"a".repeat(63)] {
            assert!(dns1123_label(good).is_empty(), "{good}");
        }
        for bad in ["", "Upper", "-start", "end-", "a_b"] {
            assert_eq!(dns1123_label(bad), [LABEL_MSG], "{bad:?}");
        }
        assert_eq!(dns1123_label("a.b"), ["must not contain dots"]);
        assert_eq!(dns1123_label("a..b"), [LABEL_MSG], "not a subdomain either");
        assert_eq!(dns1123_label(&"a".repeat(64)), ["must be no more than 63 characters"]);
    }

    #[test]
    fn path_segment_names() {
        for good in ["Any_Thing", "UPPER.lower", "a..b", "...", "é"] {
            assert!(path_segment_name(good).is_empty(), "{good}");
        }
        assert_eq!(path_segment_name("."), ["may not be '.'"]);
        assert_eq!(path_segment_name(".."), ["may not be '..'"]);
        assert_eq!(path_segment_name("a/b"), ["may not contain '/'"]);
        assert_eq!(path_segment_name("a%b/c"), ["may not contain '/'", "may not contain '%'"]);
    }

    #[test]
    fn valid_metadata_has_no_causes() {
        assert_eq!(check(json!({"name": "web", "namespace": "default"})), []);
        assert_eq!(
            check(json!({
                "name": "web.example.com",
                "namespace": "ns-1",
                "generation": 3,
                "labels": {"app": "web", "example.com/tier": "front", "empty": ""},
                "annotations": {"Example.com/Note": "anything at all", "x": ""},
                "finalizers": ["example.com/cleanup", "kubernetes"],
            })),
            []
        );
        let node = json!({"metadata": {"name": "node-1", "labels": null, "annotations": null}});
        assert_eq!(validate_metadata(&node, NameRule::Dns1123Label, false, false), []);
        let custom = json!({"metadata": {"name": "Any_Name"}});
        assert_eq!(validate_metadata(&custom, NameRule::PathSegment, false, true), []);
    }

    #[test]
    fn names_follow_their_rule() {
        let causes = check(json!({"name": "Bad_Name", "namespace": "ns"}));
        assert_eq!(
            causes,
            [Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"Bad_Name\": {SUBDOMAIN_MSG}"),
                field: "metadata.name".into(),
            }]
        );
        let long = "a".repeat(254);
        let causes = check(json!({"name": long, "namespace": "ns"}));
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            format!("Invalid value: \"{long}\": must be no more than 253 characters")
        );

        let label = |name: &str| {
            validate_metadata(&json!({"metadata": {"name": name}}), NameRule::Dns1123Label, false, true)
        };
        assert_eq!(label("svc")[..], []);
        assert_eq!(label("a.b")[0].message, "Invalid value: \"a.b\": must not contain dots");
        assert_eq!(label("Svc")[0].message, format!("Invalid value: \"Svc\": {LABEL_MSG}"));
        assert_eq!(
            label(&"a".repeat(64))[0].message.rsplit(": ").next(),
            Some("must be no more than 63 characters")
        );

        let segment = |name: &str| {
            validate_metadata(&json!({"metadata": {"name": name}}), NameRule::PathSegment, false, true)
        };
        assert_eq!(segment("..")[0].message, "Invalid value: \"..\": may not be '..'");
        assert_eq!(segment("a/b")[0].field, "metadata.name");

        // Go's %q quoting of a bad value.
        let quoted = check(json!({"name": "a\"b\n\u{1}", "namespace": "ns"}));
        assert!(quoted[0].message.starts_with(r#"Invalid value: "a\"b\n\x01": "#), "{}", quoted[0].message);
    }

    #[test]
    fn a_missing_name_is_required() {
        let required = Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: name or generateName is required".into(),
            field: "metadata.name".into(),
        };
        assert_eq!(check(json!({"namespace": "ns"})), std::slice::from_ref(&required));
        assert_eq!(check(json!({"name": "", "namespace": "ns"})), std::slice::from_ref(&required));
        let update = json!({"metadata": {"generateName": "web-", "namespace": "ns"}});
        assert_eq!(
            validate_metadata(&update, NameRule::Dns1123Subdomain, true, false),
            [required],
            "an update needs a name"
        );
    }

    #[test]
    fn generate_name_is_a_prefix() {
        assert_eq!(check(json!({"generateName": "web-", "namespace": "ns"})), []);
        assert_eq!(check(json!({"generateName": "web", "namespace": "ns"})), []);
        assert_eq!(check(json!({"generateName": "web.x-", "namespace": "ns"})), []);
        let causes = check(json!({"generateName": "Web-", "namespace": "ns"}));
        assert_eq!(fields(&causes), ["metadata.generateName"]);
        assert_eq!(causes[0].message, format!("Invalid value: \"Web-\": {SUBDOMAIN_MSG}"));
        assert_eq!(
            fields(&check(json!({"generateName": "-", "namespace": "ns"}))),
            ["metadata.generateName"]
        );
        // kube's mask drops the character before the dash too, so this passes as it does there.
        assert_eq!(check(json!({"generateName": "a--", "namespace": "ns"})), []);
        // A generateName is checked even when a name is given.
        assert_eq!(
            fields(&check(json!({"name": "ok", "generateName": "Bad-", "namespace": "ns"}))),
            ["metadata.generateName"]
        );
        let label = json!({"metadata": {"generateName": "ns-"}});
        assert_eq!(validate_metadata(&label, NameRule::Dns1123Label, false, true), []);
        let label = json!({"metadata": {"generateName": "a.b-"}});
        assert_eq!(
            validate_metadata(&label, NameRule::Dns1123Label, false, true)[0].message,
            "Invalid value: \"a.b-\": must not contain dots"
        );
        let segment = json!({"metadata": {"generateName": "..-"}});
        assert_eq!(validate_metadata(&segment, NameRule::PathSegment, false, true), []);
        let segment = json!({"metadata": {"generateName": "a/"}});
        assert_eq!(
            validate_metadata(&segment, NameRule::PathSegment, false, true)[0].message,
            "Invalid value: \"a/\": may not contain '/'"
        );
        // A multi-byte character before the trailing dash does not panic.
        assert_eq!(
            fields(&check(json!({"generateName": "é-", "namespace": "ns"}))),
            ["metadata.generateName"]
        );
    }

    #[test]
    fn namespace_is_required_or_forbidden() {
        assert_eq!(
            check(json!({"name": "a"})),
            [Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "metadata.namespace".into(),
            }]
        );
        let cluster = json!({"metadata": {"name": "n", "namespace": "ns"}});
        assert_eq!(
            validate_metadata(&cluster, NameRule::Dns1123Label, false, true),
            [Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: not allowed on this type".into(),
                field: "metadata.namespace".into(),
            }]
        );
        let causes = check(json!({"name": "a", "namespace": "Bad.NS"}));
        assert_eq!(fields(&causes), ["metadata.namespace"]);
        assert_eq!(causes[0].message, format!("Invalid value: \"Bad.NS\": {LABEL_MSG}"));
    }

    #[test]
    fn labels_are_checked_key_and_value() {
        let causes =
            check(json!({"name": "a", "namespace": "ns", "labels": {"bad key!": "x", "ok": "bad value!"}}));
        assert_eq!(fields(&causes), ["metadata.labels", "metadata.labels"]);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
             regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert!(causes[1]
            .message
            .starts_with("Invalid value: \"bad value!\": a valid label must be an empty string"));
        // Several problems with one key are several causes.
        let causes = check(json!({"name": "a", "namespace": "ns", "labels": {"Bad_Prefix/": "x"}}));
        assert_eq!(causes.len(), 3, "{causes:?}");
        assert!(causes[0].message.contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(causes[1].message.ends_with("name part must be non-empty"));
        assert!(causes[2].message.contains("name part must consist of alphanumeric characters"));
        let long = "v".repeat(64);
        let causes = check(json!({"name": "a", "namespace": "ns", "labels": {"k": long}}));
        assert_eq!(
            causes[0].message,
            format!("Invalid value: \"{long}\": must be no more than 63 characters")
        );
        let causes = check(json!({"name": "a", "namespace": "ns", "labels": {"k": 1}}));
        assert_eq!(causes[0].message, "Invalid value: 1: must be a string");
        let causes = check(json!({"name": "a", "namespace": "ns", "labels": ["k"]}));
        assert_eq!(fields(&causes), ["metadata.labels"]);
    }

    #[test]
    fn annotations_are_checked_and_sized() {
        // The key is checked lower-cased, so an upper case prefix passes.
        assert_eq!(
            check(json!({"name": "a", "namespace": "ns", "annotations": {"Example.COM/Note": "ok"}})),
            []
        );
        let causes = check(json!({"name": "a", "namespace": "ns", "annotations": {"Bad_Prefix/note": "ok"}}));
        assert_eq!(fields(&causes), ["metadata.annotations"]);
        assert!(causes[0].message.starts_with("Invalid value: \"Bad_Prefix/note\": prefix part"));
        let causes = check(json!({"name": "a", "namespace": "ns", "annotations": {"-bad": "ok"}}));
        assert_eq!(fields(&causes), ["metadata.annotations"]);
        // Annotation values are free text.
        assert_eq!(check(json!({"name": "a", "namespace": "ns", "annotations": {"k": "any thing! 🎉"}})), []);
        let at_limit = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1);
        assert_eq!(check(json!({"name": "a", "namespace": "ns", "annotations": {"k": at_limit}})), []);
        let over = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        assert_eq!(
            check(json!({"name": "a", "namespace": "ns", "annotations": {"k": over}})),
            [Cause {
                reason: "FieldValueTooLong".into(),
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            }]
        );
    }

    #[test]
    fn other_metadata_fields() {
        let causes = check(json!({"name": "a", "namespace": "ns", "generation": -1}));
        assert_eq!(
            causes,
            [Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: -1: must be greater than or equal to 0".into(),
                field: "metadata.generation".into(),
            }]
        );
        let causes = check(json!({"name": "a", "namespace": "ns", "finalizers": ["ok/one", "bad one"]}));
        assert_eq!(fields(&causes), ["metadata.finalizers"]);
        assert!(causes[0].message.starts_with("Invalid value: \"bad one\": name part"));
        assert_eq!(fields(&check(json!({"name": 5, "namespace": "ns"}))), ["metadata.name", "metadata.name"]);
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(
            validate_metadata(&json!({}), NameRule::PathSegment, false, true),
            [Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "metadata".into()
            }]
        );
        let causes = validate_metadata(&json!({"metadata": "x"}), NameRule::PathSegment, false, true);
        assert_eq!(fields(&causes), ["metadata"]);
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert_eq!(fields(&validate_metadata(&json!([]), NameRule::PathSegment, false, true)), ["metadata"]);
    }

    #[test]
    fn causes_serialize_as_status_causes() {
        let cause = required("metadata.namespace", "");
        assert_eq!(
            serde_json::to_value(&cause).unwrap(),
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "metadata.namespace"})
        );
    }
}
