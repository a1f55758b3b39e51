//! The dispatcher (`cacher::dispatcher`): one event (a pod in namespace "hot") offered to 100,
//! 1,000 and 10,000 watchers, then every queue that received it drained (the consumer's side, so
//! queues never fill), in two cases:
//!
//! - `all`: every watcher watches all namespaces with no selector (every one is interested);
//! - `1pct`: 1% watch namespace "hot", 99% watch other namespaces (indexed away by namespace).
//!
//! Side by side, for the same watchers and event:
//!
//! - `broadcast`: a `tokio::sync::broadcast` channel with one receiver per watcher; the event is
//!   sent once and every receiver `try_recv`s it and applies its namespace filter itself (a
//!   broadcast cannot skip receivers, so all N receive);
//! - `mutex-mpsc`: a `Mutex<Vec<(namespace filter, mpsc::Sender)>>`: lock, check each entry's
//!   namespace, `try_send` an `Arc` of the event; then the receivers that got it `try_recv` it.
//!
//! Every implementation moves the same `Arc<CachedEvent>`; queues of 64 everywhere.
//!
//! Run: `cargo bench --bench dispatch`.

mod support;

use support::{pod_json, pods};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::{broadcast, mpsc};
use watchcache::cacher::bench_support::{dispatch, dispatcher, register, BenchWatcher};
use watchcache::cacher::object::{CachedEvent, CachedObject, EventType};
use watchcache::cacher::WatchFilter;
use watchcache::selector::{FieldSelector, LabelSelector};

const QUEUE: usize = 64;
const SIZES: [usize; 3] = [100, 1_000, 10_000];

#[derive(Clone, Copy)]
enum Case {
    All,
    OnePercent,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::All => "all",
            Case::OnePercent => "1pct",
        }
    }

    /// The namespace watcher `i` of `n` watches (`None`: all namespaces).
    fn namespace(self, i: usize, n: usize) -> Option<String> {
        match self {
            Case::All => None,
            Case::OnePercent if i < n / 100 => Some("hot".to_owned()),
            Case::OnePercent => Some(format!("ns-{}", i % 99)),
        }
    }

    fn interested(self, n: usize) -> usize {
        match self {
            Case::All => n,
            Case::OnePercent => n / 100,
        }
    }
}

fn filter(namespace: Option<String>) -> WatchFilter {
    WatchFilter { namespace, labels: LabelSelector::everything(), fields: FieldSelector::everything() }
}

fn wants(filter: &Option<String>, event: &CachedEvent) -> bool {
    filter.as_deref().is_none_or(|namespace| &*event.object.namespace == namespace)
}

fn dispatch_benches(c: &mut Criterion) {
    let resource = pods();
    let object = CachedObject::decode("/pods/hot/web-0", &pod_json("hot", "web-0"), 7, &resource).unwrap();
    let event = Arc::new(CachedEvent::new(0, EventType::Added, Arc::new(object), None));

    let mut group = c.benchmark_group("dispatch");
    for case in [Case::All, Case::OnePercent] {
        for n in SIZES {
            let interested = case.interested(n);
            group.throughput(Throughput::Elements(interested as u64));

            // watchcache's dispatcher.
            let mut ours = dispatcher(resource.clone());
            let watchers: Vec<BenchWatcher> =
                (0..n).map(|i| BenchWatcher::new(filter(case.namespace(i, n)), QUEUE)).collect();
            for watcher in &watchers {
                register(&mut ours, watcher);
            }
            // The consumers that can receive the event; the others are never woken.
            let receiving: Vec<&BenchWatcher> = watchers
                .iter()
                .enumerate()
                .filter(|(i, _)| wants(&case.namespace(*i, n), &event))
                .map(|(_, watcher)| watcher)
                .collect();
            assert_eq!(receiving.len(), interested);
            dispatch(&mut ours, &event);
            assert_eq!(receiving.iter().map(|w| w.drain()).sum::<usize>(), interested);
            group.bench_function(BenchmarkId::new(format!("watchcache/{}", case.name()), n), |b| {
                b.iter(|| {
                    dispatch(&mut ours, &event);
                    let mut drained = 0;
                    for watcher in &receiving {
                        drained += watcher.drain();
                    }
                    debug_assert_eq!(drained, interested);
                    drained
                })
            });
            drop(receiving);
            drop(watchers);

            // tokio broadcast: every receiver receives and filters.
            let (sender, _) = broadcast::channel::<Arc<CachedEvent>>(1_024);
            let mut receivers: Vec<(Option<String>, broadcast::Receiver<Arc<CachedEvent>>)> =
                (0..n).map(|i| (case.namespace(i, n), sender.subscribe())).collect();
            group.bench_function(BenchmarkId::new(format!("broadcast/{}", case.name()), n), |b| {
                b.iter(|| {
                    sender.send(Arc::clone(&event)).unwrap();
                    let mut delivered = 0;
                    for (filter, receiver) in &mut receivers {
                        let received = receiver.try_recv().unwrap();
                        if wants(filter, &received) {
                            delivered += 1;
                            std::hint::black_box(&received);
                        }
                    }
                    debug_assert_eq!(delivered, interested);
                    delivered
                })
            });
            drop(receivers);

            // Mutex<Vec<(filter, mpsc::Sender)>>.
            let mut entries = Vec::with_capacity(n);
            let mut mpsc_receivers = Vec::with_capacity(n);
            let mut idle_receivers = Vec::with_capacity(n);
            for i in 0..n {
                let (tx, rx) = mpsc::channel::<Arc<CachedEvent>>(QUEUE);
                let namespace = case.namespace(i, n);
                if wants(&namespace, &event) {
                    mpsc_receivers.push(rx);
                } else {
                    idle_receivers.push(rx); // keeps the channel open; never receives
                }
                entries.push((namespace, tx));
            }
            let senders = Mutex::new(entries);
            group.bench_function(BenchmarkId::new(format!("mutex-mpsc/{}", case.name()), n), |b| {
                b.iter(|| {
                    {
                        let senders = senders.lock().unwrap();
                        for (filter, tx) in senders.iter() {
                            if wants(filter, &event) {
                                tx.try_send(Arc::clone(&event)).unwrap();
                            }
                        }
                    }
                    let mut delivered = 0;
                    for rx in &mut mpsc_receivers {
                        while let Ok(received) = rx.try_recv() {
                            delivered += 1;
                            std::hint::black_box(&received);
                        }
                    }
                    debug_assert_eq!(delivered, interested);
                    delivered
                })
            });
            drop(idle_receivers);
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1_200));
    targets = dispatch_benches
}
criterion_main!(benches);
