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

/// A real etcd server with its own data directory, on free loopback ports; killed on drop.
pub struct EtcdServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub client_url: String,
    pub log: PathBuf,
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

impl EtcdServer {
    /// Starts etcd and waits until it accepts client connections.
    pub fn start() -> EtcdServer {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().unwrap();
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            // Room for a 1.5 MiB value plus the request around it.
            .arg("--max-request-bytes=2097152")
            .arg("--log-level=warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("etcd starts");
        let mut server = EtcdServer { child, _dir: dir, client_url, log };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let address = self.client_url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if std::net::TcpStream::connect(&address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not start in 30 s: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// A storage on this server under `prefix`.
    pub async fn storage(&self, prefix: &str) -> EtcdStorage {
        let options = EtcdOptions { prefix: prefix.to_owned(), ..EtcdOptions::default() };
        EtcdStorage::connect(std::slice::from_ref(&self.client_url), options).await.expect("etcd backend connects")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One backend under test, with whatever it needs kept alive.
pub struct Backend {
    pub storage: Arc<dyn Storage>,
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdServer>,
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
        let server = EtcdServer::start();
        let storage = server.storage("/registry").await;
        Backend { storage: Arc::new(storage), name: "etcd", _dir: None, _etcd: Some(server) }
    }
}
