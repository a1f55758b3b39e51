//! Whole-system scenario: writes through the API, `cargo bench --bench writes`.
//!
//! At each concurrency (`WRITES_CLIENTS`, default 1, 4, 16, 64 and 256), C closed-loop clients,
//! each on its own connection, first create ConfigMaps of ~1 KiB (POST, a new name each time)
//! for `WRITES_SECONDS` (default 2), then update one ConfigMap each (merge PATCH of
//! `data.payload` and `data.seq`) for as long. Peers, each on a fresh server:
//!
//! - `watchcache-embedded`: watchcache on its embedded store (redb, fsync per commit);
//! - `watchcache-etcd`: watchcache in front of an etcd 3.4 the scenario starts;
//! - `etcd`: raw puts of the same ~1 KiB ConfigMap into that etcd through etcd-client (a new key
//!   per create, the client's own key per update), all clients sharing one connection as an API
//!   server's storage does.
//!
//! Reported per peer, phase and concurrency: writes/s, p50/p99 latency, server CPU per write
//! (watchcache and etcd apart, from /proc), writes/s ÷ raw etcd puts, and the cores the load
//! generator and the machine's other processes used meanwhile (from /proc/stat); SVG charts in
//! `perf/charts/` (`PERF_CHARTS`). The servers run with `--max-mutating-requests-inflight=1000`
//! so that 256 writers are not throttled with 429s (the default is kube's 200).
//!
//! Without `--bench` in its arguments (`cargo test --benches`) it is a smoke run: 1 and 4
//! clients, 0.3 s per phase, every peer, and it fails on any error.

#[path = "common/mod.rs"]
mod scenario;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use scenario::chart::{Panel, Series};
use scenario::http::Http;
use scenario::load::{self, Level};
use scenario::{micros, procs, ratio};
use serde_json::json;

const NAMESPACE: &str = "writes";
const COLLECTION: &str = "/api/v1/namespaces/writes/configmaps";
const ETCD_PREFIX: &str = "/registry/configmaps/writes/";
const PEERS: &[&str] = &["watchcache-embedded", "watchcache-etcd", "etcd"];
const PAYLOAD: usize = 800;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Create,
    Update,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Update => "update",
        }
    }
}

fn payload(seq: u64) -> String {
    let letter = char::from(b'a' + (seq % 26) as u8);
    std::iter::repeat_n(letter, PAYLOAD).collect()
}

fn name(level: usize, client: usize, seq: u64) -> String {
    format!("w-{level}-{client}-{seq}")
}

/// The ConfigMap as POSTed.
fn create_body(name: &str, seq: u64) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "writes"}},
            "data": {"seq": seq.to_string(), "payload": payload(seq)},
        }))
        .unwrap(),
    )
}

/// The ConfigMap as an API server would store it (what the raw etcd puts write).
fn stored(name: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": "6b1f3c2e-9a4d-4e8b-b7c1-0d2f5a6e7b80",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "writes"},
        },
        "data": {"seq": seq.to_string(), "payload": payload(seq)},
    }))
    .unwrap()
}

enum Conn {
    Http(Http),
    Etcd(Box<etcd_client::KvClient>),
}

struct Writer {
    conn: Conn,
    phase: Phase,
    level: usize,
    client: usize,
    seq: u64,
}

impl Writer {
    async fn write(&mut self) -> Result<(), String> {
        // Creates name a new object each time; updates change the client's object 0 (created
        // by the first create of the same level).
        let seq = self.seq;
        self.seq += 1;
        let (level, client) = (self.level, self.client);
        match (&mut self.conn, self.phase) {
            (Conn::Http(http), Phase::Create) => {
                let reply = http
                    .request(
                        "POST",
                        COLLECTION,
                        "application/json",
                        create_body(&name(level, client, seq), seq),
                        512,
                    )
                    .await?;
                if reply.status != 201 {
                    return Err(format!("POST: HTTP {}: {}", reply.status, reply.text()));
                }
            }
            (Conn::Http(http), Phase::Update) => {
                let patch = json!({"data": {"seq": format!("u{seq}"), "payload": payload(seq + 1)}});
                let path = format!("{COLLECTION}/{}", name(level, client, 0));
                let reply = http
                    .request(
                        "PATCH",
                        &path,
                        "application/merge-patch+json",
                        Bytes::from(serde_json::to_vec(&patch).unwrap()),
                        512,
                    )
                    .await?;
                if reply.status != 200 {
                    return Err(format!("PATCH {path}: HTTP {}: {}", reply.status, reply.text()));
                }
            }
            (Conn::Etcd(kv), phase) => {
                let object = if phase == Phase::Create { seq } else { 0 };
                let key = format!("{ETCD_PREFIX}{}", name(level, client, object));
                kv.put(key, stored(&name(level, client, object), seq), None)
                    .await
                    .map_err(|error| format!("etcd put: {error}"))?;
            }
        }
        Ok(())
    }
}

impl load::Client for Writer {
    fn call(&mut self) -> impl std::future::Future<Output = Result<(), String>> + Send {
        self.write()
    }
}

struct Config {
    clients: Vec<usize>,
    seconds: f64,
    peers: Vec<String>,
}

fn config() -> Result<Config, String> {
    if scenario::quick() {
        let peers = PEERS.iter().map(|peer| (*peer).to_owned()).collect();
        return Ok(Config { clients: vec![1, 4], seconds: 0.3, peers });
    }
    let peers = scenario::env_names("WRITES_PEERS", PEERS);
    if let Some(unknown) = peers.iter().find(|peer| !PEERS.contains(&peer.as_str())) {
        return Err(format!("unknown peer {unknown:?}; peers: {}", PEERS.join(", ")));
    }
    Ok(Config {
        clients: scenario::env_list("WRITES_CLIENTS", &[1, 4, 16, 64, 256])?,
        seconds: scenario::env_number("WRITES_SECONDS", 2.0)?,
        peers,
    })
}

struct Point {
    peer: String,
    phase: Phase,
    level: Level,
}

/// A peer's processes: watchcache (unless raw etcd) and etcd (unless embedded).
struct Setup {
    // Dropped in this order: watchcache before the etcd it writes to.
    _watchcache: Option<procs::Process>,
    _etcd: Option<procs::Process>,
    address: Option<SocketAddr>,
    etcd_url: Option<String>,
    /// watchcache's pid, then etcd's (0 when absent: no CPU).
    pids: Vec<u32>,
}

fn setup(runtime: &tokio::runtime::Runtime, peer: &str) -> Result<Setup, String> {
    let (etcd, etcd_url) = if peer == "watchcache-embedded" {
        (None, None)
    } else {
        let (process, url) = procs::etcd()?;
        (Some(process), Some(url))
    };
    let (watchcache, address) = if peer == "etcd" {
        (None, None)
    } else {
        let mut args = vec!["--max-mutating-requests-inflight=1000".to_owned()];
        if let Some(url) = &etcd_url {
            args.push(format!("--etcd-endpoints={url}"));
        }
        let (process, address) = procs::watchcache(&args)?;
        runtime.block_on(async {
            let mut http = Http::connect(address).await?;
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
            let reply = http
                .request("POST", "/api/v1/namespaces", "application/json", Bytes::from(body.to_string()), 512)
                .await?;
            if reply.status != 201 && reply.status != 409 {
                return Err(format!("creating the namespace: HTTP {}: {}", reply.status, reply.text()));
            }
            Ok::<(), String>(())
        })?;
        (Some(process), Some(address))
    };
    let pids = vec![
        watchcache.as_ref().map_or(0, procs::Process::pid),
        etcd.as_ref().map_or(0, procs::Process::pid),
    ];
    Ok(Setup { _watchcache: watchcache, _etcd: etcd, address, etcd_url, pids })
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    setup: &Setup,
    peer: &str,
    phase: Phase,
    clients: usize,
    seconds: f64,
) -> Result<Point, String> {
    let writers = runtime.block_on(async {
        let shared = match &setup.etcd_url {
            Some(url) if setup.address.is_none() => Some(procs::etcd_client(url).await?),
            _ => None,
        };
        let mut writers = Vec::new();
        for client in 0..clients {
            let conn = match (&shared, setup.address) {
                (Some(kv), _) => Conn::Etcd(Box::new(kv.clone())),
                (None, Some(address)) => Conn::Http(Http::connect(address).await?),
                (None, None) => unreachable!("a peer has watchcache or etcd"),
            };
            // Updates start after the creates of the same level: their object 0 exists.
            let seq = if phase == Phase::Create { 0 } else { 1 };
            writers.push(Writer { conn, phase, level: clients, client, seq });
        }
        Ok::<_, String>(writers)
    })?;
    let pids: Vec<u32> = setup.pids.iter().copied().filter(|pid| *pid != 0).collect();
    let mut level = load::run(runtime, writers, Duration::from_secs_f64(seconds), clients, &pids);
    // Keep the CPU in the order watchcache, etcd, with 0 for a process the peer has not.
    let mut cpu = level.cpu.iter();
    level.cpu =
        setup.pids.iter().map(|pid| if *pid == 0 { 0.0 } else { *cpu.next().unwrap_or(&0.0) }).collect();
    Ok(Point { peer: peer.to_owned(), phase, level })
}

fn find<'a>(points: &'a [Point], peer: &str, phase: Phase, clients: usize) -> Option<&'a Point> {
    points.iter().find(|point| point.peer == peer && point.phase == phase && point.level.clients == clients)
}

fn report(points: &[Point], config: &Config) -> String {
    let mut out = String::new();
    for phase in [Phase::Create, Phase::Update] {
        out.push_str(&format!("\n### {}s (~1 KiB ConfigMaps)\n\n", phase.name()));
        let mut rows = Vec::new();
        for &clients in &config.clients {
            for point in points.iter().filter(|point| point.phase == phase && point.level.clients == clients)
            {
                let level = &point.level;
                let raw = find(points, "etcd", phase, clients);
                let against = raw.map_or(f64::NAN, |raw| level.per_second() / raw.level.per_second());
                let cpu = |index: usize| micros(level.cpu[index] * 1e6 / level.requests.max(1) as f64);
                rows.push(vec![
                    format!("`{}`", point.peer),
                    clients.to_string(),
                    level.requests.to_string(),
                    format!("{:.0}", level.per_second()),
                    micros(level.p50),
                    micros(level.p99),
                    cpu(0),
                    cpu(1),
                    ratio(against),
                    format!("{:.2} / {:.2}", level.load_cores(), level.others_cores()),
                    level.errors.to_string(),
                ]);
            }
        }
        out.push_str(&scenario::table(
            &[
                "peer",
                "clients",
                "writes",
                "writes/s",
                "p50",
                "p99",
                "watchcache CPU/write",
                "etcd CPU/write",
                "writes/s ÷ raw etcd puts",
                "cores: load generator / other processes",
                "errors",
            ],
            &rows,
        ));
    }
    out.push_str("\n### Target: writes through the API on etcd ≥ 0.8× raw etcd puts\n\n");
    let mut rows = Vec::new();
    for phase in [Phase::Create, Phase::Update] {
        for &clients in &config.clients {
            let (Some(api), Some(raw)) =
                (find(points, "watchcache-etcd", phase, clients), find(points, "etcd", phase, clients))
            else {
                continue;
            };
            let against = api.level.per_second() / raw.level.per_second();
            rows.push(vec![
                phase.name().to_owned(),
                clients.to_string(),
                format!("{:.0}", api.level.per_second()),
                format!("{:.0}", raw.level.per_second()),
                ratio(against),
                if against >= 0.8 {
                    "met".into()
                } else {
                    format!("missed ({:.0}% of it)", against * 100.0 / 0.8)
                },
            ]);
        }
    }
    out.push_str(&scenario::table(
        &["phase", "clients", "watchcache-etcd writes/s", "raw etcd puts/s", "ratio", "≥ 0.8×"],
        &rows,
    ));
    out
}

fn charts(points: &[Point], config: &Config) -> Result<Vec<String>, String> {
    let dir = scenario::chart_dir();
    let mut written = Vec::new();
    for phase in [Phase::Create, Phase::Update] {
        let series = |value: &dyn Fn(&Level) -> f64, dashed: bool, suffix: &str| -> Vec<Series> {
            config
                .peers
                .iter()
                .enumerate()
                .map(|(color, peer)| Series {
                    name: format!("{peer}{suffix}"),
                    color,
                    dashed,
                    points: points
                        .iter()
                        .filter(|point| &point.peer == peer && point.phase == phase)
                        .map(|point| (point.level.clients as f64, value(&point.level)))
                        .collect(),
                })
                .collect()
        };
        let mut latency = series(&|level| level.p99 / 1e3, false, " p99");
        latency.extend(series(&|level| level.p50 / 1e3, true, " p50"));
        let panels = [
            Panel {
                title: format!("{}s per second", phase.name()),
                x_label: "concurrent clients".into(),
                y_label: "writes/s".into(),
                series: series(&Level::per_second, false, ""),
            },
            Panel {
                title: "latency (p99 solid, p50 dashed)".into(),
                x_label: "concurrent clients".into(),
                y_label: "ms".into(),
                series: latency,
            },
            Panel {
                title: "server CPU per write (watchcache + etcd)".into(),
                x_label: "concurrent clients".into(),
                y_label: "µs".into(),
                series: series(&Level::cpu_per_request_us, false, ""),
            },
        ];
        let path = dir.join(format!("writes-{}.svg", phase.name()));
        scenario::chart::write_svg(&path, &format!("{}s of ~1 KiB ConfigMaps", phase.name()), &panels)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut config = match config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("writes: {error}");
            return ExitCode::from(2);
        }
    };
    let (soft, hard) = procs::raise_nofile();
    let needed = config.clients.iter().max().copied().unwrap_or(0) as u64 * 2 + 256;
    if soft < needed {
        eprintln!("writes: RLIMIT_NOFILE is {soft} (hard {hard}), below the {needed} descriptors needed");
        return ExitCode::FAILURE;
    }
    if procs::etcd_binary().is_none() {
        if scenario::quick() {
            eprintln!(
                "writes: {}: the smoke run covers the etcd peers and does not pass without them",
                procs::NO_ETCD
            );
            return ExitCode::FAILURE;
        }
        println!("{}: skipping watchcache-etcd and etcd", procs::NO_ETCD);
        config.peers.retain(|peer| peer == "watchcache-embedded");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "writes: clients {:?}, {} s per phase and point, peers {}; {}; RLIMIT_NOFILE {soft}",
        config.clients,
        config.seconds,
        config.peers.join(", "),
        scenario::machine()
    );
    // Every peer's servers start first; then at each concurrency and phase the peers run one
    // after the other, so that what else the machine does at a time weighs on all of them alike.
    let mut setups = Vec::new();
    let mut failures = 0;
    for peer in &config.peers {
        match setup(&runtime, peer) {
            Ok(setup) => setups.push((peer.clone(), setup)),
            Err(error) => {
                println!("{peer}: failed to start: {error}");
                failures += 1;
            }
        }
    }
    let mut points = Vec::new();
    for &clients in &config.clients {
        for phase in [Phase::Create, Phase::Update] {
            for (peer, setup) in &setups {
                match measure(&runtime, setup, peer, phase, clients, config.seconds) {
                    Ok(point) => {
                        println!("{}", load::progress(&format!("{peer} {}s", phase.name()), &point.level));
                        failures += usize::from(point.level.errors > 0);
                        points.push(point);
                    }
                    Err(error) => {
                        println!("  {peer}, {clients} clients: failed: {error}");
                        failures += 1;
                    }
                }
            }
        }
    }
    drop(setups);
    println!("{}", report(&points, &config));
    match charts(&points, &config) {
        Ok(written) => println!("charts: {}", written.join(", ")),
        Err(error) => {
            eprintln!("writes: charts: {error}");
            failures += 1;
        }
    }
    if scenario::quick() && failures > 0 {
        eprintln!("writes: {failures} points failed or saw errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
