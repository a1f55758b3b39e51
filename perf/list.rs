//! Whole-system scenario: concurrent LISTs, `cargo bench --bench list`.
//!
//! For each size (`LIST_SIZES`, default 1,000, 10,000 and 100,000 ConfigMaps of ~1 KiB in one
//! namespace, loaded straight into a fresh etcd with kube-apiserver's key layout), a `watchcache`
//! in front of that etcd, then each peer at each concurrency (`LIST_CLIENTS`, default 1, 4 and 16;
//! `LIST_LARGE_CLIENTS`, default 1 and 4, for sizes above 10,000): C closed-loop clients, each on
//! its own connection, for `LIST_SECONDS` (default 3) and at least one list per client. A
//! paginated list is one request per page of 500 (client-go's pager: `limit=500`, then
//! `continue` until the server gives none); its latency is the whole list's.
//!
//! Peers, one process each, in the same run:
//!
//! - `watchcache-rv0`: `GET …/configmaps?resourceVersion=0`, served from the watch cache;
//! - `watchcache-rv0-paged`: `resourceVersion=0&limit=500` and `continue`;
//! - `watchcache-consistent`: no resourceVersion (a consistent list: on Debian's etcd 3.4 it
//!   reads etcd, decodes and re-encodes every object);
//! - `watchcache-consistent-paged`: `limit=500` and `continue`, no resourceVersion: the API
//!   path reading etcd, as an API server without a watch cache serves client-go's pager;
//! - `etcd-range`: one etcd range over the prefix through etcd-client, in this process;
//! - `etcd-range-paged`: ranges of 500 keys at the first page's revision (as kube-apiserver
//!   pages etcd).
//!
//! Reported per peer and concurrency: lists/s, p50/p99 latency, and server CPU per list
//! (utime + stime of watchcache and etcd from /proc, both apart), with the ratios of
//! `watchcache-rv0` to each peer, and SVG charts in `perf/charts/` (`PERF_CHARTS`).
//!
//! Without `--bench` in its arguments (`cargo test --benches`) it is a smoke run: 600 objects,
//! 1 and 2 clients, 0.3 s per point, every peer, and it fails on any error.

#[path = "common/mod.rs"]
mod scenario;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::GetOptions;
use scenario::chart::{Panel, Series};
use scenario::http::{continue_token, Http};
use scenario::load::{self, Level};
use scenario::{micros, procs, ratio};
use serde_json::json;
use watchcache::storage::etcd::{EtcdOptions, EtcdStorage};
use watchcache::storage::Storage;

const NAMESPACE: &str = "default";
const COLLECTION: &str = "/api/v1/namespaces/default/configmaps";
const ETCD_PREFIX: &str = "/registry/configmaps/default/";
const PAGE: usize = 500;
/// The smallest JSON an object of the scenario has, to check that a list returned them all.
const MIN_OBJECT_BYTES: usize = 900;

const PEERS: &[&str] = &[
    "watchcache-rv0",
    "watchcache-rv0-paged",
    "watchcache-consistent",
    "watchcache-consistent-paged",
    "etcd-range",
    "etcd-range-paged",
];

/// The peer the targets compare watchcache's cache with: the API path reading etcd.
const API_ETCD: &str = "watchcache-consistent-paged";

fn configmap(index: usize) -> Bytes {
    let object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": format!("cm-{index:06}"),
            "namespace": NAMESPACE,
            "uid": format!("00000000-0000-0000-0000-{index:012}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "list", "shard": (index % 10).to_string()},
        },
        "data": {"payload": "x".repeat(800)},
    });
    Bytes::from(serde_json::to_vec(&object).unwrap())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Http { rv0: bool, paged: bool },
    Etcd { paged: bool },
}

fn kind(name: &str) -> Result<Kind, String> {
    Ok(match name {
        "watchcache-rv0" => Kind::Http { rv0: true, paged: false },
        "watchcache-rv0-paged" => Kind::Http { rv0: true, paged: true },
        "watchcache-consistent" => Kind::Http { rv0: false, paged: false },
        "watchcache-consistent-paged" => Kind::Http { rv0: false, paged: true },
        "etcd-range" => Kind::Etcd { paged: false },
        "etcd-range-paged" => Kind::Etcd { paged: true },
        _ => return Err(format!("unknown peer {name:?}; peers: {}", PEERS.join(", "))),
    })
}

enum Conn {
    Http(Http),
    Etcd(Box<etcd_client::KvClient>),
}

struct Lister {
    conn: Conn,
    kind: Kind,
    objects: usize,
    /// Pages of the last list.
    pages: usize,
}

impl Lister {
    async fn list(&mut self) -> Result<(), String> {
        let objects = self.objects;
        self.pages = 0;
        match (&mut self.conn, self.kind) {
            (Conn::Http(http), Kind::Http { rv0, paged }) => {
                let mut token: Option<String> = None;
                let mut bytes = 0;
                loop {
                    let mut query = Vec::new();
                    // As client-go's pager: the continue token carries the snapshot, and a
                    // request with one may not name a resourceVersion.
                    if rv0 && token.is_none() {
                        query.push("resourceVersion=0".to_owned());
                    }
                    if paged {
                        query.push(format!("limit={PAGE}"));
                    }
                    if let Some(token) = &token {
                        query.push(format!(
                            "continue={}",
                            form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
                        ));
                    }
                    let path = if query.is_empty() {
                        COLLECTION.to_owned()
                    } else {
                        format!("{COLLECTION}?{}", query.join("&"))
                    };
                    let reply = http.get(&path, 2048).await?;
                    if reply.status != 200 {
                        return Err(format!("GET {path}: HTTP {}: {}", reply.status, reply.text()));
                    }
                    bytes += reply.length;
                    self.pages += 1;
                    token = if paged { continue_token(&reply.body) } else { None };
                    if token.is_none() {
                        break;
                    }
                }
                if bytes < objects * MIN_OBJECT_BYTES {
                    return Err(format!("a list of {bytes} bytes cannot hold {objects} objects"));
                }
            }
            (Conn::Etcd(kv), Kind::Etcd { paged: false }) => {
                let response = kv
                    .get(ETCD_PREFIX, Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(|error| format!("etcd range: {error}"))?;
                self.pages = 1;
                if response.kvs().len() != objects {
                    return Err(format!("etcd range: {} keys, not {objects}", response.kvs().len()));
                }
            }
            (Conn::Etcd(kv), Kind::Etcd { paged: true }) => {
                let end = prefix_end(ETCD_PREFIX);
                let mut key = ETCD_PREFIX.as_bytes().to_vec();
                let mut revision = 0;
                let mut seen = 0;
                loop {
                    let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE as i64);
                    if revision > 0 {
                        options = options.with_revision(revision);
                    }
                    let response = kv
                        .get(key.clone(), Some(options))
                        .await
                        .map_err(|error| format!("etcd range: {error}"))?;
                    if revision == 0 {
                        revision = response.header().map_or(0, |header| header.revision());
                    }
                    self.pages += 1;
                    seen += response.kvs().len();
                    match response.kvs().last() {
                        Some(last) if response.more() => {
                            key = last.key().to_vec();
                            key.push(0);
                        }
                        _ => break,
                    }
                }
                if seen != objects {
                    return Err(format!("etcd paged range: {seen} keys, not {objects}"));
                }
            }
            _ => unreachable!("a peer's connection matches its kind"),
        }
        Ok(())
    }
}

impl load::Client for Lister {
    fn call(&mut self) -> impl std::future::Future<Output = Result<(), String>> + Send {
        self.list()
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    end
}

struct Config {
    sizes: Vec<usize>,
    clients: Vec<usize>,
    large_clients: Vec<usize>,
    seconds: f64,
    peers: Vec<String>,
}

fn config() -> Result<Config, String> {
    if scenario::quick() {
        let peers = PEERS.iter().map(|peer| (*peer).to_owned()).collect();
        return Ok(Config {
            sizes: vec![600],
            clients: vec![1, 2],
            large_clients: vec![1],
            seconds: 0.3,
            peers,
        });
    }
    let peers = scenario::env_names("LIST_PEERS", PEERS);
    for peer in &peers {
        kind(peer)?;
    }
    Ok(Config {
        sizes: scenario::env_list("LIST_SIZES", &[1_000, 10_000, 100_000])?,
        clients: scenario::env_list("LIST_CLIENTS", &[1, 4, 16])?,
        large_clients: scenario::env_list("LIST_LARGE_CLIENTS", &[1, 4])?,
        seconds: scenario::env_number("LIST_SECONDS", 3.0)?,
        peers,
    })
}

/// One peer at one size and concurrency.
struct Point {
    peer: String,
    objects: usize,
    pages: usize,
    level: Level,
}

/// Everything one size needs: etcd with the objects, watchcache in front of it.
struct Setup {
    // Dropped in this order: watchcache before the etcd it reads.
    _watchcache: procs::Process,
    _etcd: procs::Process,
    etcd_url: String,
    address: SocketAddr,
    pids: [u32; 2],
}

fn setup(runtime: &tokio::runtime::Runtime, objects: usize) -> Result<Setup, String> {
    let (etcd, etcd_url) = procs::etcd()?;
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let options = EtcdOptions { prefix: "/registry".into(), ..EtcdOptions::default() };
        let storage: Arc<dyn Storage> = Arc::new(
            EtcdStorage::connect(std::slice::from_ref(&etcd_url), options)
                .await
                .map_err(|error| format!("etcd storage: {error}"))?,
        );
        let mut tasks = Vec::new();
        for lane in 0..64 {
            let storage = Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                for index in (lane..objects).step_by(64) {
                    storage
                        .create(&format!("/configmaps/{NAMESPACE}/cm-{index:06}"), configmap(index))
                        .await
                        .map_err(|error| format!("loading etcd: {error}"))?;
                }
                Ok::<(), String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|error| error.to_string())??;
        }
        Ok::<(), String>(())
    })?;
    println!("  loaded {objects} ConfigMaps into etcd in {:.1} s", started.elapsed().as_secs_f64());
    let (watchcache, address) = procs::watchcache(&[format!("--etcd-endpoints={etcd_url}")])?;
    // Wait until the cache holds every object.
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let mut http = Http::connect(address).await?;
        loop {
            let reply = http.get(&format!("{COLLECTION}?resourceVersion=0"), usize::MAX).await?;
            let count = memchr::memmem::find_iter(&reply.body, b"\"uid\":\"").count();
            if reply.status == 200 && count == objects {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err(format!("the cache holds {count} of {objects} objects after 300 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    println!("  watchcache's cache holds them {:.1} s after its start", started.elapsed().as_secs_f64());
    let pids = [watchcache.pid(), etcd.pid()];
    Ok(Setup { _etcd: etcd, _watchcache: watchcache, etcd_url, address, pids })
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    setup: &Setup,
    peer: &str,
    objects: usize,
    clients: usize,
    seconds: f64,
) -> Result<Point, String> {
    let kind = kind(peer)?;
    let mut listers = runtime.block_on(async {
        let mut listers = Vec::new();
        for _ in 0..clients {
            let conn = match kind {
                Kind::Http { .. } => Conn::Http(Http::connect(setup.address).await?),
                Kind::Etcd { .. } => Conn::Etcd(Box::new(procs::etcd_client(&setup.etcd_url).await?)),
            };
            listers.push(Lister { conn, kind, objects, pages: 0 });
        }
        // Warm-up: one list, which also checks the peer answers in full.
        listers[0].list().await?;
        Ok::<_, String>(listers)
    })?;
    let pages = listers[0].pages;
    let level = load::run(
        runtime,
        std::mem::take(&mut listers),
        Duration::from_secs_f64(seconds),
        clients,
        &setup.pids,
    );
    Ok(Point { peer: peer.to_owned(), objects, pages, level })
}

fn find<'a>(points: &'a [Point], peer: &str, objects: usize, clients: usize) -> Option<&'a Point> {
    points
        .iter()
        .find(|point| point.peer == peer && point.objects == objects && point.level.clients == clients)
}

fn report(points: &[Point], config: &Config) -> String {
    let mut out = String::new();
    for &objects in &config.sizes {
        out.push_str(&format!(
            "\n### {objects} ConfigMaps of ~1 KiB\n\nlists/s ratio: `watchcache-rv0` lists/s ÷ the peer's, at the same concurrency.\n\n"
        ));
        let mut rows = Vec::new();
        for point in points.iter().filter(|point| point.objects == objects) {
            let level = &point.level;
            let cache = find(points, "watchcache-rv0", objects, level.clients);
            let speedup = cache.map_or(f64::NAN, |cache| cache.level.per_second() / level.per_second());
            let cpu = |index: usize| micros(level.cpu[index] * 1e6 / level.requests.max(1) as f64);
            rows.push(vec![
                format!("`{}`", point.peer),
                level.clients.to_string(),
                point.pages.to_string(),
                level.requests.to_string(),
                format!("{:.1}", level.per_second()),
                micros(level.p50),
                micros(level.p99),
                cpu(0),
                cpu(1),
                micros(level.cpu_per_request_us()),
                ratio(speedup),
                format!("{:.2} / {:.2}", level.load_cores(), level.others_cores()),
                if level.errors > 0 { level.errors.to_string() } else { "0".into() },
            ]);
        }
        out.push_str(&scenario::table(
            &[
                "peer",
                "clients",
                "pages",
                "lists",
                "lists/s",
                "p50",
                "p99",
                "watchcache CPU/list",
                "etcd CPU/list",
                "server CPU/list",
                "rv0 lists/s ÷ peer",
                "cores: load generator / other processes",
                "errors",
            ],
            &rows,
        ));
    }
    // The targets, at 10,000 objects (or the size nearest it).
    if let Some(&objects) = config.sizes.iter().min_by_key(|size| size.abs_diff(10_000)) {
        out.push_str(&format!("\n### Targets at {objects} objects\n\n"));
        let mut rows = Vec::new();
        for (peer, target) in [(API_ETCD, 20.0), ("watchcache-consistent", 20.0), ("etcd-range", 5.0)] {
            let clients_levels = if objects > 10_000 { &config.large_clients } else { &config.clients };
            for &clients in clients_levels {
                let (Some(cache), Some(other)) =
                    (find(points, "watchcache-rv0", objects, clients), find(points, peer, objects, clients))
                else {
                    continue;
                };
                let latency = other.level.p50 / cache.level.p50;
                let throughput = cache.level.per_second() / other.level.per_second();
                let cpu = other.level.cpu_per_request_us() / cache.level.cpu_per_request_us();
                rows.push(vec![
                    format!("`{peer}`"),
                    clients.to_string(),
                    ratio(latency),
                    ratio(throughput),
                    ratio(cpu),
                    format!("≥ {target}×"),
                    if throughput >= target {
                        "met".into()
                    } else {
                        format!("missed ({:.0}% of it)", throughput * 100.0 / target)
                    },
                ]);
            }
        }
        out.push_str(&scenario::table(
            &[
                "`watchcache-rv0` against",
                "clients",
                "p50 ratio",
                "lists/s ratio",
                "server CPU ratio",
                "target",
                "lists/s",
            ],
            &rows,
        ));
    }
    // How each peer scales with the objects, one client.
    if config.sizes.len() > 1 {
        out.push_str("\n### Scaling (one client): p50 and server CPU per list by size\n\n");
        let mut rows = Vec::new();
        for peer in &config.peers {
            let mut row = vec![format!("`{peer}`")];
            let mut previous: Option<(usize, f64)> = None;
            let mut growth = Vec::new();
            for &objects in &config.sizes {
                match find(points, peer, objects, 1) {
                    Some(point) => {
                        row.push(format!(
                            "{} / {}",
                            micros(point.level.p50),
                            micros(point.level.cpu_per_request_us())
                        ));
                        if let Some((before, cpu)) = previous {
                            growth.push(format!(
                                "{} for {}× objects",
                                ratio(point.level.cpu_per_request_us() / cpu),
                                objects / before.max(1)
                            ));
                        }
                        previous = Some((objects, point.level.cpu_per_request_us()));
                    }
                    None => row.push("—".into()),
                }
            }
            row.push(growth.join(", "));
            rows.push(row);
        }
        let mut header = vec!["peer".to_owned()];
        header.extend(config.sizes.iter().map(|size| format!("{size} objects")));
        header.push("CPU growth".into());
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&scenario::table(&header, &rows));
    }
    out
}

fn charts(points: &[Point], config: &Config) -> Result<Vec<String>, String> {
    let dir = scenario::chart_dir();
    let mut written = Vec::new();
    for &objects in &config.sizes {
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
                        .filter(|point| &point.peer == peer && point.objects == objects)
                        .map(|point| (point.level.clients as f64, value(&point.level)))
                        .collect(),
                })
                .collect()
        };
        let mut latency = series(&|level| level.p99 / 1e3, false, " p99");
        latency.extend(series(&|level| level.p50 / 1e3, true, " p50"));
        let panels = [
            Panel {
                title: "lists per second".into(),
                x_label: "concurrent clients".into(),
                y_label: "lists/s".into(),
                series: series(&Level::per_second, false, ""),
            },
            Panel {
                title: "latency of a whole list (p99 solid, p50 dashed)".into(),
                x_label: "concurrent clients".into(),
                y_label: "ms".into(),
                series: latency,
            },
            Panel {
                title: "server CPU per list (watchcache + etcd)".into(),
                x_label: "concurrent clients".into(),
                y_label: "ms".into(),
                series: series(&|level| level.cpu_per_request_us() / 1e3, false, ""),
            },
        ];
        let path = dir.join(format!("list-{objects}.svg"));
        scenario::chart::write_svg(&path, &format!("LIST of {objects} ConfigMaps of ~1 KiB"), &panels)?;
        written.push(path.display().to_string());
    }
    if config.sizes.len() > 1 {
        let by_size = |value: &dyn Fn(&Level) -> f64| -> Vec<Series> {
            config
                .peers
                .iter()
                .enumerate()
                .map(|(color, peer)| Series {
                    name: peer.clone(),
                    color,
                    dashed: false,
                    points: points
                        .iter()
                        .filter(|point| &point.peer == peer && point.level.clients == 1)
                        .map(|point| (point.objects as f64, value(&point.level)))
                        .collect(),
                })
                .collect()
        };
        let panels = [
            Panel {
                title: "p50 latency, one client".into(),
                x_label: "objects".into(),
                y_label: "ms".into(),
                series: by_size(&|level| level.p50 / 1e3),
            },
            Panel {
                title: "server CPU per list, one client".into(),
                x_label: "objects".into(),
                y_label: "ms".into(),
                series: by_size(&|level| level.cpu_per_request_us() / 1e3),
            },
        ];
        let path = dir.join("list-scaling.svg");
        scenario::chart::write_svg(&path, "LIST: scaling with the objects", &panels)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn main() -> ExitCode {
    let config = match config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("list: {error}");
            return ExitCode::from(2);
        }
    };
    if procs::etcd_binary().is_none() {
        eprintln!("list: {}: every peer of this scenario reads etcd", procs::NO_ETCD);
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "list: sizes {:?}, clients {:?} ({:?} above 10,000 objects), {} s per point, peers {}; {}",
        config.sizes,
        config.clients,
        config.large_clients,
        config.seconds,
        config.peers.join(", "),
        scenario::machine()
    );
    let mut points = Vec::new();
    let mut failures = 0;
    for &objects in &config.sizes {
        println!("{objects} objects:");
        let setup = match setup(&runtime, objects) {
            Ok(setup) => setup,
            Err(error) => {
                eprintln!("list: {error}");
                return ExitCode::FAILURE;
            }
        };
        let levels = if objects > 10_000 { &config.large_clients } else { &config.clients };
        for peer in &config.peers {
            for &clients in levels {
                match measure(&runtime, &setup, peer, objects, clients, config.seconds) {
                    Ok(point) => {
                        println!("{}", load::progress(peer, &point.level));
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
    println!("{}", report(&points, &config));
    match charts(&points, &config) {
        Ok(written) => println!("charts: {}", written.join(", ")),
        Err(error) => {
            eprintln!("list: charts: {error}");
            failures += 1;
        }
    }
    if scenario::quick() && failures > 0 {
        eprintln!("list: {failures} points failed or saw errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
