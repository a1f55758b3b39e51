//! Whole-system scenario: the kubelet pattern, `cargo bench --bench node_watch`.
//!
//! W watchers, watcher i watching every namespace's pods with
//! `fieldSelector=spec.nodeName=node-<i % N>` across N nodes, each on its own HTTP/1.1
//! connection, while one writer PATCHes pods spread across the nodes (write s goes to the pod of
//! node s % N) at R writes/s, closed loop. Every write reaches the W/N watchers of its node; each
//! watcher's receipts are checked for gaps, duplicates and order against the writes to its node.
//! Server CPU (utime + stime from /proc/<pid>/stat) is read before the first write and after the
//! last delivery, and divided by the writes and by the delivered (watcher, event) pairs.
//!
//! Peers, each at every size (`NODE_WATCH_PEERS`):
//!
//! - `watchcache-index`: watchcache on its embedded store; node watchers sit in the cache's
//!   field index, so an event is offered to its node's watchers only;
//! - `watchcache-no-index`: the same binary with `WATCHCACHE_BENCH_NO_FIELD_INDEX=1` (for
//!   benchmarking only), which puts every node watcher in the "everything" bucket: each event's
//!   filter is evaluated for all W watchers;
//! - `etcd`: etcd 3.4 with per-node key prefixes (`/nodes/node-<k>/pod-<k>`), each watcher
//!   watching its node's prefix through etcd-client (100 watches per connection), writes put
//!   straight into etcd.
//!
//! Sizes: `NODE_WATCH_SIZES` (watcher counts, default 1250,2500,5000), `NODE_WATCH_PER_NODE`
//! (watchers per node, 10: N = W / 10, so that every write interests the same number of
//! watchers whatever W), `NODE_WATCH_RATE` (200 writes/s), `NODE_WATCH_WRITES` (2,000 per run).
//! `NODE_WATCH_SVG=path` writes a chart of CPU per delivered event against W.
//! Without `--bench` in its arguments (`cargo test --benches`) it runs 40 watchers on 4 nodes,
//! 40 writes, both watchcache peers, and fails unless every watcher got exactly its node's
//! writes in order.

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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procs::Cpu;
use serde_json::json;
use support::{quantile, Opened, Watch};

const PEERS: &[&str] = &["watchcache-index", "watchcache-no-index", "etcd"];
const NAMESPACE: &str = "nodes";
const ETCD_WATCHES_PER_CONNECTION: usize = 100;
const DRAIN_STALL: Duration = Duration::from_secs(10);
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Index,
    NoIndex,
    Etcd,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Index => "watchcache-index",
            Peer::NoIndex => "watchcache-no-index",
            Peer::Etcd => "etcd",
        }
    }
}

struct Config {
    sizes: Vec<usize>,
    per_node: usize,
    rate: f64,
    writes: u32,
    peers: Vec<Peer>,
    svg: Option<std::path::PathBuf>,
    quick: bool,
}

fn config(quick: bool) -> Result<Config, String> {
    if quick {
        return Ok(Config {
            sizes: vec![40],
            per_node: 10,
            rate: 200.0,
            writes: 40,
            peers: vec![Peer::Index, Peer::NoIndex],
            svg: None,
            quick,
        });
    }
    let sizes = support::env_list("NODE_WATCH_SIZES", &["1250", "2500", "5000"])
        .iter()
        .map(|size| size.replace('_', "").parse::<usize>().map_err(|_| format!("NODE_WATCH_SIZES: {size:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let peers = support::env_list("NODE_WATCH_PEERS", PEERS)
        .iter()
        .map(|name| match name.as_str() {
            "watchcache-index" => Ok(Peer::Index),
            "watchcache-no-index" => Ok(Peer::NoIndex),
            "etcd" => Ok(Peer::Etcd),
            _ => Err(format!("unknown peer {name:?}; peers: {}", PEERS.join(", "))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = Config {
        sizes,
        per_node: support::env_number("NODE_WATCH_PER_NODE", 10)?,
        rate: support::env_number("NODE_WATCH_RATE", 200.0)?,
        writes: support::env_number("NODE_WATCH_WRITES", 2_000)?,
        peers,
        svg: std::env::var_os("NODE_WATCH_SVG").filter(|path| !path.is_empty()).map(Into::into),
        quick,
    };
    if config.sizes.iter().any(|&size| size < config.per_node)
        || config.per_node == 0
        || config.writes == 0
        || config.rate <= 0.0
    {
        return Err(
            "NODE_WATCH_SIZES must be ≥ NODE_WATCH_PER_NODE > 0; NODE_WATCH_WRITES, NODE_WATCH_RATE > 0"
                .into(),
        );
    }
    Ok(config)
}

/// What the watchers and the writer share.
struct Shared {
    start: Instant,
    established: AtomicUsize,
    failed: AtomicUsize,
    delivered: AtomicU64,
    connecting: tokio::sync::Semaphore,
    stopping: AtomicBool,
}

impl Shared {
    fn now_us(&self) -> u32 {
        self.start.elapsed().as_micros() as u32
    }
}

/// One watcher's receipts: (write, receive time µs), and why it failed.
#[derive(Default)]
struct Receipts {
    events: Vec<(u32, u32)>,
    failure: Option<String>,
}

type Slot = Arc<Mutex<Receipts>>;

fn fail(slot: &Slot, shared: &Shared, reason: String) {
    let mut receipts = slot.lock().unwrap();
    if receipts.failure.is_none() && !shared.stopping.load(Ordering::Relaxed) {
        receipts.failure = Some(reason);
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
}

fn pod(node: usize, seq: u32) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("pod-{node}"), "namespace": NAMESPACE, "annotations": {"seq": seq.to_string()}},
        "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    })
}

fn etcd_key(node: usize) -> String {
    format!("/nodes/node-{node}/pod-{node}")
}

/// Where the writes go.
#[derive(Clone)]
enum Target {
    Watchcache(SocketAddr),
    Etcd(String),
}

/// Creates the namespace and one pod per node; the resourceVersion to watch from.
async fn prepare(target: &Target, nodes: usize) -> Result<u64, String> {
    match target {
        Target::Watchcache(address) => {
            let mut http = support::Http::connect(*address).await?;
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
            let (status, body) = http
                .request("POST", "/api/v1/namespaces", Some(serde_json::to_vec(&namespace).unwrap()))
                .await?;
            if status != 201 && status != 409 {
                return Err(format!(
                    "creating the namespace: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            let mut version = 0;
            for node in 0..nodes {
                let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
                let (status, body) =
                    http.request("POST", &path, Some(serde_json::to_vec(&pod(node, 0)).unwrap())).await?;
                if status != 201 {
                    return Err(format!("creating a pod: HTTP {status}: {}", String::from_utf8_lossy(&body)));
                }
                let created: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                version = created["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|version| version.parse().ok())
                    .ok_or("a created pod without a resourceVersion")?;
            }
            Ok(version)
        }
        Target::Etcd(url) => {
            let mut client =
                etcd_client::Client::connect([url.as_str()], None).await.map_err(|e| format!("etcd: {e}"))?;
            let mut revision = 0;
            for node in 0..nodes {
                let value = serde_json::to_vec(&pod(node, 0)).unwrap();
                let response =
                    client.put(etcd_key(node), value, None).await.map_err(|e| format!("etcd put: {e}"))?;
                revision = response.header().map_or(0, |header| header.revision()) as u64;
            }
            Ok(revision)
        }
    }
}

fn spawn_watchers(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    version: u64,
    nodes: usize,
    slots: &[Slot],
    shared: &Arc<Shared>,
) {
    match target {
        Target::Watchcache(address) => {
            for (index, slot) in slots.iter().enumerate() {
                let path = format!(
                    "/api/v1/pods?watch=1&resourceVersion={version}&fieldSelector=spec.nodeName%3Dnode-{}",
                    index % nodes
                );
                let (slot, shared, address) = (Arc::clone(slot), Arc::clone(shared), *address);
                runtime.spawn(async move {
                    if let Err(reason) = http_watch(address, &path, &slot, &shared).await {
                        fail(&slot, &shared, reason);
                    }
                });
            }
        }
        Target::Etcd(url) => {
            for (group_index, group) in slots.chunks(ETCD_WATCHES_PER_CONNECTION).enumerate() {
                let group = group.to_vec();
                let (shared, url) = (Arc::clone(shared), url.clone());
                runtime.spawn(async move {
                    let client = match etcd_client::Client::connect([url.as_str()], None).await {
                        Ok(client) => client,
                        Err(error) => {
                            for slot in &group {
                                fail(slot, &shared, format!("cannot connect to etcd: {error}"));
                            }
                            return;
                        }
                    };
                    for (offset, slot) in group.into_iter().enumerate() {
                        let node = (group_index * ETCD_WATCHES_PER_CONNECTION + offset) % nodes;
                        let (client, shared) = (client.clone(), Arc::clone(&shared));
                        tokio::spawn(async move {
                            if let Err(reason) = etcd_watch(client, node, version + 1, &slot, &shared).await {
                                fail(&slot, &shared, reason);
                            }
                        });
                    }
                });
            }
        }
    }
}

async fn http_watch(address: SocketAddr, path: &str, slot: &Slot, shared: &Shared) -> Result<(), String> {
    let permit = shared.connecting.acquire().await.expect("never closed");
    let mut watch = match Watch::open(address, path).await? {
        Opened::Watching(watch) => watch,
        Opened::Status(status, body) => {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])))
        }
    };
    drop(permit);
    shared.established.fetch_add(1, Ordering::Relaxed);
    while let Some(lines) = watch.lines().await? {
        let now = shared.now_us();
        let mut counted = 0;
        let mut receipts = slot.lock().unwrap();
        for line in lines {
            if line.starts_with(b"{\"type\":\"BOOKMARK\"") {
                continue;
            }
            if line.starts_with(b"{\"type\":\"ERROR\"") {
                return Err(format!("ERROR event: {}", String::from_utf8_lossy(&line)));
            }
            let seq =
                support::quoted_number(&line, b"\"seq\":\"").ok_or("an event without a sequence number")?;
            receipts.events.push((seq as u32, now));
            counted += 1;
        }
        shared.delivered.fetch_add(counted, Ordering::Relaxed);
    }
    Err("the server ended the watch".into())
}

async fn etcd_watch(
    mut client: etcd_client::Client,
    node: usize,
    from: u64,
    slot: &Slot,
    shared: &Shared,
) -> Result<(), String> {
    let mut permit = Some(shared.connecting.acquire().await.expect("never closed"));
    let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(from as i64);
    let mut stream = client
        .watch(format!("/nodes/node-{node}/"), Some(options))
        .await
        .map_err(|error| format!("watch: {error}"))?;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("etcd ended the watch stream".into()),
            Err(error) => return Err(format!("watch stream broke: {error}")),
        };
        if response.canceled() {
            return Err(format!("watch canceled: {}", response.cancel_reason()));
        }
        if permit.take().is_some() {
            shared.established.fetch_add(1, Ordering::Relaxed);
        }
        let now = shared.now_us();
        let mut counted = 0;
        let mut receipts = slot.lock().unwrap();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let seq = support::quoted_number(kv.value(), b"\"seq\":\"")
                .ok_or("a value without a sequence number")?;
            receipts.events.push((seq as u32, now));
            counted += 1;
        }
        shared.delivered.fetch_add(counted, Ordering::Relaxed);
    }
}

/// The writer's thread: writes 1..=writes at `rate`/s, one in flight; write s updates the pod of
/// node s % nodes. Returns each write's acknowledgement time (µs, index s) and any error.
fn writer(
    target: Target,
    writes: u32,
    rate: f64,
    nodes: usize,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<(Vec<u32>, Option<String>)> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut ack = vec![0u32; writes as usize + 1];
            let result: Result<(), String> = async {
                let mut http = None;
                let mut etcd = None;
                match &target {
                    Target::Watchcache(address) => http = Some(support::Http::connect(*address).await?),
                    Target::Etcd(url) => {
                        etcd = Some(
                            etcd_client::Client::connect([url.as_str()], None)
                                .await
                                .map_err(|e| format!("etcd: {e}"))?,
                        )
                    }
                }
                let started = tokio::time::Instant::now();
                for seq in 1..=writes {
                    tokio::time::sleep_until(started + Duration::from_secs_f64(f64::from(seq - 1) / rate))
                        .await;
                    let node = seq as usize % nodes;
                    if let Some(http) = &mut http {
                        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/pod-{node}");
                        let patch = json!({"metadata": {"annotations": {"seq": seq.to_string()}}});
                        let (status, body) =
                            http.request("PATCH", &path, Some(serde_json::to_vec(&patch).unwrap())).await?;
                        if status != 200 {
                            return Err(format!(
                                "PATCH {seq}: HTTP {status}: {}",
                                String::from_utf8_lossy(&body)
                            ));
                        }
                    }
                    if let Some(etcd) = &mut etcd {
                        let value = serde_json::to_vec(&pod(node, seq)).unwrap();
                        etcd.put(etcd_key(node), value, None)
                            .await
                            .map_err(|e| format!("etcd put {seq}: {e}"))?;
                    }
                    ack[seq as usize] = shared.now_us();
                }
                Ok(())
            }
            .await;
            (ack, result.err())
        })
    })
}

/// One peer at one size.
struct Row {
    peer: Peer,
    watchers: usize,
    nodes: usize,
    figures: Result<Figures, String>,
}

struct Figures {
    cpu: Cpu,
    load: Cpu,
    writes: u32,
    write_rate: f64,
    delivered: u64,
    expected: u64,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    failed: usize,
    p50: Option<i64>,
    p99: Option<i64>,
    notes: Vec<String>,
    /// Server CPU per write of the same peer's run without watchers (µs).
    baseline_us: Option<f64>,
}

impl Figures {
    fn per_write_us(&self) -> f64 {
        1e6 * self.cpu.total() / f64::from(self.writes.max(1))
    }

    fn per_event_us(&self) -> f64 {
        1e6 * self.cpu.total() / self.delivered.max(1) as f64
    }

    /// CPU per delivered event beyond the writes alone: the fan-out's own cost.
    fn fanout_us(&self) -> Option<f64> {
        let baseline = self.baseline_us?;
        Some((self.per_write_us() - baseline) * f64::from(self.writes) / self.delivered.max(1) as f64)
    }

    fn complete(&self) -> bool {
        self.failed == 0 && self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

/// One run of `peer`: `watchers` watchers on `nodes` nodes (no watchers: the writes alone).
fn run(peer: Peer, watchers: usize, nodes: usize, config: &Config) -> Result<Figures, String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("watchers")
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let mut etcd = None;
    let mut server = None;
    let (target, pid) = match peer {
        Peer::Index | Peer::NoIndex => {
            let envs: &[(&str, &str)] =
                if peer == Peer::NoIndex { &[("WATCHCACHE_BENCH_NO_FIELD_INDEX", "1")] } else { &[] };
            let args = vec![format!("--data-dir={}", dir.path().join("data").display())];
            let (process, address) =
                support::start_watchcache(&support::watchcache_binary(), 0, &args, envs)?;
            let pid = process.pid();
            server = Some(process);
            (Target::Watchcache(address), pid)
        }
        Peer::Etcd => {
            let binary = procs::etcd_binary().ok_or("etcd is not installed")?;
            let started = support::Etcd::start(&binary, dir.path())?;
            let target = Target::Etcd(started.client_url.clone());
            let pid = started.pid();
            etcd = Some(started);
            (target, pid)
        }
    };
    let version = runtime.block_on(prepare(&target, nodes))?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        established: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        connecting: tokio::sync::Semaphore::new(64),
        stopping: AtomicBool::new(false),
    });
    let slots: Vec<Slot> = (0..watchers).map(|_| Slot::default()).collect();
    spawn_watchers(&runtime, &target, version, nodes, &slots, &shared);
    let name = peer.name();
    let opened = Instant::now();
    let mut next = opened + Duration::from_secs(1);
    while shared.established.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < watchers {
        if opened.elapsed() > OPEN_TIMEOUT {
            break;
        }
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            println!("  {name}: {} of {watchers} watches open", shared.established.load(Ordering::Relaxed));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let established = shared.established.load(Ordering::Relaxed);
    println!("  {name}: {established} of {watchers} watches open in {:.1} s", opened.elapsed().as_secs_f64());
    let first_failure =
        || slots.iter().find_map(|slot| slot.lock().unwrap().failure.clone()).unwrap_or_default();
    if established == 0 && watchers > 0 {
        return Err(format!("no watch opened: {}", first_failure()));
    }
    // Let the registrations settle before the CPU is read.
    std::thread::sleep(Duration::from_millis(500));

    let expected_of = |watcher: usize, acked: u32| -> u64 {
        let node = (watcher % nodes) as u32;
        (1..=acked).filter(|seq| seq % nodes as u32 == node).count() as u64
    };
    let total_expected = |acked: u32| -> u64 {
        let per_node: Vec<u64> = (0..nodes).map(|node| expected_of(node, acked)).collect();
        (0..watchers).map(|watcher| per_node[watcher % nodes]).sum()
    };
    let before = (procs::cpu(Some(pid)), procs::cpu(None));
    let started = Instant::now();
    let handle = writer(target, config.writes, config.rate, nodes, Arc::clone(&shared));
    let mut last = (started, before.0);
    let mut next = started + Duration::from_secs(1);
    let mut stalled = Instant::now();
    let mut last_delivered = 0;
    let mut notes = Vec::new();
    let full = total_expected(config.writes);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last_delivered {
            last_delivered = delivered;
            stalled = now;
        }
        if now >= next {
            next += Duration::from_secs(1);
            let cpu = procs::cpu(Some(pid));
            let seconds = now.duration_since(last.0).as_secs_f64();
            println!(
                "  {name} {:>5.1} s: deliveries {delivered} of {full}, failed {}; server CPU {:.0}%",
                now.duration_since(started).as_secs_f64(),
                shared.failed.load(Ordering::Relaxed),
                100.0 * cpu.since(last.1).total() / seconds,
            );
            last = (now, cpu);
        }
        if let Some(process) = server.as_mut() {
            if let Some(status) = process.exited() {
                notes.push(format!("the server exited: {status}"));
                break;
            }
        }
        if !handle.is_finished() {
            stalled = now;
            continue;
        }
        let alive_expected: u64 = (0..watchers)
            .filter(|&watcher| slots[watcher].lock().unwrap().failure.is_none())
            .map(|watcher| expected_of(watcher, config.writes))
            .sum();
        if delivered >= alive_expected {
            break;
        }
        if now.duration_since(stalled) > DRAIN_STALL {
            notes.push(format!(
                "deliveries stopped {} s before every watcher had its writes",
                DRAIN_STALL.as_secs()
            ));
            break;
        }
    }
    let after = (procs::cpu(Some(pid)), procs::cpu(None));
    shared.stopping.store(true, Ordering::Relaxed);
    let (ack, error) = handle.join().map_err(|_| "the writer panicked")?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(server);
    drop(etcd);
    let acked = ack.iter().skip(1).take_while(|&&at| at > 0).count() as u32;
    if let Some(error) = error {
        notes.push(format!("the writer stopped after {acked} writes: {error}"));
    }
    let last_ack = ack.get(acked as usize).copied().unwrap_or(0);
    let first = ack.get(1).copied().unwrap_or(0);
    let write_rate = if last_ack > first {
        f64::from(acked.saturating_sub(1)) * 1e6 / f64::from(last_ack - first)
    } else {
        0.0
    };

    let (mut missing, mut duplicates, mut out_of_order, mut delivered, mut failed) = (0, 0, 0, 0, 0);
    let mut latencies = Vec::new();
    for (watcher, slot) in slots.iter().enumerate() {
        let receipts = slot.lock().unwrap();
        if receipts.failure.is_some() {
            failed += 1;
        }
        let node = (watcher % nodes) as u32;
        let mut seen = vec![false; acked as usize + 1];
        let mut highest = 0;
        for &(seq, at) in &receipts.events {
            delivered += 1;
            if seq == 0 || seq > acked || seq % nodes as u32 != node {
                out_of_order += 1;
                continue;
            }
            if seen[seq as usize] {
                duplicates += 1;
                continue;
            }
            seen[seq as usize] = true;
            if seq < highest {
                out_of_order += 1;
            }
            highest = highest.max(seq);
            latencies.push(i64::from(at) - i64::from(ack[seq as usize]));
        }
        missing +=
            (1..=acked).filter(|seq| seq % nodes as u32 == node && !seen[*seq as usize]).count() as u64;
    }
    latencies.sort_unstable();
    Ok(Figures {
        cpu: after.0.since(before.0),
        load: after.1.since(before.1),
        writes: acked,
        write_rate,
        delivered,
        expected: total_expected(acked),
        missing,
        duplicates,
        out_of_order,
        failed,
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        notes,
        baseline_us: None,
    })
}

fn table(rows: &[Row], rate: f64) -> String {
    let mut out = String::new();
    out.push_str(
        "| peer | watchers | nodes | writes/s (of R) | server CPU µs / write (writes alone) | µs / delivered event | \
         × watchcache-index | fan-out µs / delivered event | delivered / expected | \
         missing / dup / out of order / failed | ack → receive p50 / p99 ms | load generator CPU s |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let fixed =
        |value: Option<f64>, digits: usize| value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"));
    for row in rows {
        match &row.figures {
            Ok(figures) => {
                let index = rows
                    .iter()
                    .find(|other| other.peer == Peer::Index && other.watchers == row.watchers)
                    .and_then(|other| other.figures.as_ref().ok())
                    .map(Figures::per_event_us);
                let ratio = index.map(|index| figures.per_event_us() / index);
                out.push_str(&format!(
                    "| {} | {} | {} | {:.0} (of {rate}) | {:.0} ({}) | {:.2} | {} | {} | {} / {} | {} / {} / {} / {} | {} / {} | {:.1} |\n",
                    row.peer.name(),
                    row.watchers,
                    row.nodes,
                    figures.write_rate,
                    figures.per_write_us(),
                    fixed(figures.baseline_us, 0),
                    figures.per_event_us(),
                    fixed(ratio, 2),
                    fixed(figures.fanout_us(), 2),
                    figures.delivered,
                    figures.expected,
                    figures.missing,
                    figures.duplicates,
                    figures.out_of_order,
                    figures.failed,
                    support::ms(figures.p50),
                    support::ms(figures.p99),
                    figures.load.total(),
                ));
            }
            Err(error) => out.push_str(&format!(
                "| {} | {} | {} | failed: {error} | | | | | | | | |\n",
                row.peer.name(),
                row.watchers,
                row.nodes
            )),
        }
    }
    out
}

/// How each peer's CPU grows with W (the interested watchers per write stay the same).
fn scaling(rows: &[Row], peers: &[Peer]) -> String {
    let mut out = String::new();
    for &peer in peers {
        let points: Vec<(usize, f64, Option<f64>)> = rows
            .iter()
            .filter(|row| row.peer == peer)
            .filter_map(|row| {
                row.figures.as_ref().ok().map(|f| (row.watchers, f.per_write_us(), f.fanout_us()))
            })
            .collect();
        let (Some(first), Some(last)) = (points.first(), points.last()) else { continue };
        if points.len() < 2 {
            continue;
        }
        let shown: Vec<String> = points
            .iter()
            .map(|(w, write, fanout)| match fanout {
                Some(fanout) => format!("{write:.0} µs per write, {fanout:.2} µs fan-out per event at {w}"),
                None => format!("{write:.0} µs per write at {w}"),
            })
            .collect();
        let growth = match (first.2, last.2) {
            (Some(first_fanout), Some(last_fanout)) if first_fanout > 0.0 => {
                format!("fan-out per event ×{:.2}", last_fanout / first_fanout)
            }
            _ => "fan-out per event: no baseline".to_owned(),
        };
        // Least-squares slope of CPU per write against W: what each watcher adds to a write
        // that does not interest it.
        let n = points.len() as f64;
        let mean_w = points.iter().map(|p| p.0 as f64).sum::<f64>() / n;
        let mean_us = points.iter().map(|p| p.1).sum::<f64>() / n;
        let covariance: f64 = points.iter().map(|p| (p.0 as f64 - mean_w) * (p.1 - mean_us)).sum();
        let variance: f64 = points.iter().map(|p| (p.0 as f64 - mean_w).powi(2)).sum();
        let slope_ns = if variance > 0.0 { 1e3 * covariance / variance } else { 0.0 };
        out.push_str(&format!(
            "- {}: {}; for ×{:.1} watchers (same interested watchers per write): per write ×{:.2}, {growth}; \
             slope {slope_ns:.0} ns of CPU per write per watcher\n",
            peer.name(),
            shown.join("; "),
            last.0 as f64 / first.0 as f64,
            last.1 / first.1,
        ));
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--test") || !args.iter().any(|arg| arg == "--bench");
    let mut config = match config(quick) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("node_watch: {error}");
            return ExitCode::from(2);
        }
    };
    let (soft, hard) = procs::raise_nofile();
    let largest = config.sizes.iter().copied().max().unwrap_or(0);
    let needed = 2 * largest as libc::rlim_t + 256;
    if soft < needed {
        eprintln!(
            "node_watch: RLIMIT_NOFILE is {soft} (hard limit {hard}), too low for {largest} watchers \
             ({needed} descriptors: one socket here and one in the server each). Raise it (ulimit -Hn {needed}) \
             or lower NODE_WATCH_SIZES."
        );
        return ExitCode::FAILURE;
    }
    if procs::etcd_binary().is_none() && config.peers.contains(&Peer::Etcd) {
        println!("etcd is not installed (Debian: apt-get install etcd-server): skipping the etcd peer");
        config.peers.retain(|&peer| peer != Peer::Etcd);
    }
    println!(
        "node watch: watchers {:?}, {} per node, {} writes at {}/s; {} cores; RLIMIT_NOFILE {soft}",
        config.sizes,
        config.per_node,
        config.writes,
        config.rate,
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );
    // The writes alone, without watchers: what each peer spends per write before any fan-out.
    let mut baselines = Vec::new();
    let baseline_nodes = (largest / config.per_node).max(1);
    // The field index changes nothing without watchers: `watchcache-no-index` shares the
    // baseline of `watchcache-index` (same binary, same writes).
    for &peer in
        config.peers.iter().filter(|&&peer| peer != Peer::NoIndex || !config.peers.contains(&Peer::Index))
    {
        println!("{}, the writes alone ({baseline_nodes} pods, no watchers):", peer.name());
        let figures = run(peer, 0, baseline_nodes, &config);
        match &figures {
            Ok(figures) => {
                println!("  {}: {:.1} µs server CPU per write", peer.name(), figures.per_write_us())
            }
            Err(error) => println!("  {}: failed: {error}", peer.name()),
        }
        baselines.push((peer, figures.ok().map(|figures| figures.per_write_us())));
    }
    let baseline_of = |peer: Peer| {
        let peer =
            if peer == Peer::NoIndex && config.peers.contains(&Peer::Index) { Peer::Index } else { peer };
        baselines.iter().find(|(of, _)| *of == peer).and_then(|(_, us)| *us)
    };
    let mut rows = Vec::new();
    for &watchers in &config.sizes {
        for &peer in &config.peers {
            let nodes = watchers / config.per_node;
            println!("{} with {watchers} watchers on {nodes} nodes:", peer.name());
            let figures = run(peer, watchers, nodes, &config).map(|mut figures| {
                figures.baseline_us = baseline_of(peer);
                figures
            });
            match &figures {
                Ok(figures) => {
                    println!(
                        "  {}: {:.1} µs server CPU per write, {:.2} µs per delivered event, {} of {} delivered, p99 {} ms",
                        peer.name(),
                        figures.per_write_us(),
                        figures.per_event_us(),
                        figures.delivered,
                        figures.expected,
                        support::ms(figures.p99)
                    );
                    for note in &figures.notes {
                        println!("  note: {note}");
                    }
                }
                Err(error) => println!("  {}: failed: {error}", peer.name()),
            }
            rows.push(Row { peer, watchers, nodes, figures });
        }
    }
    println!();
    println!(
        "node watch: {} writes at {}/s, {} watchers per node (server CPU: utime + stime of watchcache, or of etcd)",
        config.writes, config.rate, config.per_node
    );
    println!();
    print!("{}", table(&rows, config.rate));
    println!();
    print!("{}", scaling(&rows, &config.peers));
    if let Some(path) = &config.svg {
        let series: Vec<(String, Vec<(f64, f64)>)> = config
            .peers
            .iter()
            .map(|&peer| {
                let points = rows
                    .iter()
                    .filter(|row| row.peer == peer)
                    .filter_map(|row| {
                        row.figures.as_ref().ok().map(|f| (row.watchers as f64, f.per_event_us()))
                    })
                    .collect();
                (peer.name().to_owned(), points)
            })
            .collect();
        let title =
            format!("node watch: server CPU per delivered event, {} watchers per node", config.per_node);
        match support::chart(
            path,
            &title,
            "watchers",
            "µs of server CPU per delivered event (writes included)",
            &series,
        ) {
            Ok(()) => println!("chart: {}", path.display()),
            Err(error) => eprintln!("node_watch: {error}"),
        }
    }
    if config.quick {
        let incomplete: Vec<&str> = rows
            .iter()
            .filter(|row| !row.figures.as_ref().is_ok_and(|f| f.complete() && f.delivered == f.expected))
            .map(|row| row.peer.name())
            .collect();
        if !incomplete.is_empty() {
            eprintln!(
                "node_watch: not every watcher got exactly its node's writes, in order: {}",
                incomplete.join(", ")
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
