//! End-to-end tests of watchcache with real clients, against the real `watchcache` binary:
//! the kube crate (`tests/kube_client.rs`: a typed client on the embedded store and on etcd, and
//! `kube_runtime` watchers and reflectors; `tests/kubeconfig.rs`: the written kubeconfig over
//! TLS) and the official Python client (`python/smoke.py`, run by `tests/python_client.rs`).
//!
//! This library holds only what those tests share: finding (or building) the binary, and the
//! server and etcd child processes, each killed on drop.
//!
//! The binary is `$WATCHCACHE_BIN` if set, else `<target dir>/debug/watchcache`, where the target
//! dir is `$CARGO_TARGET_DIR` (at run time) or the workspace's `target/`. If it is missing, it is
//! built with `$CARGO build --bin watchcache`; a test fails, never skips, without it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent").to_path_buf()
}

/// The `watchcache` binary to test; builds it if it is missing. Panics with what to do when it
/// can be neither found nor built.
pub fn watchcache_binary() -> PathBuf {
    // One build at a time within a test process.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());

    if let Some(binary) = std::env::var_os("WATCHCACHE_BIN") {
        let binary = PathBuf::from(binary);
        assert!(
            binary.is_file(),
            "WATCHCACHE_BIN={} is not a file: build it with `cargo build --bin watchcache`",
            binary.display()
        );
        return binary;
    }
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir), // an absolute CARGO_TARGET_DIR replaces `root`
        None => root.join("target"),
    };
    let binary = target.join("debug").join("watchcache");
    if binary.is_file() {
        return binary;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("{} is missing: building it with `cargo build --bin watchcache`", binary.display());
    let status = Command::new(&cargo)
        .args(["build", "--bin", "watchcache"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .status()
        .unwrap_or_else(|error| {
            panic!("cannot run {cargo:?} to build the watchcache binary ({error}); set WATCHCACHE_BIN")
        });
    assert!(status.success(), "`cargo build --bin watchcache` failed ({status}); set WATCHCACHE_BIN");
    assert!(binary.is_file(), "`cargo build --bin watchcache` succeeded but {} is missing", binary.display());
    binary
}

/// `watchcache serve` as a child process on a free loopback port, with its own data directory;
/// killed on drop.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`, from the startup line.
    pub address: String,
    /// The startup line, e.g. `watchcache listening on http://127.0.0.1:PORT (storage: ...)`.
    pub startup_line: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `watchcache serve --listen 127.0.0.1:0 --data-dir <tempdir> ARGS...` and waits
    /// for the startup line.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let binary = watchcache_binary();
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut startup_line = String::new();
        stdout.read_line(&mut startup_line).unwrap();
        if startup_line.is_empty() {
            let status = child.wait();
            panic!("watchcache exited before its startup line: {status:?}");
        }
        let address = startup_line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in the startup line {startup_line:?}"))
            .to_owned();
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Server { child, address, startup_line: startup_line.trim_end().to_owned(), _dir: dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-member etcd (Debian's etcd-server, `etcd` on PATH) on free loopback ports with its own
/// data directory; killed on drop.
pub struct Etcd {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits (30 s at most) until it accepts client connections.
    pub fn start() -> Etcd {
        let binary = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("etcd"))
                    .find(|candidate| candidate.is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "etcd is not installed: this test needs a real etcd server. Install Debian's \
                     etcd-server package (scripts/test.sh does it: apt-get install etcd-server)"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(&binary)
            .arg("--name=e2e")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=e2e={peer}"))
            .arg("--initial-cluster-state=new")
            // Room for a 1.5 MiB value plus the request around it.
            .arg("--max-request-bytes=2097152")
            .arg("--log-level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut etcd = Etcd { child, url, dir };
        let address = etcd.url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = etcd.child.try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", etcd.log());
            }
            if std::net::TcpStream::connect(&address).is_ok() {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not start in 30 s: {}", etcd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
