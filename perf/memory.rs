//! Whole-system scenario: memory against the JSON size, `cargo bench --bench memory`.
//!
//! Objects: for each object size (`MEMORY_OBJECT_KIB`, default 1 and 10 KiB), a fresh etcd and a
//! watchcache in front of it; ConfigMaps are created through watchcache's API (16 clients) up to
//! each checkpoint of `MEMORY_OBJECTS` (default 10,000, 30,000 and 100,000). At each checkpoint,
//! once the cache has caught up with the last create and a second has passed, the RSS of
//! watchcache and of etcd (VmRSS, /proc/<pid>/status). Reported: RSS growth per object ÷ the
//! object's JSON size (the mean body of the POST responses: the object as the server returns
//! it), and the growth between two checkpoints per object created between them (free of the
//! start-up RSS, which moves by megabytes as start-up allocations are returned). watchcache on etcd, so that its RSS is the watch cache (store and ring) and the server
//! alone, not a storage engine's cache. Target (issue 11): ≤ 1.5×.
//!
//! Watchers: idle watches of one namespace's ConfigMaps opened up to each checkpoint of
//! `MEMORY_WATCHERS` (default 1,000, 3,000 and 10,000), two seconds after the last opened, the
//! server's RSS growth per watcher, for each transport (`MEMORY_TRANSPORTS`):
//!
//! - `http1`: one HTTP/1.1 connection per watch, on `watchcache serve --in-memory`;
//! - `http2`: HTTP/2 streams, 100 per connection (prior knowledge), on the same kind of server;
//! - `etcd`: etcd's own watches (etcd-client, 100 watch streams per connection), etcd's RSS.
//!
//! Target (issue 11): ≤ 4 KiB per watcher, connection included. The scenario raises its soft
//! RLIMIT_NOFILE to the hard limit (the servers inherit it) and says so when that is too low.
//!
//! Without `--bench` in its arguments (`cargo test --benches`) it is a smoke run: 300 and 600
//! objects of 1 KiB, 20 and 40 watchers on each transport, and it fails if a part failed.

#[path = "common/mod.rs"]
mod scenario;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use scenario::chart::{Panel, Series};
use scenario::http::Http;
use scenario::procs;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "memory";
const COLLECTION: &str = "/api/v1/namespaces/memory/configmaps";
const WATCH_PATH: &str = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=3600";
const STREAMS_PER_CONNECTION: usize = 100;
const WRITERS: usize = 16;
const OBJECT_TARGET: f64 = 1.5;
const WATCHER_TARGET: f64 = 4096.0;

struct Config {
    object_kib: Vec<usize>,
    objects: Vec<usize>,
    watchers: Vec<usize>,
    transports: Vec<String>,
}

fn config() -> Result<Config, String> {
    if scenario::quick() {
        let transports = ["http1", "http2", "etcd"].iter().map(|name| (*name).to_owned()).collect();
        return Ok(Config {
            object_kib: vec![1],
            objects: vec![300, 600],
            watchers: vec![20, 40],
            transports,
        });
    }
    let mut objects = scenario::env_list("MEMORY_OBJECTS", &[10_000, 30_000, 100_000])?;
    objects.sort_unstable();
    let mut watchers = scenario::env_list("MEMORY_WATCHERS", &[1_000, 3_000, 10_000])?;
    watchers.sort_unstable();
    let transports = scenario::env_names("MEMORY_TRANSPORTS", &["http1", "http2", "etcd"]);
    if let Some(unknown) = transports.iter().find(|name| !["http1", "http2", "etcd"].contains(&name.as_str()))
    {
        return Err(format!("unknown transport {unknown:?}: http1, http2, etcd"));
    }
    Ok(Config {
        object_kib: scenario::env_list("MEMORY_OBJECT_KIB", &[1, 10])?,
        objects,
        watchers,
        transports,
    })
}

/// The ConfigMap `index` of about `kib` KiB of JSON.
fn configmap(index: usize, kib: usize) -> Bytes {
    let payload = "x".repeat((kib * 1024).saturating_sub(330));
    Bytes::from(
        serde_json::to_vec(&json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": format!("cm-{index:06}"),
                "namespace": NAMESPACE,
                "labels": {"app": "memory", "shard": (index % 10).to_string()},
                "annotations": {"perf/scenario": "memory"},
            },
            "data": {"payload": payload},
        }))
        .unwrap(),
    )
}

/// One checkpoint of the objects part.
struct ObjectPoint {
    kib: usize,
    objects: usize,
    json_bytes: f64,
    watchcache: u64,
    etcd: u64,
}

struct ObjectRun {
    kib: usize,
    base_watchcache: u64,
    base_etcd: u64,
    points: Vec<ObjectPoint>,
}

/// Waits until the RSS of `pid` holds still (four readings a second apart within 0.5% of each
/// other), at most fifteen seconds; the last reading.
fn settle(pid: u32) -> u64 {
    let mut readings = vec![procs::rss_bytes(pid)];
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(1));
        readings.push(procs::rss_bytes(pid));
        let last = &readings[readings.len().saturating_sub(4)..];
        let (low, high) = (last.iter().min().unwrap(), last.iter().max().unwrap());
        if last.len() == 4 && (high - low) * 200 <= *high {
            break;
        }
    }
    *readings.last().unwrap()
}

fn objects_run(
    runtime: &tokio::runtime::Runtime,
    kib: usize,
    checkpoints: &[usize],
) -> Result<ObjectRun, String> {
    let (etcd, url) = procs::etcd()?;
    let (watchcache, address) = procs::watchcache(&[format!("--etcd-endpoints={url}")])?;
    let (pid, etcd_pid) = (watchcache.pid(), etcd.pid());
    runtime.block_on(async {
        let mut http = Http::connect(address).await?;
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        let reply = http
            .request("POST", "/api/v1/namespaces", "application/json", Bytes::from(body.to_string()), 512)
            .await?;
        if reply.status != 201 {
            return Err(format!("creating the namespace: HTTP {}: {}", reply.status, reply.text()));
        }
        // The first list of the collection builds what a list needs; not counted per object.
        http.get(&format!("{COLLECTION}?resourceVersion=0"), 0).await?;
        Ok::<(), String>(())
    })?;
    let base_watchcache = settle(pid);
    let mut run =
        ObjectRun { kib, base_watchcache, base_etcd: procs::rss_bytes(etcd_pid), points: Vec::new() };
    println!(
        "  {kib} KiB: before the objects, RSS watchcache {:.1} MiB, etcd {:.1} MiB",
        run.base_watchcache as f64 / 1048576.0,
        run.base_etcd as f64 / 1048576.0
    );
    let mut created = 0usize;
    let mut json_total = 0u64;
    let started = Instant::now();
    for &checkpoint in checkpoints {
        let (bytes, last_version) = runtime.block_on(create(address, created, checkpoint, kib))?;
        json_total += bytes;
        created = checkpoint;
        runtime.block_on(caught_up(address, &last_version))?;
        let watchcache = settle(pid);
        let point = ObjectPoint {
            kib,
            objects: created,
            json_bytes: json_total as f64 / created as f64,
            watchcache,
            etcd: procs::rss_bytes(etcd_pid),
        };
        let per = (point.watchcache.saturating_sub(run.base_watchcache)) as f64 / created as f64;
        println!(
            "  {kib} KiB: {created} objects after {:.0} s, JSON {:.0} B each; watchcache RSS {:.1} MiB, {per:.0} B per object ({:.2}× JSON); etcd RSS {:.1} MiB",
            started.elapsed().as_secs_f64(),
            point.json_bytes,
            point.watchcache as f64 / 1048576.0,
            per / point.json_bytes,
            point.etcd as f64 / 1048576.0,
        );
        run.points.push(point);
    }
    drop(watchcache);
    drop(etcd);
    Ok(run)
}

/// Creates objects `from..to` through the API; the JSON bytes of the responses and the last
/// resourceVersion.
async fn create(address: SocketAddr, from: usize, to: usize, kib: usize) -> Result<(u64, String), String> {
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(address).await?;
            let mut bytes = 0u64;
            let mut last = (0usize, String::new());
            loop {
                // Relaxed: hands out indexes; orders nothing else.
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= to {
                    break;
                }
                let reply =
                    http.request("POST", COLLECTION, "application/json", configmap(index, kib), 512).await?;
                if reply.status != 201 {
                    return Err(format!("POST: HTTP {}: {}", reply.status, reply.text()));
                }
                bytes += reply.length as u64;
                let head = String::from_utf8_lossy(&reply.body).into_owned();
                if let Some(version) =
                    head.split("\"resourceVersion\":\"").nth(1).and_then(|rest| rest.split('"').next())
                {
                    let version: usize = version.parse().unwrap_or(0);
                    if version > last.0 {
                        last = (version, version.to_string());
                    }
                }
            }
            Ok::<_, String>((bytes, last))
        }));
    }
    let mut bytes = 0;
    let mut last = (0usize, String::new());
    for task in tasks {
        let (task_bytes, task_last) = task.await.map_err(|error| error.to_string())??;
        bytes += task_bytes;
        if task_last.0 > last.0 {
            last = task_last;
        }
    }
    Ok((bytes, last.1))
}

/// Waits until a list from the cache is at least at `version`.
async fn caught_up(address: SocketAddr, version: &str) -> Result<(), String> {
    let mut http = Http::connect(address).await?;
    let path = format!("{COLLECTION}?resourceVersion={version}&resourceVersionMatch=NotOlderThan&limit=1");
    let reply = http.get(&path, 512).await?;
    if reply.status != 200 {
        return Err(format!("GET {path}: HTTP {}: {}", reply.status, reply.text()));
    }
    Ok(())
}

/// One checkpoint of the watchers part.
struct WatcherPoint {
    transport: String,
    watchers: usize,
    rss: u64,
}

struct WatcherRun {
    transport: String,
    base: u64,
    points: Vec<WatcherPoint>,
    note: Option<String>,
}

/// What keeps a watch open (held, never read).
#[allow(dead_code)]
enum Held {
    Tcp(tokio::net::TcpStream),
    H2(hyper::Response<hyper::body::Incoming>),
    Etcd(etcd_client::WatchStream),
}

async fn http1_watch(address: SocketAddr) -> Result<Held, String> {
    let mut stream =
        tokio::net::TcpStream::connect(address).await.map_err(|error| format!("connect: {error}"))?;
    stream
        .write_all(format!("GET {WATCH_PATH} HTTP/1.1\r\nHost: watchcache\r\n\r\n").as_bytes())
        .await
        .map_err(|error| format!("write: {error}"))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("the server closed the watch".into());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!("watch: {}", String::from_utf8_lossy(&head[..head.len().min(200)])));
    }
    Ok(Held::Tcp(stream))
}

async fn h2_connection(
    address: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<Empty<Bytes>>, String> {
    let stream =
        tokio::net::TcpStream::connect(address).await.map_err(|error| format!("connect: {error}"))?;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|error| format!("HTTP/2 handshake: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn h2_watch(mut sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>) -> Result<Held, String> {
    sender.ready().await.map_err(|error| format!("HTTP/2: {error}"))?;
    let request =
        http::Request::builder().uri(WATCH_PATH).header("host", "watchcache").body(Empty::new()).unwrap();
    let response = sender.send_request(request).await.map_err(|error| format!("HTTP/2 watch: {error}"))?;
    if response.status() != 200 {
        return Err(format!("HTTP/2 watch: {}", response.status()));
    }
    Ok(Held::H2(response))
}

async fn etcd_watch(mut client: etcd_client::Client) -> Result<Held, String> {
    let options = etcd_client::WatchOptions::new().with_prefix();
    let mut stream = client
        .watch("/registry/configmaps/default/", Some(options))
        .await
        .map_err(|error| format!("etcd watch: {error}"))?;
    // The created response: the watch is registered.
    stream.message().await.map_err(|error| format!("etcd watch: {error}"))?;
    Ok(Held::Etcd(stream))
}

fn watchers_run(
    runtime: &tokio::runtime::Runtime,
    transport: &str,
    checkpoints: &[usize],
) -> Result<WatcherRun, String> {
    let (process, address, url) = if transport == "etcd" {
        let (process, url) = procs::etcd()?;
        (process, None, Some(url))
    } else {
        let (process, address) = procs::watchcache(&["--in-memory".to_owned()])?;
        (process, Some(address), None)
    };
    let pid = process.pid();
    let mut held: Vec<Held> = Vec::new();
    let base = settle(pid);
    let mut run = WatcherRun { transport: transport.to_owned(), base, points: Vec::new(), note: None };
    println!("  {transport}: server RSS before the watchers {:.1} MiB", base as f64 / 1048576.0);
    let mut senders = Vec::new();
    let mut etcd_clients = Vec::new();
    for &checkpoint in checkpoints {
        let result = runtime.block_on(async {
            while held.len() < checkpoint {
                let batch = (checkpoint - held.len()).min(200);
                let mut opening = Vec::new();
                for _ in 0..batch {
                    let index = held.len() + opening.len();
                    opening.push(match (transport, address, &url) {
                        ("http1", Some(address), _) => tokio::spawn(http1_watch(address)),
                        ("http2", Some(address), _) => {
                            if index % STREAMS_PER_CONNECTION == 0 {
                                senders.push(h2_connection(address).await?);
                            }
                            tokio::spawn(h2_watch(senders.last().unwrap().clone()))
                        }
                        (_, _, Some(url)) => {
                            if index % STREAMS_PER_CONNECTION == 0 {
                                etcd_clients.push(
                                    etcd_client::Client::connect([url.as_str()], None)
                                        .await
                                        .map_err(|error| format!("etcd-client: {error}"))?,
                                );
                            }
                            tokio::spawn(etcd_watch(etcd_clients.last().unwrap().clone()))
                        }
                        _ => unreachable!("a transport has its server"),
                    });
                }
                for task in opening {
                    held.push(task.await.map_err(|error| error.to_string())??);
                }
            }
            Ok::<(), String>(())
        });
        if let Err(error) = result {
            run.note = Some(format!("stopped at {} watchers: {error}", held.len()));
            println!("  {transport}: {}", run.note.as_deref().unwrap());
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let rss = settle(pid);
        println!(
            "  {transport}: {checkpoint} watchers, RSS {:.1} MiB, {:.0} B per watcher",
            rss as f64 / 1048576.0,
            rss.saturating_sub(base) as f64 / checkpoint as f64
        );
        run.points.push(WatcherPoint { transport: transport.to_owned(), watchers: checkpoint, rss });
    }
    runtime.block_on(async move {
        drop(held);
        drop(senders);
        drop(etcd_clients);
    });
    drop(process);
    Ok(run)
}

fn report(objects: &[ObjectRun], watchers: &[WatcherRun]) -> String {
    let mut out = String::new();
    if !objects.is_empty() {
        out.push_str("\n### Objects: RSS growth per object against its JSON (watchcache on etcd)\n\n");
        let mut rows = Vec::new();
        for run in objects {
            let mut previous: Option<&ObjectPoint> = None;
            for point in &run.points {
                let per = point.watchcache.saturating_sub(run.base_watchcache) as f64 / point.objects as f64;
                let etcd = point.etcd.saturating_sub(run.base_etcd) as f64 / point.objects as f64;
                let ratio = per / point.json_bytes;
                // The growth between two checkpoints per object created between them: free of
                // the start-up RSS, which swings by megabytes as start-up allocations return.
                let marginal = previous.map(|before| {
                    (point.watchcache as f64 - before.watchcache as f64)
                        / (point.objects - before.objects) as f64
                });
                let judged = marginal.map_or(ratio, |marginal| ratio.max(marginal / point.json_bytes));
                rows.push(vec![
                    format!("{} × {} KiB", point.objects, point.kib),
                    format!("{:.0} B", point.json_bytes),
                    format!("{:.1} MiB", point.watchcache as f64 / 1048576.0),
                    format!("{per:.0} B"),
                    scenario::ratio(ratio),
                    marginal.map_or("—".into(), |marginal| {
                        format!("{marginal:.0} B, {}", scenario::ratio(marginal / point.json_bytes))
                    }),
                    format!("{etcd:.0} B"),
                    scenario::ratio(etcd / point.json_bytes),
                    if judged <= OBJECT_TARGET {
                        "met".into()
                    } else {
                        format!("missed by {:.0}%", (judged / OBJECT_TARGET - 1.0) * 100.0)
                    },
                ]);
                previous = Some(point);
            }
        }
        out.push_str(&scenario::table(
            &[
                "objects",
                "JSON per object",
                "watchcache RSS",
                "watchcache growth per object",
                "÷ JSON",
                "since the previous checkpoint, per object, ÷ JSON",
                "etcd growth per object",
                "etcd ÷ JSON",
                "≤ 1.5× JSON (both measures)",
            ],
            &rows,
        ));
    }
    if !watchers.is_empty() {
        out.push_str("\n### Idle watchers: server RSS growth per watcher\n\n");
        let mut rows = Vec::new();
        for run in watchers {
            for point in &run.points {
                let per = point.rss.saturating_sub(run.base) as f64 / point.watchers as f64;
                rows.push(vec![
                    format!("`{}`", point.transport),
                    point.watchers.to_string(),
                    format!("{:.1} MiB", point.rss as f64 / 1048576.0),
                    format!("{per:.0} B"),
                    if point.transport == "etcd" {
                        "(peer)".into()
                    } else if per <= WATCHER_TARGET {
                        "met".into()
                    } else {
                        format!("missed by {:.1}×", per / WATCHER_TARGET)
                    },
                ]);
            }
            if let Some(note) = &run.note {
                rows.push(vec![
                    format!("`{}`", run.transport),
                    note.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
        out.push_str(&scenario::table(
            &["transport", "watchers", "server RSS", "per watcher", "≤ 4 KiB"],
            &rows,
        ));
    }
    out
}

fn charts(objects: &[ObjectRun], watchers: &[WatcherRun]) -> Result<Vec<String>, String> {
    let dir = scenario::chart_dir();
    let mut written = Vec::new();
    if !objects.is_empty() {
        let mut ratio_series = Vec::new();
        let mut bytes_series = Vec::new();
        for (index, run) in objects.iter().enumerate() {
            let per = |rss: fn(&ObjectPoint) -> u64, base: u64| -> Vec<(f64, f64)> {
                run.points
                    .iter()
                    .map(|point| {
                        (point.objects as f64, rss(point).saturating_sub(base) as f64 / point.objects as f64)
                    })
                    .collect()
            };
            let cache = per(|point| point.watchcache, run.base_watchcache);
            let etcd = per(|point| point.etcd, run.base_etcd);
            let json: Vec<f64> = run.points.iter().map(|point| point.json_bytes).collect();
            let over = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
                points.iter().zip(&json).map(|((x, y), json)| (*x, y / json)).collect()
            };
            ratio_series.push(Series {
                name: format!("watchcache, {} KiB", run.kib),
                color: index * 2,
                dashed: false,
                points: over(&cache),
            });
            ratio_series.push(Series {
                name: format!("etcd, {} KiB", run.kib),
                color: index * 2 + 1,
                dashed: false,
                points: over(&etcd),
            });
            bytes_series.push(Series {
                name: format!("watchcache, {} KiB", run.kib),
                color: index * 2,
                dashed: false,
                points: cache,
            });
            bytes_series.push(Series {
                name: format!("etcd, {} KiB", run.kib),
                color: index * 2 + 1,
                dashed: false,
                points: etcd,
            });
            bytes_series.push(Series {
                name: format!("JSON, {} KiB", run.kib),
                color: 7,
                dashed: true,
                points: run.points.iter().map(|point| (point.objects as f64, point.json_bytes)).collect(),
            });
        }
        let xs: Vec<f64> =
            objects.iter().flat_map(|run| run.points.iter().map(|point| point.objects as f64)).collect();
        if let (Some(low), Some(high)) =
            (xs.iter().copied().reduce(f64::min), xs.iter().copied().reduce(f64::max))
        {
            ratio_series.push(Series {
                name: "target 1.5×".into(),
                color: 6,
                dashed: true,
                points: vec![(low, 1.5), (high, 1.5)],
            });
        }
        let panels = [
            Panel {
                title: "RSS growth per object ÷ its JSON".into(),
                x_label: "objects".into(),
                y_label: "× JSON".into(),
                series: ratio_series,
            },
            Panel {
                title: "RSS growth per object".into(),
                x_label: "objects".into(),
                y_label: "bytes".into(),
                series: bytes_series,
            },
        ];
        let path = dir.join("memory-objects.svg");
        scenario::chart::write_svg(&path, "Memory per cached object (watchcache on etcd)", &panels)?;
        written.push(path.display().to_string());
    }
    if !watchers.is_empty() {
        let mut series: Vec<Series> = watchers
            .iter()
            .enumerate()
            .map(|(color, run)| Series {
                name: if run.transport == "etcd" {
                    "etcd (peer)".into()
                } else {
                    format!("watchcache {}", run.transport)
                },
                color,
                dashed: false,
                points: run
                    .points
                    .iter()
                    .map(|point| {
                        (
                            point.watchers as f64,
                            point.rss.saturating_sub(run.base) as f64 / point.watchers as f64,
                        )
                    })
                    .collect(),
            })
            .collect();
        let xs: Vec<f64> =
            watchers.iter().flat_map(|run| run.points.iter().map(|point| point.watchers as f64)).collect();
        if let (Some(low), Some(high)) =
            (xs.iter().copied().reduce(f64::min), xs.iter().copied().reduce(f64::max))
        {
            series.push(Series {
                name: "target 4 KiB".into(),
                color: 6,
                dashed: true,
                points: vec![(low, 4096.0), (high, 4096.0)],
            });
        }
        let panels = [Panel {
            title: "server RSS growth per idle watcher".into(),
            x_label: "watchers".into(),
            y_label: "bytes".into(),
            series,
        }];
        let path = dir.join("memory-watchers.svg");
        scenario::chart::write_svg(&path, "Memory per idle watcher", &panels)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut config = match config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("memory: {error}");
            return ExitCode::from(2);
        }
    };
    let (soft, hard) = procs::raise_nofile();
    let most = config.watchers.last().copied().unwrap_or(0);
    // The client holds one socket per HTTP/1.1 watcher, the server one more each.
    let needed = most as u64 + 512;
    println!(
        "memory: {} (RLIMIT_NOFILE raised to the hard limit: soft {soft}, hard {hard})",
        scenario::machine()
    );
    if soft < needed {
        let fits = soft.saturating_sub(512) as usize;
        println!(
            "memory: RLIMIT_NOFILE {soft} (hard {hard}) cannot hold {most} watchers ({needed} descriptors): \
             raise the hard limit (ulimit -Hn {needed}, as root) for the full size; measuring up to {fits}"
        );
        config.watchers.retain(|watchers| *watchers <= fits);
    }
    if procs::etcd_binary().is_none() {
        if scenario::quick() {
            eprintln!(
                "memory: {}: the smoke run covers the etcd peers and does not pass without them",
                procs::NO_ETCD
            );
            return ExitCode::FAILURE;
        }
        println!("{}: skipping the objects part (watchcache on etcd) and the etcd watchers", procs::NO_ETCD);
        config.object_kib.clear();
        config.transports.retain(|transport| transport != "etcd");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut objects = Vec::new();
    println!(
        "objects: {:?} of {:?} KiB through the API, {WRITERS} writers",
        config.objects, config.object_kib
    );
    let mut failures = 0;
    for &kib in &config.object_kib {
        match objects_run(&runtime, kib, &config.objects) {
            Ok(run) => objects.push(run),
            Err(error) => {
                println!("  {kib} KiB: failed: {error}");
                failures += 1;
            }
        }
    }
    let mut watchers = Vec::new();
    println!("idle watchers: {:?} over {}", config.watchers, config.transports.join(", "));
    for transport in &config.transports {
        match watchers_run(&runtime, transport, &config.watchers) {
            Ok(run) => {
                failures += usize::from(run.note.is_some());
                watchers.push(run);
            }
            Err(error) => {
                println!("  {transport}: failed: {error}");
                failures += 1;
            }
        }
    }
    println!("{}", report(&objects, &watchers));
    match charts(&objects, &watchers) {
        Ok(written) => println!("charts: {}", written.join(", ")),
        Err(error) => {
            eprintln!("memory: charts: {error}");
            failures += 1;
        }
    }
    if scenario::quick() && failures > 0 {
        eprintln!("memory: {failures} parts failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
