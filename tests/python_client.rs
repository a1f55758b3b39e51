//! The official Python Kubernetes client against the real binary (`e2e/python/smoke.py`):
//! namespaces, create, list with a label selector, patch, read, a duplicate create's 409, a watch
//! that sees a create, delete and the 404 after it.

mod common;

use std::process::Command;

use common::ServerProcess;

#[test]
fn the_official_python_client_works() {
    let available = Command::new("python3").args(["-c", "import kubernetes"]).output();
    match available {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "the Python kubernetes client is missing: pip install -r e2e/python/requirements.txt \
             (scripts/install-deps.sh does it)"
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/python/smoke.py");
    let output =
        Command::new("python3").arg(script).arg(format!("http://{}", server.address)).output().unwrap();
    assert!(
        output.status.success(),
        "smoke.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("smoke test passed"));
}
