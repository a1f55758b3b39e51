//! A writer for the crash test (`tests/crash.rs`): writes to an embedded store under load and
//! prints a line for every acknowledged write, until it is killed.
//!
//! Usage: `crash_writer DATA_DIR ROUND`. Prints `ACK create KEY LEN` once a create is
//! acknowledged and `ACK counter N` once the counter at `/crash/counter` is acknowledged at N.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use watchcache::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use watchcache::storage::{guaranteed_update, Storage, StorageError};

/// The value written at `key` with length `len`: every byte depends on the key and its position,
/// so a torn or mixed-up value cannot pass for a whole one.
pub fn expected_value(key: &str, len: usize) -> Vec<u8> {
    let seed = key.bytes().fold(17u32, |hash, byte| hash.wrapping_mul(31).wrapping_add(byte as u32));
    (0..len).map(|i| (seed.wrapping_add((i as u32).wrapping_mul(2_654_435_761)) >> 13) as u8).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: crash_writer DATA_DIR ROUND");
    let round: u32 =
        args.next().expect("usage: crash_writer DATA_DIR ROUND").parse().expect("ROUND is a number");
    let storage =
        Arc::new(EmbeddedStorage::open(dir.as_ref(), EmbeddedOptions::default()).expect("store opens"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("READY");
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let storage = Arc::clone(&storage);
        let out = Arc::clone(&out);
        tasks.push(tokio::spawn(async move {
            for i in 0u32.. {
                let key = format!("/crash/r{round}/t{task}/k{i}");
                let len = 64 + (i as usize * 7919 + task as usize * 104_729) % 20_000;
                storage.create(&key, Bytes::from(expected_value(&key, len))).await.expect("create");
                let mut out = out.lock().unwrap();
                writeln!(out, "ACK create {key} {len}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    {
        let storage = Arc::clone(&storage);
        let out = Arc::clone(&out);
        tasks.push(tokio::spawn(async move {
            loop {
                let kv =
                    guaranteed_update::<StorageError, _>(storage.as_ref(), "/crash/counter", |current| {
                        let count: u64 =
                            current.map_or(0, |kv| std::str::from_utf8(&kv.value).unwrap().parse().unwrap());
                        Ok(Bytes::from((count + 1).to_string()))
                    })
                    .await
                    .expect("counter");
                let mut out = out.lock().unwrap();
                writeln!(out, "ACK counter {}", std::str::from_utf8(&kv.value).unwrap()).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
