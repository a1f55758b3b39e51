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
    /// The command line that started the member, to restart it on the same data directory.
    args: Vec<String>,
}

/// Starts one etcd member with `args`, its standard error appended to `log`.
fn spawn_member(binary: &std::path::Path, args: &[String], log: &std::path::Path) -> Child {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(binary).args(args).stdout(Stdio::null()).stderr(log_file).spawn().expect("etcd starts")
}

pub fn free_port() -> u16 {
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
            let args = vec![
                format!("--name={}", names[i]),
                format!("--data-dir={}", dir.path().join(&names[i]).display()),
                format!("--listen-client-urls={}", client_urls[i]),
                format!("--advertise-client-urls={}", client_urls[i]),
                format!("--listen-peer-urls={}", peer_urls[i]),
                format!("--initial-advertise-peer-urls={}", peer_urls[i]),
                format!("--initial-cluster={}", initial_cluster.join(",")),
                "--initial-cluster-state=new".to_owned(),
                // Room for a 1.5 MiB value plus the request around it.
                "--max-request-bytes=2097152".to_owned(),
                "--log-level=warn".to_owned(),
            ];
            let child = spawn_member(&binary, &args, &log);
            members.push(Member { child: Some(child), client_url: client_urls[i].clone(), log, args });
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

    /// The process id of every running member.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|member| member.child.as_ref().map(Child::id)).collect()
    }

    /// Kills member `index` (SIGKILL), as a crashed machine would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes member `index` (SIGSTOP): it keeps its sockets open and answers nothing, as a
    /// stalled machine or a full pause of the process would.
    pub fn freeze(&mut self, index: usize) {
        self.signal(index, "-STOP");
    }

    /// Resumes a member frozen by [`Self::freeze`] (SIGCONT).
    pub fn thaw(&mut self, index: usize) {
        self.signal(index, "-CONT");
    }

    fn signal(&self, index: usize, signal: &str) {
        let child = self.members[index].child.as_ref().expect("the member is running");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Restarts member `index`, killed by [`Self::kill`], on its own data directory, and waits
    /// until it accepts client connections.
    pub fn restart(&mut self, index: usize) {
        assert!(self.members[index].child.is_none(), "member {index} is still running");
        let member = &mut self.members[index];
        member.child = Some(spawn_member(&etcd_binary(), &member.args, &member.log));
        self.wait_ready();
    }

    /// Starts member `index` again on its data directory without waiting for it: a member
    /// that needs its peers for a quorum (every member down) comes up only with them. Then
    /// [`Self::wait_running`].
    pub fn restart_without_waiting(&mut self, index: usize) {
        assert!(self.members[index].child.is_none(), "member {index} is still running");
        let member = &mut self.members[index];
        member.child = Some(spawn_member(&etcd_binary(), &member.args, &member.log));
    }

    /// Waits until every running member accepts client connections.
    pub fn wait_running(&mut self) {
        self.wait_ready();
    }

    /// Whether member `index` is running (not killed; a frozen member is running).
    pub fn is_running(&self, index: usize) -> bool {
        self.members[index].child.is_some()
    }

    /// The index of the current leader, asking each running member until one names a leader
    /// that it knows (at most `timeout`, while an election goes on).
    pub async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for (index, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let Ok(Ok(mut client)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    etcd_client::Client::connect([member.client_url.as_str()], None),
                )
                .await
                else {
                    continue;
                };
                let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), client.status()).await
                else {
                    continue;
                };
                let leader = status.leader();
                if leader == 0 {
                    continue;
                }
                if status.header().map(|header| header.member_id()) == Some(leader) {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A member that is running and not the leader.
    pub async fn follower(&self, timeout: Duration) -> usize {
        let leader = self.leader(timeout).await;
        (0..self.members.len()).find(|&index| index != leader && self.is_running(index)).expect("a follower")
    }

    /// The standard error of member `index` so far.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.members[index].log).unwrap_or_default()
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

/// The real `watchcache` binary, running as a child process; killed on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    /// `host:port` from the startup line.
    pub address: String,
    /// The startup line itself.
    pub startup_line: String,
}

impl ServerProcess {
    /// Starts `watchcache serve --listen 127.0.0.1:0 ARGS...` and waits for its startup line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_on("127.0.0.1:0", args)
    }

    /// Starts `watchcache serve --listen LISTEN ARGS...` and waits for its startup line: a
    /// restart on the address clients already know.
    pub fn start_on(listen: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::spawn(listen, args, Stdio::inherit())
    }

    /// [`Self::start_on`] with standard error (the log) appended to the file `log`.
    pub fn start_logged(listen: &str, args: &[&str], log: &std::path::Path) -> ServerProcess {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        ServerProcess::spawn(listen, args, Stdio::from(file))
    }

    fn spawn(listen: &str, args: &[&str], stderr: Stdio) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_watchcache"))
            .arg("serve")
            .arg(format!("--listen={listen}"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("watchcache starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut startup_line = String::new();
        stdout.read_line(&mut startup_line).unwrap();
        assert!(!startup_line.is_empty(), "watchcache exited before its startup line: {:?}", child.wait());
        let address = startup_line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in startup line {startup_line:?}"))
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        ServerProcess { child, address, startup_line: startup_line.trim_end().to_owned() }
    }

    /// Polls `/readyz` until it answers 200 (at most `timeout`); the time it took.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (status, body) = http_get(&self.address, "/readyz?verbose");
            if status == 200 {
                return started.elapsed();
            }
            assert!(started.elapsed() < timeout, "not ready within {timeout:?}: {status} {body}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "watchcache did not exit within {timeout:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: `(status, body)`.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// An HTTP client for the API tests: HTTP/1.1, or HTTP/2 with prior knowledge.
pub struct Http {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    pub base: String,
}

/// A response: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Http {
    pub fn new(address: &str, http2: bool) -> Http {
        let mut builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        builder.http2_only(http2);
        Http { client: builder.build_http(), base: format!("http://{address}") }
    }

    pub async fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body)))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, content_type, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "application/json", b"").await
    }

    pub async fn send_json(&self, method: &str, path: &str, body: &serde_json::Value) -> Reply {
        self.request(method, path, "application/json", &serde_json::to_vec(body).unwrap()).await
    }

    /// Starts a watch; returns its body to read events from.
    pub async fn watch(&self, path: &str) -> WatchReader {
        let request = http::Request::builder()
            .uri(format!("{}{path}", self.base))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.expect("watch request failed");
        assert_eq!(response.status().as_u16(), 200, "watch refused");
        WatchReader { body: response.into_body(), buffer: Vec::new() }
    }
}

/// Reads newline-delimited JSON watch events.
pub struct WatchReader {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl WatchReader {
    /// The next event, or `None` when the stream ended (or nothing came for 10 s: a panic).
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("no watch event within 10 s");
            match frame {
                None => {
                    assert!(self.buffer.is_empty(), "the stream ended mid-line");
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("watch stream broke").into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_event(&mut self) -> Option<serde_json::Value> {
        loop {
            let event = self.next().await?;
            if event["type"] != "BOOKMARK" {
                return Some(event);
            }
        }
    }
}
