//! `meta.k8s.io/v1` Tables: what `kubectl get` prints.
//!
//! Each built-in type has kube-apiserver's columns (name, type, format, description, priority;
//! priority 1 columns are `-o wide`'s) and computes its cells from the object's JSON the way
//! kube's printers (`pkg/printers/internalversion`) compute them from the internal type. As in
//! kube-apiserver the server always generates the wide cells; kubectl hides the columns of
//! priority above 0 unless asked for `-o wide`.
//!
//! CustomResourceDefinitions use kube's default columns (Name, Created At); custom resources use
//! their version's `additionalPrinterColumns` (simple JSONPaths), or an Age column when it has
//! none, as apiextensions-apiserver does.
//!
//! The server applies no defaults yet, so where kube's printer reads a field kube always
//! defaults (a Service's type, a port's protocol, a Pod's phase, replicas, a Secret's type), a
//! missing value reads as kube's default would.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::handlers::human_duration;
use crate::registry::{PrinterColumn, ResourceType};

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object (`"object": null`).
    None,
    /// The object's metadata as a `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// How a Table is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// The Table's group version: `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`.
    pub api_version: &'static str,
    /// What the rows carry.
    pub include: IncludeObject,
    /// Whether the column definitions are left out (watch events after the first).
    pub no_headers: bool,
}

/// A Table of `objects` (decoded JSON) of type `ty`, with `metadata` as its list metadata.
pub fn table(ty: &ResourceType, objects: &[Value], metadata: Value, options: &TableOptions) -> Value {
    table_at(ty, objects, metadata, options, Timestamp::now())
}

fn table_at(
    ty: &ResourceType,
    objects: &[Value],
    metadata: Value,
    options: &TableOptions,
    now: Timestamp,
) -> Value {
    let printer = Printer::of(ty);
    let rows: Vec<Value> = objects.iter().map(|object| printer.row(object, options, now)).collect();
    let columns = if options.no_headers { Value::Null } else { Value::Array(printer.columns()) };
    json!({
        "kind": "Table",
        "apiVersion": options.api_version,
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// A Table of one object (a GET, or a watch event): its list metadata is the object's
/// resourceVersion.
pub fn object_table(ty: &ResourceType, object: &Value, options: &TableOptions) -> Value {
    let mut metadata = Map::new();
    if let Some(version) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        if !version.is_empty() {
            metadata.insert("resourceVersion".into(), json!(version));
        }
    }
    table(ty, std::slice::from_ref(object), Value::Object(metadata), options)
}

/// A column definition.
#[derive(Clone, Debug)]
struct Column<'a> {
    name: &'a str,
    kind: &'a str,
    format: &'a str,
    description: Cow<'a, str>,
    priority: i64,
}

impl Column<'_> {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const fn column(name: &'static str, kind: &'static str, description: &'static str) -> Column<'static> {
    Column { name, kind, format: "", description: Cow::Borrowed(description), priority: 0 }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column<'static> {
    Column { name, kind, format: "", description: Cow::Borrowed(description), priority: 1 }
}

const NAME: Column<'static> = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: Cow::Borrowed(NAME_DOC),
    priority: 0,
};
const AGE: Column<'static> = column("Age", "string", CREATED_DOC);
const CONTAINERS: Column<'static> = wide("Containers", "string", "Names of each container in the template.");
const IMAGES: Column<'static> =
    wide("Images", "string", "Images referenced by each container in the template.");

// Field descriptions (the API types' documentation, as kube's printers take them from
// `SwaggerDoc()`).
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const POD_IP_DOC: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const NODE_NAME_DOC: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const NOMINATED_NODE_DOC: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const READINESS_GATES_DOC: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const NODE_SELECTOR_DOC: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/";
const SERVICE_TYPE_DOC: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const CLUSTER_IP_DOC: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const EXTERNAL_IPS_DOC: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const PORTS_DOC: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SERVICE_SELECTOR_DOC: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
const SUBSETS_DOC: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
const KUBELET_VERSION_DOC: &str = "Kubelet Version reported by the node.";
const ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const OS_IMAGE_DOC: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const KERNEL_VERSION_DOC: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const RUNTIME_VERSION_DOC: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const LAST_TIMESTAMP_DOC: &str = "The time at which the most recent occurrence of this event was recorded.";
const EVENT_TYPE_DOC: &str = "Type of this event (Normal, Warning), new types could be added in the future";
const REASON_DOC: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const INVOLVED_OBJECT_DOC: &str = "The object that this event is about.";
const FIELD_PATH_DOC: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const SOURCE_DOC: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const MESSAGE_DOC: &str = "A human-readable description of the status of this operation.";
const FIRST_TIMESTAMP_DOC: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const COUNT_DOC: &str = "The number of times this event has occurred.";
const SECRET_TYPE_DOC: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const SECRET_DATA_DOC: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const SA_SECRETS_DOC: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
const CONFIGMAP_DATA_DOC: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
const RS_REPLICAS_DOC: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const RS_STATUS_REPLICAS_DOC: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const RS_READY_DOC: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
const RS_SELECTOR_DOC: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DS_DESIRED_DOC: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_CURRENT_DOC: &str = "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_READY_DOC: &str = "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.";
const DS_UPDATED_DOC: &str = "The total number of nodes that are running updated daemon pod";
const DS_AVAILABLE_DOC: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const DS_SELECTOR_DOC: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DEPLOY_UPDATED_DOC: &str =
    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
const DEPLOY_AVAILABLE_DOC: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
const DEPLOY_SELECTOR_DOC: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";
const JOB_SUCCEEDED_DOC: &str = "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.";
const JOB_SELECTOR_DOC: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const CRON_SCHEDULE_DOC: &str = "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.";
const CRON_TIME_ZONE_DOC: &str = "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones";
const CRON_SUSPEND_DOC: &str = "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.";
const CRON_ACTIVE_DOC: &str = "A list of pointers to currently running jobs.";
const CRON_LAST_SCHEDULE_DOC: &str = "Information when was the last time the job was successfully scheduled.";
const HOLDER_DOC: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";

const POD_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    column("Status", "string", "The aggregate status of the containers in this pod."),
    column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", POD_IP_DOC),
    wide("Node", "string", NODE_NAME_DOC),
    wide("Nominated Node", "string", NOMINATED_NODE_DOC),
    wide("Readiness Gates", "string", READINESS_GATES_DOC),
];
const NAMESPACE_COLUMNS: &[Column<'static>] =
    &[NAME, column("Status", "string", "The status of the namespace"), AGE];
const CONFIGMAP_COLUMNS: &[Column<'static>] = &[NAME, column("Data", "string", CONFIGMAP_DATA_DOC), AGE];
const SECRET_COLUMNS: &[Column<'static>] =
    &[NAME, column("Type", "string", SECRET_TYPE_DOC), column("Data", "string", SECRET_DATA_DOC), AGE];
const SERVICE_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Type", "string", SERVICE_TYPE_DOC),
    column("Cluster-IP", "string", CLUSTER_IP_DOC),
    column("External-IP", "string", EXTERNAL_IPS_DOC),
    column("Port(s)", "string", PORTS_DOC),
    AGE,
    wide("Selector", "string", SERVICE_SELECTOR_DOC),
];
const ENDPOINTS_COLUMNS: &[Column<'static>] = &[NAME, column("Endpoints", "string", SUBSETS_DOC), AGE];
const NODE_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", KUBELET_VERSION_DOC),
    wide("Internal-IP", "string", ADDRESSES_DOC),
    wide("External-IP", "string", ADDRESSES_DOC),
    wide("OS-Image", "string", OS_IMAGE_DOC),
    wide("Kernel-Version", "string", KERNEL_VERSION_DOC),
    wide("Container-Runtime", "string", RUNTIME_VERSION_DOC),
];
const EVENT_COLUMNS: &[Column<'static>] = &[
    column("Last Seen", "string", LAST_TIMESTAMP_DOC),
    column("Type", "string", EVENT_TYPE_DOC),
    column("Reason", "string", REASON_DOC),
    column("Object", "string", INVOLVED_OBJECT_DOC),
    wide("Subobject", "string", FIELD_PATH_DOC),
    wide("Source", "string", SOURCE_DOC),
    column("Message", "string", MESSAGE_DOC),
    wide("First Seen", "string", FIRST_TIMESTAMP_DOC),
    wide("Count", "string", COUNT_DOC),
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        description: Cow::Borrowed(NAME_DOC),
        priority: 1,
    },
];
const SERVICE_ACCOUNT_COLUMNS: &[Column<'static>] = &[NAME, column("Secrets", "string", SA_SECRETS_DOC), AGE];
const DEPLOYMENT_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column("Up-to-date", "string", DEPLOY_UPDATED_DOC),
    column("Available", "string", DEPLOY_AVAILABLE_DOC),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", DEPLOY_SELECTOR_DOC),
];
const REPLICASET_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Desired", "integer", RS_REPLICAS_DOC),
    column("Current", "integer", RS_STATUS_REPLICAS_DOC),
    column("Ready", "integer", RS_READY_DOC),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", RS_SELECTOR_DOC),
];
const STATEFULSET_COLUMNS: &[Column<'static>] =
    &[NAME, column("Ready", "string", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES];
const DAEMONSET_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Desired", "integer", DS_DESIRED_DOC),
    column("Current", "integer", DS_CURRENT_DOC),
    column("Ready", "integer", DS_READY_DOC),
    column("Up-to-date", "integer", DS_UPDATED_DOC),
    column("Available", "integer", DS_AVAILABLE_DOC),
    column("Node Selector", "string", NODE_SELECTOR_DOC),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", DS_SELECTOR_DOC),
];
const JOB_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Status", "string", "Status of the job."),
    column("Completions", "string", JOB_SUCCEEDED_DOC),
    column("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", JOB_SELECTOR_DOC),
];
const CRONJOB_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Schedule", "string", CRON_SCHEDULE_DOC),
    column("Timezone", "string", CRON_TIME_ZONE_DOC),
    column("Suspend", "boolean", CRON_SUSPEND_DOC),
    column("Active", "integer", CRON_ACTIVE_DOC),
    column("Last Schedule", "string", CRON_LAST_SCHEDULE_DOC),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", JOB_SELECTOR_DOC),
];
const LEASE_COLUMNS: &[Column<'static>] = &[NAME, column("Holder", "string", HOLDER_DOC), AGE];
const RC_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Desired", "integer", "Number of desired pods."),
    column("Current", "integer", "Number of actually running pods."),
    column("Ready", "integer", "Number of pods ready."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "Selector is a label query over pods that should match the Replicas count."),
];
const POD_TEMPLATE_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Containers", "string", "Names of each container in the template."),
    column("Images", "string", "Images referenced by each container in the template."),
    column("Pod Labels", "string", "The labels for the pod template."),
];
const PDB_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Min Available", "string", "The minimum number of pods that must be available simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\"."),
    column("Max Unavailable", "string", "The maximum number of pods that may be unavailable. This can be either an integer or a string specifying a percentage, e.g. \"28%\"."),
    column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE,
];
const PV_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity"),
    column("Access Modes", "string", "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes"),
    column("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming"),
    column("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase"),
    column("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding"),
    column("StorageClass", "string", "StorageClass of the pv"),
    column("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    column("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec."),
];
const PVC_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    column("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    column("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    column("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1"),
    column("StorageClass", "string", "StorageClass of the pvc"),
    column("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec."),
];
const RESOURCE_QUOTA_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    column("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    AGE,
];
const LIMIT_RANGE_COLUMNS: &[Column<'static>] = &[NAME, column("Created At", "date", CREATED_DOC)];
const ENDPOINT_SLICE_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type."),
    column("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    column("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
    AGE,
];
const CSI_DRIVER_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("AttachRequired", "boolean", "attachRequired indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting."),
    column("PodInfoOnMount", "boolean", "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations, if set to true."),
    column("StorageCapacity", "boolean", "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information, if set to true."),
    column("TokenRequests", "string", "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
    column("RequiresRepublish", "boolean", "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume."),
    column("Modes", "string", "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports."),
    AGE,
];
const HPA_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
    column("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used)."),
    column("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down. It defaults to 1 pod."),
    column("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas."),
    column("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    AGE,
];
const CSR_COLUMNS: &[Column<'static>] = &[
    NAME,
    AGE,
    column("SignerName", "string", "signerName indicates the requested signer, and is a qualified name."),
    column("Requestor", "string", "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block."),
    column("RequestedDuration", "string", "expirationSeconds is the requested duration of validity of the issued certificate."),
    column("Condition", "string", "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\"."),
];
const STORAGE_CLASS_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Provisioner", "string", "Indicates the type of the provisioner."),
    column("ReclaimPolicy", "string", "Indicates the type of the reclaim policy."),
    column(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound",
    ),
    column("AllowVolumeExpansion", "string", "Indicates whether the storage class allow volume expand"),
    AGE,
];
const CSI_NODE_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Drivers", "integer", "Drivers indicates the number of CSI drivers registered on the node"),
    AGE,
];
const VOLUME_ATTACHMENT_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Attacher", "string", "Attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName()."),
    column("PV", "string", "Name of the persistent volume to attach."),
    column("Node", "string", "The node that the volume should be attached to."),
    column("Attached", "boolean", "Indicates the volume is successfully attached."),
    AGE,
];
const PRIORITY_CLASS_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Value", "integer", "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
    column("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority."),
    AGE,
    column("PreemptionPolicy", "string", "PreemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset."),
];
const INGRESS_CLASS_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Controller", "string", "Controller that is responsible for handling this class"),
    column("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE,
];
const INGRESS_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Class", "string", "The name of the IngressClass resource."),
    column("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    column("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    column("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];
const NETWORK_POLICY_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Pod-Selector", "string", "Selects the pods to which this NetworkPolicy object applies. The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods. In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace."),
    AGE,
];
const RUNTIME_CLASS_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Handler", "string", "Handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class. The possible values are specific to the node & CRI configuration.  It is assumed that all handlers are available on every node, and handlers of the same name are equivalent on every node. For example, a handler called \"runc\" might specify that the runc OCI runtime (using native Linux containers) will be used to run the containers in a pod. The Handler must be lowercase, conform to the DNS Label (RFC 1123) requirements, and is immutable."),
    AGE,
];
/// kube's printers for Role and ClusterRole: the name and the creation time.
const ROLE_COLUMNS: &[Column<'static>] = &[NAME, column("Created At", "date", CREATED_DOC)];
/// kube's printers for RoleBinding and ClusterRoleBinding.
const BINDING_COLUMNS: &[Column<'static>] = &[
    NAME,
    column("Role", "string", "RoleRef to the role being bound."),
    AGE,
    wide("Users", "string", "Users in the binding."),
    wide("Groups", "string", "Groups in the binding."),
    wide("ServiceAccounts", "string", "ServiceAccounts in the binding."),
];
/// kube-apiserver's default Table (`rest.NewDefaultTableConvertor`), which CRDs use.
const DEFAULT_COLUMNS: &[Column<'static>] = &[NAME, column("Created At", "date", CREATED_DOC)];

/// A row's cells and conditions.
struct Row {
    cells: Vec<Value>,
    conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Row {
        Row { cells, conditions: None }
    }
}

type RowFn = fn(&Value, Timestamp) -> Row;

/// How one type's Tables are printed.
enum Printer<'a> {
    /// A built-in type's columns and cells.
    Builtin(&'static [Column<'static>], RowFn),
    /// A custom resource's columns after Name, with the paths of their values.
    Custom(Vec<(Column<'a>, Vec<Step>)>),
}

impl<'a> Printer<'a> {
    fn of(ty: &'a ResourceType) -> Printer<'a> {
        let builtin: Option<(&'static [Column<'static>], RowFn)> =
            match (ty.group.as_str(), ty.plural.as_str()) {
                ("", "pods") => Some((POD_COLUMNS, pod_row)),
                ("", "namespaces") => Some((NAMESPACE_COLUMNS, namespace_row)),
                ("", "configmaps") => Some((CONFIGMAP_COLUMNS, configmap_row)),
                ("", "secrets") => Some((SECRET_COLUMNS, secret_row)),
                ("", "services") => Some((SERVICE_COLUMNS, service_row)),
                ("", "endpoints") => Some((ENDPOINTS_COLUMNS, endpoints_row)),
                ("", "nodes") => Some((NODE_COLUMNS, node_row)),
                ("", "events") => Some((EVENT_COLUMNS, event_row)),
                ("", "serviceaccounts") => Some((SERVICE_ACCOUNT_COLUMNS, service_account_row)),
                ("apps", "deployments") => Some((DEPLOYMENT_COLUMNS, deployment_row)),
                ("apps", "replicasets") => Some((REPLICASET_COLUMNS, replicaset_row)),
                ("apps", "statefulsets") => Some((STATEFULSET_COLUMNS, statefulset_row)),
                ("apps", "daemonsets") => Some((DAEMONSET_COLUMNS, daemonset_row)),
                ("batch", "jobs") => Some((JOB_COLUMNS, job_row)),
                ("batch", "cronjobs") => Some((CRONJOB_COLUMNS, cronjob_row)),
                ("coordination.k8s.io", "leases") => Some((LEASE_COLUMNS, lease_row)),
                ("apiextensions.k8s.io", "customresourcedefinitions") => Some((DEFAULT_COLUMNS, default_row)),
                ("", "replicationcontrollers") => Some((RC_COLUMNS, replication_controller_row)),
                ("", "podtemplates") => Some((POD_TEMPLATE_COLUMNS, pod_template_row)),
                ("policy", "poddisruptionbudgets") => Some((PDB_COLUMNS, pdb_row)),
                ("storage.k8s.io", "storageclasses") => Some((STORAGE_CLASS_COLUMNS, storage_class_row)),
                ("storage.k8s.io", "csinodes") => Some((CSI_NODE_COLUMNS, csi_node_row)),
                ("storage.k8s.io", "volumeattachments") => {
                    Some((VOLUME_ATTACHMENT_COLUMNS, volume_attachment_row))
                }
                ("scheduling.k8s.io", "priorityclasses") => {
                    Some((PRIORITY_CLASS_COLUMNS, priority_class_row))
                }
                ("networking.k8s.io", "ingresses") => Some((INGRESS_COLUMNS, ingress_row)),
                ("networking.k8s.io", "ingressclasses") => Some((INGRESS_CLASS_COLUMNS, ingress_class_row)),
                ("networking.k8s.io", "networkpolicies") => {
                    Some((NETWORK_POLICY_COLUMNS, network_policy_row))
                }
                ("node.k8s.io", "runtimeclasses") => Some((RUNTIME_CLASS_COLUMNS, runtime_class_row)),
                ("", "persistentvolumes") => Some((PV_COLUMNS, persistent_volume_row)),
                ("", "persistentvolumeclaims") => Some((PVC_COLUMNS, persistent_volume_claim_row)),
                ("", "resourcequotas") => Some((RESOURCE_QUOTA_COLUMNS, resource_quota_row)),
                ("", "limitranges") => Some((LIMIT_RANGE_COLUMNS, limit_range_row)),
                ("discovery.k8s.io", "endpointslices") => Some((ENDPOINT_SLICE_COLUMNS, endpoint_slice_row)),
                ("storage.k8s.io", "csidrivers") => Some((CSI_DRIVER_COLUMNS, csi_driver_row)),
                ("autoscaling", "horizontalpodautoscalers") => Some((HPA_COLUMNS, hpa_row)),
                ("certificates.k8s.io", "certificatesigningrequests") => Some((CSR_COLUMNS, csr_row)),
                ("rbac.authorization.k8s.io", "roles" | "clusterroles") => Some((ROLE_COLUMNS, default_row)),
                ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
                    Some((BINDING_COLUMNS, binding_row))
                }
                _ => None,
            };
        match builtin {
            Some((columns, row)) => Printer::Builtin(columns, row),
            None => Printer::Custom(custom_columns(&ty.printer_columns)),
        }
    }

    fn columns(&self) -> Vec<Value> {
        match self {
            Printer::Builtin(columns, _) => columns.iter().map(Column::to_json).collect(),
            Printer::Custom(columns) => std::iter::once(NAME.to_json())
                .chain(columns.iter().map(|(column, _)| column.to_json()))
                .collect(),
        }
    }

    fn row(&self, object: &Value, options: &TableOptions, now: Timestamp) -> Value {
        let Row { cells, conditions } = match self {
            Printer::Builtin(_, row) => row(object, now),
            Printer::Custom(columns) => custom_row(columns, object, now),
        };
        let mut row = Map::new();
        row.insert("cells".into(), Value::Array(cells));
        if let Some(conditions) = conditions {
            row.insert("conditions".into(), conditions);
        }
        let included = match options.include {
            IncludeObject::None => Value::Null,
            IncludeObject::Object => object.clone(),
            IncludeObject::Metadata => {
                let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
                json!({"kind": "PartialObjectMetadata", "apiVersion": options.api_version, "metadata": metadata})
            }
        };
        row.insert("object".into(), included);
        Value::Object(row)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the JSON

static NULL: Value = Value::Null;

/// The value at a JSON pointer, or null.
fn at<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or(&NULL)
}

/// The string at a JSON pointer, or "".
fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    at(value, pointer).as_str().unwrap_or("")
}

/// The string at a JSON pointer, or `default` when it is missing or empty.
fn text_or<'v>(value: &'v Value, pointer: &str, default: &'v str) -> &'v str {
    match text(value, pointer) {
        "" => default,
        found => found,
    }
}

/// The integer at a JSON pointer, or 0.
fn int(value: &Value, pointer: &str) -> i64 {
    number(at(value, pointer)).unwrap_or(0)
}

fn number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_u64().map(|n| n as i64)).or_else(|| value.as_f64().map(|n| n as i64))
}

/// The array at a JSON pointer, or an empty slice.
fn list<'v>(value: &'v Value, pointer: &str) -> &'v [Value] {
    at(value, pointer).as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The object at a JSON pointer, when there is one (`nil` checks of kube's printers).
fn object<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    Some(at(value, pointer)).filter(|found| found.is_object())
}

/// A `metav1.Time` or `metav1.MicroTime`; `None` for the zero time (missing, null, empty).
fn time(value: &Value) -> Option<Timestamp> {
    value.as_str().filter(|text| !text.is_empty()).and_then(|text| text.parse().ok())
}

/// kube's `translateTimestampSince`: how long ago, or `<unknown>` for the zero time.
fn since(timestamp: Option<Timestamp>, now: Timestamp) -> String {
    match timestamp {
        None => "<unknown>".into(),
        Some(timestamp) => human_since(timestamp, now),
    }
}

/// kube's `duration.HumanDuration(time.Since(t))`, with its tolerance of clock skew: up to a
/// second in the future reads `0s`, more is `<invalid>`.
fn human_since(timestamp: Timestamp, now: Timestamp) -> String {
    let seconds = now.duration_since(timestamp).as_secs();
    if seconds < -1 {
        "<invalid>".into()
    } else if seconds < 0 {
        "0s".into()
    } else {
        human_duration(Duration::from_secs(seconds as u64))
    }
}

fn age(object: &Value, now: Timestamp) -> Value {
    json!(since(time(at(object, "/metadata/creationTimestamp")), now))
}

fn name(object: &Value) -> Value {
    json!(text(object, "/metadata/name"))
}

/// kube's `labels.FormatLabels`: sorted `k=v` pairs, or `<none>`.
fn format_labels(labels: &Value) -> String {
    let Some(labels) = labels.as_object().filter(|labels| !labels.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> =
        labels.iter().map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or(""))).collect();
    pairs.sort();
    pairs.join(",")
}

/// kube's `metav1.LabelSelectorAsSelector(selector).String()`: `Ok("")` for a missing or empty
/// selector, `Err` for one that is not valid.
pub(crate) fn label_selector(selector: &Value) -> Result<String, ()> {
    if !selector.is_object() {
        return Ok(String::new());
    }
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        for (key, value) in labels {
            let value = value.as_str().ok_or(())?;
            crate::selector::validate_label_key(key).map_err(drop)?;
            crate::selector::validate_label_value(value).map_err(drop)?;
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    for expression in selector["matchExpressions"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let key = expression["key"].as_str().unwrap_or("");
        crate::selector::validate_label_key(key).map_err(drop)?;
        let mut values: Vec<&str> = Vec::new();
        for value in expression["values"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let value = value.as_str().ok_or(())?;
            crate::selector::validate_label_value(value).map_err(drop)?;
            values.push(value);
        }
        let text = match expression["operator"].as_str().unwrap_or("") {
            operator @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return Err(());
                }
                values.sort_unstable();
                let operator = if operator == "In" { "in" } else { "notin" };
                format!("{key} {operator} ({})", values.join(","))
            }
            "Exists" if values.is_empty() => key.to_owned(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_owned(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(","))
}

/// kube's `metav1.FormatLabelSelector`.
fn format_label_selector(selector: &Value) -> String {
    match label_selector(selector) {
        Err(()) => "<error>".into(),
        Ok(text) if text.is_empty() => "<none>".into(),
        Ok(text) => text,
    }
}

/// kube's `layoutContainerCells`: the containers' names and images, comma-separated.
fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|container| text(container, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|container| text(container, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// `spec.replicas`, 1 when missing (kube's default).
fn replicas(object: &Value) -> i64 {
    number(at(object, "/spec/replicas")).unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------
// Built-in types

fn condition_true(conditions: &[Value], kind: &str) -> bool {
    conditions.iter().any(|condition| condition["type"] == kind && condition["status"] == "True")
}

/// `state.terminated.finishedAt` of a container status's `lastState`.
fn last_finished(status: &Value) -> Option<Timestamp> {
    object(status, "/lastState/terminated").and_then(|terminated| time(&terminated["finishedAt"]))
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(current), Some(candidate)) => Some(current.max(candidate)),
        (current, candidate) => current.or(candidate),
    }
}

/// kube's `printPod`: READY, STATUS (the reason logic of init containers, containers and
/// deletion), RESTARTS with how long ago the last restart was, and the wide columns.
fn pod_row(pod: &Value, now: Timestamp) -> Row {
    let containers = list(pod, "/spec/containers");
    let init_specs = list(pod, "/spec/initContainers");
    let conditions = list(pod, "/status/conditions");
    let restartable =
        |name: &str| init_specs.iter().any(|spec| spec["name"] == name && spec["restartPolicy"] == "Always");
    let total = containers.len() + init_specs.iter().filter(|spec| spec["restartPolicy"] == "Always").count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut restartable_restarts = 0;
    let mut last_restart = None;
    let mut last_restartable_restart = None;

    // kube stores a new pod's phase as Pending.
    let phase = text_or(pod, "/status/phase", "Pending");
    let mut reason = text_or(pod, "/status/reason", phase).to_owned();
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let mut initializing = false;
    for (index, status) in list(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = int(status, "/restartCount");
        restarts += count;
        last_restart = later(last_restart, last_finished(status));
        let is_restartable = restartable(text(status, "/name"));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, last_finished(status));
        }
        let terminated = object(status, "/state/terminated");
        let waiting = object(status, "/state/waiting");
        if terminated.is_some_and(|terminated| int(terminated, "/exitCode") == 0) {
            continue;
        }
        if is_restartable && status["started"] == true {
            if status["ready"] == true {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(terminated) = terminated {
            match text(terminated, "/reason") {
                "" if int(terminated, "/signal") != 0 => {
                    format!("Init:Signal:{}", int(terminated, "/signal"))
                }
                "" => format!("Init:ExitCode:{}", int(terminated, "/exitCode")),
                why => format!("Init:{why}"),
            }
        } else {
            match waiting.map(|waiting| text(waiting, "/reason")) {
                Some(why) if !why.is_empty() && why != "PodInitializing" => format!("Init:{why}"),
                _ => format!("Init:{index}/{}", init_specs.len()),
            }
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            last_restart = later(last_restart, last_finished(status));
            let waiting_reason = object(status, "/state/waiting").map(|waiting| text(waiting, "/reason"));
            let terminated = object(status, "/state/terminated");
            if let Some(why) = waiting_reason.filter(|why| !why.is_empty()) {
                reason = why.to_owned();
            } else if let Some(terminated) = terminated {
                reason = match text(terminated, "/reason") {
                    "" if int(terminated, "/signal") != 0 => format!("Signal:{}", int(terminated, "/signal")),
                    "" => format!("ExitCode:{}", int(terminated, "/exitCode")),
                    why => why.to_owned(),
                };
            } else if status["ready"] == true && object(status, "/state/running").is_some() {
                running = true;
                ready += 1;
            }
        }
        // A pod whose containers completed but one still runs is Running (or NotReady).
        if reason == "Completed" && running {
            reason = if condition_true(conditions, "Ready") { "Running".into() } else { "NotReady".into() };
        }
    }

    let deleting =
        object(pod, "/metadata").is_some_and(|metadata| time(&metadata["deletionTimestamp"]).is_some());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".into();
    }

    let restarts_text = match last_restart {
        Some(last) if restarts != 0 => format!("{restarts} ({} ago)", human_since(last, now)),
        _ => restarts.to_string(),
    };

    // Wide: kube reads the pod's first IP, where `status.podIP` wins over `status.podIPs`.
    let ip = match text(pod, "/status/podIP") {
        "" => text_or(pod, "/status/podIPs/0/ip", "<none>"),
        ip => ip,
    };
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let passed = gates
            .iter()
            .filter(|gate| {
                conditions
                    .iter()
                    .find(|condition| condition["type"] == gate["conditionType"])
                    .is_some_and(|condition| condition["status"] == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };
    Row {
        cells: vec![
            name(pod),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_text),
            age(pod, now),
            json!(ip),
            json!(text_or(pod, "/spec/nodeName", "<none>")),
            json!(text_or(pod, "/status/nominatedNodeName", "<none>")),
            json!(readiness_gates),
        ],
        conditions: row_conditions,
    }
}

fn namespace_row(namespace: &Value, now: Timestamp) -> Row {
    vec![name(namespace), json!(text(namespace, "/status/phase")), age(namespace, now)].into()
}

fn configmap_row(configmap: &Value, now: Timestamp) -> Row {
    let count = |field: &str| at(configmap, field).as_object().map_or(0, Map::len);
    let keys = count("/data") + count("/binaryData");
    vec![name(configmap), json!(keys), age(configmap, now)].into()
}

fn secret_row(secret: &Value, now: Timestamp) -> Row {
    let keys = at(secret, "/data").as_object().map_or(0, Map::len);
    vec![name(secret), json!(text_or(secret, "/type", "Opaque")), json!(keys), age(secret, now)].into()
}

fn service_account_row(account: &Value, now: Timestamp) -> Row {
    vec![name(account), json!(list(account, "/secrets").len()), age(account, now)].into()
}

/// kube's `loadBalancerStatusStringer` (wide: never clipped): the ingress points' IPs or host
/// names, sorted and deduplicated.
fn load_balancer_ingress(service: &Value) -> String {
    let points: BTreeSet<&str> = list(service, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|point| match (text(point, "/ip"), text(point, "/hostname")) {
            ("", "") => None,
            ("", hostname) => Some(hostname),
            (ip, _) => Some(ip),
        })
        .collect();
    points.into_iter().collect::<Vec<_>>().join(",")
}

fn service_row(service: &Value, now: Timestamp) -> Row {
    // kube defaults the type to ClusterIP and a port's protocol to TCP.
    let kind = text_or(service, "/spec/type", "ClusterIP");
    let cluster_ip = match text(service, "/spec/clusterIPs/0") {
        "" => text_or(service, "/spec/clusterIP", "<none>"),
        ip => ip,
    };
    let external: Vec<&str> =
        list(service, "/spec/externalIPs").iter().map(|ip| ip.as_str().unwrap_or("")).collect();
    let external_ip = match kind {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let ingress = load_balancer_ingress(service);
            let mut all: Vec<&str> = ingress.split(',').filter(|point| !point.is_empty()).collect();
            all.extend(external.iter().copied());
            if all.is_empty() {
                "<pending>".to_owned()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(service, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = list(service, "/spec/ports")
        .iter()
        .map(|port| {
            let protocol = text_or(port, "/protocol", "TCP");
            match int(port, "/nodePort") {
                node_port if node_port > 0 => format!("{}:{node_port}/{protocol}", int(port, "/port")),
                _ => format!("{}/{protocol}", int(port, "/port")),
            }
        })
        .collect();
    let ports = if ports.is_empty() { "<none>".to_owned() } else { ports.join(",") };
    vec![
        name(service),
        json!(kind),
        json!(cluster_ip),
        json!(external_ip),
        json!(ports),
        age(service, now),
        json!(format_labels(at(service, "/spec/selector"))),
    ]
    .into()
}

/// `host:port` as Go's `net.JoinHostPort` writes it.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// kube's `formatEndpoints`: up to three addresses (with each port), then `+ N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = list(endpoints, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = list(subset, "/addresses");
        let ports = list(subset, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(text(address, "/ip").to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(text(address, "/ip"), int(port, "/port")));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_row(endpoints: &Value, now: Timestamp) -> Row {
    vec![name(endpoints), json!(format_endpoints(endpoints)), age(endpoints, now)].into()
}

/// kube's `findNodeRoles`: `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, "/metadata/labels").as_object() {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_owned());
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|role| !role.is_empty()) {
                    roles.insert(role.to_owned());
                }
            }
        }
    }
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(node: &Value, kind: &str) -> String {
    list(node, "/status/addresses")
        .iter()
        .find(|address| address["type"] == kind)
        .map_or_else(|| "<none>".to_owned(), |address| text(address, "/address").to_owned())
}

fn node_row(node: &Value, now: Timestamp) -> Row {
    // The last Ready condition counts, as kube's map of conditions by type keeps the last.
    let ready = list(node, "/status/conditions").iter().rev().find(|condition| condition["type"] == "Ready");
    let mut status = vec![match ready {
        Some(condition) if condition["status"] == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if at(node, "/spec/unschedulable") == true {
        status.push("SchedulingDisabled");
    }
    let info = |field: &str| json!(text_or(node, &format!("/status/nodeInfo/{field}"), "<unknown>"));
    vec![
        name(node),
        json!(status.join(",")),
        json!(node_roles(node)),
        age(node, now),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
    .into()
}

fn first_non_empty<'v>(first: &'v str, second: &'v str) -> &'v str {
    if first.is_empty() {
        second
    } else {
        first
    }
}

fn event_row(event: &Value, now: Timestamp) -> Row {
    let first_seen = match time(at(event, "/firstTimestamp")) {
        Some(first) => human_since(first, now),
        None => since(time(at(event, "/eventTime")), now),
    };
    let mut last_seen = match time(at(event, "/lastTimestamp")) {
        Some(last) => human_since(last, now),
        None => first_seen.clone(),
    };
    let mut count = int(event, "/count");
    if let Some(series) = object(event, "/series") {
        last_seen = since(time(&series["lastObservedTime"]), now);
        count = int(series, "/count");
    } else if count == 0 {
        // Events of the new API have no count when they happened once.
        count = 1;
    }
    let kind = text(event, "/involvedObject/kind").to_lowercase();
    let target = match text(event, "/involvedObject/name") {
        "" => kind,
        involved => format!("{kind}/{involved}"),
    };
    let component = first_non_empty(text(event, "/source/component"), text(event, "/reportingComponent"));
    let instance = first_non_empty(text(event, "/source/host"), text(event, "/reportingInstance"));
    let source = if instance.is_empty() { component.to_owned() } else { format!("{component}, {instance}") };
    vec![
        json!(last_seen),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(target),
        json!(text(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(text(event, "/message").trim()),
        json!(first_seen),
        json!(count),
        name(event),
    ]
    .into()
}

fn deployment_row(deployment: &Value, now: Timestamp) -> Row {
    let (containers, images) = container_cells(list(deployment, "/spec/template/spec/containers"));
    let selector = label_selector(at(deployment, "/spec/selector")).unwrap_or_else(|()| "<invalid>".into());
    vec![
        name(deployment),
        json!(format!("{}/{}", int(deployment, "/status/readyReplicas"), replicas(deployment))),
        json!(int(deployment, "/status/updatedReplicas")),
        json!(int(deployment, "/status/availableReplicas")),
        age(deployment, now),
        containers,
        images,
        json!(selector),
    ]
    .into()
}

fn replicaset_row(set: &Value, now: Timestamp) -> Row {
    let (containers, images) = container_cells(list(set, "/spec/template/spec/containers"));
    vec![
        name(set),
        json!(replicas(set)),
        json!(int(set, "/status/replicas")),
        json!(int(set, "/status/readyReplicas")),
        age(set, now),
        containers,
        images,
        json!(format_label_selector(at(set, "/spec/selector"))),
    ]
    .into()
}

fn statefulset_row(set: &Value, now: Timestamp) -> Row {
    let (containers, images) = container_cells(list(set, "/spec/template/spec/containers"));
    vec![
        name(set),
        json!(format!("{}/{}", int(set, "/status/readyReplicas"), replicas(set))),
        age(set, now),
        containers,
        images,
    ]
    .into()
}

fn daemonset_row(set: &Value, now: Timestamp) -> Row {
    let (containers, images) = container_cells(list(set, "/spec/template/spec/containers"));
    vec![
        name(set),
        json!(int(set, "/status/desiredNumberScheduled")),
        json!(int(set, "/status/currentNumberScheduled")),
        json!(int(set, "/status/numberReady")),
        json!(int(set, "/status/updatedNumberScheduled")),
        json!(int(set, "/status/numberAvailable")),
        json!(format_labels(at(set, "/spec/template/spec/nodeSelector"))),
        age(set, now),
        containers,
        images,
        json!(format_label_selector(at(set, "/spec/selector"))),
    ]
    .into()
}

/// kube's `printJob`: the first condition that holds names the status; completions out of
/// `spec.completions`, or out of 1 (with the parallelism above 1); how long it ran.
fn job_row(job: &Value, now: Timestamp) -> Row {
    let succeeded = int(job, "/status/succeeded");
    let completions = match number(at(job, "/spec/completions")) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match int(job, "/spec/parallelism") {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = time(at(job, "/status/startTime"));
    let duration = match (start, time(at(job, "/status/completionTime"))) {
        (None, _) => String::new(),
        (Some(start), None) => human_since(start, now),
        (Some(start), Some(completed)) => human_since(start, completed),
    };
    let conditions = list(job, "/status/conditions");
    let status = if condition_true(conditions, "Complete") {
        "Complete"
    } else if condition_true(conditions, "Failed") {
        "Failed"
    } else if time(at(job, "/metadata/deletionTimestamp")).is_some() {
        "Terminating"
    } else if condition_true(conditions, "Suspended") {
        "Suspended"
    } else if condition_true(conditions, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(conditions, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (containers, images) = container_cells(list(job, "/spec/template/spec/containers"));
    vec![
        name(job),
        json!(status),
        json!(completions),
        json!(duration),
        age(job, now),
        containers,
        images,
        json!(format_label_selector(at(job, "/spec/selector"))),
    ]
    .into()
}

/// kube's `printCronJob`; `spec.suspend` reads as kube's default (false) when missing.
fn cronjob_row(cronjob: &Value, now: Timestamp) -> Row {
    let last_schedule = match time(at(cronjob, "/status/lastScheduleTime")) {
        None => "<none>".to_owned(),
        Some(last) => human_since(last, now),
    };
    let suspend = if at(cronjob, "/spec/suspend").as_bool().unwrap_or(false) { "True" } else { "False" };
    let template = at(cronjob, "/spec/jobTemplate/spec");
    let (containers, images) = container_cells(list(template, "/template/spec/containers"));
    vec![
        name(cronjob),
        json!(text(cronjob, "/spec/schedule")),
        json!(at(cronjob, "/spec/timeZone").as_str().unwrap_or("<none>")),
        json!(suspend),
        json!(list(cronjob, "/status/active").len()),
        json!(last_schedule),
        age(cronjob, now),
        containers,
        images,
        json!(format_label_selector(at(template, "/selector"))),
    ]
    .into()
}

fn lease_row(lease: &Value, now: Timestamp) -> Row {
    vec![name(lease), json!(text(lease, "/spec/holderIdentity")), age(lease, now)].into()
}

fn replication_controller_row(controller: &Value, now: Timestamp) -> Row {
    let (containers, images) = container_cells(list(controller, "/spec/template/spec/containers"));
    vec![
        name(controller),
        json!(replicas(controller)),
        json!(int(controller, "/status/replicas")),
        json!(int(controller, "/status/readyReplicas")),
        age(controller, now),
        containers,
        images,
        json!(format_labels(at(controller, "/spec/selector"))),
    ]
    .into()
}

fn pod_template_row(template: &Value, _now: Timestamp) -> Row {
    let (containers, images) = container_cells(list(template, "/template/spec/containers"));
    vec![name(template), containers, images, json!(format_labels(at(template, "/template/metadata/labels")))]
        .into()
}

/// An IntOrString as kube prints it, or `N/A` when unset.
fn int_or_string(value: &Value) -> String {
    match value {
        Value::Null => "N/A".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn pdb_row(budget: &Value, now: Timestamp) -> Row {
    vec![
        name(budget),
        json!(int_or_string(at(budget, "/spec/minAvailable"))),
        json!(int_or_string(at(budget, "/spec/maxUnavailable"))),
        json!(int(budget, "/status/disruptionsAllowed")),
        age(budget, now),
    ]
    .into()
}

/// kube's `GetAccessModesAsString`: RWO, ROX, RWX and RWOP, in that order.
fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|given| given == mode);
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a volume or claim: the beta annotation, else `spec.storageClassName`.
fn storage_class(object: &Value) -> &str {
    let annotation = text(object, "/metadata/annotations/volume.beta.kubernetes.io~1storage-class");
    if annotation.is_empty() {
        text(object, "/spec/storageClassName")
    } else {
        annotation
    }
}

/// A quantity as a cell; a missing one is kube's zero quantity, `0`.
fn quantity(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => "0".into(),
    }
}

fn deleting_or(object: &Value, phase: &str) -> String {
    if at(object, "/metadata/deletionTimestamp").is_string() {
        "Terminating".into()
    } else {
        phase.to_owned()
    }
}

fn persistent_volume_row(volume: &Value, now: Timestamp) -> Row {
    let claim = match object(volume, "/spec/claimRef") {
        Some(claim) => format!("{}/{}", text(claim, "/namespace"), text(claim, "/name")),
        None => String::new(),
    };
    vec![
        name(volume),
        json!(quantity(at(volume, "/spec/capacity/storage"))),
        json!(access_modes(list(volume, "/spec/accessModes"))),
        json!(text(volume, "/spec/persistentVolumeReclaimPolicy")),
        json!(deleting_or(volume, text(volume, "/status/phase"))),
        json!(claim),
        json!(storage_class(volume)),
        json!(text_or(volume, "/spec/volumeAttributesClassName", "<unset>")),
        json!(text(volume, "/status/reason")),
        age(volume, now),
        json!(text_or(volume, "/spec/volumeMode", "<unset>")),
    ]
    .into()
}

fn persistent_volume_claim_row(claim: &Value, now: Timestamp) -> Row {
    let volume = text(claim, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (quantity(at(claim, "/status/capacity/storage")), access_modes(list(claim, "/status/accessModes")))
    };
    vec![
        name(claim),
        json!(deleting_or(claim, text(claim, "/status/phase"))),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(claim)),
        json!(text_or(claim, "/spec/volumeAttributesClassName", "<unset>")),
        age(claim, now),
        json!(text_or(claim, "/spec/volumeMode", "<unset>")),
    ]
    .into()
}

/// kube's `printResourceQuota`: `resource: used/hard` for every hard limit in name order, the
/// `limits.*` ones in the Limit column.
fn resource_quota_row(quota: &Value, now: Timestamp) -> Row {
    let hard = at(quota, "/status/hard").as_object().cloned().unwrap_or_default();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    for resource in names {
        let used = quota
            .pointer("/status/used")
            .and_then(|used| used.get(resource.as_str()))
            .unwrap_or(&Value::Null);
        let cell = format!("{resource}: {}/{}", quantity(used), quantity(&hard[resource]));
        if resource.split('.').count() > 1 && resource.starts_with("limits.") {
            limits.push(cell);
        } else {
            requests.push(cell);
        }
    }
    vec![name(quota), json!(requests.join(", ")), json!(limits.join(", ")), age(quota, now)].into()
}

fn limit_range_row(range: &Value, _now: Timestamp) -> Row {
    vec![name(range), json!(text(range, "/metadata/creationTimestamp"))].into()
}

/// kube's `listWithMoreString`: the first three, `+ N more...`, or `<unset>` for none.
fn list_with_more(items: &[String], max: usize) -> String {
    let shown = items.iter().take(max).cloned().collect::<Vec<_>>().join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else if shown.is_empty() {
        "<unset>".into()
    } else {
        shown
    }
}

fn endpoint_slice_row(slice: &Value, now: Timestamp) -> Row {
    let ports: Vec<String> = list(slice, "/ports")
        .iter()
        .map(|port| match (at(port, "/port").as_i64(), at(port, "/name").as_str()) {
            (Some(number), _) => number.to_string(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => "*".into(),
        })
        .collect();
    let addresses: Vec<String> = list(slice, "/endpoints")
        .iter()
        .flat_map(|endpoint| list(endpoint, "/addresses").iter().filter_map(Value::as_str).map(str::to_owned))
        .collect();
    vec![
        name(slice),
        json!(text(slice, "/addressType")),
        json!(list_with_more(&ports, 3)),
        json!(list_with_more(&addresses, 3)),
        age(slice, now),
    ]
    .into()
}

fn csi_driver_row(driver: &Value, now: Timestamp) -> Row {
    let flag = |pointer: &str, default: bool| at(driver, pointer).as_bool().unwrap_or(default);
    let audiences: Vec<&str> =
        list(driver, "/spec/tokenRequests").iter().map(|request| text(request, "/audience")).collect();
    let tokens = if audiences.is_empty() { "<unset>".to_owned() } else { audiences.join(",") };
    let modes: Vec<&str> =
        list(driver, "/spec/volumeLifecycleModes").iter().filter_map(Value::as_str).collect();
    let modes = if modes.is_empty() { "Persistent".to_owned() } else { modes.join(",") };
    vec![
        name(driver),
        json!(flag("/spec/attachRequired", true)),
        json!(flag("/spec/podInfoOnMount", false)),
        json!(flag("/spec/storageCapacity", false)),
        json!(tokens),
        json!(flag("/spec/requiresRepublish", false)),
        json!(modes),
        age(driver, now),
    ]
    .into()
}

/// One HPA metric as kube's `formatHPAMetrics` shows it: `current/target`, `<unknown>` for a
/// current value not reported yet.
fn hpa_metric(spec: &Value, current: Option<&Value>) -> String {
    let value = |target: &Value, pointer: &str| at(target, pointer).clone();
    let shown = |value: &Value| if value.is_null() { "<unknown>".to_owned() } else { quantity(value) };
    match text(spec, "/type") {
        kind @ ("Resource" | "ContainerResource") => {
            let source = if kind == "Resource" { "/resource" } else { "/containerResource" };
            let metric = at(spec, source);
            let resource = text(metric, "/name");
            let current = current.map(|current| at(current, source)).unwrap_or(&Value::Null);
            if let Some(utilization) = at(metric, "/target/averageUtilization").as_i64() {
                let now = match at(current, "/current/averageUtilization").as_i64() {
                    Some(used) => format!("{used}%"),
                    None => "<unknown>".into(),
                };
                format!("{resource}: {now}/{utilization}%")
            } else {
                format!(
                    "{resource}: {}/{}",
                    shown(&value(current, "/current/averageValue")),
                    quantity(at(metric, "/target/averageValue"))
                )
            }
        }
        kind @ ("Pods" | "Object" | "External") => {
            let source = match kind {
                "Pods" => "/pods",
                "Object" => "/object",
                _ => "/external",
            };
            let metric = at(spec, source);
            let current = current.map(|current| at(current, source)).unwrap_or(&Value::Null);
            if at(metric, "/target/averageValue").is_null() && !at(metric, "/target/value").is_null() {
                format!(
                    "{}/{}",
                    shown(&value(current, "/current/value")),
                    quantity(at(metric, "/target/value"))
                )
            } else {
                let average = if kind == "Pods" { "" } else { " (avg)" };
                format!(
                    "{}/{}{average}",
                    shown(&value(current, "/current/averageValue")),
                    quantity(at(metric, "/target/averageValue"))
                )
            }
        }
        _ => "<unknown type>".into(),
    }
}

fn hpa_row(autoscaler: &Value, now: Timestamp) -> Row {
    let target = at(autoscaler, "/spec/scaleTargetRef");
    let reference = format!("{}/{}", text(target, "/kind"), text(target, "/name"));
    let specs = list(autoscaler, "/spec/metrics");
    let currents = list(autoscaler, "/status/currentMetrics");
    let metrics: Vec<String> =
        specs.iter().enumerate().map(|(index, spec)| hpa_metric(spec, currents.get(index))).collect();
    let targets = match metrics.len() {
        0 => "<none>".to_owned(),
        1..=2 => metrics.join(", "),
        more => format!("{} + {} more...", metrics[..2].join(", "), more - 2),
    };
    let min_pods = match at(autoscaler, "/spec/minReplicas").as_i64() {
        Some(min) => min.to_string(),
        None => "<unset>".into(),
    };
    vec![
        name(autoscaler),
        json!(reference),
        json!(targets),
        json!(min_pods),
        json!(int(autoscaler, "/spec/maxReplicas")),
        json!(int(autoscaler, "/status/currentReplicas")),
        age(autoscaler, now),
    ]
    .into()
}

/// kube's `extractCSRStatus`: Denied, Approved or Pending, then Failed and Issued.
fn csr_condition(request: &Value) -> String {
    let has =
        |kind: &str| list(request, "/status/conditions").iter().any(|condition| condition["type"] == kind);
    let mut status = if has("Denied") {
        "Denied".to_owned()
    } else if has("Approved") {
        "Approved".to_owned()
    } else {
        "Pending".to_owned()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !text(request, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn csr_row(request: &Value, now: Timestamp) -> Row {
    let requested = match at(request, "/spec/expirationSeconds").as_u64() {
        Some(seconds) => human_duration(Duration::from_secs(seconds)),
        None => "<none>".into(),
    };
    vec![
        name(request),
        age(request, now),
        json!(text(request, "/spec/signerName")),
        json!(text(request, "/spec/username")),
        json!(requested),
        json!(csr_condition(request)),
    ]
    .into()
}

fn storage_class_row(class: &Value, now: Timestamp) -> Row {
    let annotations = at(class, "/metadata/annotations");
    let default =
        ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
            .iter()
            .any(|key| annotations[*key] == "true");
    let mut shown = text(class, "/metadata/name").to_owned();
    if default {
        shown.push_str(" (default)");
    }
    vec![
        json!(shown),
        json!(text(class, "/provisioner")),
        json!(text_or(class, "/reclaimPolicy", "Delete")),
        json!(text_or(class, "/volumeBindingMode", "Immediate")),
        json!(at(class, "/allowVolumeExpansion").as_bool().unwrap_or(false)),
        age(class, now),
    ]
    .into()
}

fn csi_node_row(node: &Value, now: Timestamp) -> Row {
    vec![name(node), json!(list(node, "/spec/drivers").len()), age(node, now)].into()
}

fn volume_attachment_row(attachment: &Value, now: Timestamp) -> Row {
    vec![
        name(attachment),
        json!(text(attachment, "/spec/attacher")),
        json!(text(attachment, "/spec/source/persistentVolumeName")),
        json!(text(attachment, "/spec/nodeName")),
        json!(at(attachment, "/status/attached").as_bool().unwrap_or(false)),
        age(attachment, now),
    ]
    .into()
}

fn priority_class_row(class: &Value, now: Timestamp) -> Row {
    vec![
        name(class),
        json!(int(class, "/value")),
        json!(at(class, "/globalDefault").as_bool().unwrap_or(false)),
        age(class, now),
        json!(text_or(class, "/preemptionPolicy", "<unset>")),
    ]
    .into()
}

fn ingress_class_row(class: &Value, now: Timestamp) -> Row {
    let parameters = match object(class, "/spec/parameters") {
        None => "<none>".to_owned(),
        Some(parameters) => {
            let mut shown = text(parameters, "/kind").to_owned();
            if let Some(group) = parameters.get("apiGroup").and_then(Value::as_str) {
                shown = format!("{shown}.{group}");
            }
            format!("{shown}/{}", text(parameters, "/name"))
        }
    };
    vec![name(class), json!(text(class, "/spec/controller")), json!(parameters), age(class, now)].into()
}

fn ingress_row(ingress: &Value, now: Timestamp) -> Row {
    const MAX_HOSTS: usize = 3;
    let rules = list(ingress, "/spec/rules");
    // kube's formatHosts: the first three hosts named, and how many rules are past three.
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX_HOSTS {
            more = true;
        }
        let host = text(rule, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = match (hosts.is_empty(), more) {
        (true, _) => "*".to_owned(),
        (false, false) => hosts.join(","),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - MAX_HOSTS),
    };
    let addresses: Vec<&str> = list(ingress, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|point| match (text(point, "/ip"), text(point, "/hostname")) {
            ("", "") => None,
            ("", hostname) => Some(hostname),
            (ip, _) => Some(ip),
        })
        .collect();
    let mut address = addresses.join(",");
    if address.len() > 16 {
        address = format!("{}...", &address[..13]);
    }
    let ports = if list(ingress, "/spec/tls").is_empty() { "80" } else { "80, 443" };
    vec![
        name(ingress),
        json!(text_or(ingress, "/spec/ingressClassName", "<none>")),
        json!(hosts),
        json!(address),
        json!(ports),
        age(ingress, now),
    ]
    .into()
}

/// kube's RoleBinding row: `Kind/name` of the role, then the subjects by kind
/// (service accounts as `namespace/name`).
fn binding_row(binding: &Value, now: Timestamp) -> Row {
    let role = format!("{}/{}", text(binding, "/roleRef/kind"), text(binding, "/roleRef/name"));
    let subjects = at(binding, "/subjects").as_array().cloned().unwrap_or_default();
    let of_kind = |kind: &str| {
        subjects
            .iter()
            .filter(|subject| text(subject, "/kind") == kind)
            .map(|subject| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", text(subject, "/namespace"), text(subject, "/name"))
                } else {
                    text(subject, "/name").to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        name(binding),
        json!(role),
        age(binding, now),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
    .into()
}

fn network_policy_row(policy: &Value, now: Timestamp) -> Row {
    vec![name(policy), json!(format_label_selector(at(policy, "/spec/podSelector"))), age(policy, now)].into()
}

fn runtime_class_row(class: &Value, now: Timestamp) -> Row {
    vec![name(class), json!(text(class, "/handler")), age(class, now)].into()
}

/// kube-apiserver's default Table row: the name and the creation time in RFC 3339 (UTC).
fn default_row(object: &Value, _now: Timestamp) -> Row {
    let created = time(at(object, "/metadata/creationTimestamp"))
        .map(|created| created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    vec![name(object), json!(created)].into()
}

// ---------------------------------------------------------------------------------------------
// Custom resources: additionalPrinterColumns

/// One step of a simple JSONPath.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// `.name` or `['name']`.
    Field(String),
    /// `[n]`; negative counts from the end.
    Index(i64),
    /// `[*]` or `.*`.
    Every,
    /// `[?(@.a.b == "x")]`, `[?(@.a != 1)]` or `[?(@.a)]`.
    Filter(Vec<Step>, Option<(bool, Value)>),
}

/// Parses the JSONPath subset kube's printer columns use: `.a.b[0].c`, `['a.b']`, `\.`-escaped
/// dots, `[*]`, and `[?(@.field == "value")]` filters.
fn parse_json_path(path: &str) -> Result<Vec<Step>, String> {
    let path = path.trim();
    let path = path.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')).unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut chars = path.chars().peekable();
    let mut steps = Vec::new();
    parse_steps(&mut chars, &mut steps, None)?;
    if chars.next().is_some() {
        return Err(format!("unexpected text in JSONPath {path:?}"));
    }
    Ok(steps)
}

fn parse_steps(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    steps: &mut Vec<Step>,
    until: Option<&[char]>,
) -> Result<(), String> {
    while let Some(&next) = chars.peek() {
        if until.is_some_and(|stop| stop.contains(&next)) {
            return Ok(());
        }
        match next {
            '.' => {
                chars.next();
                let mut field = String::new();
                while let Some(&c) = chars.peek() {
                    match c {
                        '\\' => {
                            chars.next();
                            field.push(chars.next().ok_or("a JSONPath ends in \\")?);
                        }
                        '.' | '[' => break,
                        c if until.is_some_and(|stop| stop.contains(&c)) => break,
                        c => {
                            chars.next();
                            field.push(c);
                        }
                    }
                }
                match field.as_str() {
                    "" if steps.is_empty() && chars.peek().is_none() => {}
                    "" => return Err("an empty field name in a JSONPath".into()),
                    "*" => steps.push(Step::Every),
                    _ => steps.push(Step::Field(field)),
                }
            }
            '[' => {
                chars.next();
                steps.push(parse_bracket(chars)?);
            }
            ' ' if until.is_some() => return Ok(()),
            other => return Err(format!("unexpected {other:?} in a JSONPath")),
        }
    }
    Ok(())
}

fn parse_bracket(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Step, String> {
    let step = match chars.peek() {
        Some('\'' | '"') => {
            let quote = chars.next().expect("peeked");
            let mut field = String::new();
            loop {
                match chars.next() {
                    Some('\\') => field.push(chars.next().ok_or("an unterminated JSONPath string")?),
                    Some(c) if c == quote => break,
                    Some(c) => field.push(c),
                    None => return Err("an unterminated JSONPath string".into()),
                }
            }
            Step::Field(field)
        }
        Some('*') => {
            chars.next();
            Step::Every
        }
        Some('?') => {
            chars.next();
            if chars.next() != Some('(') || chars.next() != Some('@') {
                return Err("a JSONPath filter must read [?(@...)]".into());
            }
            let mut path = Vec::new();
            parse_steps(chars, &mut path, Some(&[')', '=', '!', ' ']))?;
            skip_spaces(chars);
            let comparison = match chars.peek() {
                Some('=' | '!') => {
                    let equal = chars.next() == Some('=');
                    if chars.next() != Some('=') {
                        return Err("a JSONPath filter compares with == or !=".into());
                    }
                    skip_spaces(chars);
                    Some((equal, parse_literal(chars)?))
                }
                _ => None,
            };
            skip_spaces(chars);
            if chars.next() != Some(')') {
                return Err("an unterminated JSONPath filter".into());
            }
            Step::Filter(path, comparison)
        }
        _ => {
            let mut digits = String::new();
            while let Some(&c) = chars.peek() {
                if c == ']' {
                    break;
                }
                digits.push(c);
                chars.next();
            }
            Step::Index(digits.trim().parse().map_err(|_| format!("unsupported JSONPath index [{digits}]"))?)
        }
    };
    if chars.next() != Some(']') {
        return Err("an unterminated [ in a JSONPath".into());
    }
    Ok(step)
}

fn skip_spaces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.peek() == Some(&' ') {
        chars.next();
    }
}

fn parse_literal(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Value, String> {
    match chars.peek() {
        Some('\'' | '"') => {
            let quote = chars.next().expect("peeked");
            let mut literal = String::new();
            loop {
                match chars.next() {
                    Some(c) if c == quote => return Ok(Value::String(literal)),
                    Some(c) => literal.push(c),
                    None => return Err("an unterminated JSONPath string".into()),
                }
            }
        }
        _ => {
            let mut literal = String::new();
            while let Some(&c) = chars.peek() {
                if c == ')' || c == ' ' {
                    break;
                }
                literal.push(c);
                chars.next();
            }
            serde_json::from_str(&literal).map_err(|_| format!("unsupported JSONPath literal {literal:?}"))
        }
    }
}

/// The first value `steps` reach from `value` (kube's column shows the first result only).
fn first_match<'v>(steps: &[Step], value: &'v Value) -> Option<&'v Value> {
    let Some((step, rest)) = steps.split_first() else { return Some(value) };
    match step {
        Step::Field(field) => value.as_object()?.get(field).and_then(|found| first_match(rest, found)),
        Step::Index(index) => {
            let items = value.as_array()?;
            let index = if *index < 0 { items.len() as i64 + index } else { *index };
            items.get(usize::try_from(index).ok()?).and_then(|found| first_match(rest, found))
        }
        Step::Every => match value {
            Value::Array(items) => items.iter().find_map(|item| first_match(rest, item)),
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                keys.into_iter().find_map(|key| first_match(rest, &fields[key]))
            }
            _ => None,
        },
        Step::Filter(path, comparison) => value.as_array()?.iter().find_map(|item| {
            let found = first_match(path, item);
            let keep = match (comparison, found) {
                (None, found) => found.is_some(),
                (Some((equal, literal)), Some(found)) => (found == literal) == *equal,
                (Some((equal, _)), None) => !*equal,
            };
            if keep {
                first_match(rest, item)
            } else {
                None
            }
        }),
    }
}

/// A value as client-go's JSONPath prints it: strings as they are, numbers and booleans as Go
/// prints them, objects and arrays as compact JSON with sorted keys.
fn json_path_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), _, _) => integer.to_string(),
            (_, Some(integer), _) => integer.to_string(),
            (_, _, Some(float)) => go_float(float),
            _ => number.to_string(),
        },
        Value::Array(_) | Value::Object(_) => sorted(value).to_string(),
    })
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|key| (key.clone(), sorted(&fields[key]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A float as Go's `fmt.Print` writes it: `%g` with the shortest digits, in exponent form
/// below 1e-4 and from 1e6.
fn go_float(float: f64) -> String {
    if float == 0.0 {
        return if float.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("Rust's {:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("an integer exponent");
    if (-4..6).contains(&exponent) {
        format!("{float}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// A custom column's cell, as apiextensions-apiserver's table convertor computes it.
fn custom_cell(column: &Column<'_>, steps: &[Step], object: &Value, now: Timestamp) -> Value {
    let Some(found) = first_match(steps, object) else { return Value::Null };
    match column.kind {
        "string" => json_path_text(found).map_or(Value::Null, Value::String),
        "integer" => number(found).filter(|_| found.is_number()).map_or(Value::Null, |n| json!(n)),
        "number" => found.as_f64().map_or(Value::Null, |n| json!(n)),
        "boolean" => found.as_bool().map_or(Value::Null, Value::Bool),
        "date" => match found.as_str() {
            Some("") => json!("<unknown>"),
            Some(stamp) => match stamp.parse::<Timestamp>() {
                Ok(stamp) => json!(human_since(stamp, now)),
                Err(_) => json!("<invalid>"),
            },
            None => Value::Null,
        },
        _ => Value::Null,
    }
}

/// A custom resource version's columns after Name, as apiextensions-apiserver builds them: an
/// Age column when the version has none; a column without a description describes its path;
/// a column whose path does not parse ends the list (kube's convertor keeps the columns before
/// it).
fn custom_columns(columns: &[PrinterColumn]) -> Vec<(Column<'_>, Vec<Step>)> {
    if columns.is_empty() {
        let age = Column {
            name: "Age",
            kind: "date",
            format: "",
            description: Cow::Borrowed(CREATED_DOC),
            priority: 0,
        };
        let steps = parse_json_path(".metadata.creationTimestamp").expect("a simple path");
        return vec![(age, steps)];
    }
    let mut parsed = Vec::new();
    for column in columns {
        let Ok(steps) = parse_json_path(&column.json_path) else { break };
        let description = if column.description.is_empty() {
            Cow::Owned(format!(
                "Custom resource definition column (in JSONPath format): {}",
                column.json_path
            ))
        } else {
            Cow::Borrowed(column.description.as_str())
        };
        let definition = Column {
            name: &column.name,
            kind: &column.kind,
            format: &column.format,
            description,
            priority: column.priority,
        };
        parsed.push((definition, steps));
    }
    parsed
}

fn custom_row(columns: &[(Column<'_>, Vec<Step>)], object: &Value, now: Timestamp) -> Row {
    std::iter::once(name(object))
        .chain(columns.iter().map(|(column, steps)| custom_cell(column, steps, object, now)))
        .collect::<Vec<_>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2024-05-01T12:00:00Z";
    const HOUR_AGO: &str = "2024-05-01T11:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn builtin(plural: &str) -> ResourceType {
        crate::registry::builtin_types().into_iter().find(|ty| ty.plural == plural).unwrap()
    }

    const OPTIONS: TableOptions =
        TableOptions { api_version: "meta.k8s.io/v1", include: IncludeObject::Metadata, no_headers: false };

    /// The cells of one object's row.
    fn cells(ty: &ResourceType, object: Value) -> Vec<Value> {
        let table = table_at(ty, &[object], json!({}), &OPTIONS, now());
        table["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn headers(ty: &ResourceType) -> Vec<(String, i64)> {
        Printer::of(ty)
            .columns()
            .iter()
            .map(|column| (column["name"].as_str().unwrap().to_owned(), column["priority"].as_i64().unwrap()))
            .collect()
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": HOUR_AGO},
            "spec": spec, "status": status,
        })
    }

    fn containers(names: &[&str]) -> Value {
        Value::Array(names.iter().map(|name| json!({"name": name, "image": "nginx"})).collect())
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": HOUR_AGO}}})
    }

    #[test]
    fn pod_columns_are_kubes() {
        let names: Vec<(String, i64)> = headers(&builtin("pods"));
        let expected = [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ];
        assert_eq!(names, expected.map(|(name, priority)| (name.to_owned(), priority)));
        let columns = Printer::of(&builtin("pods")).columns();
        assert_eq!(columns[0]["format"], "name");
        assert_eq!(columns[3]["type"], "string");
        assert!(columns[4]["description"].as_str().unwrap().starts_with("CreationTimestamp is a timestamp"));
    }

    #[test]
    fn pod_status_follows_kubes_printer() {
        let ready_condition =
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]);
        let cases: Vec<(&str, Value, [&str; 4])> = vec![
            (
                "running",
                pod(
                    json!({"containers": containers(&["a", "b"]), "nodeName": "node-1"}),
                    json!({"phase": "Running", "conditions": ready_condition, "podIP": "10.0.0.5",
                           "containerStatuses": [running("a", true, 0), running("b", true, 0)]}),
                ),
                ["2/2", "Running", "0", "60m"],
            ),
            (
                "pending, no status yet",
                pod(json!({"containers": containers(&["a"])}), Value::Null),
                ["0/1", "Pending", "0", "60m"],
            ),
            (
                "container creating",
                pod(
                    json!({"containers": containers(&["a"])}),
                    json!({"phase": "Pending", "containerStatuses": [
                        {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
                    ]}),
                ),
                ["0/1", "ContainerCreating", "0", "60m"],
            ),
            (
                "crash loop",
                pod(
                    json!({"containers": containers(&["a"])}),
                    json!({"phase": "Running", "containerStatuses": [{
                        "name": "a", "ready": false, "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:55:00Z"}},
                    }]}),
                ),
                ["0/1", "CrashLoopBackOff", "5 (5m ago)", "60m"],
            ),
            (
                "completed",
                pod(
                    json!({"containers": containers(&["a"]), "restartPolicy": "Never"}),
                    json!({"phase": "Succeeded", "containerStatuses": [{
                        "name": "a", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": HOUR_AGO}},
                    }]}),
                ),
                ["0/1", "Completed", "0", "60m"],
            ),
            (
                "error exit without a reason",
                pod(
                    json!({"containers": containers(&["a"])}),
                    json!({"phase": "Failed", "containerStatuses": [{
                        "name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 137}},
                    }]}),
                ),
                ["0/1", "ExitCode:137", "0", "60m"],
            ),
            (
                "waiting for an init container",
                pod(
                    json!({"initContainers": containers(&["init"]), "containers": containers(&["a"])}),
                    json!({"phase": "Pending",
                           "initContainerStatuses": [running("init", false, 0)],
                           "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                                                  "state": {"waiting": {"reason": "PodInitializing"}}}]}),
                ),
                ["0/1", "Init:0/1", "0", "60m"],
            ),
            (
                "the second init container is crashing",
                pod(
                    json!({"initContainers": containers(&["one", "two"]), "containers": containers(&["a"])}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "one", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "two", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                         "lastState": {"terminated": {"exitCode": 2, "finishedAt": "2024-05-01T11:58:30Z"}}},
                    ]}),
                ),
                ["0/1", "Init:CrashLoopBackOff", "3 (90s ago)", "60m"],
            ),
            (
                "an init container failed",
                pod(
                    json!({"initContainers": containers(&["init"]), "containers": containers(&["a"])}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
                    ]}),
                ),
                ["0/1", "Init:Error", "0", "60m"],
            ),
            (
                "a running sidecar counts among the containers",
                pod(
                    json!({"initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
                           "containers": containers(&["a"])}),
                    json!({"phase": "Running", "conditions": ready_condition,
                           "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                                                      "state": {"running": {}},
                                                      "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T10:00:00Z"}}}],
                           "containerStatuses": [running("a", true, 0)]}),
                ),
                ["2/2", "Running", "1 (120m ago)", "60m"],
            ),
            (
                "terminating",
                {
                    let mut pod = pod(
                        json!({"containers": containers(&["a"])}),
                        json!({"phase": "Running", "conditions": ready_condition,
                               "containerStatuses": [running("a", true, 0)]}),
                    );
                    pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
                    pod
                },
                ["1/1", "Terminating", "0", "60m"],
            ),
            (
                "a completed container beside a running one, not ready",
                pod(
                    json!({"containers": containers(&["a", "b"])}),
                    json!({"phase": "Running", "containerStatuses": [
                        {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        running("b", true, 0),
                    ]}),
                ),
                ["1/2", "NotReady", "0", "60m"],
            ),
            (
                "evicted",
                pod(
                    json!({"containers": containers(&["a"])}),
                    json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
                ),
                ["0/1", "Evicted", "0", "60m"],
            ),
            (
                "scheduling gated",
                pod(
                    json!({"containers": containers(&["a"]), "schedulingGates": [{"name": "wait"}]}),
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ),
                ["0/1", "SchedulingGated", "0", "60m"],
            ),
        ];
        for (case, object, expected) in cases {
            let row = cells(&builtin("pods"), object);
            let got: Vec<&str> = row[1..5].iter().map(|cell| cell.as_str().unwrap()).collect();
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn pod_wide_columns_and_row_conditions() {
        let object = pod(
            json!({"containers": containers(&["a"]), "nodeName": "node-1",
                   "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]}),
            json!({"phase": "Running", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}],
                   "nominatedNodeName": "node-2",
                   "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "False"}],
                   "containerStatuses": [running("a", true, 0)]}),
        );
        let row = cells(&builtin("pods"), object);
        assert_eq!(row[5..], [json!("10.1.2.3"), json!("node-1"), json!("node-2"), json!("1/2")]);
        let unscheduled =
            cells(&builtin("pods"), pod(json!({"containers": containers(&["a"])}), Value::Null));
        assert_eq!(unscheduled[5..], [json!("<none>"), json!("<none>"), json!("<none>"), json!("<none>")]);

        let done = pod(json!({"containers": containers(&["a"])}), json!({"phase": "Succeeded"}));
        let table = table_at(&builtin("pods"), &[done], json!({}), &OPTIONS, now());
        assert_eq!(table["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Succeeded");
    }

    fn deployment(replicas: Option<i64>, selector: Value, status: Value) -> Value {
        let mut spec = json!({
            "selector": selector,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "main", "image": "nginx:1.27"}, {"name": "sidecar", "image": "busybox:1"}]}},
        });
        if let Some(replicas) = replicas {
            spec["replicas"] = json!(replicas);
        }
        json!({"metadata": {"name": "web", "creationTimestamp": "2024-04-28T12:00:00Z"}, "spec": spec, "status": status})
    }

    fn job(spec: Value, status: Value) -> Value {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"containers": [{"name": "pi", "image": "perl:5.34"}]}});
        json!({"metadata": {"name": "pi", "creationTimestamp": HOUR_AGO}, "spec": spec, "status": status})
    }

    #[test]
    fn jobs_and_cronjobs() {
        let ty = builtin("jobs");
        assert_eq!(
            headers(&ty),
            [
                ("Name".into(), 0),
                ("Status".into(), 0),
                ("Completions".into(), 0),
                ("Duration".into(), 0),
                ("Age".into(), 0),
                ("Containers".into(), 1),
                ("Images".into(), 1),
                ("Selector".into(), 1),
            ]
        );
        let running = cells(
            &ty,
            job(
                json!({"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}}),
                json!({"startTime": "2024-05-01T11:58:00Z", "active": 1}),
            ),
        );
        assert_eq!(
            running,
            [
                json!("pi"),
                json!("Running"),
                json!("0/1"),
                json!("2m"),
                json!("60m"),
                json!("pi"),
                json!("perl:5.34"),
                json!("batch.kubernetes.io/controller-uid=u1"),
            ]
        );
        let complete = cells(
            &ty,
            job(
                json!({"completions": 3, "parallelism": 2}),
                json!({"succeeded": 3, "startTime": "2024-05-01T11:00:00Z", "completionTime": "2024-05-01T11:00:42Z",
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
            ),
        );
        assert_eq!(complete[1..4], [json!("Complete"), json!("3/3"), json!("42s")]);
        assert_eq!(complete[7], "<none>");
        let parallel = cells(&ty, job(json!({"parallelism": 4}), json!({"succeeded": 1})));
        assert_eq!(
            parallel[1..4],
            [json!("Running"), json!("1/1 of 4"), json!("")],
            "not started: no duration"
        );
        let failed = cells(
            &ty,
            job(
                json!({}),
                json!({"conditions": [{"type": "Failed", "status": "True"}, {"type": "Complete", "status": "False"}]}),
            ),
        );
        assert_eq!(failed[1], "Failed");
        let mut deleted = job(json!({}), json!({"conditions": [{"type": "Suspended", "status": "True"}]}));
        assert_eq!(cells(&ty, deleted.clone())[1], "Suspended");
        deleted["metadata"]["deletionTimestamp"] = json!(NOW);
        assert_eq!(cells(&ty, deleted)[1], "Terminating", "deletion outranks Suspended, not Failed");

        let ty = builtin("cronjobs");
        assert_eq!(
            headers(&ty).into_iter().map(|(name, _)| name).collect::<Vec<_>>(),
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let template = job(json!({}), Value::Null)["spec"].clone();
        let cronjob = json!({
            "metadata": {"name": "nightly", "creationTimestamp": HOUR_AGO},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": template}},
        });
        assert_eq!(
            cells(&ty, cronjob.clone()),
            [
                json!("nightly"),
                json!("0 3 * * *"),
                json!("<none>"),
                json!("False"),
                json!(0),
                json!("<none>"),
                json!("60m"),
                json!("pi"),
                json!("perl:5.34"),
                json!("<none>"),
            ]
        );
        let mut scheduled = cronjob;
        scheduled["spec"]["timeZone"] = json!("Europe/Paris");
        scheduled["spec"]["suspend"] = json!(true);
        scheduled["status"] = json!({"active": [{"name": "nightly-1"}, {"name": "nightly-2"}], "lastScheduleTime": "2024-05-01T11:55:00Z"});
        assert_eq!(
            cells(&ty, scheduled)[2..6],
            [json!("Europe/Paris"), json!("True"), json!(2), json!("5m")]
        );
    }

    #[test]
    fn deployments_and_other_workloads() {
        let ty = builtin("deployments");
        assert_eq!(
            headers(&ty).into_iter().map(|(name, _)| name).collect::<Vec<_>>(),
            ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
        );
        let row = cells(
            &ty,
            deployment(
                Some(3),
                json!({"matchLabels": {"app": "web", "tier": "front"},
                       "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "canary"]},
                                            {"key": "legacy", "operator": "DoesNotExist"}]}),
                json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}),
            ),
        );
        assert_eq!(
            row,
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3d"),
                json!("main,sidecar"),
                json!("nginx:1.27,busybox:1"),
                json!("app=web,env in (canary,prod),!legacy,tier=front"),
            ]
        );
        let fresh = cells(&ty, deployment(None, json!({"matchLabels": {"app": "web"}}), Value::Null));
        assert_eq!(fresh[1..4], [json!("0/1"), json!(0), json!(0)], "replicas default to 1");
        let invalid = cells(
            &ty,
            deployment(Some(1), json!({"matchExpressions": [{"key": "a", "operator": "In"}]}), Value::Null),
        );
        assert_eq!(invalid[7], "<invalid>");

        let replicaset = cells(
            &builtin("replicasets"),
            deployment(
                Some(2),
                json!({"matchLabels": {"app": "web"}}),
                json!({"replicas": 2, "readyReplicas": 1}),
            ),
        );
        assert_eq!(replicaset[1..4], [json!(2), json!(2), json!(1)]);
        assert_eq!(replicaset[7], "app=web");
        let statefulset =
            cells(&builtin("statefulsets"), deployment(Some(3), Value::Null, json!({"readyReplicas": 3})));
        assert_eq!(
            statefulset,
            [json!("web"), json!("3/3"), json!("3d"), json!("main,sidecar"), json!("nginx:1.27,busybox:1")]
        );
        let mut daemonset = deployment(
            None,
            json!({}),
            json!({"desiredNumberScheduled": 4, "currentNumberScheduled": 4, "numberReady": 3, "updatedNumberScheduled": 4, "numberAvailable": 3}),
        );
        daemonset["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let daemonset = cells(&builtin("daemonsets"), daemonset);
        assert_eq!(
            daemonset[1..7],
            [json!(4), json!(4), json!(3), json!(4), json!(3), json!("kubernetes.io/os=linux")]
        );
        assert_eq!(daemonset[10], "<none>", "an empty selector formats as <none>");
    }

    fn service(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "svc", "creationTimestamp": HOUR_AGO}, "spec": spec, "status": status})
    }

    #[test]
    fn services_of_each_type() {
        let ty = builtin("services");
        let ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]);
        let cases: Vec<(Value, [&str; 5])> = vec![
            (
                service(
                    json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": ports, "selector": {"app": "dns"}}),
                    Value::Null,
                ),
                ["ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP", "app=dns"],
            ),
            (
                service(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 443}]}), Value::Null),
                ["ClusterIP", "10.96.0.11", "<none>", "443/TCP", "<none>"],
            ),
            (
                service(
                    json!({"type": "ClusterIP", "clusterIP": "None", "selector": {"app": "db"}}),
                    Value::Null,
                ),
                ["ClusterIP", "None", "<none>", "<none>", "app=db"],
            ),
            (
                service(
                    json!({"type": "NodePort", "clusterIP": "10.96.1.1", "externalIPs": ["192.0.2.7"],
                               "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
                    Value::Null,
                ),
                ["NodePort", "10.96.1.1", "192.0.2.7", "80:30080/TCP", "<none>"],
            ),
            (
                service(
                    json!({"type": "LoadBalancer", "clusterIP": "10.96.2.2", "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
                    json!({}),
                ),
                ["LoadBalancer", "10.96.2.2", "<pending>", "443:31443/TCP", "<none>"],
            ),
            (
                service(
                    json!({"type": "LoadBalancer", "clusterIP": "10.96.2.3", "externalIPs": ["192.0.2.9"], "ports": [{"port": 80, "nodePort": 30000, "protocol": "TCP"}]}),
                    json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}]}}),
                ),
                [
                    "LoadBalancer",
                    "10.96.2.3",
                    "203.0.113.5,lb.example.com,192.0.2.9",
                    "80:30000/TCP",
                    "<none>",
                ],
            ),
            (
                service(json!({"type": "ExternalName", "externalName": "db.example.com"}), Value::Null),
                ["ExternalName", "<none>", "db.example.com", "<none>", "<none>"],
            ),
        ];
        for (object, expected) in cases {
            let row = cells(&ty, object);
            let got: Vec<&str> = [1, 2, 3, 4, 6].iter().map(|&i| row[i].as_str().unwrap()).collect();
            assert_eq!(got, expected);
            assert_eq!(row[5], "60m");
        }
    }

    fn node(labels: Value, conditions: Value, unschedulable: bool) -> Value {
        json!({
            "metadata": {"name": "node-1", "labels": labels, "creationTimestamp": "2024-03-01T12:00:00Z"},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": conditions,
                "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.13"},
            },
        })
    }

    #[test]
    fn nodes_ready_not_ready_and_roles() {
        let ty = builtin("nodes");
        let ready =
            json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]);
        let row = cells(
            &ty,
            node(
                json!({"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master", "node-role.kubernetes.io/": "x"}),
                ready,
                false,
            ),
        );
        assert_eq!(
            row,
            [
                json!("node-1"),
                json!("Ready"),
                json!("control-plane,master"),
                json!("61d"),
                json!("v1.32.4"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("containerd://1.7.13"),
            ]
        );
        let cordoned = cells(&ty, node(json!({}), json!([{"type": "Ready", "status": "Unknown"}]), true));
        assert_eq!(cordoned[1..3], [json!("NotReady,SchedulingDisabled"), json!("<none>")]);
        let new = cells(&ty, json!({"metadata": {"name": "n", "creationTimestamp": HOUR_AGO}}));
        assert_eq!(new[1], "Unknown");
        assert_eq!(new[4], "");
        assert_eq!(
            new[5..],
            [json!("<none>"), json!("<none>"), json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
        );
    }

    #[test]
    fn events_last_seen_object_and_source() {
        let ty = builtin("events");
        assert_eq!(
            headers(&ty),
            [
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
            .map(|(name, priority)| (name.to_owned(), priority))
        );
        let event = json!({
            "metadata": {"name": "web-1.17c", "namespace": "default", "creationTimestamp": HOUR_AGO},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "fieldPath": "spec.containers{main}"},
            "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": HOUR_AGO, "lastTimestamp": "2024-05-01T11:58:00Z", "count": 7,
        });
        assert_eq!(
            cells(&ty, event),
            [
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{main}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(7),
                json!("web-1.17c"),
            ]
        );
        // An events.k8s.io-style event: eventTime, a series, the reporting controller.
        let series = json!({
            "metadata": {"name": "e2", "creationTimestamp": HOUR_AGO},
            "involvedObject": {"kind": "Node"},
            "reason": "Rebooted", "type": "Normal", "message": "",
            "eventTime": "2024-05-01T11:30:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T11:59:30.123456Z"},
            "reportingComponent": "kubelet", "reportingInstance": "",
        });
        let row = cells(&ty, series);
        assert_eq!(row[..4], [json!("29s"), json!("Normal"), json!("Rebooted"), json!("node")]);
        assert_eq!(row[5], "kubelet");
        assert_eq!(row[7..9], [json!("30m"), json!(4)]);
        let once = json!({"metadata": {"name": "e3"}, "involvedObject": {"kind": "Pod", "name": "x"}, "eventTime": "2024-05-01T11:59:50.5Z"});
        let row = cells(&ty, once);
        assert_eq!(
            (row[0].clone(), row[8].clone()),
            (json!("9s"), json!(1)),
            "no lastTimestamp: first seen; no count: 1"
        );
        let never = cells(&ty, json!({"metadata": {"name": "e4"}}));
        assert_eq!(never[0], "<unknown>");
    }

    #[test]
    fn the_other_core_types() {
        let meta = |extra: Value| {
            let mut object = json!({"metadata": {"name": "x", "creationTimestamp": HOUR_AGO}});
            object.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            object
        };
        assert_eq!(
            cells(&builtin("namespaces"), meta(json!({"status": {"phase": "Active"}}))),
            [json!("x"), json!("Active"), json!("60m")]
        );
        assert_eq!(
            cells(
                &builtin("configmaps"),
                meta(json!({"data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}))
            ),
            [json!("x"), json!(3), json!("60m")]
        );
        assert_eq!(
            cells(
                &builtin("secrets"),
                meta(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}))
            ),
            [json!("x"), json!("kubernetes.io/tls"), json!(2), json!("60m")]
        );
        assert_eq!(cells(&builtin("secrets"), meta(json!({})))[1..3], [json!("Opaque"), json!(0)]);
        assert_eq!(
            cells(&builtin("serviceaccounts"), meta(json!({"secrets": [{"name": "t"}]}))),
            [json!("x"), json!(1), json!("60m")]
        );
        assert_eq!(
            cells(
                &builtin("leases"),
                meta(json!({"spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}))
            ),
            [json!("x"), json!("node-1"), json!("60m")]
        );
        assert_eq!(cells(&builtin("leases"), meta(json!({"spec": {}})))[1], "");
        let endpoints = meta(json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
            {"addresses": [{"ip": "fd00::9"}], "ports": [{"port": 8080}]},
        ]}));
        assert_eq!(
            cells(&builtin("endpoints"), endpoints)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."
        );
        let headless = meta(json!({"subsets": [{"addresses": [{"ip": "fd00::9"}]}]}));
        assert_eq!(cells(&builtin("endpoints"), headless)[1], "fd00::9");
        let v6 = meta(json!({"subsets": [{"addresses": [{"ip": "fd00::9"}], "ports": [{"port": 53}]}]}));
        assert_eq!(cells(&builtin("endpoints"), v6)[1], "[fd00::9]:53");
        assert_eq!(cells(&builtin("endpoints"), meta(json!({})))[1], "<none>");
    }

    #[test]
    fn definitions_print_name_and_created_at() {
        let ty = builtin("customresourcedefinitions");
        assert_eq!(headers(&ty), [("Name".to_owned(), 0), ("Created At".to_owned(), 0)]);
        assert_eq!(Printer::of(&ty).columns()[1]["type"], "date");
        let crd =
            json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(cells(&ty, crd), [json!("widgets.example.com"), json!("2024-05-01T11:00:00Z")]);
    }

    fn custom_type(columns: &[(&str, &str, &str, i64)]) -> ResourceType {
        let mut ty = builtin("pods");
        ty.group = "example.com".into();
        ty.plural = "widgets".into();
        ty.printer_columns = columns
            .iter()
            .map(|(name, kind, path, priority)| PrinterColumn {
                name: name.to_string(),
                kind: kind.to_string(),
                format: String::new(),
                description: String::new(),
                priority: *priority,
                json_path: path.to_string(),
            })
            .collect();
        ty
    }

    #[test]
    fn custom_resources_use_their_printer_columns() {
        let ty = custom_type(&[
            ("Size", "string", ".spec.size", 0),
            ("Replicas", "integer", ".spec.replicas", 0),
            ("Ratio", "number", ".spec.ratio", 1),
            ("Enabled", "boolean", ".spec.enabled", 0),
            ("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status", 0),
            ("First", "string", ".status.conditions[0].type", 0),
            ("Last", "string", ".status.conditions[-1].type", 0),
            ("Tags", "string", ".spec.tags", 1),
            ("Label", "string", ".metadata.labels.app\\.kubernetes\\.io/name", 0),
            ("Missing", "string", ".spec.nothing.here", 0),
            ("Age", "date", ".metadata.creationTimestamp", 0),
        ]);
        let columns = Printer::of(&ty).columns();
        assert_eq!(columns.len(), 12, "Name, then the definition's columns (and no Age of kube's own)");
        assert_eq!(columns[0]["name"], "Name");
        assert_eq!(columns[3]["priority"], 1);
        assert_eq!(
            columns[1]["description"],
            "Custom resource definition column (in JSONPath format): .spec.size"
        );
        let widget = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:59:00Z", "labels": {"app.kubernetes.io/name": "shop"}},
            "spec": {"size": "large", "replicas": 3, "ratio": 0.25, "enabled": true, "tags": {"b": 2, "a": [1, "x"]}},
            "status": {"conditions": [{"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}]},
        });
        assert_eq!(
            cells(&ty, widget),
            [
                json!("w1"),
                json!("large"),
                json!(3),
                json!(0.25),
                json!(true),
                json!("False"),
                json!("Synced"),
                json!("Ready"),
                json!(r#"{"a":[1,"x"],"b":2}"#),
                json!("shop"),
                Value::Null,
                json!("60s"),
            ]
        );
        let mistyped = custom_type(&[
            ("N", "integer", ".spec.size", 0),
            ("S", "string", ".spec.replicas", 0),
            ("D", "date", ".spec.size", 0),
        ]);
        assert_eq!(
            cells(&mistyped, json!({"metadata": {"name": "w"}, "spec": {"size": "large", "replicas": 2.5}})),
            [json!("w"), Value::Null, json!("2.5"), json!("<invalid>")]
        );
    }

    #[test]
    fn custom_resources_without_columns_show_age_and_bad_paths_end_the_columns() {
        let ty = custom_type(&[]);
        let columns = Printer::of(&ty).columns();
        assert_eq!(
            columns.iter().map(|column| column["name"].clone()).collect::<Vec<_>>(),
            [json!("Name"), json!("Age")]
        );
        assert_eq!(columns[1]["type"], "date");
        assert_eq!(
            cells(&ty, json!({"metadata": {"name": "w", "creationTimestamp": HOUR_AGO}})),
            [json!("w"), json!("60m")]
        );

        let broken = custom_type(&[
            ("A", "string", ".spec.a", 0),
            ("B", "string", ".spec[", 0),
            ("C", "string", ".spec.c", 0),
        ]);
        assert_eq!(
            Printer::of(&broken).columns().len(),
            2,
            "kube keeps the columns before the one it cannot parse"
        );
    }

    #[test]
    fn json_paths_parse_the_simple_subset() {
        assert_eq!(
            parse_json_path(".a.b[0].c").unwrap(),
            [Step::Field("a".into()), Step::Field("b".into()), Step::Index(0), Step::Field("c".into())]
        );
        assert_eq!(
            parse_json_path("{.a['x.y']}").unwrap(),
            [Step::Field("a".into()), Step::Field("x.y".into())]
        );
        assert_eq!(parse_json_path(".items[*].name").unwrap()[1], Step::Every);
        assert_eq!(
            parse_json_path(".c[?(@.type != 'Ready')]").unwrap()[1],
            Step::Filter(vec![Step::Field("type".into())], Some((false, json!("Ready"))))
        );
        for bad in [".a[", ".a[x]", ".a..b", "a b", ".a[?(@.b = 1)]"] {
            assert!(parse_json_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        for (float, text) in [
            (0.25, "0.25"),
            (2.0, "2"),
            (123456.5, "123456.5"),
            (1234567.5, "1.2345675e+06"),
            (0.00001, "1e-05"),
            (0.0, "0"),
        ] {
            assert_eq!(go_float(float), text);
        }
    }

    #[test]
    fn include_object_and_headers() {
        let ty = builtin("configmaps");
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "7"}, "data": {"k": "v"}});
        let with = |include| TableOptions { include, ..OPTIONS };
        let metadata = object_table(&ty, &object, &with(IncludeObject::Metadata));
        assert_eq!(metadata["kind"], "Table");
        assert_eq!(metadata["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(metadata["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(
            metadata["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "c", "resourceVersion": "7"}})
        );
        assert!(metadata["rows"][0].get("conditions").is_none());
        assert_eq!(object_table(&ty, &object, &with(IncludeObject::Object))["rows"][0]["object"], object);
        assert_eq!(object_table(&ty, &object, &with(IncludeObject::None))["rows"][0]["object"], Value::Null);
        let beta = TableOptions { api_version: "meta.k8s.io/v1beta1", ..OPTIONS };
        assert_eq!(
            object_table(&ty, &object, &beta)["rows"][0]["object"]["apiVersion"],
            "meta.k8s.io/v1beta1"
        );
        let later = object_table(&ty, &object, &TableOptions { no_headers: true, ..OPTIONS });
        assert_eq!(later["columnDefinitions"], Value::Null);
        assert_eq!(later["rows"][0]["cells"], json!(["c", 1, "<unknown>"]));
    }

    #[test]
    fn ages_tolerate_a_second_of_skew() {
        let at = |stamp: &str| since(Some(stamp.parse().unwrap()), now());
        assert_eq!(at("2024-05-01T12:00:01Z"), "0s");
        assert_eq!(at("2024-05-01T12:00:05Z"), "<invalid>");
        assert_eq!(at("2024-05-01T11:59:59.5Z"), "0s");
        assert_eq!(at("2024-04-30T12:00:00Z"), "24h");
        assert_eq!(since(None, now()), "<unknown>");
    }

    #[test]
    fn tables_are_negotiated_from_accept() {
        use super::super::handlers::wants_table;
        let accepting = |accept: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::ACCEPT, http::HeaderValue::from_str(accept).unwrap());
            wants_table(&headers)
        };
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(accepting(kubectl), Some("meta.k8s.io/v1"));
        assert_eq!(
            accepting("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Some("meta.k8s.io/v1beta1")
        );
        assert_eq!(accepting("application/json"), None);
        assert_eq!(
            accepting("application/vnd.kubernetes.protobuf, application/json;as=Table;v=v1;g=meta.k8s.io"),
            None
        );
        assert_eq!(
            accepting("application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io"),
            Some("meta.k8s.io/v1"),
            "quality orders the entries"
        );
        assert_eq!(
            accepting("application/json;as=Table;v=v2;g=meta.k8s.io, application/json"),
            None,
            "an unknown Table version is passed over"
        );
        assert_eq!(wants_table(&http::HeaderMap::new()), None);
    }

    #[test]
    fn storage_quota_discovery_autoscaling_and_certificate_types_print_kubes_columns() {
        let names =
            |plural: &str| headers(&builtin(plural)).into_iter().map(|(name, _)| name).collect::<Vec<_>>();
        assert_eq!(
            names("persistentvolumes"),
            [
                "Name",
                "Capacity",
                "Access Modes",
                "Reclaim Policy",
                "Status",
                "Claim",
                "StorageClass",
                "VolumeAttributesClass",
                "Reason",
                "Age",
                "VolumeMode"
            ]
        );
        assert_eq!(headers(&builtin("persistentvolumes"))[10].1, 1, "VolumeMode is -o wide's");
        let pv = cells(
            &builtin("persistentvolumes"),
            json!({"metadata": {"name": "pv1", "creationTimestamp": HOUR_AGO},
                "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"},
                    "storageClassName": "fast"},
                "status": {"phase": "Bound"}}),
        );
        assert_eq!(
            pv,
            [
                json!("pv1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("60m"),
                json!("<unset>")
            ]
        );
        let pvc = cells(
            &builtin("persistentvolumeclaims"),
            json!({"metadata": {"name": "data", "creationTimestamp": HOUR_AGO, "deletionTimestamp": NOW},
                "spec": {"volumeName": "pv1", "storageClassName": "fast", "volumeMode": "Filesystem"},
                "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}}),
        );
        assert_eq!(
            pvc,
            [
                json!("data"),
                json!("Terminating"),
                json!("pv1"),
                json!("10Gi"),
                json!("RWO"),
                json!("fast"),
                json!("<unset>"),
                json!("60m"),
                json!("Filesystem")
            ]
        );
        let quota = cells(
            &builtin("resourcequotas"),
            json!({"metadata": {"name": "q", "creationTimestamp": HOUR_AGO},
                "status": {"hard": {"pods": "10", "limits.cpu": "4", "requests.cpu": "2"},
                    "used": {"pods": "3", "requests.cpu": "500m"}}}),
        );
        assert_eq!(
            quota,
            [json!("q"), json!("pods: 3/10, requests.cpu: 500m/2"), json!("limits.cpu: 0/4"), json!("60m")]
        );
        assert_eq!(names("limitranges"), ["Name", "Created At"]);
        let slice = cells(
            &builtin("endpointslices"),
            json!({"metadata": {"name": "web-abc", "creationTimestamp": HOUR_AGO}, "addressType": "IPv4",
                "ports": [{"port": 80}, {"name": "metrics"}],
                "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]}),
        );
        assert_eq!(
            slice,
            [
                json!("web-abc"),
                json!("IPv4"),
                json!("80,metrics"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("60m")
            ]
        );
        let empty =
            cells(&builtin("endpointslices"), json!({"metadata": {"name": "e"}, "addressType": "IPv4"}));
        assert_eq!(empty[2], "<unset>");
        let driver = cells(
            &builtin("csidrivers"),
            json!({"metadata": {"name": "ebs.csi.aws.com", "creationTimestamp": HOUR_AGO},
                "spec": {"attachRequired": true, "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent", "Ephemeral"]}}),
        );
        assert_eq!(
            driver,
            [
                json!("ebs.csi.aws.com"),
                json!(true),
                json!(false),
                json!(false),
                json!("<unset>"),
                json!(false),
                json!("Persistent,Ephemeral"),
                json!("60m")
            ]
        );
        let hpa = cells(
            &builtin("horizontalpodautoscalers"),
            json!({"metadata": {"name": "web", "creationTimestamp": HOUR_AGO},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 10,
                    "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]},
                "status": {"currentReplicas": 3, "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}]}}),
        );
        assert_eq!(
            hpa,
            [
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 45%/80%, <unknown>/1k + 1 more..."),
                json!("2"),
                json!(10),
                json!(3),
                json!("60m")
            ]
        );
        let csr = cells(
            &builtin("certificatesigningrequests"),
            json!({"metadata": {"name": "node-csr", "creationTimestamp": HOUR_AGO},
                "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet", "username": "system:node:n1", "expirationSeconds": 86400},
                "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}}),
        );
        assert_eq!(
            csr,
            [
                json!("node-csr"),
                json!("60m"),
                json!("kubernetes.io/kube-apiserver-client-kubelet"),
                json!("system:node:n1"),
                json!("24h"),
                json!("Approved,Issued")
            ]
        );
    }

    #[test]
    fn the_added_builtin_types_print_kubes_columns() {
        let rc = builtin("replicationcontrollers");
        assert_eq!(
            headers(&rc).iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
            ["Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"]
        );
        let cells_of = cells(
            &rc,
            json!({"metadata": {"name": "web", "creationTimestamp": HOUR_AGO},
                "spec": {"replicas": 3, "selector": {"app": "web"},
                    "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
                "status": {"replicas": 3, "readyReplicas": 2}}),
        );
        assert_eq!(
            cells_of,
            [
                json!("web"),
                json!(3),
                json!(3),
                json!(2),
                json!("60m"),
                json!("web"),
                json!("nginx"),
                json!("app=web")
            ]
        );

        let pdb = builtin("poddisruptionbudgets");
        let budget = json!({"metadata": {"name": "p", "creationTimestamp": HOUR_AGO},
            "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(cells(&pdb, budget), [json!("p"), json!("50%"), json!("N/A"), json!(1), json!("60m")]);

        let sc = builtin("storageclasses");
        let class = json!({"metadata": {"name": "standard", "creationTimestamp": HOUR_AGO,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path"});
        assert_eq!(
            cells(&sc, class),
            [
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("Immediate"),
                json!(false),
                json!("60m")
            ]
        );

        let pc = builtin("priorityclasses");
        let class = json!({"metadata": {"name": "high", "creationTimestamp": HOUR_AGO}, "value": 1000, "globalDefault": true});
        assert_eq!(
            cells(&pc, class),
            [json!("high"), json!(1000), json!(true), json!("60m"), json!("<unset>")]
        );

        let ic = builtin("ingressclasses");
        let class = json!({"metadata": {"name": "nginx", "creationTimestamp": HOUR_AGO},
            "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            cells(&ic, class),
            [
                json!("nginx"),
                json!("k8s.io/ingress-nginx"),
                json!("IngressParameters.k8s.example.com/p"),
                json!("60m")
            ]
        );

        let np = builtin("networkpolicies");
        let policy =
            json!({"metadata": {"name": "deny", "creationTimestamp": HOUR_AGO}, "spec": {"podSelector": {}}});
        assert_eq!(cells(&np, policy), [json!("deny"), json!("<none>"), json!("60m")]);

        let va = builtin("volumeattachments");
        let attachment = json!({"metadata": {"name": "csi-1", "creationTimestamp": HOUR_AGO},
            "spec": {"attacher": "ebs.csi.aws.com", "source": {"persistentVolumeName": "pv-1"}, "nodeName": "node-1"},
            "status": {"attached": true}});
        assert_eq!(
            cells(&va, attachment),
            [
                json!("csi-1"),
                json!("ebs.csi.aws.com"),
                json!("pv-1"),
                json!("node-1"),
                json!(true),
                json!("60m")
            ]
        );

        let rt = builtin("runtimeclasses");
        let class =
            json!({"metadata": {"name": "gvisor", "creationTimestamp": HOUR_AGO}, "handler": "runsc"});
        assert_eq!(cells(&rt, class), [json!("gvisor"), json!("runsc"), json!("60m")]);

        let ing = builtin("ingresses");
        let ingress = json!({"metadata": {"name": "web", "creationTimestamp": HOUR_AGO},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "d.example.com"}, {"host": "e.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
        assert_eq!(
            cells(&ing, ingress),
            [
                json!("web"),
                json!("nginx"),
                json!("a.example.com,b.example.com,d.example.com + 2 more..."),
                json!("192.0.2.10"),
                json!("80, 443"),
                json!("60m")
            ]
        );
        let bare =
            json!({"metadata": {"name": "bare", "creationTimestamp": HOUR_AGO}, "spec": {"rules": [{}]}});
        assert_eq!(
            cells(&ing, bare),
            [json!("bare"), json!("<none>"), json!("*"), json!(""), json!("80"), json!("60m")]
        );

        let pt = builtin("podtemplates");
        let template = json!({"metadata": {"name": "t", "creationTimestamp": HOUR_AGO},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
        assert_eq!(cells(&pt, template), [json!("t"), json!("c"), json!("busybox"), json!("app=web")]);
    }
}
