//! Test harness shared by the integration tests: a real etcd server on loopback, and the
//! backends the conformance suite runs against.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::etcd::{EtcdOptions, EtcdStorage};
use watchcache::storage::Storage;

/// A real etcd cluster on loopback: each member with its own data directory and free ports.
/// Every member is killed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    child: Option<Child>,
    client_url: String,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The etcd binary, or a panic that says how to get one. Tests that need etcd never pass
/// without it.
pub fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("etcd")).find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "etcd is not installed: these tests need a real etcd server. Install Debian's \
             etcd-server package (scripts/test.sh does it: apt-get install etcd-server)"
        )
    })
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until each accepts client connections.
    pub fn start(size: usize) -> EtcdCluster {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..size).map(|i| format!("member{i}")).collect();
        let client_urls: Vec<String> =
            (0..size).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let peer_urls: Vec<String> = (0..size).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let initial_cluster: Vec<String> =
            names.iter().zip(&peer_urls).map(|(name, peer)| format!("{name}={peer}")).collect();
        let mut members = Vec::new();
        for i in 0..size {
            let log = dir.path().join(format!("{}.log", names[i]));
            let log_file = std::fs::File::create(&log).unwrap();
            let child = Command::new(&binary)
                .arg(format!("--name={}", names[i]))
                .arg(format!("--data-dir={}", dir.path().join(&names[i]).display()))
                .arg(format!("--listen-client-urls={}", client_urls[i]))
                .arg(format!("--advertise-client-urls={}", client_urls[i]))
                .arg(format!("--listen-peer-urls={}", peer_urls[i]))
                .arg(format!("--initial-advertise-peer-urls={}", peer_urls[i]))
                .arg(format!("--initial-cluster={}", initial_cluster.join(",")))
                .arg("--initial-cluster-state=new")
                // Room for a 1.5 MiB value plus the request around it.
                .arg("--max-request-bytes=2097152")
                .arg("--log-level=warn")
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("etcd starts");
            members.push(Member { child: Some(child), client_url: client_urls[i].clone(), log });
        }
        let mut cluster = EtcdCluster { members, dir };
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for member in &mut self.members {
            let address = member.client_url.trim_start_matches("http://").to_owned();
            loop {
                let child = member.child.as_mut().unwrap();
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "etcd exited with {status}: {}",
                        std::fs::read_to_string(&member.log).unwrap_or_default()
                    );
                }
                if std::net::TcpStream::connect(&address).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "etcd did not start in 30 s: {}",
                        std::fs::read_to_string(&member.log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The client URL of every member, in order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|member| member.client_url.clone()).collect()
    }

    /// Kills member `index` (SIGKILL), as a crashed machine would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A storage on this cluster under `prefix`, with every member as an endpoint.
    pub async fn storage(&self, prefix: &str) -> EtcdStorage {
        let options = EtcdOptions { prefix: prefix.to_owned(), ..EtcdOptions::default() };
        EtcdStorage::connect(&self.client_urls(), options).await.expect("etcd backend connects")
    }

    /// Where the members' data directories are.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// One backend under test, with whatever it needs kept alive.
pub struct Backend {
    pub storage: Arc<dyn Storage>,
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdCluster>,
}

impl Backend {
    pub fn embedded() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let storage = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default()).unwrap();
        Backend { storage: Arc::new(storage), name: "embedded", _dir: Some(dir), _etcd: None }
    }

    pub fn in_memory() -> Backend {
        let storage = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        Backend { storage: Arc::new(storage), name: "in-memory", _dir: None, _etcd: None }
    }

    pub async fn etcd() -> Backend {
        let cluster = EtcdCluster::start(1);
        let storage = cluster.storage("/registry").await;
        Backend { storage: Arc::new(storage), name: "etcd", _dir: None, _etcd: Some(cluster) }
    }
}
