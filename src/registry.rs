//! The registry (kube-apiserver's Scheme): the resource types the server serves, their storage
//! layout, and one watch cache per type.
//!
//! A built-in type is one [`ResourceType`] declaration in [`builtin_types`]. Custom resources
//! are registered at run time from their CustomResourceDefinitions; the set of types is an
//! immutable map published through `ArcSwap`, so request routing never takes a lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cacher::object::ResourceConfig;
use crate::cacher::{CacheConfig, Cacher};
use crate::storage::Storage;
use crate::validation::NameRule;

/// One resource type: what discovery shows, how it is stored, how it is validated.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group ("" for the core group).
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Singular name, e.g. `pod`.
    pub singular: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Kind of the list, e.g. `PodList`.
    pub list_kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names, e.g. `po`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// The storage prefix of the type's keys, e.g. `/pods/` (kube-apiserver's layout).
    pub storage_prefix: String,
    /// Field selectors supported besides `metadata.name` and `metadata.namespace`.
    pub selectable_fields: Vec<String>,
    /// The field watchers are indexed by (pods: `spec.nodeName`).
    pub indexed_field: Option<String>,
    /// How names are validated.
    pub name_rule: NameRule,
    /// Whether the type has a `status` subresource (status is then ignored by the main
    /// resource's updates, and only changed through `/status`).
    pub status_subresource: bool,
    /// Whether the type has a `scale` subresource (autoscaling/v1 Scale over `spec.replicas`).
    pub scale_subresource: bool,
    /// The subresources that take a POST of their own object (pods: `binding`, `eviction`).
    pub post_subresources: Vec<String>,
    /// A custom resource version's `additionalPrinterColumns`, as its definition gives them
    /// (empty for built-in types, whose Table columns are kube's printers, `api::printers`).
    pub printer_columns: Vec<PrinterColumn>,
}

/// One of a CustomResourceDefinition version's `additionalPrinterColumns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// The column's header, e.g. `Replicas`.
    pub name: String,
    /// Its OpenAPI type: `integer`, `number`, `string`, `boolean` or `date`.
    pub kind: String,
    /// Its OpenAPI format, e.g. `int32` (may be empty).
    pub format: String,
    /// Its description (may be empty).
    pub description: String,
    /// 0 for the default view, more for `-o wide`.
    pub priority: i64,
    /// The simple JSONPath of the value, e.g. `.spec.replicas`.
    pub json_path: String,
}

impl ResourceType {
    /// `apiVersion` of the objects, e.g. `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key of an object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(namespace) if self.namespaced => format!("{}{namespace}/{name}", self.storage_prefix),
            _ => format!("{}{name}", self.storage_prefix),
        }
    }

    /// Whether the type travels as Kubernetes protobuf (built-in types do; custom resources
    /// do not).
    pub fn protobuf(&self) -> bool {
        crate::protobuf::schema().has_kind(&self.api_version(), &self.kind)
    }

    /// The verbs discovery lists.
    pub fn verbs(&self) -> &'static [&'static str] {
        &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }

    /// What the watch cache needs to know.
    pub fn cache_config(&self) -> ResourceConfig {
        ResourceConfig {
            prefix: self.storage_prefix.clone(),
            kind: self.kind.clone(),
            api_version: self.api_version(),
            namespaced: self.namespaced,
            selectable_fields: self.selectable_fields.clone(),
            indexed_field: self.indexed_field.clone(),
        }
    }
}

struct Declaration {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    /// The key prefix under the storage prefix (kube-apiserver's choices, e.g. `minions` for
    /// nodes, `services/specs` for services).
    storage: &'static str,
    fields: &'static [&'static str],
    indexed: Option<&'static str>,
    name_rule: NameRule,
    status: bool,
}

const BUILTINS: &[Declaration] = &[
    Declaration {
        group: "",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        storage: "namespaces",
        fields: &["status.phase"],
        indexed: None,
        name_rule: NameRule::Dns1123Label,
        status: true,
    },
    Declaration {
        group: "",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        storage: "pods",
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        indexed: Some("spec.nodeName"),
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        storage: "configmaps",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        storage: "secrets",
        fields: &["type"],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        storage: "services/specs",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Label,
        status: true,
    },
    Declaration {
        group: "",
        plural: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        storage: "services/endpoints",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        storage: "minions",
        fields: &["spec.unschedulable"],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        storage: "events",
        fields: &[
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "type",
            "source",
        ],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        storage: "serviceaccounts",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "apps",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        storage: "deployments",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "apps",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        storage: "replicasets",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "apps",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        categories: &["all"],
        storage: "statefulsets",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "apps",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        categories: &["all"],
        storage: "daemonsets",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "batch",
        plural: "jobs",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        storage: "jobs",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "batch",
        plural: "cronjobs",
        kind: "CronJob",
        namespaced: true,
        short_names: &["cj"],
        categories: &["all"],
        storage: "cronjobs",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "coordination.k8s.io",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        storage: "leases",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "rbac.authorization.k8s.io",
        plural: "roles",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        storage: "roles",
        fields: &[],
        indexed: None,
        name_rule: NameRule::PathSegment,
        status: false,
    },
    Declaration {
        group: "rbac.authorization.k8s.io",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        storage: "rolebindings",
        fields: &[],
        indexed: None,
        name_rule: NameRule::PathSegment,
        status: false,
    },
    Declaration {
        group: "rbac.authorization.k8s.io",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "clusterroles",
        fields: &[],
        indexed: None,
        name_rule: NameRule::PathSegment,
        status: false,
    },
    Declaration {
        group: "rbac.authorization.k8s.io",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "clusterrolebindings",
        fields: &[],
        indexed: None,
        name_rule: NameRule::PathSegment,
        status: false,
    },
    Declaration {
        group: "apiextensions.k8s.io",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        storage: "apiextensions.k8s.io/customresourcedefinitions",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        namespaced: false,
        short_names: &["pv"],
        categories: &[],
        storage: "persistentvolumes",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        storage: "persistentvolumeclaims",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "podtemplates",
        kind: "PodTemplate",
        namespaced: true,
        short_names: &[],
        categories: &[],
        storage: "podtemplates",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "",
        plural: "replicationcontrollers",
        kind: "ReplicationController",
        namespaced: true,
        short_names: &["rc"],
        categories: &["all"],
        storage: "controllers",
        fields: &["status.replicas"],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "resourcequotas",
        kind: "ResourceQuota",
        namespaced: true,
        short_names: &["quota"],
        categories: &[],
        storage: "resourcequotas",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "",
        plural: "limitranges",
        kind: "LimitRange",
        namespaced: true,
        short_names: &["limits"],
        categories: &[],
        storage: "limitranges",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "discovery.k8s.io",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        storage: "endpointslices",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "policy",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        storage: "poddisruptionbudgets",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "storage.k8s.io",
        plural: "storageclasses",
        kind: "StorageClass",
        namespaced: false,
        short_names: &["sc"],
        categories: &[],
        storage: "storageclasses",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "storage.k8s.io",
        plural: "csinodes",
        kind: "CSINode",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "csinodes",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "storage.k8s.io",
        plural: "csidrivers",
        kind: "CSIDriver",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "csidrivers",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "storage.k8s.io",
        plural: "volumeattachments",
        kind: "VolumeAttachment",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "volumeattachments",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "scheduling.k8s.io",
        plural: "priorityclasses",
        kind: "PriorityClass",
        namespaced: false,
        short_names: &["pc"],
        categories: &[],
        storage: "priorityclasses",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "networking.k8s.io",
        plural: "ingresses",
        kind: "Ingress",
        namespaced: true,
        short_names: &["ing"],
        categories: &[],
        storage: "ingress",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "networking.k8s.io",
        plural: "ingressclasses",
        kind: "IngressClass",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "ingressclasses",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "networking.k8s.io",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        storage: "networkpolicies",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "node.k8s.io",
        plural: "runtimeclasses",
        kind: "RuntimeClass",
        namespaced: false,
        short_names: &[],
        categories: &[],
        storage: "runtimeclasses",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: false,
    },
    Declaration {
        group: "autoscaling",
        plural: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        storage: "horizontalpodautoscalers",
        fields: &[],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
    Declaration {
        group: "certificates.k8s.io",
        plural: "certificatesigningrequests",
        kind: "CertificateSigningRequest",
        namespaced: false,
        short_names: &["csr"],
        categories: &[],
        storage: "certificatesigningrequests",
        fields: &["spec.signerName"],
        indexed: None,
        name_rule: NameRule::Dns1123Subdomain,
        status: true,
    },
];

/// The built-in types with a `scale` subresource, as kube-apiserver serves them.
const SCALE: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("", "replicationcontrollers"),
];

/// The subresources a POST creates, by type: a pod's Binding (kube also serves the legacy
/// `bindings` collection of a namespace for it) and its Eviction.
const POST_SUBRESOURCES: &[(&str, &str, &str)] =
    &[("", "pods", "binding"), ("", "pods", "eviction"), ("", "serviceaccounts", "token")];

/// The version a group's built-in types are served at: `v1` but for the groups listed here.
const VERSIONS: &[(&str, &str)] = &[("autoscaling", "v2")];

fn served_version(group: &str) -> &'static str {
    VERSIONS.iter().find(|(name, _)| *name == group).map_or("v1", |(_, version)| version)
}

/// The built-in resource types.
pub fn builtin_types() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|declaration| ResourceType {
            group: declaration.group.to_owned(),
            version: served_version(declaration.group).to_owned(),
            plural: declaration.plural.to_owned(),
            singular: declaration.kind.to_lowercase(),
            kind: declaration.kind.to_owned(),
            list_kind: format!("{}List", declaration.kind),
            namespaced: declaration.namespaced,
            short_names: declaration.short_names.iter().map(|name| name.to_string()).collect(),
            categories: declaration.categories.iter().map(|name| name.to_string()).collect(),
            storage_prefix: format!("/{}/", declaration.storage),
            selectable_fields: declaration.fields.iter().map(|field| field.to_string()).collect(),
            indexed_field: declaration.indexed.map(str::to_owned),
            name_rule: declaration.name_rule,
            status_subresource: declaration.status,
            scale_subresource: SCALE.contains(&(declaration.group, declaration.plural)),
            post_subresources: POST_SUBRESOURCES
                .iter()
                .filter(|(group, plural, _)| (*group, *plural) == (declaration.group, declaration.plural))
                .map(|(_, _, subresource)| subresource.to_string())
                .collect(),
            printer_columns: Vec::new(),
        })
        .collect()
}

/// A served resource type with its watch cache.
pub struct Resource {
    /// The type.
    pub ty: ResourceType,
    /// Its watch cache.
    pub cacher: Cacher,
}

/// (group, version, plural) → resource.
type ResourceMap = BTreeMap<(String, String, String), Arc<Resource>>;

/// Every served resource type. Cheap to read from any task.
pub struct Registry {
    resources: ArcSwap<ResourceMap>,
    storage: Arc<dyn Storage>,
    cache_config: CacheConfig,
    /// Serializes registrations (CRDs), never reads.
    registering: tokio::sync::Mutex<()>,
}

impl Registry {
    /// A registry serving the built-in types from `storage`, each with a started watch cache.
    pub fn new(storage: Arc<dyn Storage>, cache_config: CacheConfig) -> Registry {
        let mut map = ResourceMap::new();
        for ty in builtin_types() {
            let cacher = Cacher::start(Arc::clone(&storage), ty.cache_config(), cache_config.clone());
            map.insert(
                (ty.group.clone(), ty.version.clone(), ty.plural.clone()),
                Arc::new(Resource { ty, cacher }),
            );
        }
        Registry {
            resources: ArcSwap::from_pointee(map),
            storage,
            cache_config,
            registering: tokio::sync::Mutex::new(()),
        }
    }

    /// The storage behind every resource.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The resource at `group`/`version`/`plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources.load().get(&(group.to_owned(), version.to_owned(), plural.to_owned())).cloned()
    }

    /// Every resource, in (group, version, plural) order.
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.resources.load().values().cloned().collect()
    }

    /// Adds (or replaces, when its definition changed) a resource type and starts its cache.
    pub async fn register(&self, ty: ResourceType) {
        let _guard = self.registering.lock().await;
        let key = (ty.group.clone(), ty.version.clone(), ty.plural.clone());
        if let Some(existing) = self.resources.load().get(&key) {
            if format!("{:?}", existing.ty) == format!("{ty:?}") {
                return;
            }
        }
        let cacher = Cacher::start(Arc::clone(&self.storage), ty.cache_config(), self.cache_config.clone());
        let mut map = (**self.resources.load()).clone();
        map.insert(key, Arc::new(Resource { ty, cacher }));
        self.resources.store(Arc::new(map));
    }

    /// Removes the types of `group` named `plural` (all versions).
    pub async fn unregister(&self, group: &str, plural: &str) {
        let _guard = self.registering.lock().await;
        let mut map = (**self.resources.load()).clone();
        map.retain(|(g, _, p), _| !(g == group && p == plural));
        self.resources.store(Arc::new(map));
    }

    /// Stops every watch cache (ending their watches cleanly).
    pub fn stop(&self) {
        for resource in self.resources.load().values() {
            resource.cacher.stop();
        }
    }
}
