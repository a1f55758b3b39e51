//! One run: start the peer's processes, open the W watches, warm up, measure the timed writes and
//! their delivery, collect every watcher's receipts.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procs::{self, Cpu, Process};
use crate::watch::{self, Mix, Receipts, Shared};
use crate::write::{self, Target, WriteLog, Writer};
use crate::{object, Config};

/// How long the watches may take to open, and the warm-up write to reach every watcher.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(180);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last write: how long deliveries may make no progress before the run stops waiting.
const DRAIN_STALL: Duration = Duration::from_secs(10);

/// What a peer is.
#[derive(Clone, Debug)]
pub enum Kind {
    /// The watchcache binary: embedded store or etcd behind it; HTTP/1.1 or HTTP/2 watchers;
    /// over HTTP/1.1, JSON or protobuf watchers or half of each.
    Watchcache { binary: PathBuf, etcd: bool, http2: bool, mix: Mix },
    /// The bare floor server.
    Floor { coalesce: bool },
    /// etcd watched directly, or through `etcd grpc-proxy`.
    Etcd { proxy: bool },
}

#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub kind: Kind,
}

impl Peer {
    pub fn needs_etcd(&self) -> bool {
        matches!(self.kind, Kind::Watchcache { etcd: true, .. } | Kind::Etcd { .. })
    }
}

/// What one run measured.
pub struct Measured {
    pub log: WriteLog,
    pub receipts: Vec<Receipts>,
    /// CPU of the server the watchers talk to over the measured window.
    pub server: Cpu,
    /// CPU of the etcd behind it (watchcache on etcd, grpc-proxy).
    pub etcd: Option<Cpu>,
    /// CPU of this process (watchers and writer).
    pub load: Cpu,
    /// CPU the machine spent on anything else (other processes) over the window.
    pub others: f64,
    /// CPU time the hypervisor kept from the machine (steal) over the window.
    pub steal: f64,
    /// The measured window: from the first timed write to the last delivery (or giving up).
    pub window: f64,
    pub bytes: u64,
    pub notes: Vec<String>,
}

/// What is running for one peer; all of it stops on drop.
struct Running {
    processes: Vec<Process>,
    _cluster: Option<crate::common::EtcdCluster>,
    server_pid: u32,
    etcd_pid: Option<u32>,
}

impl Running {
    fn exited(&mut self) -> Option<String> {
        self.processes.iter_mut().find_map(Process::exited)
    }
}

fn start_etcd() -> (crate::common::EtcdCluster, String, u32) {
    let cluster = crate::common::EtcdCluster::start(1);
    let url = cluster.client_urls()[0].clone();
    let pid = cluster.pids()[0];
    (cluster, url, pid)
}

/// Starts the peer and its watchers; returns what runs and where the writer writes.
fn start(
    peer: &Peer,
    config: &Config,
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    slots: &[watch::Slot],
    shared: &Arc<Shared>,
) -> Result<(Running, Target), String> {
    match &peer.kind {
        Kind::Watchcache { binary, etcd, http2, mix } => {
            let mut cluster = None;
            let mut etcd_pid = None;
            let mut etcd_url = None;
            if *etcd {
                let (started, url, pid) = start_etcd();
                cluster = Some(started);
                etcd_pid = Some(pid);
                etcd_url = Some(url);
            }
            let (process, address) = procs::watchcache(binary, &dir.join("data"), etcd_url.as_deref())?;
            let running =
                Running { server_pid: process.pid(), processes: vec![process], _cluster: cluster, etcd_pid };
            let version = runtime.block_on(write::prepare_watchcache(address))?;
            let path = format!("{}?watch=1&resourceVersion={version}", object::COLLECTION_PATH);
            if *http2 {
                let needed = config.watchers.div_ceil(crate::H2_STREAMS_PER_CONNECTION);
                let connections = config.h2_connections.max(needed).max(1);
                if connections > config.h2_connections {
                    println!(
                        "  {connections} HTTP/2 connections instead of {}: the server allows {} streams on one",
                        config.h2_connections,
                        crate::H2_STREAMS_PER_CONNECTION
                    );
                }
                watch::spawn_http2(runtime, address, &path, connections, slots, shared);
            } else {
                watch::spawn_http1(runtime, address, &path, *mix, slots, shared);
            }
            Ok((running, Target::Watchcache(address)))
        }
        Kind::Floor { coalesce } => {
            let (process, watches, control) = procs::floor(*coalesce)?;
            let running = Running {
                server_pid: process.pid(),
                processes: vec![process],
                _cluster: None,
                etcd_pid: None,
            };
            let path = format!("{}?watch=1&resourceVersion=1000", object::COLLECTION_PATH);
            watch::spawn_http1(runtime, watches, &path, Mix::Json, slots, shared);
            Ok((running, Target::Floor(control)))
        }
        Kind::Etcd { proxy } => {
            let (cluster, url, etcd_pid) = start_etcd();
            let revision = runtime.block_on(write::prepare_etcd(&url))?;
            let mut running = Running {
                processes: Vec::new(),
                _cluster: Some(cluster),
                server_pid: etcd_pid,
                etcd_pid: None,
            };
            let mut endpoint = url.clone();
            if *proxy {
                let binary = procs::etcd_binary().ok_or("etcd is not installed")?;
                let (process, proxy_url) = procs::grpc_proxy(&binary, &url, dir)?;
                running.server_pid = process.pid();
                running.etcd_pid = Some(etcd_pid);
                running.processes.push(process);
                endpoint = proxy_url;
            }
            watch::spawn_etcd(
                runtime,
                &endpoint,
                revision + 1,
                crate::ETCD_WATCHES_PER_CONNECTION,
                slots,
                shared,
            );
            Ok((running, Target::Etcd(url)))
        }
    }
}

fn percent(cpu: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        100.0 * cpu / seconds
    } else {
        0.0
    }
}

/// Polls `done` until it holds or `timeout` passes, printing `progress` every second.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool, mut progress: impl FnMut() -> String) -> bool {
    let deadline = Instant::now() + timeout;
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now > deadline {
            return false;
        }
        if now >= next {
            println!("{}", progress());
            next += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run(peer: &Peer, config: &Config) -> Result<Measured, String> {
    let watchers = config.watchers;
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("watchers")
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let shared = Arc::new(Shared::new(config.writes));
    let slots = watch::slots(watchers, config.writes);
    let mut notes = Vec::new();
    let (mut running, target) = start(peer, config, dir.path(), &runtime, &slots, &shared)?;
    let name = &peer.name;

    // Every watch open.
    let opened = Instant::now();
    let all_open = wait_for(
        ESTABLISH_TIMEOUT,
        || shared.established.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= watchers,
        || {
            format!(
                "  {name}: {} of {watchers} watches open, {} failed",
                shared.established.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed)
            )
        },
    );
    let established = shared.established.load(Ordering::Relaxed);
    println!("  {name}: {established} of {watchers} watches open in {:.1} s", opened.elapsed().as_secs_f64());
    if !all_open {
        notes.push(format!("only {established} of {watchers} watches opened within {ESTABLISH_TIMEOUT:?}"));
    }
    let first_failure =
        || slots.iter().find_map(|slot| slot.lock().unwrap().failure.clone()).unwrap_or_default();
    if established == 0 {
        return Err(format!("no watch opened: {}", first_failure()));
    }

    // The warm-up write reaches every watcher.
    let mut writer = Writer::start(target, config.writes, config.rate, Arc::clone(&shared));
    writer.warmed_up(WARM_UP_TIMEOUT)?;
    let all_warm = wait_for(
        WARM_UP_TIMEOUT,
        || shared.warm.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= watchers,
        || {
            format!(
                "  {name}: warm-up write received by {} of {watchers}",
                shared.warm.load(Ordering::Relaxed)
            )
        },
    );
    if shared.failed.load(Ordering::Relaxed) >= watchers {
        return Err(format!("every watcher failed before the timed writes; the first: {}", first_failure()));
    }
    if !all_warm {
        notes.push(format!(
            "{} of {watchers} watchers never received the warm-up write",
            watchers - shared.warm.load(Ordering::Relaxed)
        ));
    }

    // The timed writes and their delivery.
    let cpu_of = |running: &Running| {
        (
            procs::cpu(Some(running.server_pid)),
            running.etcd_pid.map(|pid| procs::cpu(Some(pid))),
            procs::cpu(None),
            procs::machine_busy(),
        )
    };
    let before = cpu_of(&running);
    let started = Instant::now();
    writer.go();
    let mut last = (started, before.0, before.2, 0u64);
    let mut next_print = started + Duration::from_secs(1);
    let mut stalled_since = Instant::now();
    let mut last_delivered = 0;
    let mut writer_done: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let acked = shared.acked.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if delivered != last_delivered {
            last_delivered = delivered;
            stalled_since = now;
        }
        if now >= next_print {
            next_print += Duration::from_secs(1);
            let (server, load) = (procs::cpu(Some(running.server_pid)), procs::cpu(None));
            let seconds = now.duration_since(last.0).as_secs_f64();
            println!(
                "  {name} {:>5.1} s: writes {acked}/{} ({:.0}/s), deliveries {delivered} of {} ({:.0}k/s), \
                 failed {failed}; CPU: server {:.0}%, load generator {:.0}%",
                now.duration_since(started).as_secs_f64(),
                config.writes,
                f64::from(acked) / now.duration_since(started).as_secs_f64(),
                u64::from(acked) * (watchers - failed) as u64,
                (delivered - last.3) as f64 / seconds / 1e3,
                percent(server.since(last.1).total(), seconds),
                percent(load.since(last.2).total(), seconds),
            );
            last = (now, server, load, delivered);
        }
        if let Some(exited) = running.exited() {
            notes.push(format!("the server exited during the run: {exited}"));
            break;
        }
        match writer_done {
            None if writer.is_finished() => {
                writer_done = Some(now);
                stalled_since = now;
            }
            None => continue,
            Some(_) => {}
        }
        let finished = shared.finished.load(Ordering::Relaxed);
        let alive = (watchers - failed) as u64;
        if finished >= watchers || (acked < config.writes && delivered >= alive * u64::from(acked)) {
            break;
        }
        if now.duration_since(stalled_since) > DRAIN_STALL {
            notes.push(format!(
                "{} watchers had not received the last write {} s after deliveries stopped",
                watchers - finished,
                DRAIN_STALL.as_secs()
            ));
            break;
        }
    }
    let after = cpu_of(&running);
    let window = started.elapsed().as_secs_f64();
    shared.stopping.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(2));
    let log = writer.join();
    if let Some(error) = &log.error {
        notes.push(format!("the writer stopped after {} writes: {error}", log.acked));
    }
    drop(running);
    let receipts = slots.iter().map(|slot| std::mem::take(&mut *slot.lock().unwrap())).collect();
    let server = after.0.since(before.0);
    let etcd = after.1.zip(before.1).map(|(after, before)| after.since(before));
    let load = after.2.since(before.2);
    let ours = server.total() + etcd.map_or(0.0, Cpu::total) + load.total();
    let ((busy_before, steal_before), (busy_after, steal_after)) = (before.3, after.3);
    let others = (busy_after - busy_before - ours).max(0.0);
    if others > 0.1 * window {
        notes.push(format!(
            "other processes used {:.0}% of a core during the run: these figures are disturbed",
            100.0 * others / window
        ));
    }
    let steal = steal_after - steal_before;
    if steal > 0.1 * window {
        notes.push(format!(
            "the hypervisor kept {:.0}% of a core from this machine during the run (steal): these \
             figures are disturbed",
            100.0 * steal / window
        ));
    }
    Ok(Measured {
        log,
        receipts,
        server,
        etcd,
        load,
        others,
        steal,
        window,
        bytes: shared.bytes.load(Ordering::Relaxed),
        notes,
    })
}
