//! `/metrics` in the Prometheus text format: requests and their latency by verb, resource and
//! code, and, read from each watch cache at scrape time, its watchers, events, deliveries,
//! catch-ups, shed watchers, ring size and time window, and revision against storage's.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;

use crate::registry::Registry;
use crate::storage::Revision;

type Labels = Vec<(String, String)>;

/// The server's metrics.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    storage_revision: Arc<std::sync::atomic::AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Metrics {
    /// Metrics for the resources of `registry`.
    pub fn new(registry: Arc<Registry>) -> Metrics {
        let mut metrics = prometheus_client::registry::Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        metrics.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        metrics.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource (watches: until the stream starts)",
            latency.clone(),
        );
        let storage_revision = Arc::new(std::sync::atomic::AtomicU64::new(0));
        metrics.register_collector(Box::new(CacheCollector {
            registry,
            storage_revision: Arc::clone(&storage_revision),
        }));
        Metrics { registry: metrics, requests, latency, storage_revision }
    }

    /// Exposes what the storage compactor has done.
    pub fn register_compactor(&mut self, stats: Arc<crate::storage::compactor::CompactorStats>) {
        self.registry.register_collector(Box::new(CompactorCollector(stats)));
    }

    /// Exposes what the audit log has written and dropped, with kube-apiserver's names.
    pub fn register_audit(&mut self, stats: Arc<super::audit::AuditStats>) {
        self.registry.register_collector(Box::new(AuditCollector(stats)));
    }

    /// Records one request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        let labels = vec![
            ("verb".to_owned(), verb.to_owned()),
            ("resource".to_owned(), resource.to_owned()),
            ("code".to_owned(), code.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        let labels = vec![("verb".to_owned(), verb.to_owned()), ("resource".to_owned(), resource.to_owned())];
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with storage's current revision read just before.
    pub fn render(&self, storage_revision: Option<Revision>) -> String {
        if let Some(revision) = storage_revision {
            self.storage_revision.store(revision, std::sync::atomic::Ordering::Relaxed);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

#[derive(Debug)]
struct CacheCollector {
    registry: Arc<Registry>,
    storage_revision: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The `resource` label: `plural` or `plural.group`.
fn resource_label(resource: &crate::registry::Resource) -> String {
    let ty = &resource.ty;
    if ty.group.is_empty() {
        ty.plural.clone()
    } else {
        format!("{}.{}", ty.plural, ty.group)
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let resources = self.registry.all();
        let stats: Vec<(String, crate::cacher::CacheStats)> =
            resources.iter().map(|resource| (resource_label(resource), resource.cacher.stats())).collect();
        type Value = fn(&crate::cacher::CacheStats) -> f64;
        let gauges: [(&str, &str, Value); 6] = [
            ("watchcache_watchers", "Open watches", |s| s.watchers as f64),
            ("watchcache_ring_events", "Events in the ring", |s| s.ring_events as f64),
            ("watchcache_ring_bytes", "Bytes of events in the ring", |s| s.ring_bytes as f64),
            ("watchcache_ring_window_seconds", "Age of the oldest event in the ring", |s| {
                s.ring_window.as_secs_f64()
            }),
            ("watchcache_objects", "Objects in the cache", |s| s.objects as f64),
            ("watchcache_revision", "The revision the cache has reached", |s| s.revision as f64),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (resource, stats) in &stats {
                let labels = vec![("resource".to_owned(), resource.clone())];
                ConstGauge::new(value(stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        type Count = fn(&crate::cacher::CacheStats) -> u64;
        let counters: [(&str, &str, Count); 6] = [
            ("watchcache_events", "Events received from storage", |s| s.events),
            ("watchcache_events_dispatched", "(event, watcher) deliveries queued", |s| s.delivered),
            ("watchcache_watchers_overflowed", "Times a full queue sent a watcher to catch up", |s| {
                s.overflowed
            }),
            ("watchcache_watchers_caught_up", "Times a watcher caught up from the ring", |s| s.caught_up),
            ("watchcache_watchers_shed", "Watchers ended for falling behind the ring", |s| s.shed),
            ("watchcache_storage_fallbacks", "Reads served from storage", |s| s.storage_fallbacks),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (resource, stats) in &stats {
                let labels = vec![("resource".to_owned(), resource.clone())];
                ConstCounter::new(value(stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "watchcache_relists",
            "Relists of a cache, by cause: compacted, event_behind_progress, watch_failed, catch_up_stalled",
            None,
            MetricType::Counter,
        )?;
        for (resource, stats) in &stats {
            for (cause, count) in stats.relists.by_cause() {
                let labels =
                    vec![("resource".to_owned(), resource.clone()), ("cause".to_owned(), cause.to_owned())];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "watchcache_cache_ready",
            "1 once the cache has synced with storage (see /readyz), else 0",
            None,
            MetricType::Gauge,
        )?;
        for resource in &resources {
            let labels = vec![("resource".to_owned(), resource_label(resource))];
            ConstGauge::new(if resource.cacher.is_ready() { 1.0 } else { 0.0 })
                .encode(family.encode_family(&labels)?)?;
        }
        let switches = crate::storage::etcd::ENDPOINT_SWITCHES.load(std::sync::atomic::Ordering::Relaxed);
        ConstCounter::new(switches).encode(encoder.encode_descriptor(
            "watchcache_etcd_endpoint_switches",
            "Times requests moved to another etcd endpoint after the preferred one failed",
            None,
            MetricType::Counter,
        )?)?;
        let revision = self.storage_revision.load(std::sync::atomic::Ordering::Relaxed);
        let gauge = ConstGauge::new(revision as f64);
        gauge.encode(encoder.encode_descriptor(
            "watchcache_storage_revision",
            "Storage's current revision",
            None,
            MetricType::Gauge,
        )?)?;
        let writable = self.registry.storage().write_failure().is_none();
        ConstGauge::new(if writable { 1.0 } else { 0.0 }).encode(encoder.encode_descriptor(
            "watchcache_storage_writable",
            "1 while storage takes writes; 0 once the embedded store refuses them after an I/O error such as a full disk (see /readyz)",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[derive(Debug)]
struct AuditCollector(Arc<super::audit::AuditStats>);

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        ConstCounter::new(self.0.events.load(Relaxed)).encode(encoder.encode_descriptor(
            "apiserver_audit_event",
            "Audit events written to the log",
            None,
            MetricType::Counter,
        )?)?;
        let mut family = encoder.encode_descriptor(
            "apiserver_audit_error",
            "Audit events dropped: the queue to the writer was full, or the write failed",
            None,
            MetricType::Counter,
        )?;
        let labels = [("plugin", "log")];
        ConstCounter::new(self.0.dropped.load(Relaxed)).encode(family.encode_family(&labels)?)?;
        Ok(())
    }
}

#[derive(Debug)]
struct CompactorCollector(Arc<crate::storage::compactor::CompactorStats>);

impl Collector for CompactorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.0;
        let counters = [
            (
                "watchcache_storage_compactions",
                "Compactions of storage's history this process made",
                &stats.compactions,
            ),
            (
                "watchcache_storage_compaction_rounds_lost",
                "Compaction rounds another process (replica or kube-apiserver) won",
                &stats.lost_rounds,
            ),
            ("watchcache_storage_compaction_failures", "Compaction rounds that failed", &stats.failures),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value.load(Relaxed)).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        ConstGauge::new(stats.compacted_revision.load(Relaxed) as f64).encode(encoder.encode_descriptor(
            "watchcache_storage_compacted_revision",
            "The revision this process last compacted storage to",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
