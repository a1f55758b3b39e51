//! Whole-system scenario: memory stays bounded under many watchers and a flood of writes,
//! `cargo bench --bench overload`.
//!
//! `watchcache serve` on its embedded store, with a ring capped at `--watch-cache-max-bytes`
//! (`OVERLOAD_RING`, default 64Mi). W watchers (`OVERLOAD_WATCHERS`, default 10,000) of one
//! namespace's ConfigMaps, each on its own HTTP/1.1 connection: a tenth read and discard what
//! they get, the rest never read at all (a stalled client: its socket buffers fill, then its
//! queue, and the server must shed it rather than hold its events). Meanwhile C writers
//! (`OVERLOAD_WRITERS`, default 8), closed loop, PATCH 100 ConfigMaps of ~10 KiB in turn as fast
//! as they are answered for `OVERLOAD_SECONDS` (default 60): the data stays the same size, the
//! event stream does not stop.
//!
//! The server's RSS is sampled every 250 ms. The bound it must stay under: its RSS once every
//! watch is open (connections included), plus the ring's byte cap, plus 64 MiB of slack for
//! the allocator, the writers' requests and redb's cache. The scenario prints progress every
//! second and a table, and **exits non-zero when the peak RSS crosses the bound** (or when a
//! write fails), so the bound is asserted, not only reported.
//!
//! Without `--bench` in its arguments (`cargo test --benches`) it is a smoke run: 200 watchers,
//! 2 writers, 3 s.

#[path = "common/mod.rs"]
mod scenario;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use scenario::http::Http;
use scenario::procs;
use serde_json::json;

const COLLECTION: &str = "/api/v1/namespaces/default/configmaps";
const OBJECTS: usize = 100;
const SLACK: u64 = 64 << 20;

fn payload(seq: u64) -> String {
    let unit = format!("{seq:012};");
    unit.repeat(10 * 1024 / unit.len())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A value of the server's `/metrics`, 0 if absent.
async fn metric(address: SocketAddr, name: &str) -> f64 {
    let Ok(mut http) = Http::connect(address).await else { return 0.0 };
    let Ok(reply) = http.get("/metrics", usize::MAX).await else { return 0.0 };
    String::from_utf8_lossy(&reply.body)
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens a watch on a raw connection and returns it unread.
fn open_watch(address: SocketAddr, revision: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(address).map_err(|error| format!("connect: {error}"))?;
    write!(
        stream,
        "GET {COLLECTION}?watch=1&resourceVersion={revision}&timeoutSeconds=3600 HTTP/1.1\r\nHost: watchcache\r\n\r\n"
    )
    .map_err(|error| format!("watch request: {error}"))?;
    Ok(stream)
}

async fn run() -> Result<bool, String> {
    let quick = scenario::quick();
    let watchers: usize = if quick { 200 } else { scenario::env_number("OVERLOAD_WATCHERS", 10_000)? };
    let writers: usize = if quick { 2 } else { scenario::env_number("OVERLOAD_WRITERS", 8)? };
    let seconds: u64 = if quick { 3 } else { scenario::env_number("OVERLOAD_SECONDS", 60)? };
    let ring = std::env::var("OVERLOAD_RING").unwrap_or_else(|_| "64Mi".into());
    let ring_bytes = watchcache::cli::parse_size(&ring).map_err(|error| format!("OVERLOAD_RING: {error}"))?;
    let (soft, _) = procs::raise_nofile();
    if (soft as usize) < watchers + 256 {
        return Err(format!(
            "the descriptor limit is {soft}, below the {} that {watchers} watchers need: raise it (ulimit -n)",
            watchers + 256
        ));
    }
    println!("{}", scenario::machine());
    println!("{watchers} watchers (a tenth reading), {writers} writers for {seconds} s, ring cap {ring}");
    let (mut server, address) = procs::watchcache(&[
        format!("--watch-cache-max-bytes={ring}"),
        "--max-mutating-requests-inflight=1000".into(),
        format!("--max-watches={}", watchers + 100),
    ])?;
    let pid = server.pid();

    let mut http = Http::connect(address).await?;
    let mut revision = String::new();
    for index in 0..OBJECTS {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{index}")},
            "data": {"payload": payload(0)}});
        let reply = http
            .request("POST", COLLECTION, "application/json", Bytes::from(object.to_string()), usize::MAX)
            .await?;
        if reply.status != 201 {
            return Err(format!("create: {} {}", reply.status, reply.text()));
        }
        let created: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|error| format!("create: {error}"))?;
        revision =
            created["metadata"]["resourceVersion"].as_str().ok_or("create: no resourceVersion")?.to_owned();
    }

    println!("  {OBJECTS} ConfigMaps of ~10 KiB created, RSS {}", mib(procs::rss_bytes(pid)));
    // The watchers: a tenth drain their streams (four threads share them); the others are
    // never read.
    let mut stalled = Vec::new();
    let readers = (watchers / 10).max(1);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut reading = Vec::new();
    for index in 0..watchers {
        let stream = open_watch(address, &revision)?;
        if index < readers {
            reading.push(stream);
        } else {
            stalled.push(stream);
        }
        if index % 1000 == 999 {
            println!("  {} watches open, RSS {}", index + 1, mib(procs::rss_bytes(pid)));
        }
    }
    let chunk = reading.len().div_ceil(4);
    let mut drain_threads = Vec::new();
    for group in reading.chunks(chunk.max(1)) {
        let streams: Vec<TcpStream> = group.iter().map(|stream| stream.try_clone().expect("clone")).collect();
        let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
        drain_threads.push(std::thread::spawn(move || drain(streams, &received, &stop)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = metric(address, "watchcache_watchers").await;
    let baseline = procs::rss_bytes(pid);
    let bound = baseline + ring_bytes + SLACK;
    println!("  watches open: {open}; RSS {}; bound {}", mib(baseline), mib(bound));

    // The flood.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let writes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (writes, failures) = (Arc::clone(&writes), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let Ok(mut http) = Http::connect(address).await else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut seq = writer as u64;
            while Instant::now() < deadline {
                let path = format!("{COLLECTION}/cm-{}", seq as usize % OBJECTS);
                let body = json!({"data": {"payload": payload(seq)}}).to_string();
                match http
                    .request("PATCH", &path, "application/merge-patch+json", Bytes::from(body), 256)
                    .await
                {
                    Ok(reply) if reply.status == 200 => {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) if reply.status == 429 => tokio::time::sleep(Duration::from_millis(10)).await,
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq += writers as u64;
            }
        }));
    }
    let started = Instant::now();
    let mut peak = baseline;
    let mut last_print = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(exit) = server.exited() {
            return Err(format!("watchcache exited during the flood: {exit}"));
        }
        let rss = procs::rss_bytes(pid);
        peak = peak.max(rss);
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            println!(
                "  {:>4.0} s  writes {:>7}  RSS {:>10}  peak {:>10}  events read by the readers {}",
                started.elapsed().as_secs_f64(),
                writes.load(Ordering::Relaxed),
                mib(rss),
                mib(peak),
                received.load(Ordering::Relaxed)
            );
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let shed = metric(address, "watchcache_watchers_shed").await;
    let still_open = metric(address, "watchcache_watchers").await;
    let ring_held = metric(address, "watchcache_ring_bytes").await;
    stop.store(true, Ordering::Relaxed);
    drop(stalled);
    for thread in drain_threads {
        let _ = thread.join();
    }
    let writes = writes.load(Ordering::Relaxed);
    let failures = failures.load(Ordering::Relaxed);
    let within = peak <= bound;
    println!();
    println!(
        "{}",
        scenario::table(
            &[
                "watchers",
                "writers",
                "writes",
                "writes/s",
                "RSS with watches open",
                "peak RSS",
                "bound",
                "peak / bound",
                "watchers shed",
                "still open",
                "ring bytes at the end",
                "failed writes"
            ],
            &[vec![
                watchers.to_string(),
                writers.to_string(),
                writes.to_string(),
                format!("{:.0}", writes as f64 / elapsed),
                mib(baseline),
                mib(peak),
                mib(bound),
                format!("{:.2}", peak as f64 / bound as f64),
                format!("{shed:.0}"),
                format!("{still_open:.0}"),
                mib(ring_held as u64),
                failures.to_string(),
            ]],
        )
    );
    if !within {
        println!("FAILED: the peak RSS {} crossed the bound {}", mib(peak), mib(bound));
    }
    if failures > 0 {
        println!("FAILED: {failures} writes failed");
    }
    Ok(within && failures == 0 && writes > 0)
}

/// Reads and discards what `streams` receive until `stop`, counting bytes as events (~10 KiB).
fn drain(streams: Vec<TcpStream>, received: &AtomicU64, stop: &AtomicBool) {
    use std::io::Read;
    for stream in &streams {
        let _ = stream.set_nonblocking(true);
    }
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut any = false;
        for mut stream in &streams {
            if let Ok(read) = stream.read(&mut buffer) {
                if read > 0 {
                    any = true;
                    received.fetch_add((read / 10_240) as u64, Ordering::Relaxed);
                }
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn main() -> ExitCode {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("overload: {error}");
            ExitCode::FAILURE
        }
    }
}
