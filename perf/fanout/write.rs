//! The writer: one write in flight at a time (it waits for each acknowledgement), paced to the
//! schedule of R writes/s, on a thread and runtime of its own so that the watchers' load does not
//! delay it. Its acknowledgement times share the watchers' clock ([`Shared::start`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::object;
use crate::watch::Shared;

/// How long one write may take before the run gives up on the peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the writes go.
#[derive(Clone)]
pub enum Target {
    /// Merge PATCHes of the ConfigMap through watchcache's API.
    Watchcache(SocketAddr),
    /// The floor's control connection.
    Floor(SocketAddr),
    /// Puts of the whole ConfigMap straight into etcd.
    Etcd(String),
}

/// What the writer did.
pub struct WriteLog {
    /// Acknowledgement time of write `seq` (µs on the run's clock), for `seq` in `1..=acked`.
    pub ack_us: Vec<u32>,
    /// Writes acknowledged (they are acknowledged in order).
    pub acked: u32,
    /// When the first timed write was sent and the last acknowledged (µs on the run's clock).
    pub first_sent_us: u32,
    pub last_ack_us: u32,
    /// Why the writer stopped early.
    pub error: Option<String>,
}

/// One HTTP/1.1 connection to watchcache (hyper's client); opened again if the server closed it
/// while idle.
struct Http {
    address: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Http {
    async fn connect(address: SocketAddr) -> Result<Http, String> {
        Ok(Http { address, sender: Self::open(address).await? })
    }

    async fn open(
        address: SocketAddr,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let stream =
            TcpStream::connect(address).await.map_err(|error| format!("connect {address}: {error}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|error| format!("HTTP handshake: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), String> {
        if self.sender.ready().await.is_err() {
            self.sender = Self::open(self.address).await?;
            self.sender.ready().await.map_err(|error| format!("connection: {error}"))?;
        }
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "watchcache")
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request");
        let response =
            self.sender.send_request(request).await.map_err(|error| format!("{method} {path}: {error}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("{method} {path}: reading the body: {error}"))?
            .to_bytes();
        Ok((status, body))
    }
}

fn shown(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// Creates the namespace and the ConfigMap through watchcache; the ConfigMap's resourceVersion.
pub async fn prepare_watchcache(address: SocketAddr) -> Result<String, String> {
    let mut http = Http::connect(address).await?;
    let (status, body) =
        http.request("POST", "/api/v1/namespaces", "application/json", object::namespace_body()).await?;
    if status != 201 && status != 409 {
        return Err(format!("creating the namespace: HTTP {status}: {}", shown(&body)));
    }
    let (status, body) =
        http.request("POST", object::COLLECTION_PATH, "application/json", object::create_body()).await?;
    if status != 201 {
        return Err(format!("creating the ConfigMap: HTTP {status}: {}", shown(&body)));
    }
    let created: serde_json::Value = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
    created["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no resourceVersion in {}", shown(&body)))
}

/// Puts the ConfigMap into etcd; the revision of that put.
pub async fn prepare_etcd(endpoint: &str) -> Result<i64, String> {
    let mut client =
        etcd_client::Client::connect([endpoint], None).await.map_err(|error| format!("etcd: {error}"))?;
    let response = client
        .put(object::ETCD_KEY, object::initial_configmap(), None)
        .await
        .map_err(|error| format!("etcd put: {error}"))?;
    response.header().map(|header| header.revision()).ok_or_else(|| "no header in the put response".into())
}

enum Connection {
    Watchcache(Http),
    Floor(BufReader<TcpStream>, String),
    Etcd(Box<etcd_client::Client>),
}

impl Connection {
    async fn open(target: &Target) -> Result<Connection, String> {
        Ok(match target {
            Target::Watchcache(address) => Connection::Watchcache(Http::connect(*address).await?),
            Target::Floor(address) => {
                let stream = TcpStream::connect(address)
                    .await
                    .map_err(|error| format!("connect {address}: {error}"))?;
                let _ = stream.set_nodelay(true);
                Connection::Floor(BufReader::new(stream), String::new())
            }
            Target::Etcd(endpoint) => Connection::Etcd(Box::new(
                etcd_client::Client::connect([endpoint.as_str()], None)
                    .await
                    .map_err(|error| format!("etcd: {error}"))?,
            )),
        })
    }

    /// Write `seq`; returns once it is acknowledged.
    async fn write(&mut self, seq: u32) -> Result<(), String> {
        match self {
            Connection::Watchcache(http) => {
                let (status, body) = http
                    .request("PATCH", object::ITEM_PATH, "application/merge-patch+json", object::patch(seq))
                    .await?;
                if status != 200 {
                    return Err(format!("PATCH {seq}: HTTP {status}: {}", shown(&body)));
                }
            }
            Connection::Floor(stream, line) => {
                stream.get_mut().write_all(format!("{seq}\n").as_bytes()).await.map_err(|e| e.to_string())?;
                line.clear();
                stream.read_line(line).await.map_err(|error| error.to_string())?;
                if line.trim() != seq.to_string() {
                    return Err(format!("the floor acknowledged {line:?} for {seq}"));
                }
            }
            Connection::Etcd(client) => {
                client
                    .put(object::ETCD_KEY, object::configmap(seq, None), None)
                    .await
                    .map_err(|error| format!("etcd put {seq}: {error}"))?;
            }
        }
        Ok(())
    }
}

/// The writer's thread: connects, sends the warm-up write (sequence 0) and reports it on `warm`,
/// waits for `go`, then writes 1..=`writes` at `rate`/s.
pub struct Writer {
    thread: std::thread::JoinHandle<WriteLog>,
    warm: std::sync::mpsc::Receiver<Result<(), String>>,
    go: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Writer {
    pub fn start(target: Target, writes: u32, rate: f64, shared: Arc<Shared>) -> Writer {
        let (warm_sender, warm) = std::sync::mpsc::channel();
        let (go, go_receiver) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(write_all(target, writes, rate, shared, warm_sender, go_receiver))
            })
            .expect("writer thread starts");
        Writer { thread, warm, go: Some(go) }
    }

    /// Waits for the warm-up write's acknowledgement.
    pub fn warmed_up(&self, timeout: Duration) -> Result<(), String> {
        match self.warm.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => Err(format!("the warm-up write was not acknowledged within {timeout:?}")),
        }
    }

    /// Starts the timed writes.
    pub fn go(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn join(mut self) -> WriteLog {
        self.go.take();
        self.thread.join().expect("writer thread")
    }
}

async fn write_all(
    target: Target,
    writes: u32,
    rate: f64,
    shared: Arc<Shared>,
    warm: std::sync::mpsc::Sender<Result<(), String>>,
    go: tokio::sync::oneshot::Receiver<()>,
) -> WriteLog {
    let mut log = WriteLog {
        ack_us: vec![0; writes as usize + 1],
        acked: 0,
        first_sent_us: 0,
        last_ack_us: 0,
        error: None,
    };
    let warmed = async {
        let mut connection = Connection::open(&target).await?;
        tokio::time::timeout(WRITE_TIMEOUT, connection.write(0))
            .await
            .map_err(|_| "the warm-up write timed out".to_owned())??;
        Ok::<_, String>(connection)
    };
    let mut connection = match warmed.await {
        Ok(connection) => {
            let _ = warm.send(Ok(()));
            connection
        }
        Err(error) => {
            let _ = warm.send(Err(error.clone()));
            log.error = Some(error);
            return log;
        }
    };
    if go.await.is_err() {
        log.error = Some("not started".into());
        return log;
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    log.first_sent_us = shared.now_us();
    for seq in 1..=writes {
        let due = start + interval.mul_f64(f64::from(seq - 1));
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
        }
        match tokio::time::timeout(WRITE_TIMEOUT, connection.write(seq)).await {
            Ok(Ok(())) => {
                let now = shared.now_us();
                log.ack_us[seq as usize] = now;
                log.acked = seq;
                log.last_ack_us = now;
                shared.acked.store(seq, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                log.error = Some(error);
                break;
            }
            Err(_) => {
                log.error = Some(format!("write {seq} was not acknowledged within {WRITE_TIMEOUT:?}"));
                break;
            }
        }
    }
    log
}
