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

/// Every member down, then back: the server says it is not ready, writes fail with a 5xx Status
/// within a bound (not a hang), cached reads go on from the cache, consistent reads fail, and
/// it recovers by itself once etcd is back.
#[test]
fn every_member_down_then_back_fails_clearly_and_recovers_by_itself() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut cluster = EtcdCluster::start(3);
        let endpoints = format!("--etcd-endpoints={}", cluster.client_urls().join(","));
        let server = ServerProcess::start(&[endpoints.as_str()]);
        server.wait_ready(Duration::from_secs(30));
        let address = server.address.clone();
        let client = workload::client();
        let base = format!("http://{address}/api/v1/namespaces/default/configmaps");
        let configmap = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        let (status, _) = workload::request(&client, "POST", &base, "application/json", Some(&configmap("before")), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(status, 201);

        for index in 0..3 {
            cluster.kill(index);
        }
        // Not ready, within a bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = common::http_get(&address, "/readyz");
            if status != 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still ready 60 s after every etcd member died");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A write fails with a 5xx Status, bounded by the client's 60 s.
        let (status, body) = workload::request(&client, "POST", &base, "application/json", Some(&configmap("during")), Duration::from_secs(60))
            .await
            .expect("a write with etcd down hung for 60 s");
        assert!(status == 503 || status == 504 || status == 500, "{status} {}", String::from_utf8_lossy(&body));
        let status_body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status_body["kind"], "Status");
        // The cache still serves resourceVersion=0 reads.
        let (status, body) = workload::request(&client, "GET", &format!("{base}?resourceVersion=0"), "application/json", None, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("\"before\""));
        // A consistent read fails (bounded) rather than serving something older.
        let (status, _) = workload::request(&client, "GET", &base, "application/json", None, Duration::from_secs(60))
            .await
            .expect("a consistent read with etcd down hung for 60 s");
        assert!(status >= 500, "a consistent read with etcd down answered {status}");

        for index in 0..3 {
            cluster.restart_without_waiting(index);
        }
        tokio::task::block_in_place(|| cluster.wait_running());
        // Recovers by itself: ready again, and writes and consistent reads work.
        tokio::task::block_in_place(|| server.wait_ready(Duration::from_secs(60)));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = workload::request(&client, "POST", &base, "application/json", Some(&configmap("after")), Duration::from_secs(20)).await;
            if matches!(answer, Ok((201, _))) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "writes did not recover: {answer:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (listed, _) = workload::consistent_list(&client, &address, "default").await;
        assert!(listed.contains_key("before") && listed.contains_key("after"), "{listed:?}");
    });
}
