//! `--authorization-mode=RBAC`: kube's RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`),
//! evaluated on every request from the watch caches of roles, rolebindings, clusterroles and
//! clusterrolebindings. No decision is cached across requests: each reads the caches' current
//! snapshots (their objects decoded once per change, see [`CachePolicy`]), so a binding created
//! or deleted takes effect with the next request after the cache has it.
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

use arc_swap::ArcSwapOption;

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
    /// A number that changes whenever any ClusterRole changes, if the source has one: the
    /// authorizer then resolves each ClusterRole's (aggregated) rules once per value of it.
    fn cluster_roles_generation(&self) -> Option<crate::storage::Revision> {
        None
    }
    /// Every ClusterRole (for aggregation).
    fn cluster_roles(&self) -> Vec<Arc<Value>>;
}

/// Policy read from the registry's watch caches (their current snapshots; never storage).
///
/// Each RBAC type's objects are decoded from JSON once per change of its cache, not once per
/// request: the decoded objects are kept with the revision of the snapshot's last change, and
/// a request that finds the cache changed since decodes the new snapshot (RBAC objects change
/// rarely; requests are many). A write to a binding is still seen by the first request after
/// the cache has it.
pub struct CachePolicy {
    registry: Arc<Registry>,
    /// Per plural (in [`PLURALS`] order), the decoded objects of the snapshot last read.
    decoded: [ArcSwapOption<Decoded>; 4],
}

/// The RBAC plurals, in the order of [`CachePolicy::decoded`].
const PLURALS: [&str; 4] = ["roles", "rolebindings", "clusterroles", "clusterrolebindings"];

/// One snapshot's objects of one RBAC type, decoded.
struct Decoded {
    /// The snapshot's last change: while it is unchanged, so are these.
    changed: crate::storage::Revision,
    /// By storage key.
    objects: std::collections::BTreeMap<Arc<str>, Arc<Value>>,
}

impl CachePolicy {
    /// Reads the RBAC types' caches in `registry`.
    pub fn new(registry: Arc<Registry>) -> CachePolicy {
        CachePolicy { registry, decoded: Default::default() }
    }

    /// The decoded objects of `plural` as its cache has them now, and its storage prefix.
    fn decoded(&self, plural: &str) -> Option<(Arc<Decoded>, Arc<crate::registry::Resource>)> {
        let index = PLURALS.iter().position(|candidate| *candidate == plural)?;
        let resource = self.registry.get(GROUP, "v1", plural)?;
        let snapshot = resource.cacher.current_snapshot();
        if let Some(decoded) = self.decoded[index].load_full() {
            // The same last change is the same state.
            if decoded.changed == snapshot.changed {
                return Some((decoded, resource));
            }
        }
        let objects = snapshot
            .range("", None)
            .filter_map(|object| decode(&object.json).map(|value| (Arc::clone(&object.key), value)))
            .collect();
        let decoded = Arc::new(Decoded { changed: snapshot.changed, objects });
        self.decoded[index].store(Some(Arc::clone(&decoded)));
        Some((decoded, resource))
    }

    fn objects(&self, plural: &str, prefix_tail: &str) -> Vec<Arc<Value>> {
        let Some((decoded, resource)) = self.decoded(plural) else { return Vec::new() };
        let prefix = format!("{}{prefix_tail}", resource.ty.storage_prefix);
        decoded
            .objects
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix.as_str()))
            .map(|(_, value)| Arc::clone(value))
            .collect()
    }

    fn object(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Arc<Value>> {
        let (decoded, resource) = self.decoded(plural)?;
        decoded.objects.get(resource.ty.key(namespace, name).as_str()).cloned()
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
    fn cluster_roles_generation(&self) -> Option<crate::storage::Revision> {
        self.decoded("clusterroles").map(|(decoded, _)| decoded.changed)
    }
}

/// kube's RBAC authorizer over a [`PolicySource`].
pub struct RbacAuthorizer {
    source: Box<dyn PolicySource>,
    /// Each ClusterRole's rules, aggregated, as of one generation of the ClusterRoles.
    resolved: arc_swap::ArcSwap<ResolvedRoles>,
}

#[derive(Default)]
struct ResolvedRoles {
    generation: Option<crate::storage::Revision>,
    rules: std::collections::HashMap<String, Arc<Vec<Value>>>,
}

impl RbacAuthorizer {
    /// An authorizer reading `source`.
    pub fn new(source: Box<dyn PolicySource>) -> RbacAuthorizer {
        RbacAuthorizer { source, resolved: Default::default() }
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
                    for rule in rules.iter() {
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
                    for rule in rules.iter() {
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
    fn role_rules(&self, role_ref: &Value, namespace: &str) -> Result<Arc<Vec<Value>>, String> {
        let name = role_ref["name"].as_str().unwrap_or_default();
        match role_ref["kind"].as_str().unwrap_or_default() {
            "Role" => match self.source.role(namespace, name) {
                Some(role) => Ok(Arc::new(rules_of(&role))),
                None => Err(format!("role.{GROUP} \"{name}\" not found")),
            },
            "ClusterRole" => self.resolved_cluster_role(name),
            kind => Err(format!("unsupported role reference kind: \"{kind}\"")),
        }
    }

    /// A ClusterRole's rules, aggregated, resolved once per generation of the ClusterRoles when
    /// the source counts them (at most one resolution per ClusterRole per change of any).
    fn resolved_cluster_role(&self, name: &str) -> Result<Arc<Vec<Value>>, String> {
        let generation = self.source.cluster_roles_generation();
        if generation.is_some() {
            let resolved = self.resolved.load();
            if resolved.generation == generation {
                if let Some(rules) = resolved.rules.get(name) {
                    return Ok(Arc::clone(rules));
                }
            }
        }
        let Some(role) = self.source.cluster_role(name) else {
            return Err(format!("clusterrole.{GROUP} \"{name}\" not found"));
        };
        let rules = Arc::new(self.cluster_role_rules(&role));
        if generation.is_some() {
            // Copy on write: a handful of ClusterRoles are bound, so this happens a handful of
            // times per change; concurrent resolutions at worst repeat one another.
            let current = self.resolved.load_full();
            let mut map =
                if current.generation == generation { current.rules.clone() } else { Default::default() };
            map.insert(name.to_owned(), Arc::clone(&rules));
            self.resolved.store(Arc::new(ResolvedRoles { generation, rules: map }));
        }
        Ok(rules)
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

    fn rules_for(&self, user: &UserInfo, namespace: &str) -> super::RulesReview {
        if user.in_group(MASTERS_GROUP) {
            return super::RulesReview::everything();
        }
        let mut review = super::RulesReview::default();
        let mut errors = Vec::new();
        self.visit_rules_for(user, namespace, &mut errors, &mut |rule| {
            if rule.get("nonResourceURLs").and_then(Value::as_array).is_some_and(|urls| !urls.is_empty()) {
                review.non_resource_rules.push(serde_json::json!({
                    "verbs": rule["verbs"],
                    "nonResourceURLs": rule["nonResourceURLs"],
                }));
            } else {
                let mut resource_rule = serde_json::json!({
                    "verbs": rule["verbs"],
                    "apiGroups": rule.get("apiGroups").cloned().unwrap_or_else(|| serde_json::json!([])),
                    "resources": rule.get("resources").cloned().unwrap_or_else(|| serde_json::json!([])),
                });
                if let Some(names) =
                    rule.get("resourceNames").filter(|names| names.as_array().is_some_and(|n| !n.is_empty()))
                {
                    resource_rule["resourceNames"] = names.clone();
                }
                review.resource_rules.push(resource_rule);
            }
            true
        });
        if !errors.is_empty() {
            review.incomplete = true;
            review.evaluation_error = errors.join(", ");
        }
        review
    }
}

/// Policy held in memory: for tests and benchmarks.
#[derive(Default)]
pub struct StaticPolicy {
    /// Roles.
    pub roles: Vec<Arc<Value>>,
    /// RoleBindings.
    pub role_bindings: Vec<Arc<Value>>,
    /// ClusterRoles.
    pub cluster_roles: Vec<Arc<Value>>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<Arc<Value>>,
}

impl StaticPolicy {
    /// Adds an object by its `kind`.
    pub fn add(&mut self, object: Value) {
        let object = Arc::new(object);
        match object["kind"].as_str().unwrap_or_default() {
            "Role" => self.roles.push(object),
            "RoleBinding" => self.role_bindings.push(object),
            "ClusterRole" => self.cluster_roles.push(object),
            "ClusterRoleBinding" => self.cluster_role_bindings.push(object),
            other => panic!("not an RBAC kind: {other}"),
        }
    }
}

fn in_namespace<'a>(
    objects: &'a [Arc<Value>],
    namespace: &'a str,
) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
    objects
        .iter()
        .filter(move |object| object["metadata"]["namespace"].as_str().unwrap_or_default() == namespace)
}

fn named<'a>(mut objects: impl Iterator<Item = &'a Arc<Value>>, name: &str) -> Option<Arc<Value>> {
    objects.find(|object| object["metadata"]["name"].as_str() == Some(name)).cloned()
}

impl PolicySource for StaticPolicy {
    fn cluster_role_bindings(&self) -> Vec<Arc<Value>> {
        self.cluster_role_bindings.clone()
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>> {
        in_namespace(&self.role_bindings, namespace).cloned().collect()
    }
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        named(in_namespace(&self.roles, namespace), name)
    }
    fn cluster_role(&self, name: &str) -> Option<Arc<Value>> {
        named(self.cluster_roles.iter(), name)
    }
    fn cluster_roles(&self) -> Vec<Arc<Value>> {
        self.cluster_roles.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn resource<'a>(
        user: &'a UserInfo,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        subresource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            resource_request: true,
            path: "",
            api_group: group,
            api_version: "v1",
            namespace,
            resource,
            subresource,
            name,
        }
    }

    fn path<'a>(user: &'a UserInfo, verb: &'a str, path: &'a str) -> Attributes<'a> {
        Attributes { resource_request: false, path, ..resource(user, verb, "", "", "", "", "") }
    }

    fn cluster_role(name: &str, rules: Value) -> Value {
        json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
    }

    fn binding(
        kind: &str,
        namespace: &str,
        name: &str,
        role_kind: &str,
        role: &str,
        subjects: Value,
    ) -> Value {
        json!({
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role},
            "subjects": subjects,
        })
    }

    #[test]
    fn rule_matching_follows_kube_evaluation_helpers() {
        let alice = user("alice", &[]);
        // (rule, attributes, allowed)
        let cases: Vec<(Value, Attributes<'_>, bool)> = vec![
            // verbs
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
                resource(&alice, "get", "", "pods", "", "ns", "p"),
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
                resource(&alice, "list", "", "pods", "", "ns", ""),
                false,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}),
                resource(&alice, "delete", "", "pods", "", "ns", "p"),
                true,
            ),
            // apiGroups
            (
                json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}),
                resource(&alice, "get", "", "deployments", "", "ns", "d"),
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["deployments"]}),
                resource(&alice, "get", "apps", "deployments", "", "ns", "d"),
                true,
            ),
            // resources and subresources
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}),
                resource(&alice, "get", "", "pods", "log", "ns", "p"),
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
                resource(&alice, "get", "", "pods", "status", "ns", "p"),
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/status"]}),
                resource(&alice, "get", "", "pods", "status", "ns", "p"),
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/status"]}),
                resource(&alice, "get", "", "pods", "", "ns", "p"),
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}),
                resource(&alice, "get", "", "services", "status", "ns", "s"),
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}),
                resource(&alice, "get", "", "services", "scale", "ns", "s"),
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}),
                resource(&alice, "get", "", "services", "", "ns", "s"),
                false,
            ),
            // resourceNames: never a request without a name
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                resource(&alice, "get", "", "configmaps", "", "ns", "a"),
                true,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                resource(&alice, "get", "", "configmaps", "", "ns", "b"),
                false,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                resource(&alice, "list", "", "configmaps", "", "ns", ""),
                false,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                resource(&alice, "create", "", "configmaps", "", "ns", ""),
                false,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                resource(&alice, "watch", "", "configmaps", "", "ns", ""),
                false,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
                resource(&alice, "deletecollection", "", "configmaps", "", "ns", ""),
                false,
            ),
            // nonResourceURLs
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}),
                path(&alice, "get", "/healthz"),
                true,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}),
                path(&alice, "get", "/healthz/ping"),
                false,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/healthz*"]}),
                path(&alice, "get", "/healthz/ping"),
                true,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}),
                path(&alice, "get", "/apis/apps/v1"),
                true,
            ),
            (json!({"verbs": ["get"], "nonResourceURLs": ["*"]}), path(&alice, "get", "/version"), true),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/version"]}),
                path(&alice, "post", "/version"),
                false,
            ),
            // a non-resource rule never allows a resource request, nor the reverse
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["*"]}),
                resource(&alice, "get", "", "pods", "", "ns", "p"),
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}),
                path(&alice, "get", "/version"),
                false,
            ),
        ];
        for (index, (rule, attributes, allowed)) in cases.iter().enumerate() {
            assert_eq!(rule_allows(attributes, rule), *allowed, "case {index}: {rule} for {attributes:?}");
        }
    }

    fn policy() -> StaticPolicy {
        let mut policy = StaticPolicy::default();
        policy.add(cluster_role(
            "pod-reader",
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]),
        ));
        policy.add(json!({"kind": "Role", "metadata": {"name": "cm-writer", "namespace": "team"},
            "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}]}));
        policy.add(binding(
            "ClusterRoleBinding",
            "",
            "readers",
            "ClusterRole",
            "pod-reader",
            json!([{"kind": "Group", "name": "readers"}]),
        ));
        policy.add(binding(
            "RoleBinding",
            "team",
            "alice-reads",
            "ClusterRole",
            "pod-reader",
            json!([{"kind": "User", "name": "alice"}]),
        ));
        policy.add(binding(
            "RoleBinding",
            "team",
            "sa-writes",
            "Role",
            "cm-writer",
            json!([{"kind": "ServiceAccount", "name": "builder"}]),
        ));
        policy.add(binding(
            "RoleBinding",
            "team",
            "other-sa",
            "Role",
            "cm-writer",
            json!([{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}]),
        ));
        policy.add(binding(
            "ClusterRoleBinding",
            "",
            "sa-no-namespace",
            "ClusterRole",
            "pod-reader",
            json!([{"kind": "ServiceAccount", "name": "orphan"}]),
        ));
        policy.add(binding(
            "RoleBinding",
            "team",
            "dangling",
            "Role",
            "missing",
            json!([{"kind": "User", "name": "dan"}]),
        ));
        policy
    }

    #[test]
    fn subjects_and_bindings_as_kube_resolves_them() {
        let rbac = RbacAuthorizer::new(Box::new(policy()));
        let alice = user("alice", &[]);
        let reader = user("rita", &["readers"]);
        let builder = user("system:serviceaccount:team:builder", &[]);
        let builder_elsewhere = user("system:serviceaccount:other:builder", &[]);
        let deployer = user("system:serviceaccount:ci:deployer", &[]);
        let orphan = user("system:serviceaccount::orphan", &[]);
        let masters = user("root", &[MASTERS_GROUP]);
        let nobody = user("nobody", &[]);
        let cases: Vec<(Attributes<'_>, bool)> = vec![
            // a RoleBinding to a ClusterRole grants it in the binding's namespace only
            (resource(&alice, "get", "", "pods", "", "team", "p"), true),
            (resource(&alice, "get", "", "pods", "", "other", "p"), false),
            (resource(&alice, "list", "", "pods", "", "", ""), false),
            // a ClusterRoleBinding to a Group: every namespace and the cluster scope
            (resource(&reader, "list", "", "pods", "", "", ""), true),
            (resource(&reader, "get", "", "pods", "", "any", "p"), true),
            (resource(&reader, "delete", "", "pods", "", "any", "p"), false),
            // a ServiceAccount subject defaults to the binding's namespace
            (resource(&builder, "create", "", "configmaps", "", "team", ""), true),
            (resource(&builder_elsewhere, "create", "", "configmaps", "", "team", ""), false),
            (resource(&deployer, "create", "", "configmaps", "", "team", ""), true),
            // in a ClusterRoleBinding a ServiceAccount without a namespace matches no one
            (resource(&orphan, "get", "", "pods", "", "team", "p"), false),
            (resource(&masters, "delete", "apps", "deployments", "", "x", "y"), true),
            (path(&masters, "post", "/anything"), true),
            (resource(&nobody, "get", "", "pods", "", "team", "p"), false),
        ];
        for (index, (attributes, allowed)) in cases.iter().enumerate() {
            assert_eq!(
                rbac.authorize(attributes) == Decision::Allow,
                *allowed,
                "case {index}: {attributes:?}"
            );
        }
        assert_eq!(
            rbac.authorize(&resource(&nobody, "get", "", "pods", "", "team", "p")),
            Decision::Deny(String::new())
        );
        let dan = user("dan", &[]);
        assert_eq!(
            rbac.authorize(&resource(&dan, "get", "", "pods", "", "team", "p")),
            Decision::Deny(format!("RBAC: role.{GROUP} \"missing\" not found"))
        );
    }

    #[test]
    fn aggregated_cluster_roles_take_the_rules_of_the_roles_they_select() {
        let mut policy = StaticPolicy::default();
        policy.add(json!({"kind": "ClusterRole", "metadata": {"name": "monitoring"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-monitoring": "true"}}]},
            "rules": []}));
        policy.add(json!({"kind": "ClusterRole", "metadata": {"name": "extra", "labels": {"aggregate-to-monitoring": "true"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["deep"]}]}]},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["services"]}]}));
        policy.add(json!({"kind": "ClusterRole", "metadata": {"name": "deeper", "labels": {"tier": "deep"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["endpoints"]}]}));
        policy.add(json!({"kind": "ClusterRole", "metadata": {"name": "unlabelled"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}));
        policy.add(binding(
            "ClusterRoleBinding",
            "",
            "m",
            "ClusterRole",
            "monitoring",
            json!([{"kind": "User", "name": "mo"}]),
        ));
        let rbac = RbacAuthorizer::new(Box::new(policy));
        let mo = user("mo", &[]);
        assert_eq!(rbac.authorize(&resource(&mo, "get", "", "services", "", "a", "s")), Decision::Allow);
        assert_eq!(rbac.authorize(&resource(&mo, "get", "", "endpoints", "", "a", "s")), Decision::Allow);
        assert_eq!(
            rbac.authorize(&resource(&mo, "get", "", "secrets", "", "a", "s")),
            Decision::Deny(String::new())
        );
    }
}
