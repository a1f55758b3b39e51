//! `/metrics`: Prometheus text with request counters and latency by verb, resource and code, and
//! the watch caches' gauges and counters.

mod common;

use common::{Http, ServerProcess};
use serde_json::json;

/// The value of the sample `name{labels}` in `text`.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_describe_the_caches() {
    let server = ServerProcess::start(&["--in-memory"]);
    let http = Http::new(&server.address, false);
    let configmaps = "/api/v1/namespaces/default/configmaps";
    for name in ["a", "b"] {
        let created = http.send_json("POST", configmaps, &json!({"metadata": {"name": name}})).await;
        assert_eq!(created.status, 201);
    }
    assert_eq!(http.get(&format!("{configmaps}/missing")).await.status, 404);
    let mut watch = http.watch(&format!("{configmaps}?watch=true")).await;
    assert!(watch.next().await.is_some());

    let reply = http.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("text/plain"), "{}", reply.content_type);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let requests = |labels: &str| sample(&text, &format!("apiserver_request_total{{{labels}}}"));
    assert_eq!(requests(r#"verb="create",resource="configmaps",code="201""#), Some(2.0), "{text}");
    assert_eq!(requests(r#"verb="get",resource="configmaps",code="404""#), Some(1.0));
    assert_eq!(
        sample(&text, r#"apiserver_request_duration_seconds_count{verb="create",resource="configmaps"}"#),
        Some(2.0)
    );
    let cache = |name: &str| sample(&text, &format!(r#"{name}{{resource="configmaps"}}"#));
    assert_eq!(cache("watchcache_objects"), Some(2.0));
    assert_eq!(cache("watchcache_watchers"), Some(1.0));
    assert_eq!(cache("watchcache_events_total"), Some(2.0));
    assert_eq!(cache("watchcache_ring_events"), Some(2.0));
    assert!(cache("watchcache_ring_bytes").unwrap() > 0.0);
    assert!(cache("watchcache_revision").unwrap() > 0.0);
    let storage = sample(&text, "watchcache_storage_revision").unwrap();
    assert!(storage >= cache("watchcache_revision").unwrap());
    for counter in [
        "watchcache_watchers_shed_total",
        "watchcache_watchers_caught_up_total",
        "watchcache_events_dispatched_total",
    ] {
        assert!(cache(counter).is_some(), "{counter} missing");
    }
    assert_eq!(cache("watchcache_cache_ready"), Some(1.0));
    for cause in ["compacted", "event_behind_progress", "watch_failed", "catch_up_stalled"] {
        let relists = format!(r#"watchcache_relists_total{{resource="configmaps",cause="{cause}"}}"#);
        assert_eq!(sample(&text, &relists), Some(0.0), "{relists}");
    }
}

/// The compactor runs on the embedded store on `--etcd-compaction-interval`'s schedule and says
/// so in /metrics; history older than one interval goes, the objects stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_compacts_the_embedded_store_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--etcd-compaction-interval=1s",
    ]);
    let http = Http::new(&server.address, false);
    let configmaps = "/api/v1/namespaces/default/configmaps";
    let mut compacted = 0.0;
    for round in 0..60 {
        let created =
            http.send_json("POST", configmaps, &json!({"metadata": {"name": format!("c{round}")}})).await;
        assert_eq!(created.status, 201);
        let text = String::from_utf8(http.get("/metrics").await.body.to_vec()).unwrap();
        compacted = sample(&text, "watchcache_storage_compactions_total").unwrap_or(0.0);
        if compacted >= 2.0 {
            let revision = sample(&text, "watchcache_storage_compacted_revision").unwrap();
            assert!(revision > 1.0, "{text}");
            assert_eq!(sample(&text, "watchcache_storage_compaction_failures_total"), Some(0.0), "{text}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(compacted >= 2.0, "two compactions within 15 s of a 1 s interval");
    let listed = http.get(configmaps).await.json();
    assert!(!listed["items"].as_array().unwrap().is_empty(), "compaction keeps every object");
}

/// `--etcd-compaction-interval=0` turns the compactor off: no compaction metrics at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_compaction_interval_disables_the_compactor() {
    let server = ServerProcess::start(&["--in-memory", "--etcd-compaction-interval=0"]);
    let http = Http::new(&server.address, false);
    let text = String::from_utf8(http.get("/metrics").await.body.to_vec()).unwrap();
    assert!(!text.contains("watchcache_storage_compactions"), "{text}");
}
