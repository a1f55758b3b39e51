//! Durability of the embedded store: a child process writing under load is killed with SIGKILL,
//! the store is reopened, and every write the child had acknowledged is there, whole.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{ListOptions, Storage, WatchMessage};

#[path = "../examples/crash_writer.rs"]
#[allow(dead_code)]
mod crash_writer;

fn writer_binary() -> PathBuf {
    // target/<profile>/deps/crash-<hash> -> target/<profile>/examples/crash_writer
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("examples").join("crash_writer");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests with `cargo test` (which builds the examples), \
         or `cargo build --example crash_writer` first",
        binary.display()
    );
    binary
}

/// Runs the writer for one round and kills it; returns the acknowledged creates (key → length)
/// and the highest acknowledged counter value.
fn run_and_kill(dir: &std::path::Path, round: u32) -> (BTreeMap<String, usize>, u64) {
    let mut child = Command::new(writer_binary())
        .arg(dir)
        .arg(round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    // A whole line, or None at the end of the output (a cut-off last line is not a whole line).
    let mut next_line = move || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line.strip_suffix('\n').map(str::to_owned)
    };
    assert_eq!(next_line().as_deref(), Some("READY"));
    let mut acked = BTreeMap::new();
    let mut counter = 0;
    let mut record = |line: String| {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ACK", "create", key, len] => {
                acked.insert(key.to_string(), len.parse().unwrap());
            }
            ["ACK", "counter", n] => counter = counter.max(n.parse().unwrap()),
            _ => panic!("unexpected line {line:?}"),
        }
    };
    // Kill it mid-flight, at a point that differs from round to round.
    let started = Instant::now();
    let wanted = 200 + round as usize * 150;
    let mut seen = 0;
    while seen < wanted || started.elapsed() < Duration::from_millis(300) {
        record(next_line().expect("the writer died on its own"));
        seen += 1;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines the writer printed before it died were acknowledged too.
    while let Some(line) = next_line() {
        record(line);
    }
    (acked, counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_acked = BTreeMap::new();
    let mut max_counter = 0;
    for round in 0..3 {
        let (acked, counter) = run_and_kill(dir.path(), round);
        assert!(!acked.is_empty(), "round {round} acknowledged nothing");
        all_acked.extend(acked);
        max_counter = max_counter.max(counter);

        let storage = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default())
            .expect("store reopens after SIGKILL");
        for (key, len) in &all_acked {
            let kv = storage
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost in round {round}"));
            assert_eq!(kv.value.as_ref(), crash_writer::expected_value(key, *len), "{key} is torn");
        }
        // Every stored value is whole, acknowledged or not.
        let listed = storage.list("/crash/", ListOptions::default()).await.unwrap();
        for kv in &listed.items {
            if kv.key == "/crash/counter" {
                let value: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                assert!(value >= max_counter, "counter went back from {max_counter} to {value}");
                continue;
            }
            assert_eq!(
                kv.value.as_ref(),
                crash_writer::expected_value(&kv.key, kv.value.len()),
                "{} is torn",
                kv.key
            );
        }
        // The event log agrees with the state: replaying it from the start rebuilds the keys.
        let revision = storage.current_revision().await.unwrap();
        assert_eq!(listed.revision, revision);
        let mut watch = storage.watch("/crash/", 1).await.unwrap();
        let mut replayed = BTreeMap::new();
        let mut at = 1;
        while at < revision {
            match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap()
            {
                WatchMessage::Events(events) => {
                    for event in events {
                        assert!(event.revision() > at, "log out of order");
                        at = event.revision();
                        replayed.insert(event.kv.key.clone(), event.kv.value.clone());
                    }
                }
                WatchMessage::Progress(progress) => at = at.max(progress),
            }
        }
        let state: BTreeMap<_, _> =
            listed.items.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
        assert_eq!(replayed, state, "round {round}: log and state disagree");
        drop(watch);
        drop(storage);
    }
}
