//! A full disk and a read-only data directory, through the real binary on the embedded store.
//!
//! The data directory is a small tmpfs that the test mounts itself: in a user and mount
//! namespace of its own (`unshare --user --map-root-user --mount`, no privileges needed), or, where
//! user namespaces are not allowed, directly when the test runs as root. A holder process keeps
//! the namespace (and so the tmpfs) alive across server restarts; every server runs inside it
//! through `nsenter`.
//!
//! A full disk: writers get 507 with a clear message, one log line says why, `/readyz` fails,
//! reads go on, and after the space is grown and the server restarted every acknowledged object
//! is there and whole. A read-only data directory: the server refuses to start and says why, and
//! the store is intact once the directory is writable again.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{http_get, Http, ServerProcess};
use serde_json::json;

/// A small tmpfs, mounted where the servers of the test can see it.
struct SmallDisk {
    /// The process that holds the namespace; `None` when mounted directly (as root).
    holder: Option<Child>,
    mount_point: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let mount_point = tempfile::tempdir().unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size} tmpfs '{}' && echo mounted && exec sleep 100000",
            mount_point.path().display()
        );
        let holder = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        if let Ok(mut holder) = holder {
            let mut line = String::new();
            BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
            if line.trim() == "mounted" {
                return SmallDisk { holder: Some(holder), mount_point };
            }
            let _ = holder.kill();
            let _ = holder.wait();
        }
        // No user namespaces here: mount it directly, which needs root.
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point.path())
            .status();
        assert!(
            matches!(mounted, Ok(status) if status.success()),
            "this test mounts a small tmpfs as the data directory: it needs `unshare` (util-linux) \
             with unprivileged user namespaces, or to run as root"
        );
        SmallDisk { holder: None, mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// A command that runs `program` where the tmpfs is mounted.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.holder {
            Some(holder) => {
                let mut command = Command::new("nsenter");
                command.args(["--user", "--mount", "--target", &holder.id().to_string()]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Remounts the tmpfs with `options` (e.g. `size=64m`, `ro`, `rw`).
    fn remount(&self, options: &str) {
        let status = self
            .command("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount,{options} failed");
    }

    fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `watchcache serve` on the tmpfs, its standard error appended to `log`.
    fn serve_command(&self, log: &Path) -> Command {
        let mut command = self.command(env!("CARGO_BIN_EXE_watchcache"));
        command
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap());
        command
    }

    fn serve(&self, log: &Path) -> ServerProcess {
        let mut child = self.serve_command(log).spawn().expect("watchcache starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut startup_line = String::new();
        stdout.read_line(&mut startup_line).unwrap();
        assert!(
            !startup_line.is_empty(),
            "watchcache exited before its startup line: {:?}\n{}",
            child.wait(),
            std::fs::read_to_string(log).unwrap()
        );
        let address = startup_line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in startup line {startup_line:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in stdout.lines() {});
        ServerProcess { child, address, startup_line: startup_line.trim_end().to_owned() }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        match &mut self.holder {
            // The tmpfs goes with the namespace.
            Some(holder) => {
                let _ = holder.kill();
                let _ = holder.wait();
            }
            None => {
                let _ = Command::new("umount").arg("-l").arg(self.mount_point.path()).status();
            }
        }
    }
}

const PAYLOAD: usize = 96 * 1024;

/// The payload of ConfigMap `name`: every byte depends on the name, so that a torn or mixed-up
/// object cannot pass for a whole one.
fn payload(name: &str) -> String {
    let unit = format!("{name};");
    unit.repeat(PAYLOAD / unit.len() + 1)[..PAYLOAD].to_owned()
}

fn configmap(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"payload": payload(name)},
    })
}

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// Every ConfigMap of `default` that `http` lists (with `query`), checked whole.
async fn listed(http: &Http, query: &str) -> Vec<String> {
    let reply = http.get(&format!("{CONFIGMAPS}?{query}")).await;
    assert_eq!(reply.status, 200, "list: {}", String::from_utf8_lossy(&reply.body));
    let list = reply.json();
    let mut names = Vec::new();
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap().to_owned();
        assert_eq!(item["data"]["payload"].as_str(), Some(payload(&name).as_str()), "{name} is torn");
        names.push(name);
    }
    names
}

fn log_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).unwrap().lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_fails_readiness_and_loses_nothing() {
    let disk = SmallDisk::mount("6m");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let mut server = disk.serve(&log);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);

    // Fill the disk through the API.
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let name = format!("cm-{:04}", acknowledged.len());
        let reply = http.send_json("POST", CONFIGMAPS, &configmap(&name)).await;
        if reply.status != 201 {
            break reply;
        }
        acknowledged.push(name);
        assert!(acknowledged.len() < 1_000, "6 MiB never filled up");
    };
    assert!(acknowledged.len() > 3, "the disk filled after {} writes", acknowledged.len());
    let status = refusal.json();
    assert_eq!(refusal.status, 507, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 507);
    assert_eq!(status["reason"], "InsufficientStorage");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(message.contains(&disk.data_dir().display().to_string()), "{message}");

    // Every later write is refused the same way: creates, updates and deletes, small or not.
    let small = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "small"}});
    assert_eq!(http.send_json("POST", CONFIGMAPS, &small).await.status, 507);
    let first = format!("{CONFIGMAPS}/{}", acknowledged[0]);
    let patch =
        http.request("PATCH", &first, "application/merge-patch+json", br#"{"data":{"extra":"x"}}"#).await;
    assert_eq!(patch.status, 507, "{}", String::from_utf8_lossy(&patch.body));
    assert_eq!(http.request("DELETE", &first, "application/json", b"").await.status, 507);
    // One log line says why, however many writes were refused.
    assert_eq!(log_lines(&log, "stopped taking writes"), 1, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(log_lines(&log, "No space left on device") >= 1);

    // Not ready, and the metric says why; reads go on.
    let (code, body) = http_get(&server.address, "/readyz?verbose");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]storage failed"), "{body}");
    assert!(body.contains("[+]informer-sync ok"), "{body}");
    let (_, metrics) = http_get(&server.address, "/metrics");
    assert!(metrics.contains("watchcache_storage_writable 0"), "{metrics}");
    for query in ["resourceVersion=0", ""] {
        let mut names = listed(&http, query).await;
        names.retain(|name| acknowledged.contains(name) || name == "small");
        assert_eq!(names, acknowledged, "list ?{query} while the disk is full");
    }
    let got = http.get(&first).await;
    assert_eq!(got.status, 200);

    // Free space, restart: every acknowledged object is there, whole, and writes resume.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    disk.remount("size=64m");
    let server = disk.serve(&log);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    let names = listed(&http, "").await;
    for name in &acknowledged {
        assert!(names.contains(name), "acknowledged {name} lost");
    }
    // The refused write may or may not have reached the disk before it failed; nothing else did.
    assert!(
        names.len() <= acknowledged.len() + 1,
        "{} objects for {} writes",
        names.len(),
        acknowledged.len()
    );
    assert_eq!(http.send_json("POST", CONFIGMAPS, &small).await.status, 201);
    let (_, metrics) = http_get(&server.address, "/metrics");
    assert!(metrics.contains("watchcache_storage_writable 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_is_refused_at_start_and_the_store_is_intact() {
    let disk = SmallDisk::mount("16m");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let mut server = disk.serve(&log);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    let names: Vec<String> = (0..5).map(|i| format!("cm-{i}")).collect();
    for name in &names {
        assert_eq!(http.send_json("POST", CONFIGMAPS, &configmap(name)).await.status, 201);
    }
    assert!(server.terminate(Duration::from_secs(30)).success());

    disk.remount("ro");
    let started = disk.serve_command(&log).output().unwrap();
    assert!(!started.status.success(), "watchcache started on a read-only data directory");
    let text = std::fs::read_to_string(&log).unwrap();
    let error = text.lines().last().unwrap_or_default();
    assert!(error.starts_with("error: "), "{text}");
    assert!(error.contains("Read-only file system"), "{text}");
    assert!(error.contains(&disk.data_dir().display().to_string()), "{text}");

    disk.remount("rw");
    let server = disk.serve(&log);
    server.wait_ready(Duration::from_secs(30));
    let http = Http::new(&server.address, false);
    assert_eq!(listed(&http, "").await, names);
}
