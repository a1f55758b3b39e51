//! etcd faults through the real binary on a real three-member etcd cluster, with writers and
//! informer-like watchers over HTTP: a member killed and restarted, a member frozen (SIGSTOP)
//! and resumed, the leader killed, and compaction under load with watchers that fall behind
//! and a frozen member that sends the reflectors back to a compacted revision.
//!
//! In each: no acknowledged write is lost (the final consistent list holds every key's last
//! acknowledged state), every watcher either continues or gets 410 and relists, none misses an
//! event silently (within each run between two lists, a watcher has every event in its
//! resourceVersion range that any writer had acknowledged or any other watcher saw, in order,
//! once), and every watcher ends at the final consistent list's state. Each fault also leaves
//! its log line and its metric.
//!
//! The scenarios run one at a time (a lock): each is a cluster, a server and the load on the
//! machine's two cores.

mod common;
#[path = "../perf/soak/workload.rs"]
mod workload;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{EtcdCluster, ServerProcess};
use workload::{Finish, WatcherConfig, WriterConfig};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillFollower,
    FreezeFollower,
    KillLeader,
    Compaction,
}

/// The value of the first sample of metric `name` whose labels contain `labels`, or 0.
fn metric(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && line.contains(labels)
        })
        .filter_map(|line| line.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()))
        .sum()
}

fn scenario(fault: Fault) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(fault));
}

async fn run(fault: Fault) {
    let mut cluster = EtcdCluster::start(3);
    let victim = match fault {
        Fault::KillLeader => cluster.leader(Duration::from_secs(20)).await,
        _ => cluster.follower(Duration::from_secs(20)).await,
    };
    // The victim is the server's first endpoint, where its requests and watches go first.
    let mut urls = cluster.client_urls();
    urls.swap(0, victim);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("watchcache.log");
    let endpoints = format!("--etcd-endpoints={}", urls.join(","));
    let mut args = vec![endpoints.as_str(), "--log-format=json"];
    if fault == Fault::Compaction {
        // A compaction every second, and rings of 64 events, so that a watcher that stays away
        // for a few seconds falls out of the ring and then out of etcd's history.
        args.extend(["--etcd-compaction-interval=1s", "--watch-cache-capacity=64"]);
    }
    let server = ServerProcess::start_logged("127.0.0.1:0", &args, &log);
    server.wait_ready(Duration::from_secs(30));
    let address = server.address.clone();
    let client = workload::client();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finish = Arc::new(Finish::default());
    let writers: Vec<_> = (0..2)
        .map(|id| {
            let config = WriterConfig {
                server: address.clone(),
                namespace: "default".into(),
                id,
                keys: 20,
                pause: Duration::from_millis(15),
            };
            tokio::spawn(workload::writer(client.clone(), config, Arc::clone(&stop)))
        })
        .collect();
    let watchers: Vec<_> = (0..8)
        .map(|index| {
            let config = WatcherConfig {
                server: address.clone(),
                namespace: "default".into(),
                // Two watchers stay away for 3 s after every 150 events: past the ring and,
                // with compaction every second, past etcd's history.
                lag: (index < 2 && fault == Fault::Compaction).then_some((150, Duration::from_secs(3))),
                timeout_seconds: 10 + index as u64,
                measure: false,
                cached_list: index % 2 == 0,
            };
            tokio::spawn(workload::watcher(client.clone(), config, Arc::clone(&finish)))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    match fault {
        Fault::KillFollower | Fault::KillLeader => {
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_secs(6)).await;
            cluster.restart(victim);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Fault::FreezeFollower => {
            cluster.freeze(victim);
            // Past the client's keepalive (10 s + 5 s): the frozen member's connections fail.
            tokio::time::sleep(Duration::from_secs(18)).await;
            cluster.thaw(victim);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Fault::Compaction => {
            tokio::time::sleep(Duration::from_secs(4)).await;
            // The member the reflectors watch freezes for longer than a compaction interval:
            // when their watches fail over, the revision they re-watch from is compacted.
            cluster.freeze(victim);
            tokio::time::sleep(Duration::from_secs(18)).await;
            cluster.thaw(victim);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    stop.store(true, Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for writer in writers {
        ledgers.push(writer.await.unwrap());
    }
    let target = workload::write_sentinel(&client, &address, "default").await;
    finish.target.store(target, Ordering::Relaxed);
    finish.stopping.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for watcher in watchers {
        let report = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .expect("a watcher did not reach the last write within 60 s of it")
            .unwrap();
        reports.push(report);
    }
    let (final_list, list_rv) = workload::consistent_list(&client, &address, "default").await;
    assert!(list_rv >= target);
    // The final state straight from etcd agrees with the server's consistent list.
    let verdict = workload::check(&ledgers, &final_list, &reports);
    eprintln!(
        "{fault:?}: {} writes acknowledged, {} keys checked, {} relists, {} 410s, {} re-watches, {} stalls, {} failed attempts",
        verdict.writes_acked,
        verdict.keys_checked,
        verdict.relists,
        verdict.gone,
        verdict.rewatches,
        verdict.stalls,
        ledgers.iter().map(|ledger| ledger.failed_attempts).sum::<u64>()
    );
    verdict.assert_clean();
    assert!(verdict.writes_acked > 100, "too little load to mean anything: {verdict:?}");
    let uncertain: usize = ledgers.iter().map(|ledger| ledger.uncertain.len()).sum();
    assert_eq!(uncertain, 0, "writes that never got a decisive answer in 90 s");

    // The fault's log line and metric.
    let (status, metrics) = common::http_get(&address, "/metrics");
    assert_eq!(status, 200);
    let logged = std::fs::read_to_string(&log).unwrap();
    match fault {
        Fault::KillFollower | Fault::KillLeader | Fault::FreezeFollower => {
            assert!(
                logged.contains("etcd endpoint changed"),
                "no log line for the endpoint change:\n{logged}"
            );
            assert!(metric(&metrics, "watchcache_etcd_endpoint_switches_total", "") >= 1.0, "{metrics}");
        }
        Fault::Compaction => {
            assert!(logged.contains("compacted storage history"), "no compaction log line:\n{logged}");
            assert!(metric(&metrics, "watchcache_storage_compactions_total", "") >= 1.0, "{metrics}");
            // The watchers that stayed away came back past the ring's history, got 410 and
            // relisted.
            assert!(verdict.gone >= 1 && verdict.relists >= 1, "no watcher fell behind: {verdict:?}");
            // The reflector came back to a compacted revision and relisted, saying why.
            assert!(logged.contains("relisting at the current revision"), "no relist log line:\n{logged}");
            let compacted = r#"resource="configmaps",cause="compacted""#;
            assert!(metric(&metrics, "watchcache_relists_total", compacted) >= 1.0, "{metrics}");
        }
    }
    drop(server);
}

#[test]
fn a_member_killed_under_load_and_restarted_loses_nothing() {
    scenario(Fault::KillFollower);
}

#[test]
fn a_member_frozen_under_load_and_resumed_loses_nothing() {
    scenario(Fault::FreezeFollower);
}

#[test]
fn the_leader_killed_under_load_loses_nothing() {
    scenario(Fault::KillLeader);
}

#[test]
fn compaction_under_load_sends_lagging_watchers_to_relist_without_a_silent_gap() {
    scenario(Fault::Compaction);
}
