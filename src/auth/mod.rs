//! Who is asking, and whether they may: the user a request authenticates as, the attributes an
//! authorizer decides on, and the authorizers.
//!
//! The request path (`api::handle_inner`) authenticates every request first (401 on failure),
//! then asks [`Authorizer::authorize`] about the [`Attributes`] of the request (403 on deny), and
//! only then routes it. A decision is made per request and never cached across requests, so a
//! change to what a user may do takes effect at once.

pub mod bootstrap;
pub mod rbac;

use std::collections::BTreeMap;

pub mod authn;

/// `system:masters`: the group that may do anything.
pub const MASTERS_GROUP: &str = "system:masters";
/// `system:authenticated`: every user who presented valid credentials.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// `system:unauthenticated`: the group of the anonymous user.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The anonymous user's name.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// An authenticated user, as kube's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user's name.
    pub name: String,
    /// A unique identifier, when the authenticator knows one.
    pub uid: String,
    /// The groups the user is in.
    pub groups: Vec<String>,
    /// Further attributes from the authenticator.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The user of a server that runs without authentication: allowed everything, as
    /// kube-apiserver's loopback client.
    pub fn loopback_admin() -> UserInfo {
        UserInfo {
            name: "system:admin".to_owned(),
            uid: String::new(),
            groups: vec![MASTERS_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
            extra: BTreeMap::new(),
        }
    }

    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS_USER.to_owned(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.to_owned()],
            extra: BTreeMap::new(),
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|candidate| candidate == group)
    }
}

/// What a request asks to do, as kube's `authorizer.Attributes`.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a UserInfo,
    /// kube's verb: get, list, watch, create, update, patch, delete, deletecollection for
    /// resource requests; the lower-case HTTP method for other paths.
    pub verb: &'a str,
    /// Whether the request is on a resource (`/api/...`, `/apis/...` with a resource), or on a
    /// non-resource path such as `/healthz`, `/version` or a discovery document.
    pub resource_request: bool,
    /// The URL path, for non-resource requests.
    pub path: &'a str,
    /// API group ("" for core).
    pub api_group: &'a str,
    /// API version.
    pub api_version: &'a str,
    /// Namespace ("" for cluster-scoped requests and requests across all namespaces).
    pub namespace: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// Subresource, e.g. `status` ("" for none).
    pub subresource: &'a str,
    /// The object's name ("" for collections).
    pub name: &'a str,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request may go on.
    Allow,
    /// The request is refused, with a reason for the 403 message (may be empty).
    Deny(String),
}

/// Decides whether a request may go on. Called once per request on the request path: it must
/// not block and must not read storage (read from the watch cache instead).
pub trait Authorizer: Send + Sync {
    /// The decision for `attributes`.
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision;

    /// What `user` may do in `namespace` (kube's `RuleResolver.RulesFor`, for
    /// SelfSubjectRulesReview). An authorizer that cannot list its rules says it is incomplete.
    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> RulesReview {
        RulesReview { incomplete: true, ..RulesReview::default() }
    }
}

/// The rules a user has, as a SelfSubjectRulesReview's status gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesReview {
    /// `resourceRules`: verbs, apiGroups, resources, resourceNames.
    pub resource_rules: Vec<serde_json::Value>,
    /// `nonResourceRules`: verbs, nonResourceURLs.
    pub non_resource_rules: Vec<serde_json::Value>,
    /// Whether the list may be missing rules.
    pub incomplete: bool,
    /// Why it is incomplete ("" if not).
    pub evaluation_error: String,
}

impl RulesReview {
    /// Everything allowed, as kube's AlwaysAllow and privileged-group authorizers list it.
    pub fn everything() -> RulesReview {
        RulesReview {
            resource_rules: vec![serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
            non_resource_rules: vec![serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
            incomplete: false,
            evaluation_error: String::new(),
        }
    }
}

/// `--authorization-mode=AlwaysAllow`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _attributes: &Attributes<'_>) -> Decision {
        Decision::Allow
    }

    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> RulesReview {
        RulesReview::everything()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::ApiError;

    fn attributes<'a>(
        user: &'a UserInfo,
        verb: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            resource_request: true,
            path: "",
            api_group: "apps",
            api_version: "v1",
            namespace,
            resource: "deployments",
            subresource: "",
            name,
        }
    }

    #[test]
    fn a_refusal_reads_as_kube_apiserver_words_it() {
        let bob = UserInfo { name: "bob".into(), ..UserInfo::default() };
        let named = ApiError::forbidden(&attributes(&bob, "get", "default", "web"), "");
        assert_eq!(named.code, http::StatusCode::FORBIDDEN);
        assert_eq!(named.reason, "Forbidden");
        assert_eq!(
            named.message,
            r#"deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments" in API group "apps" in the namespace "default""#
        );
        let cluster = ApiError::forbidden(&attributes(&bob, "list", "", ""), "no RBAC policy matched");
        assert_eq!(
            cluster.message,
            r#"deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" at the cluster scope: no RBAC policy matched"#
        );
        let mut scale = attributes(&bob, "update", "default", "web");
        scale.subresource = "scale";
        assert!(ApiError::forbidden(&scale, "")
            .message
            .contains(r#"cannot update resource "deployments/scale""#));
        let path =
            Attributes { resource_request: false, path: "/healthz", ..attributes(&bob, "get", "", "") };
        assert_eq!(
            ApiError::forbidden(&path, "").message,
            r#"forbidden: User "bob" cannot get path "/healthz""#
        );
    }

    #[test]
    fn always_allow_allows_anonymous_too() {
        let anonymous = UserInfo::anonymous();
        assert_eq!(
            AlwaysAllow.authorize(&attributes(&anonymous, "delete", "default", "web")),
            Decision::Allow
        );
        assert!(anonymous.in_group(UNAUTHENTICATED_GROUP));
        assert!(UserInfo::loopback_admin().in_group(MASTERS_GROUP));
    }
}
