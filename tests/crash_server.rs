//! Durability of the real binary on the embedded store: 100 rounds of `kill -9` under a mixed
//! load of creates, updates and deletes over HTTP. After each restart every acknowledged write
//! is there, a write that was in flight when the server died is either wholly there or wholly
//! absent, no object is torn, and the list's resourceVersion never goes back.
//!
//! Each writer owns a few keys and has at most one request in flight, so the expected state of
//! every key is known: the last acknowledged one, or, for the key of the request the kill cut
//! off, that or the request's outcome.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ServerProcess;
use serde_json::json;

const ROUNDS: usize = 100;
const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 6;
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The state of one key: absent, or present at a version.
type State = Option<u64>;

/// The payload of `name` at `version`: its length and every byte depend on both, so that a torn
/// object or one of another version cannot pass for it.
fn payload(name: &str, version: u64) -> String {
    let unit = format!("{name}@{version};");
    let len = 512 + (version as usize * 7_919 + name.len() * 104_729) % 12_000;
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

/// One HTTP/1.1 request on a fresh connection: the status, or `None` if the connection broke
/// (the server died under it).
fn request(address: &str, method: &str, path: &str, content_type: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

struct Writer {
    index: usize,
    /// The acknowledged state of each of the writer's keys.
    acknowledged: BTreeMap<String, State>,
    /// The key of the request that was in flight when the server died, and its outcome.
    in_flight: Option<(String, State)>,
    /// Versions only grow, so that no two writes ever store the same payload.
    next_version: u64,
}

impl Writer {
    fn new(index: usize) -> Writer {
        let acknowledged = (0..KEYS_PER_WRITER).map(|key| (format!("w{index}-k{key}"), None)).collect();
        Writer { index, acknowledged, in_flight: None, next_version: 1 }
    }

    /// Writes until the server dies or `stop` is set; returns how many writes were acknowledged.
    fn run(&mut self, address: &str, round: usize, acks: &AtomicUsize, stop: &AtomicBool) {
        let mut step = (round * 31 + self.index * 17) as u64;
        while !stop.load(Ordering::Relaxed) {
            step = step.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let key = format!("w{}-k{}", self.index, (step >> 33) as usize % KEYS_PER_WRITER);
            let current = self.acknowledged[&key];
            let version = self.next_version;
            self.next_version += 1;
            let (method, path, content_type, body, outcome, expected) = match current {
                None => (
                    "POST",
                    CONFIGMAPS.to_owned(),
                    "application/json",
                    json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": key},
                        "data": {"version": version.to_string(), "payload": payload(&key, version)},
                    })
                    .to_string(),
                    Some(version),
                    201,
                ),
                Some(_) if (step >> 20) % 4 == 0 => {
                    ("DELETE", format!("{CONFIGMAPS}/{key}"), "application/json", String::new(), None, 200)
                }
                Some(_) => (
                    "PATCH",
                    format!("{CONFIGMAPS}/{key}"),
                    "application/merge-patch+json",
                    json!({"data": {"version": version.to_string(), "payload": payload(&key, version)}})
                        .to_string(),
                    Some(version),
                    200,
                ),
            };
            self.in_flight = Some((key.clone(), outcome));
            match request(address, method, &path, content_type, &body) {
                Some((status, reply)) => {
                    assert_eq!(status, expected, "{method} {path}: {reply}");
                    self.acknowledged.insert(key, outcome);
                    self.in_flight = None;
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                // The server died with this request in flight.
                None => return,
            }
        }
    }

    /// Checks the restarted server's state of this writer's keys, then takes it as acknowledged.
    fn check(&mut self, found: &BTreeMap<String, State>, round: usize) {
        let in_flight = self.in_flight.take();
        for (key, acknowledged) in &mut self.acknowledged {
            let state = found.get(key).copied().flatten();
            match &in_flight {
                Some((flight_key, outcome)) if flight_key == key => assert!(
                    state == *acknowledged || state == *outcome,
                    "round {round}: {key} is {state:?}, neither {acknowledged:?} nor the cut-off write's {outcome:?}"
                ),
                _ => assert_eq!(state, *acknowledged, "round {round}: {key} lost an acknowledged write"),
            }
            *acknowledged = state;
        }
    }
}

/// The state of every key the server lists, each object checked whole; and the list's
/// resourceVersion.
fn list_state(address: &str) -> (BTreeMap<String, State>, u64) {
    let (status, body) = request(address, "GET", CONFIGMAPS, "application/json", "").expect("list");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut found = BTreeMap::new();
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap().to_owned();
        let version: u64 = item["data"]["version"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            item["data"]["payload"].as_str(),
            Some(payload(&name, version).as_str()),
            "{name} is torn"
        );
        found.insert(name, Some(version));
    }
    let revision = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    (found, revision)
}

#[test]
fn acknowledged_writes_survive_100_rounds_of_kill_9_under_mixed_load() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = format!("--data-dir={}", dir.path().display());
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let mut last_revision = 0;
    let mut total_acks = 0;
    for round in 0..=ROUNDS {
        let mut server = ServerProcess::start(&[&data_dir]);
        server.wait_ready(Duration::from_secs(60));
        let (found, revision) = list_state(&server.address);
        assert!(
            revision >= last_revision,
            "round {round}: resourceVersion went back from {last_revision} to {revision}"
        );
        last_revision = revision;
        for writer in &mut writers {
            writer.check(&found, round);
        }
        let known = WRITERS * KEYS_PER_WRITER;
        assert!(
            found.len() <= known,
            "round {round}: {} objects, only {known} keys were written",
            found.len()
        );
        if round == ROUNDS {
            break;
        }

        // Load, then SIGKILL after a number of acknowledged writes that differs round to round.
        let wanted = 4 + (round * 37) % 45;
        let acks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let address = server.address.clone();
        let handles: Vec<_> = std::mem::take(&mut writers)
            .into_iter()
            .map(|mut writer| {
                let (address, acks, stop) = (address.clone(), Arc::clone(&acks), Arc::clone(&stop));
                std::thread::spawn(move || {
                    writer.run(&address, round, &acks, &stop);
                    writer
                })
            })
            .collect();
        while acks.load(Ordering::Relaxed) < wanted {
            std::thread::sleep(Duration::from_micros(200));
        }
        server.child.kill().unwrap(); // SIGKILL, with the writers' requests in flight
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        writers = handles.into_iter().map(|handle| handle.join().unwrap()).collect();
        total_acks += acks.load(Ordering::Relaxed);
    }
    eprintln!("{ROUNDS} rounds, {total_acks} acknowledged writes, final resourceVersion {last_revision}");
}
