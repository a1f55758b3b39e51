//! `--authorization-mode=RBAC`: kube's RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`),
//! evaluated on every request from the watch caches of roles, rolebindings, clusterroles and
//! clusterrolebindings. Nothing is cached across requests: each decision reads the caches'
//! current snapshots, so a binding created or deleted takes effect with the next request.
//!
//! Matching follows kube's `pkg/apis/rbac/v1/evaluation_helpers.go` exactly (`VerbMatches`,
//! `APIGroupMatches`, `ResourceMatches`, `ResourceNameMatches`, `NonResourceURLMatches`).
//!
//! Aggregated ClusterRoles (`aggregationRule.clusterRoleSelectors`) are evaluated at
//! authorization time: an aggregating role's rules are its own plus those of every ClusterRole
//! its selectors match (recursively), which is what kube's clusterrole-aggregation controller
//! writes into the role.
//!
//! Members of `system:masters` are allowed everything before RBAC is consulted, as
//! kube-apiserver's privileged-group authorizer does.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::{Attributes, Authorizer, Decision, UserInfo, MASTERS_GROUP};
use crate::registry::Registry;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Where the authorizer reads RBAC objects from.
pub trait PolicySource: Send + Sync {
    /// Every ClusterRoleBinding.
    fn cluster_role_bindings(&self) -> Vec<Arc<Value>>;
    /// The RoleBindings of `namespace`.
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>>;
    /// The Role `namespace`/`name`.
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>>;
    /// The ClusterRole `name`.
    fn cluster_role(&self, name: &str) -> Option<Arc<Value>>;
    /// Every ClusterRole (for aggregation).
    fn cluster_roles(&self) -> Vec<Arc<Value>>;
}

/// Policy read from the registry's watch caches (their current snapshots; never storage).
pub struct CachePolicy {
    registry: Arc<Registry>,
}

impl CachePolicy {
    /// Reads the RBAC types' caches in `registry`.
    pub fn new(registry: Arc<Registry>) -> CachePolicy {
        CachePolicy { registry }
    }

    fn objects(&self, plural: &str, prefix_tail: &str) -> Vec<Arc<Value>> {
        let Some(resource) = self.registry.get(GROUP, "v1", plural) else { return Vec::new() };
        let snapshot = resource.cacher.current_snapshot();
        let prefix = format!("{}{prefix_tail}", resource.ty.storage_prefix);
        snapshot.range(&prefix, None).filter_map(|object| decode(&object.json)).collect()
    }

    fn object(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Arc<Value>> {
        let resource = self.registry.get(GROUP, "v1", plural)?;
        let snapshot = resource.cacher.current_snapshot();
        snapshot.get(&resource.ty.key(namespace, name)).and_then(|object| decode(&object.json))
    }
}

fn decode(json: &[u8]) -> Option<Arc<Value>> {
    serde_json::from_slice(json).ok().map(Arc::new)
}

impl PolicySource for CachePolicy {
    fn cluster_role_bindings(&self) -> Vec<Arc<Value>> {
        self.objects("clusterrolebindings", "")
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>> {
        self.objects("rolebindings", &format!("{namespace}/"))
    }
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.object("roles", Some(namespace), name)
    }
    fn cluster_role(&self, name: &str) -> Option<Arc<Value>> {
        self.object("clusterroles", None, name)
    }
    fn cluster_roles(&self) -> Vec<Arc<Value>> {
        self.objects("clusterroles", "")
    }
}

/// kube's RBAC authorizer over a [`PolicySource`].
pub struct RbacAuthorizer {
    source: Box<dyn PolicySource>,
}

impl RbacAuthorizer {
    /// An authorizer reading `source`.
    pub fn new(source: Box<dyn PolicySource>) -> RbacAuthorizer {
        RbacAuthorizer { source }
    }

    /// An authorizer reading the registry's RBAC caches.
    pub fn from_registry(registry: Arc<Registry>) -> RbacAuthorizer {
        RbacAuthorizer::new(Box::new(CachePolicy::new(registry)))
    }

    /// Visits every rule that applies to `user` in `namespace` (kube's `VisitRulesFor`):
    /// ClusterRoleBindings first, then the RoleBindings of the namespace. `visit` returns
    /// whether to go on. Errors (a missing role) are collected into `errors`.
    pub fn visit_rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
        errors: &mut Vec<String>,
        visit: &mut dyn FnMut(&Value) -> bool,
    ) {
        for binding in self.source.cluster_role_bindings() {
            if !applies_to(user, &binding, "") {
                continue;
            }
            match self.role_rules(&binding["roleRef"], "") {
                Ok(rules) => {
                    for rule in &rules {
                        if !visit(rule) {
                            return;
                        }
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        if namespace.is_empty() {
            return;
        }
        for binding in self.source.role_bindings(namespace) {
            if !applies_to(user, &binding, namespace) {
                continue;
            }
            match self.role_rules(&binding["roleRef"], namespace) {
                Ok(rules) => {
                    for rule in &rules {
                        if !visit(rule) {
                            return;
                        }
                    }
                }
                Err(error) => errors.push(error),
            }
        }
    }

    /// The rules of the role a binding refers to (kube's `GetRoleReferenceRules`).
    fn role_rules(&self, role_ref: &Value, namespace: &str) -> Result<Vec<Value>, String> {
        let name = role_ref["name"].as_str().unwrap_or_default();
        match role_ref["kind"].as_str().unwrap_or_default() {
            "Role" => match self.source.role(namespace, name) {
                Some(role) => Ok(rules_of(&role)),
                None => Err(format!("role.{GROUP} \"{name}\" not found")),
            },
            "ClusterRole" => match self.source.cluster_role(name) {
                Some(role) => Ok(self.cluster_role_rules(&role)),
                None => Err(format!("clusterrole.{GROUP} \"{name}\" not found")),
            },
            kind => Err(format!("unsupported role reference kind: \"{kind}\"")),
        }
    }

    /// A ClusterRole's rules, with those of the roles it aggregates.
    fn cluster_role_rules(&self, role: &Value) -> Vec<Value> {
        let mut rules = rules_of(role);
        if role.get("aggregationRule").is_none() {
            return rules;
        }
        let all = self.source.cluster_roles();
        let mut seen = BTreeSet::new();
        let mut pending = vec![role.clone()];
        seen.insert(role["metadata"]["name"].as_str().unwrap_or_default().to_owned());
        while let Some(aggregating) = pending.pop() {
            let selectors = aggregating["aggregationRule"]["clusterRoleSelectors"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for candidate in &all {
                let name = candidate["metadata"]["name"].as_str().unwrap_or_default();
                if seen.contains(name)
                    || !selectors.iter().any(|selector| selector_matches(selector, candidate))
                {
                    continue;
                }
                seen.insert(name.to_owned());
                rules.extend(rules_of(candidate));
                if candidate.get("aggregationRule").is_some() {
                    pending.push((**candidate).clone());
                }
            }
        }
        rules
    }
}

fn rules_of(role: &Value) -> Vec<Value> {
    role["rules"].as_array().cloned().unwrap_or_default()
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) matches an object's labels.
fn selector_matches(selector: &Value, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    if let Some(match_labels) = selector["matchLabels"].as_object() {
        if !match_labels.iter().all(|(key, value)| label(key) == value.as_str()) {
            return false;
        }
    }
    let expressions = selector["matchExpressions"].as_array().cloned().unwrap_or_default();
    expressions.iter().all(|expression| {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match expression["operator"].as_str().unwrap_or_default() {
            "In" => label(key).is_some_and(|value| values.contains(&value)),
            "NotIn" => label(key).is_none_or(|value| !values.contains(&value)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        }
    })
}

/// Whether any subject of `binding` is `user` (kube's `appliesTo`); `namespace` is the
/// binding's ("" for a ClusterRoleBinding).
fn applies_to(user: &UserInfo, binding: &Value, namespace: &str) -> bool {
    let subjects = binding["subjects"].as_array().map(Vec::as_slice).unwrap_or_default();
    subjects.iter().any(|subject| applies_to_user(user, subject, namespace))
}

/// kube's `appliesToUser`.
pub fn applies_to_user(user: &UserInfo, subject: &Value, namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.name == name,
        "Group" => user.in_group(name),
        "ServiceAccount" => {
            let sa_namespace = match subject["namespace"].as_str().unwrap_or_default() {
                "" => namespace,
                explicit => explicit,
            };
            if sa_namespace.is_empty() {
                return false;
            }
            user.name == format!("system:serviceaccount:{sa_namespace}:{name}")
        }
        _ => false,
    }
}

fn strings(rule: &Value, field: &str) -> Vec<String> {
    rule[field]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// kube's `VerbMatches`.
pub fn verb_matches(rule: &Value, verb: &str) -> bool {
    strings(rule, "verbs").iter().any(|candidate| candidate == "*" || candidate == verb)
}

/// kube's `APIGroupMatches`.
pub fn api_group_matches(rule: &Value, group: &str) -> bool {
    strings(rule, "apiGroups").iter().any(|candidate| candidate == "*" || candidate == group)
}

/// kube's `ResourceMatches`: `combined` is `resource` or `resource/subresource`.
pub fn resource_matches(rule: &Value, combined: &str, subresource: &str) -> bool {
    strings(rule, "resources").iter().any(|candidate| {
        if candidate == "*" || candidate == combined {
            return true;
        }
        if subresource.is_empty() {
            return false;
        }
        candidate.len() == subresource.len() + 2
            && candidate.starts_with("*/")
            && candidate.ends_with(subresource)
    })
}

/// kube's `ResourceNameMatches`: a rule with resourceNames never matches a request without a
/// name (create, list, watch, deletecollection).
pub fn resource_name_matches(rule: &Value, name: &str) -> bool {
    let names = strings(rule, "resourceNames");
    names.is_empty() || names.iter().any(|candidate| candidate == name)
}

/// kube's `NonResourceURLMatches`.
pub fn non_resource_url_matches(rule: &Value, path: &str) -> bool {
    strings(rule, "nonResourceURLs").iter().any(|candidate| {
        candidate == "*"
            || candidate == path
            || candidate.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// kube's `RuleAllows`.
pub fn rule_allows(attributes: &Attributes<'_>, rule: &Value) -> bool {
    if attributes.resource_request {
        let combined = if attributes.subresource.is_empty() {
            attributes.resource.to_owned()
        } else {
            format!("{}/{}", attributes.resource, attributes.subresource)
        };
        return verb_matches(rule, attributes.verb)
            && api_group_matches(rule, attributes.api_group)
            && resource_matches(rule, &combined, attributes.subresource)
            && resource_name_matches(rule, attributes.name);
    }
    verb_matches(rule, attributes.verb) && non_resource_url_matches(rule, attributes.path)
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        if attributes.user.in_group(MASTERS_GROUP) {
            return Decision::Allow;
        }
        let mut allowed = false;
        let mut errors = Vec::new();
        self.visit_rules_for(attributes.user, attributes.namespace, &mut errors, &mut |rule| {
            allowed = rule_allows(attributes, rule);
            !allowed
        });
        if allowed {
            return Decision::Allow;
        }
        // kube: no opinion with an empty reason, unless resolving a binding failed.
        match errors.len() {
            0 => Decision::Deny(String::new()),
            1 => Decision::Deny(format!("RBAC: {}", errors[0])),
            _ => Decision::Deny(format!("RBAC: [{}]", errors.join(", "))),
        }
    }
}
