//! Whole-system scenario: the server restarts under list+watch clients,
//! `cargo bench --bench relist_storm`.
//!
//! C informer-like clients list the ConfigMaps of one namespace (O objects) and watch them from
//! the list's resourceVersion with `allowWatchBookmarks=true`, each on connections of its own.
//! Even-numbered clients list first with `resourceVersion=0` and later from the last
//! resourceVersion they saw (client-go's reflector); odd-numbered ones always list with
//! resourceVersion unset (a consistent list). When its watch ends or the server refuses
//! connections, a client watches again from the last resourceVersion it saw, every 100–200 ms
//! (client-go; `RELIST_ON_WATCH_END=relist`: it lists again instead); after a 410 (an ERROR event
//! or status with code 410) it lists again with resourceVersion unset. A writer puts one
//! ConfigMap a time at `RELIST_WRITE_RATE`/s throughout (into etcd, so that resourceVersions move
//! while watchcache is down; through the API for the embedded peer).
//!
//! Once every client watches, the server is killed (SIGKILL) and started again on the same port.
//! Reported per peer: the time from the kill until every client watches again (and the curve of
//! clients watching over time), the requests that reached etcd in that time (etcd's own
//! `grpc_server_handled_total` for Range and every unary call but Put, `grpc_server_started_total`
//! for Watch streams) against those of a restart with no clients (the reflectors' own), reads the
//! new watchcache served from storage (`watchcache_storage_fallbacks_total`), the 410s the clients
//! saw, their lists, the machine's listen queue overflows, and the peak RSS (VmHWM) of the
//! restarted server.
//!
//! Peers (`RELIST_PEERS`): `watchcache` (watchcache on etcd, restarted); `watchcache-no-history`
//! (the same, with etcd compacted to its current revision while watchcache is down, so that
//! neither the cache nor etcd holds the clients' resourceVersions); `watchcache-embedded` (on its
//! embedded store, whose history survives the restart); `etcd` (the same clients on etcd directly
//! through etcd-client: range, then watch from the range's revision + 1, 100 clients per
//! connection; etcd itself is restarted).
//!
//! Sizes: `RELIST_CLIENTS` (1,000), `RELIST_OBJECTS` (200 ConfigMaps of ~300 bytes),
//! `RELIST_WRITE_RATE` (20/s). `RELIST_SVG=path` writes the chart of clients watching against
//! time since the kill. Without `--bench` in its arguments (`cargo test --benches`) it runs 20
//! clients against `watchcache` and `watchcache-no-history` and fails unless every client watches
//! again.

#[allow(dead_code)]
#[path = "fanout/procs.rs"]
mod procs;
#[allow(dead_code)]
#[path = "node_watch/support.rs"]
mod support;

/// `fanout/procs.rs` names the fan-out floor's flag; this scenario has no floor.
#[allow(dead_code)]
mod floor {
    pub const FLAG: &str = "--fanout-floor";
}

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Opened, Watch};

const PEERS: &[&str] = &["watchcache", "watchcache-no-history", "watchcache-embedded", "etcd"];
const NAMESPACE: &str = "storm";
const PREFIX: &str = "/registry/configmaps/storm/";
const ETCD_CLIENTS_PER_CONNECTION: usize = 100;
/// How long every client may take to watch again before the run gives up.
const REWATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last client watches again the requests to etcd are still counted.
const SETTLE: Duration = Duration::from_secs(2);

/// What a client does when its watch ends or breaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Watch again from the last resourceVersion it saw (client-go's reflector); relist only
    /// after a 410.
    Rewatch,
    /// Relist, then watch from the list's resourceVersion.
    Relist,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Watchcache,
    NoHistory,
    Embedded,
    Etcd,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Watchcache => "watchcache",
            Peer::NoHistory => "watchcache-no-history",
            Peer::Embedded => "watchcache-embedded",
            Peer::Etcd => "etcd",
        }
    }
}

struct Config {
    mode: Mode,
    clients: usize,
    objects: usize,
    write_rate: f64,
    peers: Vec<Peer>,
    svg: Option<std::path::PathBuf>,
    quick: bool,
}

fn config(quick: bool) -> Result<Config, String> {
    if quick {
        return Ok(Config {
            mode: Mode::Rewatch,
            clients: 20,
            objects: 20,
            write_rate: 20.0,
            peers: vec![Peer::Watchcache, Peer::NoHistory],
            svg: None,
            quick,
        });
    }
    let peers = support::env_list("RELIST_PEERS", PEERS)
        .iter()
        .map(|name| match name.as_str() {
            "watchcache" => Ok(Peer::Watchcache),
            "watchcache-no-history" => Ok(Peer::NoHistory),
            "watchcache-embedded" => Ok(Peer::Embedded),
            "etcd" => Ok(Peer::Etcd),
            _ => Err(format!("unknown peer {name:?}; peers: {}", PEERS.join(", "))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mode = match std::env::var("RELIST_ON_WATCH_END").as_deref() {
        Ok("rewatch") | Ok("") | Err(_) => Mode::Rewatch,
        Ok("relist") => Mode::Relist,
        Ok(other) => return Err(format!("RELIST_ON_WATCH_END={other:?}: rewatch or relist")),
    };
    let config = Config {
        mode,
        clients: support::env_number("RELIST_CLIENTS", 1_000)?,
        objects: support::env_number("RELIST_OBJECTS", 200)?,
        write_rate: support::env_number("RELIST_WRITE_RATE", 20.0)?,
        peers,
        svg: std::env::var_os("RELIST_SVG").filter(|path| !path.is_empty()).map(Into::into),
        quick,
    };
    if config.clients == 0 || config.objects == 0 || config.write_rate <= 0.0 {
        return Err("RELIST_CLIENTS, RELIST_OBJECTS and RELIST_WRITE_RATE must be > 0".into());
    }
    Ok(config)
}

/// Counters every client adds to.
#[derive(Default)]
struct Counters {
    lists: AtomicU64,
    lists_rv0: AtomicU64,
    lists_consistent: AtomicU64,
    lists_rv: AtomicU64,
    gone: AtomicU64,
    errors: AtomicU64,
    watches: AtomicU64,
    events: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> [u64; 8] {
        [
            &self.lists,
            &self.lists_rv0,
            &self.lists_consistent,
            &self.lists_rv,
            &self.gone,
            &self.errors,
            &self.watches,
            &self.events,
        ]
        .map(|counter| counter.load(Ordering::Relaxed))
    }
}

/// One client's state, as the main thread reads it.
struct ClientState {
    /// Whether a watch is open now.
    watching: AtomicBool,
    /// When its current watch opened (µs on the run's clock).
    opened_us: AtomicU64,
    /// Its last error, for the report.
    last_error: std::sync::Mutex<Option<String>>,
}

struct Shared {
    start: Instant,
    counters: Counters,
    clients: Vec<ClientState>,
    stopping: AtomicBool,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn opened(&self, index: usize) {
        let client = &self.clients[index];
        client.opened_us.store(self.now_us(), Ordering::Relaxed);
        // Relaxed: the main thread only samples; a late view delays the count by one poll.
        client.watching.store(true, Ordering::Relaxed);
        self.counters.watches.fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self, index: usize, error: Option<String>) {
        self.clients[index].watching.store(false, Ordering::Relaxed);
        if let Some(error) = error {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            *self.clients[index].last_error.lock().unwrap() = Some(error);
        }
    }

    /// Clients watching on a watch opened after `since_us`.
    fn watching_since(&self, since_us: u64) -> usize {
        self.clients
            .iter()
            .filter(|client| {
                client.watching.load(Ordering::Relaxed) && client.opened_us.load(Ordering::Relaxed) > since_us
            })
            .count()
    }
}

fn configmap(index: usize, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{index}"), "namespace": NAMESPACE, "uid": format!("00000000-0000-0000-0000-{index:012}")},
        "data": {"seq": seq.to_string(), "payload": "x".repeat(160)},
    }))
    .unwrap()
}

async fn backoff(index: usize, attempt: &mut u32) {
    *attempt += 1;
    let jitter = (index as u64 * 7919 + u64::from(*attempt) * 104_729) % 100;
    tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
}

/// An informer-like client of watchcache (see the module docs).
async fn http_client(index: usize, address: SocketAddr, mode: Mode, shared: Arc<Shared>) {
    let counters = &shared.counters;
    let mut http = None;
    let mut last_rv: Option<u64> = None;
    let mut after_gone = false;
    let mut first = true;
    let mut attempt = 0;
    let list_path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    while !shared.stopping.load(Ordering::Relaxed) {
        // LIST.
        let query = if after_gone || index % 2 == 1 {
            String::new()
        } else if first {
            "?resourceVersion=0".to_owned()
        } else {
            last_rv.map_or_else(|| "?resourceVersion=0".to_owned(), |rv| format!("?resourceVersion={rv}"))
        };
        if http.is_none() {
            match support::Http::connect(address).await {
                Ok(connected) => http = Some(connected),
                Err(error) => {
                    shared.closed(index, Some(error));
                    backoff(index, &mut attempt).await;
                    continue;
                }
            }
        }
        let listed = tokio::time::timeout(
            Duration::from_secs(30),
            http.as_mut().unwrap().request("GET", &format!("{list_path}{query}"), None),
        )
        .await
        .unwrap_or_else(|_| Err("LIST timed out".into()));
        counters.lists.fetch_add(1, Ordering::Relaxed);
        match query.as_str() {
            "" => &counters.lists_consistent,
            "?resourceVersion=0" => &counters.lists_rv0,
            _ => &counters.lists_rv,
        }
        .fetch_add(1, Ordering::Relaxed);
        let version = match listed {
            Ok((200, body)) => match support::quoted_number(&body, b"\"resourceVersion\":\"") {
                Some(version) => version,
                None => {
                    shared.closed(index, Some("a list without a resourceVersion".into()));
                    backoff(index, &mut attempt).await;
                    continue;
                }
            },
            Ok((410, _)) => {
                counters.gone.fetch_add(1, Ordering::Relaxed);
                after_gone = true;
                continue;
            }
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                shared.closed(index, Some(format!("LIST: HTTP {status}: {body}")));
                backoff(index, &mut attempt).await;
                continue;
            }
            Err(error) => {
                http = None;
                shared.closed(index, Some(error));
                backoff(index, &mut attempt).await;
                continue;
            }
        };
        first = false;
        after_gone = false;
        last_rv = Some(version);
        // WATCH from the list's resourceVersion; then, on `Rewatch`, again from the last one seen
        // whenever the watch ends or the server refuses connections.
        while let Some(from) = last_rv {
            let path = format!("{list_path}?watch=1&resourceVersion={from}&allowWatchBookmarks=true");
            let mut watch = match Watch::open(address, &path).await {
                Ok(Opened::Watching(watch)) => watch,
                Ok(Opened::Status(410, _)) => {
                    counters.gone.fetch_add(1, Ordering::Relaxed);
                    after_gone = true;
                    break;
                }
                Ok(Opened::Status(status, body)) => {
                    let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    shared.closed(index, Some(format!("WATCH: HTTP {status}: {body}")));
                    backoff(index, &mut attempt).await;
                    break;
                }
                Err(error) => {
                    shared.closed(index, Some(error));
                    backoff(index, &mut attempt).await;
                    if mode == Mode::Rewatch && !shared.stopping.load(Ordering::Relaxed) {
                        continue;
                    }
                    break;
                }
            };
            attempt = 0;
            shared.opened(index);
            let ended = loop {
                match watch.lines().await {
                    Ok(Some(lines)) => {
                        for line in lines {
                            if line.starts_with(b"{\"type\":\"ERROR\"") {
                                if memchr::memmem::find(&line, b"\"code\":410").is_some() {
                                    counters.gone.fetch_add(1, Ordering::Relaxed);
                                    after_gone = true;
                                    break;
                                }
                                shared.closed(
                                    index,
                                    Some(format!("ERROR event: {}", String::from_utf8_lossy(&line))),
                                );
                                break;
                            }
                            counters.events.fetch_add(1, Ordering::Relaxed);
                            if let Some(rv) = support::quoted_number(&line, b"\"resourceVersion\":\"") {
                                last_rv = Some(rv);
                            }
                        }
                        if after_gone {
                            break None;
                        }
                    }
                    Ok(None) => break None,
                    Err(error) => break Some(error),
                }
            };
            shared.closed(index, ended);
            if after_gone {
                break;
            }
            backoff(index, &mut attempt).await;
            if mode == Mode::Relist || shared.stopping.load(Ordering::Relaxed) {
                break;
            }
        }
    }
}

/// The same client on etcd directly: range, then watch from the range's revision + 1; when the
/// watch breaks, watch again from the last revision seen + 1 (`Rewatch`) or range again
/// (`Relist`); a watch canceled as compacted counts as a 410 and ranges again.
async fn etcd_client_loop(index: usize, client: etcd_client::Client, mode: Mode, shared: Arc<Shared>) {
    let counters = &shared.counters;
    let mut attempt = 0;
    while !shared.stopping.load(Ordering::Relaxed) {
        let mut kv = client.kv_client();
        counters.lists.fetch_add(1, Ordering::Relaxed);
        counters.lists_consistent.fetch_add(1, Ordering::Relaxed);
        let listed = tokio::time::timeout(
            Duration::from_secs(30),
            kv.get(PREFIX, Some(etcd_client::GetOptions::new().with_prefix())),
        )
        .await;
        let mut revision = match listed {
            Ok(Ok(response)) => response.header().map_or(0, |header| header.revision()),
            Ok(Err(error)) => {
                shared.closed(index, Some(format!("range: {error}")));
                backoff(index, &mut attempt).await;
                continue;
            }
            Err(_) => {
                shared.closed(index, Some("range timed out".into()));
                backoff(index, &mut attempt).await;
                continue;
            }
        };
        loop {
            let mut watch_client = client.watch_client();
            let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let mut stream = match watch_client.watch(PREFIX, Some(options)).await {
                Ok(stream) => stream,
                Err(error) => {
                    shared.closed(index, Some(format!("watch: {error}")));
                    backoff(index, &mut attempt).await;
                    if mode == Mode::Rewatch && !shared.stopping.load(Ordering::Relaxed) {
                        continue;
                    }
                    break;
                }
            };
            let mut compacted = false;
            let ended = loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if response.created() {
                            attempt = 0;
                            shared.opened(index);
                        }
                        if response.canceled() {
                            if response.compact_revision() > 0 {
                                counters.gone.fetch_add(1, Ordering::Relaxed);
                                compacted = true;
                                break None;
                            }
                            break Some(format!("watch canceled: {}", response.cancel_reason()));
                        }
                        counters.events.fetch_add(response.events().len() as u64, Ordering::Relaxed);
                        if let Some(last) =
                            response.events().iter().filter_map(|event| event.kv()).next_back()
                        {
                            revision = revision.max(last.mod_revision());
                        }
                    }
                    Ok(None) => break Some("etcd ended the watch".into()),
                    Err(error) => break Some(format!("watch stream broke: {error}")),
                }
            };
            shared.closed(index, ended);
            if compacted {
                break;
            }
            backoff(index, &mut attempt).await;
            if mode == Mode::Relist || shared.stopping.load(Ordering::Relaxed) {
                break;
            }
        }
    }
}

/// Where the writer writes.
enum WriteTarget {
    /// Puts straight into etcd.
    Etcd(String),
    /// Merge PATCHes through watchcache's API (the embedded store).
    Api(SocketAddr),
}

/// Writes one ConfigMap at a time at `rate`/s until stopped, skipping the writes that fail while
/// the server is down.
fn writer(
    target: WriteTarget,
    objects: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut client = None;
            let mut http = None;
            let mut written = 0u64;
            let started = tokio::time::Instant::now();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                tokio::time::sleep_until(started + Duration::from_secs_f64(seq as f64 / rate)).await;
                let index = seq as usize % objects;
                let url = match &target {
                    WriteTarget::Etcd(url) => url,
                    WriteTarget::Api(address) => {
                        if http.is_none() {
                            http = support::Http::connect(*address).await.ok();
                        }
                        let Some(connection) = http.as_mut() else { continue };
                        let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps/cm-{index}");
                        let patch = serde_json::to_vec(&json!({"data": {"seq": seq.to_string()}})).unwrap();
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            connection.request("PATCH", &path, Some(patch)),
                        )
                        .await
                        {
                            Ok(Ok((200, _))) => written += 1,
                            _ => http = None,
                        }
                        continue;
                    }
                };
                if client.is_none() {
                    client = etcd_client::Client::connect([url.as_str()], None).await.ok();
                }
                let Some(etcd) = client.as_mut() else { continue };
                let put = etcd.put(format!("{PREFIX}cm-{index}"), configmap(index, seq), None);
                match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => written += 1,
                    _ => client = None,
                }
            }
            written
        })
    })
}

/// What one restart measured.
struct Figures {
    /// From the kill until every client watched again (s); `None` if some never did.
    all_watching: Option<f64>,
    /// From the kill until the new server printed its startup line (s).
    listening: f64,
    /// (s since the kill, clients watching again).
    curve: Vec<(f64, f64)>,
    /// etcd requests over the restart: Range, Watch streams, every unary call.
    etcd: Option<(f64, f64, f64)>,
    /// The same for a restart with no clients (the reflectors' own).
    reflectors: Option<(f64, f64, f64)>,
    /// Reads the restarted watchcache served from storage.
    fallbacks: Option<f64>,
    /// Client counters over the restart (see [`Counters::snapshot`]).
    counters: [u64; 8],
    /// Peak RSS of the restarted server, and of the server before it.
    peak_rss: u64,
    peak_rss_before: u64,
    /// Connections dropped on full listen queues over the restart (the whole machine).
    overflows: u64,
    /// Time the clients took to watch first.
    initial: f64,
    clients: usize,
    notes: Vec<String>,
}

fn etcd_delta(after: Option<(f64, f64, f64)>, before: Option<(f64, f64, f64)>) -> Option<(f64, f64, f64)> {
    let (after, before) = (after?, before?);
    Some((after.0 - before.0, after.1 - before.1, after.2 - before.2))
}

/// Waits until `count()` reaches `target` or `timeout`; returns the seconds since `from` when it did.
fn wait_all(
    from: Instant,
    timeout: Duration,
    target: usize,
    mut count: impl FnMut() -> usize,
    mut progress: impl FnMut(usize),
    curve: &mut Vec<(f64, f64)>,
) -> Option<f64> {
    let mut next = Instant::now() + Duration::from_secs(1);
    let mut last = usize::MAX;
    loop {
        let now = count();
        let elapsed = from.elapsed().as_secs_f64();
        if now != last {
            curve.push((elapsed, now as f64));
            last = now;
        }
        if now >= target {
            return Some(elapsed);
        }
        if from.elapsed() > timeout {
            return None;
        }
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            progress(now);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(peer: Peer, config: &Config) -> Result<Figures, String> {
    let name = peer.name();
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let etcd_binary = procs::etcd_binary().ok_or("etcd is not installed")?;
    let mut etcd = support::Etcd::start(&etcd_binary, dir.path())?;
    let url = etcd.client_url.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients")
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    // The objects, straight into etcd (kube's key layout; watchcache reads them).
    runtime.block_on(async {
        if peer == Peer::Embedded {
            return Ok::<_, String>(());
        }
        let mut client =
            etcd_client::Client::connect([url.as_str()], None).await.map_err(|e| format!("etcd: {e}"))?;
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        client
            .put(format!("/registry/namespaces/{NAMESPACE}"), serde_json::to_vec(&namespace).unwrap(), None)
            .await
            .map_err(|e| format!("etcd put: {e}"))?;
        for index in 0..config.objects {
            client
                .put(format!("{PREFIX}cm-{index}"), configmap(index, 0), None)
                .await
                .map_err(|e| format!("etcd put: {e}"))?;
        }
        Ok::<_, String>(())
    })?;
    let binary = support::watchcache_binary();
    let port = support::free_port();
    let mut args = vec![format!("--data-dir={}", dir.path().join("data").display())];
    if peer != Peer::Embedded {
        args.push(format!("--etcd-endpoints={url}"));
    }
    let mut notes = Vec::new();
    let mut server = None;
    let mut address = None;
    let mut reflectors = None;
    if peer != Peer::Etcd {
        let (process, at) = support::start_watchcache(&binary, port, &args, &[])?;
        wait_ready(at, Duration::from_secs(30))?;
        if peer == Peer::Embedded {
            runtime.block_on(create_through_api(at, config.objects))?;
        }
        // A restart with no clients: the reflectors' own requests to etcd.
        let before = support::etcd_requests(&url);
        process.kill();
        let (process, at) = support::start_watchcache(&binary, port, &args, &[])?;
        let ready = Instant::now();
        wait_ready(at, Duration::from_secs(30))?;
        std::thread::sleep(SETTLE);
        if peer != Peer::Embedded {
            reflectors = etcd_delta(support::etcd_requests(&url), before);
        }
        println!(
            "  {name}: a restart with no clients: ready in {:.2} s; etcd saw {}",
            ready.elapsed().as_secs_f64() - SETTLE.as_secs_f64(),
            shown_etcd(reflectors)
        );
        server = Some(process);
        address = Some(at);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let target = match address {
        Some(address) if peer == Peer::Embedded => WriteTarget::Api(address),
        _ => WriteTarget::Etcd(url.clone()),
    };
    let writes = writer(target, config.objects, config.write_rate, Arc::clone(&stop));
    let shared = Arc::new(Shared {
        start: Instant::now(),
        counters: Counters::default(),
        clients: (0..config.clients)
            .map(|_| ClientState {
                watching: AtomicBool::new(false),
                opened_us: AtomicU64::new(0),
                last_error: std::sync::Mutex::new(None),
            })
            .collect(),
        stopping: AtomicBool::new(false),
    });
    match address {
        Some(address) => {
            for index in 0..config.clients {
                runtime.spawn(http_client(index, address, config.mode, Arc::clone(&shared)));
            }
        }
        None => {
            for first in (0..config.clients).step_by(ETCD_CLIENTS_PER_CONNECTION) {
                let (shared, url, mode) = (Arc::clone(&shared), url.clone(), config.mode);
                let last = (first + ETCD_CLIENTS_PER_CONNECTION).min(config.clients);
                runtime.spawn(async move {
                    let client = loop {
                        match etcd_client::Client::connect([url.as_str()], None).await {
                            Ok(client) => break client,
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    };
                    for index in first..last {
                        tokio::spawn(etcd_client_loop(index, client.clone(), mode, Arc::clone(&shared)));
                    }
                });
            }
        }
    }
    let started = Instant::now();
    let progress = |label: &str, watching: usize| {
        let [lists, _, _, _, gone, errors, _, _] = shared.counters.snapshot();
        println!("  {name} {label}: {watching} of {} clients watching; lists {lists}, 410s {gone}, errors {errors}", config.clients);
    };
    let mut initial_curve = Vec::new();
    let initial = wait_all(
        started,
        REWATCH_TIMEOUT,
        config.clients,
        || shared.watching_since(0),
        |watching| progress("initial sync", watching),
        &mut initial_curve,
    )
    .ok_or_else(|| {
        let error = shared.clients.iter().find_map(|client| client.last_error.lock().unwrap().clone());
        format!("the clients did not all watch within {REWATCH_TIMEOUT:?}; an error: {error:?}")
    })?;
    println!("  {name}: {} clients watching in {initial:.2} s", config.clients);
    std::thread::sleep(Duration::from_secs(2));

    // The restart.
    let before_counters = shared.counters.snapshot();
    let before_etcd = support::etcd_requests(&url);
    let peak_rss_before = match (&server, &etcd.process) {
        (Some(server), _) => support::peak_rss(server.pid()),
        (None, Some(etcd)) => support::peak_rss(etcd.pid()),
        _ => 0,
    };
    let overflows_before = support::listen_overflows();
    let killed = Instant::now();
    let killed_us = shared.now_us();
    let listening;
    match peer {
        Peer::Watchcache | Peer::NoHistory | Peer::Embedded => {
            server.take().expect("running").kill();
            if peer == Peer::NoHistory {
                // Neither the cache nor etcd keeps the clients' resourceVersions.
                runtime.block_on(async {
                    let mut client = etcd_client::Client::connect([url.as_str()], None)
                        .await
                        .map_err(|e| format!("etcd: {e}"))?;
                    let current = client
                        .get("/", Some(etcd_client::GetOptions::new().with_count_only()))
                        .await
                        .map_err(|e| format!("etcd: {e}"))?
                        .header()
                        .map_or(0, |header| header.revision());
                    client.compact(current, None).await.map_err(|e| format!("etcd compact: {e}"))?;
                    Ok::<_, String>(())
                })?;
            }
            let (process, at) = support::start_watchcache(&binary, port, &args, &[])?;
            listening = killed.elapsed().as_secs_f64();
            if Some(at) != address {
                return Err(format!("the restarted server listens on {at}, not on {address:?}"));
            }
            server = Some(process);
        }
        Peer::Etcd => {
            etcd.kill();
            etcd.restart()?;
            listening = killed.elapsed().as_secs_f64();
        }
    }
    let mut curve = Vec::new();
    let all_watching = wait_all(
        killed,
        REWATCH_TIMEOUT,
        config.clients,
        || shared.watching_since(killed_us),
        |watching| progress("after the restart", watching),
        &mut curve,
    );
    match all_watching {
        Some(seconds) => println!("  {name}: every client watching again {seconds:.2} s after the kill"),
        None => {
            let error = shared.clients.iter().find_map(|client| client.last_error.lock().unwrap().clone());
            notes.push(format!(
                "only {} of {} clients watched again within {REWATCH_TIMEOUT:?}; an error: {error:?}",
                shared.watching_since(killed_us),
                config.clients
            ));
        }
    }
    std::thread::sleep(SETTLE);
    let after_counters = shared.counters.snapshot();
    let overflows = support::listen_overflows().saturating_sub(overflows_before);
    let after_etcd = support::etcd_requests(&url);
    let etcd_requests = match peer {
        Peer::Etcd => after_etcd,
        Peer::Embedded => None,
        Peer::Watchcache | Peer::NoHistory => etcd_delta(after_etcd, before_etcd),
    };
    let fallbacks =
        address.and_then(|address| support::watchcache_metric(address, "watchcache_storage_fallbacks_total"));
    let peak_rss = match (&server, &etcd.process) {
        (Some(server), _) => support::peak_rss(server.pid()),
        (None, Some(etcd)) => support::peak_rss(etcd.pid()),
        _ => 0,
    };
    if let Some(process) = server.as_mut() {
        if let Some(status) = process.exited() {
            notes.push(format!("the restarted server exited: {status}"));
        }
    }
    shared.stopping.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(2));
    let written = writes.join().unwrap_or(0);
    notes.push(format!("{written} writes during the run"));
    drop(server);
    drop(etcd);
    let mut counters = [0; 8];
    for (index, value) in counters.iter_mut().enumerate() {
        *value = after_counters[index] - before_counters[index];
    }
    Ok(Figures {
        all_watching,
        listening,
        curve,
        etcd: etcd_requests,
        reflectors,
        fallbacks,
        counters,
        peak_rss,
        peak_rss_before,
        overflows,
        initial,
        clients: config.clients,
        notes,
    })
}

/// The namespace and the ConfigMaps, through watchcache's API (the embedded store).
async fn create_through_api(address: SocketAddr, objects: usize) -> Result<(), String> {
    let mut http = support::Http::connect(address).await?;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    let (status, _) =
        http.request("POST", "/api/v1/namespaces", Some(serde_json::to_vec(&namespace).unwrap())).await?;
    if status != 201 && status != 409 {
        return Err(format!("creating the namespace: HTTP {status}"));
    }
    for index in 0..objects {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
        let mut object: serde_json::Value = serde_json::from_slice(&configmap(index, 0)).unwrap();
        object["metadata"].as_object_mut().unwrap().remove("uid");
        let (status, body) = http.request("POST", &path, Some(serde_json::to_vec(&object).unwrap())).await?;
        if status != 201 {
            return Err(format!("creating a ConfigMap: HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
    }
    Ok(())
}

fn wait_ready(address: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            let ready = runtime.block_on(async {
                let mut http = support::Http::connect(address).await.ok()?;
                http.request("GET", "/readyz", None).await.ok().map(|(status, _)| status == 200)
            });
            if ready == Some(true) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("watchcache was not ready within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn shown_etcd(requests: Option<(f64, f64, f64)>) -> String {
    requests.map_or_else(
        || "– (no etcd metrics)".to_owned(),
        |(range, watch, unary)| {
            format!("{range:.0} Range, {watch:.0} Watch streams, {unary:.0} unary calls besides Put")
        },
    )
}

fn table(rows: &[(Peer, Result<Figures, String>)]) -> String {
    let mut out = String::new();
    out.push_str(
        "| peer | clients | all watching again after the kill (s) | × watchcache | server listening (s) | \
         etcd Range / Watch / unary but Put over the restart | of which reflectors' own (restart without clients) | \
         reads served from storage | 410s | lists (rv=0 / rv=N / consistent) | errors seen | listen queue overflows | peak RSS MiB (before) |\n",
    );
    out.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let base = rows
        .iter()
        .find(|(peer, _)| *peer == Peer::Watchcache)
        .and_then(|(_, figures)| figures.as_ref().ok())
        .and_then(|figures| figures.all_watching);
    for (peer, figures) in rows {
        match figures {
            Ok(f) => {
                let ratio = base
                    .zip(f.all_watching)
                    .map_or_else(|| "–".to_owned(), |(base, this)| format!("{:.2}", this / base));
                let [lists, rv0, consistent, rv, gone, errors, _, _] = f.counters;
                out.push_str(&format!(
                    "| {} | {} | {} | {ratio} | {:.2} | {} | {} | {} | {gone} | {lists} ({rv0} / {rv} / {consistent}) | {errors} | {} | {:.0} ({:.0}) |\n",
                    peer.name(),
                    f.clients,
                    f.all_watching.map_or_else(|| "not all".to_owned(), |s| format!("{s:.2}")),
                    f.listening,
                    f.etcd.map_or_else(|| "–".to_owned(), |(r, w, u)| format!("{r:.0} / {w:.0} / {u:.0}")),
                    f.reflectors.map_or_else(|| "–".to_owned(), |(r, w, u)| format!("{r:.0} / {w:.0} / {u:.0}")),
                    f.fallbacks.map_or_else(|| "–".to_owned(), |n| format!("{n:.0}")),
                    f.overflows,
                    f.peak_rss as f64 / (1 << 20) as f64,
                    f.peak_rss_before as f64 / (1 << 20) as f64,
                ));
            }
            Err(error) => {
                out.push_str(&format!("| {} | | failed: {error} | | | | | | | | | | |\n", peer.name()))
            }
        }
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--test") || !args.iter().any(|arg| arg == "--bench");
    let config = match config(quick) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relist_storm: {error}");
            return ExitCode::from(2);
        }
    };
    if procs::etcd_binary().is_none() {
        eprintln!(
            "relist_storm: etcd is not installed (Debian: apt-get install etcd-server); every peer needs it"
        );
        return ExitCode::FAILURE;
    }
    let (soft, hard) = procs::raise_nofile();
    let needed = 4 * config.clients as libc::rlim_t + 256;
    if soft < needed {
        eprintln!(
            "relist_storm: RLIMIT_NOFILE is {soft} (hard limit {hard}), too low for {} clients ({needed} \
             descriptors: two connections each, both ends). Raise it (ulimit -Hn {needed}) or lower RELIST_CLIENTS.",
            config.clients
        );
        return ExitCode::FAILURE;
    }
    println!(
        "relist storm: {} clients, {} ConfigMaps, {} writes/s into etcd; {} cores",
        config.clients,
        config.objects,
        config.write_rate,
        std::thread::available_parallelism().map_or(0, |cores| cores.get())
    );
    let mut rows = Vec::new();
    for &peer in &config.peers {
        println!("{}:", peer.name());
        let figures = run(peer, &config);
        match &figures {
            Ok(f) => {
                println!(
                    "  {}: all watching again after {}; etcd saw {}; 410s {}; peak RSS {:.0} MiB",
                    peer.name(),
                    f.all_watching.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s")),
                    shown_etcd(f.etcd),
                    f.counters[4],
                    f.peak_rss as f64 / (1 << 20) as f64
                );
                println!("  initial sync of every client: {:.2} s", f.initial);
                for note in &f.notes {
                    println!("  note: {note}");
                }
            }
            Err(error) => println!("  {}: failed: {error}", peer.name()),
        }
        rows.push((peer, figures));
    }
    println!();
    println!(
        "relist storm: {} clients, {} ConfigMaps, {} writes/s into etcd",
        config.clients, config.objects, config.write_rate
    );
    println!();
    print!("{}", table(&rows));
    if let Some(path) = &config.svg {
        let series: Vec<(String, Vec<(f64, f64)>)> = rows
            .iter()
            .filter_map(|(peer, figures)| {
                let figures = figures.as_ref().ok()?;
                // A step curve: each count holds until the next.
                let mut points = Vec::new();
                for window in figures.curve.windows(2) {
                    points.push(window[0]);
                    points.push((window[1].0, window[0].1));
                }
                points.extend(figures.curve.last().copied());
                Some((peer.name().to_owned(), points))
            })
            .collect();
        let title =
            format!("relist storm: clients watching again after the kill, {} clients", config.clients);
        match support::chart(path, &title, "seconds since the kill", "clients watching again", &series) {
            Ok(()) => println!("chart: {}", path.display()),
            Err(error) => eprintln!("relist_storm: {error}"),
        }
    }
    if config.quick
        && rows.iter().any(|(_, figures)| figures.as_ref().map_or(true, |f| f.all_watching.is_none()))
    {
        eprintln!("relist_storm: not every client watched again after the restart");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
