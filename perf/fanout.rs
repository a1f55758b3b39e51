//! Whole-system scenario: watch fan-out. W clients watch the ConfigMaps of a namespace while a
//! writer updates them at a steady rate; every (event, watcher) delivery's latency is measured
//! from the moment the write was sent, and the CPU time etcd (and watchcache) spend is read from
//! /proc. Side by side:
//!
//! - `watchcache`: the W watches go to the real `watchcache` binary over HTTP/2 (a few
//!   connections, many streams each); watchcache holds one etcd watch.
//! - `etcd direct`: the W watches go to etcd itself (etcd-client, a few clients), as if every
//!   client watched etcd.
//!
//! Run: `cargo bench --bench fanout` (FANOUT_WATCHERS, FANOUT_EVENTS, FANOUT_RATE to change the
//! defaults of 1,000 watchers, 200 events, 100 writes/s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use etcd_client::{Client, WatchOptions};
use serde_json::json;

const CONNECTIONS: usize = 8;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn configmap(index: usize, sent: u128) -> Bytes {
    let object = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{}", index % 50), "namespace": "default", "uid": format!("uid-{}", index % 50)},
        "data": {"sent": sent.to_string(), "payload": "x".repeat(700)},
    });
    Bytes::from(serde_json::to_vec(&object).unwrap())
}

struct Report {
    name: &'static str,
    samples: Vec<u128>,
    expected: usize,
    etcd_cpu: f64,
    server_cpu: Option<f64>,
}

impl Report {
    fn print(&mut self) {
        self.samples.sort_unstable();
        let percentile = |p: f64| {
            if self.samples.is_empty() {
                return f64::NAN;
            }
            let index = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
            self.samples[index] as f64 / 1e6
        };
        println!(
            "{:<12} deliveries {:>7}/{:<7} latency ms p50 {:>7.2} p90 {:>7.2} p99 {:>7.2} max {:>8.2}   etcd cpu {:>5.2} s{}",
            self.name,
            self.samples.len(),
            self.expected,
            percentile(0.50),
            percentile(0.90),
            percentile(0.99),
            percentile(1.0),
            self.etcd_cpu,
            self.server_cpu.map(|cpu| format!("   watchcache cpu {cpu:.2} s")).unwrap_or_default(),
        );
    }
}

/// Writes `events` updates at `rate` per second straight into etcd.
async fn write(urls: &[String], events: usize, rate: usize) {
    let mut client = Client::connect(urls, None).await.unwrap();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for index in 0..events {
        let due = start + interval * index as u32;
        tokio::time::sleep_until(due.into()).await;
        client
            .put(
                format!("/registry/configmaps/default/cm-{}", index % 50),
                configmap(index, now_nanos()).to_vec(),
                None,
            )
            .await
            .unwrap();
    }
}

fn sent_of(object: &serde_json::Value) -> Option<u128> {
    object["data"]["sent"].as_str().and_then(|sent| sent.parse().ok())
}

async fn through_watchcache(
    urls: &[String],
    etcd_pid: u32,
    watchers: usize,
    events: usize,
    rate: usize,
) -> Report {
    let server = common::ServerProcess::start(&["--etcd-endpoints", &urls[0]]);
    let server_pid = server.child.id();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(watchers * events)));
    let clients: Vec<Arc<common::Http>> =
        (0..CONNECTIONS).map(|_| Arc::new(common::Http::new(&server.address, true))).collect();
    let revision = clients[0].get("/api/v1/namespaces/default/configmaps").await.json()["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tasks = Vec::new();
    for index in 0..watchers {
        let http = Arc::clone(&clients[index % CONNECTIONS]);
        let samples = Arc::clone(&samples);
        let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={revision}");
        let mut watch = http.watch(&path).await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(events);
            while mine.len() < events {
                let Some(event) = watch.next_event().await else { break };
                if let Some(sent) = sent_of(&event["object"]) {
                    mine.push(now_nanos().saturating_sub(sent));
                }
            }
            samples.lock().unwrap().extend(mine);
        }));
    }
    let (etcd_before, server_before) = (cpu_seconds(etcd_pid), cpu_seconds(server_pid));
    write(urls, events, rate).await;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    Report {
        name: "watchcache",
        samples,
        expected: watchers * events,
        etcd_cpu: cpu_seconds(etcd_pid) - etcd_before,
        server_cpu: Some(cpu_seconds(server_pid) - server_before),
    }
}

async fn etcd_direct(urls: &[String], etcd_pid: u32, watchers: usize, events: usize, rate: usize) -> Report {
    let samples = Arc::new(Mutex::new(Vec::with_capacity(watchers * events)));
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(Client::connect(urls, None).await.unwrap());
    }
    let mut tasks = Vec::new();
    for index in 0..watchers {
        let mut client = clients[index % CONNECTIONS].clone();
        let samples = Arc::clone(&samples);
        let mut stream = client
            .watch("/registry/configmaps/default/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(events);
            while mine.len() < events {
                let Ok(Some(response)) = stream.message().await else { break };
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let object: serde_json::Value = serde_json::from_slice(kv.value()).unwrap_or_default();
                    if let Some(sent) = sent_of(&object) {
                        mine.push(now_nanos().saturating_sub(sent));
                    }
                }
            }
            samples.lock().unwrap().extend(mine);
        }));
    }
    let etcd_before = cpu_seconds(etcd_pid);
    write(urls, events, rate).await;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    Report {
        name: "etcd direct",
        samples,
        expected: watchers * events,
        etcd_cpu: cpu_seconds(etcd_pid) - etcd_before,
        server_cpu: None,
    }
}

fn main() {
    // `cargo test --benches` runs benches once in test mode: keep that quick.
    let quick = std::env::args().any(|arg| arg == "--test");
    let watchers = env("FANOUT_WATCHERS", if quick { 20 } else { 1_000 });
    let events = env("FANOUT_EVENTS", if quick { 10 } else { 200 });
    let rate = env("FANOUT_RATE", 100);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = common::EtcdCluster::start(1);
    let urls = cluster.client_urls();
    let etcd_pid = cluster.pids()[0];
    println!("watch fan-out: {watchers} watchers, {events} updates at {rate}/s, 1 KiB ConfigMaps, etcd 3.4 (1 member)");
    runtime.block_on(async {
        // Every object exists before the watches start.
        let mut client = Client::connect(&urls, None).await.unwrap();
        for index in 0..50 {
            client
                .put(format!("/registry/configmaps/default/cm-{index}"), configmap(index, 0).to_vec(), None)
                .await
                .unwrap();
        }
        through_watchcache(&urls, etcd_pid, watchers, events, rate).await.print();
        etcd_direct(&urls, etcd_pid, watchers, events, rate).await.print();
    });
}
