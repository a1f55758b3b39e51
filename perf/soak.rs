//! The soak scenario: two watchcache replicas on a real three-member etcd, 1,000 informer-like
//! watchers over them, steady writers, and etcd faults on a schedule (a follower killed and
//! restarted, a follower frozen with SIGSTOP and resumed, the leader killed and restarted, in
//! turn) while each replica compacts etcd on its interval. At the end it checks every watcher
//! and every acknowledged write (see `soak/workload.rs`) and prints a table: lost, duplicated
//! and out-of-order events (all must be 0), writes acknowledged against writes found, p99
//! write and delivery latencies. It exits non-zero if any check failed.
//!
//! `cargo bench --bench soak`; environment: `SOAK_SECONDS` (default 600), `SOAK_WATCHERS`
//! (1000), `SOAK_WRITERS` (2), `SOAK_WRITE_PAUSE_MS` (50, per writer), `SOAK_FAULT_SECONDS`
//! (30: one fault per period, healed half-way), `SOAK_COMPACTION` (20s), `SOAK_RING` (256: each
//! replica's `--watch-cache-capacity`, small so that lagging watchers come back to a 410).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "soak/workload.rs"]
mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, EtcdCluster, ServerProcess};
use workload::{Finish, WatcherConfig, WriterConfig};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// utime + stime of a process in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (field(11) + field(12)) / ticks
}

fn raise_nofile() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let clean = runtime.block_on(run());
    std::process::exit(if clean { 0 } else { 1 });
}

async fn run() -> bool {
    let seconds: u64 = env("SOAK_SECONDS", 600);
    let watchers: usize = env("SOAK_WATCHERS", 1000);
    let writers: usize = env("SOAK_WRITERS", 2);
    let pause = Duration::from_millis(env("SOAK_WRITE_PAUSE_MS", 50));
    let fault_period = Duration::from_secs(env("SOAK_FAULT_SECONDS", 30));
    let compaction: String = env("SOAK_COMPACTION", "20s".to_owned());
    let ring: u64 = env("SOAK_RING", 256);
    let started = Instant::now();
    let log = |message: String| eprintln!("[{:7.1} s] {message}", started.elapsed().as_secs_f64());

    let mut cluster = EtcdCluster::start(3);
    let urls = cluster.client_urls();
    let compaction_flag = format!("--etcd-compaction-interval={compaction}");
    let ring_flag = format!("--watch-cache-capacity={ring}");
    let addresses: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let logs = tempfile::tempdir().unwrap();
    let replicas: Vec<ServerProcess> = (0..2)
        .map(|index| {
            // Each replica prefers another member first.
            let mut order = urls.clone();
            order.rotate_left(index);
            let endpoints = format!("--etcd-endpoints={}", order.join(","));
            let args = [
                endpoints.as_str(),
                compaction_flag.as_str(),
                ring_flag.as_str(),
                "--max-requests-inflight=0",
                "--log-format=json",
            ];
            let server = ServerProcess::start_logged(
                &addresses[index],
                &args,
                &logs.path().join(format!("replica{index}.log")),
            );
            server.wait_ready(Duration::from_secs(60));
            server
        })
        .collect();
    let cpu_before: Vec<f64> = replicas.iter().map(|replica| cpu_seconds(replica.child.id())).collect();
    log(format!(
        "etcd {urls:?}, replicas {addresses:?}; {watchers} watchers, {writers} writers, {seconds} s"
    ));

    let client = workload::client();
    let finish = Arc::new(Finish::default());
    let watcher_tasks: Vec<_> = (0..watchers)
        .map(|index| {
            // One in 50 stays away for longer than a compaction interval (and the ring) now
            // and then; its events are late by design, so it does not count for latency.
            let lagging = index % 50 == 7;
            let config = WatcherConfig {
                server: addresses[index % 2].clone(),
                namespace: "default".into(),
                lag: lagging.then_some((300, Duration::from_secs(25))),
                timeout_seconds: 60 + (index % 60) as u64,
                measure: !lagging,
                cached_list: true,
            };
            tokio::spawn(workload::watcher(client.clone(), config, Arc::clone(&finish)))
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer_tasks: Vec<_> = (0..writers)
        .map(|id| {
            let config = WriterConfig {
                server: addresses[id % 2].clone(),
                namespace: "default".into(),
                id,
                keys: 50,
                pause,
            };
            tokio::spawn(workload::writer(client.clone(), config, Arc::clone(&stop)))
        })
        .collect();

    // Faults on a schedule: one per period, healed half-way through it.
    let deadline = started + Duration::from_secs(seconds);
    let mut faults = Vec::new();
    let mut round = 0usize;
    tokio::time::sleep(fault_period / 2).await;
    while Instant::now() + fault_period < deadline {
        let half = fault_period / 2;
        match round % 3 {
            0 => {
                let victim = cluster.follower(Duration::from_secs(30)).await;
                log(format!("kill follower member{victim}"));
                cluster.kill(victim);
                tokio::time::sleep(half).await;
                tokio::task::block_in_place(|| cluster.restart(victim));
                log(format!("restarted member{victim}"));
                faults.push("follower killed");
            }
            1 => {
                let victim = cluster.follower(Duration::from_secs(30)).await;
                log(format!("SIGSTOP member{victim}"));
                cluster.freeze(victim);
                tokio::time::sleep(half).await;
                cluster.thaw(victim);
                log(format!("SIGCONT member{victim}"));
                faults.push("follower frozen");
            }
            _ => {
                let victim = cluster.leader(Duration::from_secs(30)).await;
                log(format!("kill leader member{victim}"));
                cluster.kill(victim);
                tokio::time::sleep(half).await;
                tokio::task::block_in_place(|| cluster.restart(victim));
                log(format!("restarted member{victim}"));
                faults.push("leader killed");
            }
        }
        round += 1;
        tokio::time::sleep(half).await;
    }
    if let Some(left) = deadline.checked_duration_since(Instant::now()) {
        tokio::time::sleep(left).await;
    }

    log("stopping the writers".into());
    stop.store(true, Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for task in writer_tasks {
        ledgers.push(task.await.unwrap());
    }
    log("writers stopped".into());
    let target = workload::write_sentinel(&client, &addresses[0], "default").await;
    log(format!("last write at resourceVersion {target}"));
    finish.target.store(target, Ordering::Relaxed);
    finish.stopping.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    let mut stuck = 0;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
    for task in watcher_tasks {
        match tokio::time::timeout_at(give_up, task).await {
            Ok(report) => reports.push(report.unwrap()),
            Err(_) => stuck += 1,
        }
    }
    log(format!("watchers done ({stuck} did not reach the last write)"));
    let cpu: Vec<f64> = replicas
        .iter()
        .zip(&cpu_before)
        .map(|(replica, before)| cpu_seconds(replica.child.id()) - before)
        .collect();
    let (final_list, _) = workload::consistent_list(&client, &addresses[1], "default").await;
    let verdict = workload::check(&ledgers, &final_list, &reports);

    let mut write_latency: Vec<Duration> =
        ledgers.iter().flat_map(|ledger| ledger.latencies.iter().copied()).collect();
    let mut delivery: Vec<u32> =
        reports.iter().flat_map(|report| report.delivery_micros.iter().copied()).collect();
    let delivered = delivery.len();
    let ms = |micros: u32| micros as f64 / 1000.0;
    let uncertain: usize = ledgers.iter().map(|ledger| ledger.uncertain.len()).sum();
    let failed_attempts: u64 = ledgers.iter().map(|ledger| ledger.failed_attempts).sum();
    let elapsed = started.elapsed().as_secs_f64();
    println!();
    println!("| soak | value |");
    println!("| --- | --- |");
    println!("| duration (load) | {seconds} s ({elapsed:.0} s in all) |");
    println!("| faults injected | {} ({}) |", faults.len(), summarize(&faults));
    println!("| watchers (replicas) | {watchers} (2); {stuck} did not reach the last write |");
    println!(
        "| writes acknowledged / with a resourceVersion seen by a watcher | {} / {} of {} |",
        verdict.writes_acked, verdict.writes_seen, verdict.writes_with_rv
    );
    println!(
        "| keys checked / lost acknowledged writes | {} / {} |",
        verdict.keys_checked,
        verdict.lost_writes.len()
    );
    println!("| writes left undecided / attempts retried | {uncertain} / {failed_attempts} |");
    let ambiguous: u64 = ledgers.iter().map(|ledger| ledger.ambiguous_creates).sum();
    println!("| creates that failed and may still apply (left out of the checks) | {ambiguous} |");
    println!("| events delivered (put events with latency) | {delivered} |");
    println!("| events lost (gaps) | {} |", verdict.missed);
    println!("| events duplicated | {} |", verdict.duplicates);
    println!("| events out of order | {} |", verdict.out_of_order);
    println!("| watchers diverged from the final list | {} |", verdict.diverged);
    println!(
        "| relists / 410s / re-watches / stalls | {} / {} / {} / {} |",
        verdict.relists, verdict.gone, verdict.rewatches, verdict.stalls
    );
    println!(
        "| write latency p50 / p99 / max (send → ack, retries included) | {:.1} / {:.1} / {:.1} ms |",
        ms_of(workload::quantile(&mut write_latency, 0.5)),
        ms_of(workload::quantile(&mut write_latency, 0.99)),
        ms_of(workload::quantile(&mut write_latency, 1.0))
    );
    println!(
        "| delivery latency p50 / p99 / max (write sent → event received) | {:.1} / {:.1} / {:.1} ms |",
        ms(workload::quantile(&mut delivery, 0.5)),
        ms(workload::quantile(&mut delivery, 0.99)),
        ms(workload::quantile(&mut delivery, 1.0))
    );
    println!("| replica CPU (s), each | {:.1} / {:.1} |", cpu[0], cpu[1]);
    println!();
    let clean = stuck == 0
        && uncertain == 0
        && verdict.lost_writes.is_empty()
        && verdict.missed == 0
        && verdict.duplicates == 0
        && verdict.out_of_order == 0
        && verdict.diverged == 0
        && verdict.conflicts == 0
        && verdict.wrong_answers.is_empty()
        && verdict.watcher_errors.is_empty();
    if !clean {
        eprintln!("FAILED: {verdict:#?}");
        // Keep the replicas' logs for a look.
        let kept = logs.keep();
        eprintln!("replica logs kept in {}", kept.display());
    }
    drop(replicas);
    clean
}

fn ms_of(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn summarize(faults: &[&str]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for fault in faults {
        match counts.iter_mut().find(|(name, _)| name == fault) {
            Some((_, count)) => *count += 1,
            None => counts.push((fault, 1)),
        }
    }
    counts.iter().map(|(name, count)| format!("{count}× {name}")).collect::<Vec<_>>().join(", ")
}
