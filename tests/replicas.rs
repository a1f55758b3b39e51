//! Several replicas on one etcd, through the real binary: three `watchcache` processes with
//! `--etcd-endpoints` on the same cluster and 1,000 informer-like list+watch clients spread over
//! them (tokio tasks on raw HTTP/1.1, one connection per watch).
//!
//! - A write through one replica is visible to a consistent read (no resourceVersion) on every
//!   other at once: a GET and a list.
//! - Watches on every replica see the same events in the same order: the (key, resourceVersion)
//!   sequences of any two watchers agree over the range both cover, and none misses an event
//!   any writer acknowledged or any other watcher saw.
//! - A replica restart resumes from history without a relist storm: every client of the
//!   restarted replica re-watches from its last resourceVersion and gets no 410, and no client
//!   relists at all.

mod common;
#[path = "../perf/soak/workload.rs"]
mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, EtcdCluster, ServerProcess};
use workload::{Finish, WatcherConfig, WriterConfig};

const REPLICAS: usize = 3;
const CLIENTS: usize = 1_000;

fn start_replica(listen: &str, endpoints: &str) -> ServerProcess {
    let server = ServerProcess::start_on(listen, &[endpoints, "--max-requests-inflight=0"]);
    server.wait_ready(Duration::from_secs(60));
    server
}

/// 1,000 watch connections need more than a default soft limit of 1,024 descriptors: raise it
/// to the hard limit (the replicas inherit it).
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

#[test]
fn three_replicas_on_one_etcd_agree_and_a_restart_causes_no_relists() {
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let started = Instant::now();
    let cluster = EtcdCluster::start(3);
    let endpoints = format!("--etcd-endpoints={}", cluster.client_urls().join(","));
    let addresses: Vec<String> = (0..REPLICAS).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut replicas: Vec<ServerProcess> =
        addresses.iter().map(|address| start_replica(address, &endpoints)).collect();
    let client = workload::client();

    // A write through one replica is visible to a consistent read on every other at once.
    for i in 0..30 {
        let via = &addresses[i % REPLICAS];
        let name = format!("read-your-write-{i}");
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"seq": i.to_string()}});
        let url = format!("http://{via}/api/v1/namespaces/default/configmaps");
        let (status, created) = workload::request(
            &client,
            "POST",
            &url,
            "application/json",
            Some(&body),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&created));
        let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
        let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        for other in addresses.iter().filter(|address| *address != via) {
            let url = format!("http://{other}/api/v1/namespaces/default/configmaps/{name}");
            let (status, got) =
                workload::request(&client, "GET", &url, "application/json", None, Duration::from_secs(10))
                    .await
                    .unwrap();
            assert_eq!(status, 200, "a consistent GET on {other} of a write through {via}");
            let got: serde_json::Value = serde_json::from_slice(&got).unwrap();
            assert_eq!(got["metadata"]["resourceVersion"].as_str(), Some(rv.as_str()));
            let (listed, list_rv) = workload::consistent_list(&client, other, "default").await;
            assert_eq!(listed.get(&name).map(|&(rv, _)| rv.to_string()), Some(rv.clone()), "list on {other}");
            assert!(list_rv >= rv.parse().unwrap());
        }
    }

    // 1,000 list+watch clients over the replicas, one writer through each of two of them.
    let finish = Arc::new(Finish::default());
    let watchers: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let config = WatcherConfig {
                server: addresses[index % REPLICAS].clone(),
                namespace: "default".into(),
                lag: None,
                timeout_seconds: 600,
                measure: false,
                cached_list: true,
            };
            tokio::spawn(workload::watcher(client.clone(), config, Arc::clone(&finish)))
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|id| {
            let config = WriterConfig {
                server: addresses[id].clone(),
                namespace: "default".into(),
                id,
                keys: 10,
                pause: Duration::from_millis(100),
            };
            tokio::spawn(workload::writer(client.clone(), config, Arc::clone(&stop)))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Restart the third replica on its address while the writes go on.
    let restarted = REPLICAS - 1;
    // (The harness's process calls block: off the runtime's workers' queue meanwhile.)
    let status = tokio::task::block_in_place(|| replicas[restarted].terminate(Duration::from_secs(30)));
    assert!(status.success(), "{status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas[restarted] = tokio::task::block_in_place(|| start_replica(&addresses[restarted], &endpoints));
    tokio::time::sleep(Duration::from_secs(6)).await;

    stop.store(true, Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for writer in writers {
        ledgers.push(writer.await.unwrap());
    }
    let target = workload::write_sentinel(&client, &addresses[0], "default").await;
    finish.target.store(target, Ordering::Relaxed);
    finish.stopping.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for watcher in watchers {
        let report = tokio::time::timeout(Duration::from_secs(120), watcher)
            .await
            .expect("a watcher did not reach the last write within 120 s of it")
            .unwrap();
        reports.push(report);
    }
    let (final_list, _) = workload::consistent_list(&client, &addresses[1], "default").await;
    let verdict = workload::check(&ledgers, &final_list, &reports);
    let restarted_clients: Vec<_> =
        reports.iter().filter(|report| report.server == addresses[restarted]).collect();
    let rewatched = restarted_clients.iter().filter(|report| report.rewatches > 0).count();
    eprintln!(
        "{CLIENTS} clients on {REPLICAS} replicas: {} writes acknowledged, {} relists, {} 410s, {} re-watches \
         ({rewatched} of the restarted replica's {} clients re-watched), {:.1} s in all",
        verdict.writes_acked,
        verdict.relists,
        verdict.gone,
        verdict.rewatches,
        restarted_clients.len(),
        started.elapsed().as_secs_f64()
    );
    verdict.assert_clean();
    assert!(verdict.writes_acked > 50, "too little load: {verdict:?}");

    // The same events in the same order on every replica: the first client of each replica,
    // compared over the range both cover.
    for replica in 1..REPLICAS {
        let a = &reports[0].segments[0];
        let b = &reports[replica].segments[0];
        let (from, to) = (a.start.max(b.start), a.end.min(b.end));
        let within = |segment: &workload::Segment| -> Vec<(u64, String)> {
            segment
                .events
                .iter()
                .filter(|(rv, _, _)| *rv > from && *rv <= to)
                .map(|(rv, key, _)| (*rv, key.clone()))
                .collect()
        };
        let (left, right) = (within(a), within(b));
        assert!(left.len() > 50, "too short an overlap: {}", left.len());
        assert_eq!(left, right, "replica 0 and replica {replica} disagree");
    }

    // The restart: its clients re-watched from their last resourceVersion, none got 410, and
    // no client anywhere relisted.
    assert!(rewatched > restarted_clients.len() / 2, "the restart did not end its clients' watches");
    for report in &restarted_clients {
        assert_eq!((report.gone, report.relists), (0, 0), "a client of the restarted replica relisted");
        assert_eq!(report.segments.len(), 1);
    }
    assert_eq!(verdict.relists, 0, "{verdict:?}");
    let (_, metrics) = common::http_get(&addresses[restarted], "/metrics");
    let fallbacks: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("watchcache_storage_fallbacks_total{resource=\"configmaps"))
        .collect();
    eprintln!("reads the restarted replica served from etcd: {fallbacks:?}");
}
