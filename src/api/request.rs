//! Parsing what a request asks for: the resource path and the query parameters.

use std::collections::HashMap;

use base64::Engine;
use serde_json::json;

use super::printers::IncludeObject;
use super::status::ApiError;
use crate::cacher::{ReadVersion, WatchStart};
use crate::storage::Revision;

/// The parts of a resource path: `/api/v1/...` or `/apis/<group>/<version>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name; `None` for the group-version's discovery document.
    pub plural: Option<String>,
    /// The namespace of a namespaced path (`.../namespaces/<ns>/<plural>...`).
    pub namespace: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// The subresource, e.g. `status`.
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...`; `None` for any other path.
pub fn parse_path(path: &str) -> Option<ResourcePath> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    let mut parsed = ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        plural: None,
        namespace: None,
        name: None,
        subresource: None,
    };
    let owned = |segment: &&str| Some(segment.to_string());
    match rest {
        [] => {}
        // `namespaces/<ns>/<plural>...` is a namespaced path unless `<plural>` is one of the
        // namespace's own subresources.
        ["namespaces", namespace, plural, rest @ ..] if !matches!(*plural, "status" | "finalize") => {
            parsed.namespace = owned(namespace);
            parsed.plural = owned(plural);
            match rest {
                [] => {}
                [name] => parsed.name = owned(name),
                [name, subresource] => {
                    parsed.name = owned(name);
                    parsed.subresource = owned(subresource);
                }
                _ => return None,
            }
        }
        [plural] => parsed.plural = owned(plural),
        [plural, name] => {
            parsed.plural = owned(plural);
            parsed.name = owned(name);
        }
        [plural, name, subresource] => {
            parsed.plural = owned(plural);
            parsed.name = owned(name);
            parsed.subresource = owned(subresource);
        }
        _ => return None,
    }
    Some(parsed)
}

/// The query parameters the API understands.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// `labelSelector`.
    pub label_selector: String,
    /// `fieldSelector`.
    pub field_selector: String,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`, decoded.
    pub continue_token: Option<ContinueToken>,
    /// `resourceVersion`, as given.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `watch`.
    pub watch: bool,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `includeObject` (a Table's rows' objects), as given; checked by
    /// [`Query::include_object`] when a Table is asked for.
    pub include_object: Option<String>,
    /// A DELETE's `gracePeriodSeconds` (DeleteOptions in the body take precedence).
    pub grace_period_seconds: Option<i64>,
    /// A DELETE's `propagationPolicy`, as given.
    pub propagation_policy: Option<String>,
    /// A DELETE's legacy `orphanDependents`.
    pub orphan_dependents: Option<bool>,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "True" => Ok(true),
        "false" | "0" | "False" | "" => Ok(false),
        _ => {
            Err(ApiError::bad_request(format!("invalid value for {name}: {value:?}: must be true or false")))
        }
    }
}

/// Parses the query string.
pub fn parse_query(query: Option<&str>) -> Result<Query, ApiError> {
    let mut parsed = Query::default();
    let pairs: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    for (name, value) in &pairs {
        match name.as_str() {
            "labelSelector" => parsed.label_selector = value.clone(),
            "fieldSelector" => parsed.field_selector = value.clone(),
            "limit" => {
                let limit: i64 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid limit {value:?}: must be an integer"))
                })?;
                if limit < 0 {
                    return Err(ApiError::bad_request(format!(
                        "invalid limit {limit}: must not be negative"
                    )));
                }
                parsed.limit = (limit > 0).then_some(limit as usize);
            }
            "continue" if !value.is_empty() => parsed.continue_token = Some(ContinueToken::decode(value)?),
            "resourceVersion" if !value.is_empty() => parsed.resource_version = Some(value.clone()),
            "resourceVersionMatch" if !value.is_empty() => {
                parsed.resource_version_match = Some(value.clone())
            }
            "watch" => parsed.watch = parse_bool(name, value)?,
            "allowWatchBookmarks" => parsed.allow_watch_bookmarks = parse_bool(name, value)?,
            "sendInitialEvents" => parsed.send_initial_events = Some(parse_bool(name, value)?),
            "timeoutSeconds" => {
                parsed.timeout_seconds = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid timeoutSeconds {value:?}: must be a non-negative integer"
                    ))
                })?)
            }
            "includeObject" => parsed.include_object = Some(value.clone()),
            "gracePeriodSeconds" if !value.is_empty() => {
                parsed.grace_period_seconds = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {value:?}: must be an integer"))
                })?)
            }
            "propagationPolicy" if !value.is_empty() => parsed.propagation_policy = Some(value.clone()),
            "orphanDependents" => parsed.orphan_dependents = Some(parse_bool(name, value)?),
            "dryRun" => match value.as_str() {
                "All" => parsed.dry_run = true,
                "" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid dryRun value {other:?}: supported values: \"All\""
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(parsed)
}

fn parse_revision(text: &str) -> Result<Revision, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {text:?}: must be an integer")))
}

impl Query {
    /// What a Table's rows carry (`includeObject`: `None`, `Metadata` by default, or `Object`),
    /// with kube-apiserver's 400 for any other value.
    pub fn include_object(&self) -> Result<IncludeObject, ApiError> {
        match self.include_object.as_deref() {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "Unable to convert to Table as requested: includeObject: Unsupported value: {other:?}: \
                 supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }

    /// The revision semantics of a list or get (kube's resourceVersion rules).
    pub fn read_version(&self) -> Result<ReadVersion, ApiError> {
        match (&self.resource_version, self.resource_version_match.as_deref()) {
            (None, Some(_)) => Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
            (None, None) => Ok(ReadVersion::Consistent),
            (Some(version), matching) => {
                let revision = parse_revision(version)?;
                match matching {
                    None | Some("NotOlderThan") if revision == 0 => Ok(ReadVersion::Any),
                    None | Some("NotOlderThan") => Ok(ReadVersion::NotOlderThan(revision)),
                    Some("Exact") if revision == 0 => Err(ApiError::bad_request(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                    )),
                    Some("Exact") => Ok(ReadVersion::Exact(revision)),
                    Some(other) => Err(ApiError::bad_request(format!(
                        "invalid resourceVersionMatch {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                    ))),
                }
            }
        }
    }

    /// Where a watch starts (kube's watch resourceVersion rules, with sendInitialEvents).
    pub fn watch_start(&self, current: Revision) -> Result<WatchStart, ApiError> {
        let revision = self.resource_version.as_deref().map(parse_revision).transpose()?;
        match self.send_initial_events {
            Some(send) => {
                if self.resource_version_match.as_deref() != Some("NotOlderThan") {
                    return Err(ApiError::bad_request(
                        "sendInitialEvents is forbidden unless resourceVersionMatch is \"NotOlderThan\"",
                    ));
                }
                let version = match revision {
                    None => ReadVersion::Consistent,
                    Some(0) => ReadVersion::Any,
                    Some(revision) => ReadVersion::NotOlderThan(revision),
                };
                if send {
                    if !self.allow_watch_bookmarks {
                        return Err(ApiError::bad_request(
                            "sendInitialEvents requires setting allowWatchBookmarks to true",
                        ));
                    }
                    Ok(WatchStart::InitialState { version, initial_events_end: true })
                } else {
                    Ok(WatchStart::After(revision.filter(|&revision| revision > 0).unwrap_or(current)))
                }
            }
            None => {
                if self.resource_version_match.is_some() {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                match revision {
                    None => Ok(WatchStart::InitialState {
                        version: ReadVersion::Consistent,
                        initial_events_end: false,
                    }),
                    Some(0) => {
                        Ok(WatchStart::InitialState { version: ReadVersion::Any, initial_events_end: false })
                    }
                    Some(revision) => Ok(WatchStart::After(revision)),
                }
            }
        }
    }
}

/// A list's continue token: the revision it is at and the last key it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    /// The list's revision.
    pub revision: Revision,
    /// The storage key to continue after.
    pub after: String,
}

impl ContinueToken {
    /// The opaque form: base64 (URL-safe, no padding) of a small JSON document, as kube does.
    pub fn encode(&self) -> String {
        let document = json!({ "v": "meta.k8s.io/v1", "rv": self.revision, "start": self.after });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(document.to_string())
    }

    /// Parses the opaque form.
    pub fn decode(token: &str) -> Result<ContinueToken, ApiError> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
            .map_err(|_| invalid())?;
        let document: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if document["v"] != "meta.k8s.io/v1" {
            return Err(invalid());
        }
        let revision = document["rv"].as_u64().filter(|&revision| revision > 0).ok_or_else(invalid)?;
        // A clean storage key only (no empty, `.` or `..` segment, no control character), as
        // kube-apiserver path-cleans its start key: a token cannot reach outside the list's
        // prefix by traversal.
        let after = document["start"]
            .as_str()
            .filter(|after| crate::storage::validate_key(after).is_ok())
            .ok_or_else(invalid)?;
        Ok(ContinueToken { revision, after: after.to_owned() })
    }

    /// Whether the token continues a list of the keys under `prefix` (it was given out by a
    /// list of that prefix).
    pub fn within(&self, prefix: &str) -> bool {
        self.after.starts_with(prefix) && self.after.len() > prefix.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_resources() {
        let path = parse_path("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (path.group.as_str(), path.namespace.as_deref(), path.plural.as_deref(), path.name.as_deref()),
            ("", Some("default"), Some("pods"), Some("web"))
        );
        assert_eq!(path.subresource.as_deref(), Some("status"));
        let namespace = parse_path("/api/v1/namespaces/default").unwrap();
        assert_eq!(
            (namespace.plural.as_deref(), namespace.name.as_deref()),
            (Some("namespaces"), Some("default"))
        );
        let status = parse_path("/api/v1/namespaces/default/status").unwrap();
        assert_eq!(status.subresource.as_deref(), Some("status"));
        let all = parse_path("/apis/apps/v1/deployments").unwrap();
        assert_eq!(
            (all.group.as_str(), all.plural.as_deref(), all.namespace),
            ("apps", Some("deployments"), None)
        );
        assert!(parse_path("/apis/apps").is_none());
        assert!(parse_path("/api/v1/namespaces/a/pods/b/c/d").is_none());
        assert!(parse_path("/other").is_none());
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = ContinueToken { revision: 42, after: "/pods/ns/a".into() };
        assert_eq!(ContinueToken::decode(&token.encode()).unwrap(), token);
        for bad in ["", "!!!", "e30", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MH0"] {
            assert!(ContinueToken::decode(bad).is_err(), "{bad}");
        }
        // Keys that are not clean are refused, as kube refuses start keys that path.Clean changes.
        for after in ["/pods/ns/../../secrets/a", "/pods//a", "/pods/ns/./a", "pods/a", "/pods/a\u{0}"] {
            let token = ContinueToken { revision: 3, after: after.into() };
            assert!(ContinueToken::decode(&token.encode()).is_err(), "{after:?}");
        }
        assert!(token.within("/pods/ns/"));
        assert!(!token.within("/pods/ns/a"), "the prefix itself is no key under it");
        assert!(!token.within("/pods/other/"));
    }

    #[test]
    fn resource_versions_follow_kube() {
        let query = |rv: Option<&str>, matching: Option<&str>| Query {
            resource_version: rv.map(str::to_owned),
            resource_version_match: matching.map(str::to_owned),
            ..Query::default()
        };
        assert_eq!(query(None, None).read_version().unwrap(), ReadVersion::Consistent);
        assert_eq!(query(Some("0"), None).read_version().unwrap(), ReadVersion::Any);
        assert_eq!(query(Some("5"), None).read_version().unwrap(), ReadVersion::NotOlderThan(5));
        assert_eq!(query(Some("5"), Some("Exact")).read_version().unwrap(), ReadVersion::Exact(5));
        assert!(query(None, Some("Exact")).read_version().is_err());
        assert!(query(Some("x"), None).read_version().is_err());
        assert!(query(Some("5"), Some("Sometimes")).read_version().is_err());
        assert_eq!(query(Some("7"), None).watch_start(9).unwrap(), WatchStart::After(7));
        let mut watch_list = query(None, Some("NotOlderThan"));
        watch_list.send_initial_events = Some(true);
        assert!(watch_list.watch_start(9).is_err(), "bookmarks are required");
        watch_list.allow_watch_bookmarks = true;
        assert_eq!(
            watch_list.watch_start(9).unwrap(),
            WatchStart::InitialState { version: ReadVersion::Consistent, initial_events_end: true }
        );
    }
}
