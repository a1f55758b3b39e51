//! What a write to one resource costs the embedded store's watches on the others: process CPU
//! (user + system, from getrusage) per create, with 0 and with 40 watches open on other
//! prefixes (one per resource type, as the reflectors hold them), each drained by a task, and
//! one watch on the written prefix.
//!
//! Run: `cargo bench --bench embedded_routing` (ROUTING_WRITES=N sets the writes per case).

use std::time::{Duration, Instant};

use bytes::Bytes;
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{Storage, WatchMessage};

fn cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

async fn case(others: usize, writes: usize) {
    let storage = std::sync::Arc::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
    let start = storage.current_revision().await.unwrap();
    let messages = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut watches = Vec::new();
    for index in 0..=others {
        let prefix = if index == 0 { "/written/".to_owned() } else { format!("/other{index}/") };
        let mut stream = storage.watch(&prefix, start).await.unwrap();
        let messages = std::sync::Arc::clone(&messages);
        watches.push(tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                if let Ok(WatchMessage::Events(_) | WatchMessage::Progress(_)) = message {
                    messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let value = Bytes::from(vec![b'x'; 1024]);
    let (cpu_before, wall) = (cpu(), Instant::now());
    for index in 0..writes {
        storage.create(&format!("/written/k{index:07}"), value.clone()).await.unwrap();
    }
    // Let the watches finish reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spent = cpu() - cpu_before - Duration::from_millis(0);
    println!(
        "{others:>3} watches on other prefixes: {:>6.1} µs CPU per write, {:>6.0} writes/s, {:.2} watch messages per write",
        spent.as_secs_f64() * 1e6 / writes as f64,
        writes as f64 / wall.elapsed().as_secs_f64(),
        messages.load(std::sync::atomic::Ordering::Relaxed) as f64 / writes as f64,
    );
    for watch in watches {
        watch.abort();
    }
}

fn main() {
    let writes = std::env::var("ROUTING_WRITES").ok().and_then(|text| text.parse().ok()).unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        for others in [0, 40] {
            case(others, writes).await;
        }
    });
}
