//! The fault workload shared by `tests/etcd_faults.rs`, `tests/replicas.rs` and `perf/soak.rs`:
//! closed-loop writers that keep a ledger of every acknowledged write, informer-like watchers
//! (list, watch from the list's resourceVersion, re-watch from the last one seen, relist on 410)
//! that record every event they get, and the checks over both.
//!
//! Everything speaks HTTP/1.1 to the real binary, one connection per watch, as kubelets would.
//! Writers stamp each write with its sequence number (`data.seq`) and its send time (`data.t`,
//! microseconds since the workload's epoch) so that watchers measure delivery latency without
//! talking to the writers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

pub type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One HTTP/1.1 client (a pool of connections) for many tasks.
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_now() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// One request with a deadline: `(status, body)`, or why there was no answer.
pub async fn request(
    client: &Client,
    method: &str,
    url: &str,
    content_type: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let body = body.map(|body| Bytes::from(serde_json::to_vec(body).unwrap())).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(body))
        .unwrap();
    let answer = async {
        let response = client.request(request).await.map_err(|error| format!("{error}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|error| format!("{error}"))?.to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A ConfigMap's name, resourceVersion and `data.seq`.
fn parse_object(object: &Value) -> Option<(String, u64, u64)> {
    let name = object["metadata"]["name"].as_str()?.to_owned();
    let rv = object["metadata"]["resourceVersion"].as_str()?.parse().ok()?;
    let seq = object["data"]["seq"].as_str().and_then(|seq| seq.parse().ok()).unwrap_or(0);
    Some((name, rv, seq))
}

/// The state a list shows: name → (resourceVersion, seq), and the list's resourceVersion.
pub type State = BTreeMap<String, (u64, u64)>;

fn parse_list(body: &[u8]) -> Result<(State, u64), String> {
    let list: Value = serde_json::from_slice(body).map_err(|error| format!("list is not JSON: {error}"))?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| format!("list without resourceVersion: {list}"))?;
    let mut state = State::new();
    for item in list["items"].as_array().ok_or("list without items")? {
        let (name, rv, seq) = parse_object(item).ok_or_else(|| format!("bad item {item}"))?;
        state.insert(name, (rv, seq));
    }
    Ok((state, rv))
}

/// A consistent list (no resourceVersion: read at storage's current revision), retried on
/// errors for up to a minute.
pub async fn consistent_list(client: &Client, server: &str, namespace: &str) -> (State, u64) {
    let url = format!("http://{server}/api/v1/namespaces/{namespace}/configmaps");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match request(client, "GET", &url, "application/json", None, Duration::from_secs(20)).await {
            Ok((200, body)) => return parse_list(&body).unwrap(),
            other => {
                assert!(Instant::now() < deadline, "no consistent list from {server} in 60 s: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writers

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    /// The resourceVersion the answer carried; `None` for deletes and for writes whose success
    /// was only learned from a resend (409 or 404 after an attempt without an answer).
    pub rv: Option<u64>,
    /// The seq the key holds after it; `None` for a delete.
    pub seq: Option<u64>,
}

/// What one writer did.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Each key's state after its last acknowledged write: `Some(seq)`, or `None` if deleted.
    pub final_state: BTreeMap<String, Option<u64>>,
    /// Keys whose last write got no decisive answer before the writer gave up on it.
    pub uncertain: Vec<String>,
    /// Creates that failed with a 5xx or no answer: they may still apply later (see the
    /// writer), so their keys are left out of the checks. Not a failure.
    pub ambiguous_creates: u64,
    pub acked: Vec<Acked>,
    /// Send of the first attempt → the acknowledgement, per acknowledged write.
    pub latencies: Vec<Duration>,
    /// Attempts that got no answer or a 5xx/429, each retried.
    pub failed_attempts: u64,
    /// Answers no correct server gives (a 404 for a key the writer holds, a 409 on a first
    /// create, ...).
    pub wrong: Vec<String>,
}

/// How a writer behaves.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub server: String,
    pub namespace: String,
    pub id: usize,
    /// Keys the writer keeps alive; it creates up to this many, then updates, deletes and
    /// creates at random.
    pub keys: usize,
    /// The pause between two writes (closed loop: the next write is sent after this pause
    /// from the acknowledgement of the last).
    pub pause: Duration,
}

enum Op {
    Create,
    Patch,
    Delete,
}

/// Writes until `stop`; returns its ledger.
pub async fn writer(client: Client, config: WriterConfig, stop: Arc<AtomicBool>) -> Ledger {
    use rand::Rng;
    let mut ledger = Ledger::default();
    let mut live: Vec<String> = Vec::new();
    let mut next_name = 0u64;
    let mut seq = 0u64;
    let base = format!("http://{}/api/v1/namespaces/{}/configmaps", config.server, config.namespace);
    while !stop.load(Ordering::Relaxed) {
        let roll: f64 = rand::rng().random();
        let op = if live.len() < config.keys || roll < 0.15 {
            Op::Create
        } else if roll < 0.35 {
            Op::Delete
        } else {
            Op::Patch
        };
        seq += 1;
        let (key, index) = match op {
            Op::Create => {
                next_name += 1;
                (format!("w{}-{}", config.id, next_name), None)
            }
            _ => {
                let index = rand::rng().random_range(0..live.len());
                (live[index].clone(), Some(index))
            }
        };
        let data = json!({"seq": seq.to_string(), "t": micros_now().to_string()});
        let started = Instant::now();
        let mut resent = false;
        let mut ambiguous_create = false;
        let outcome: Option<Acked> = loop {
            if started.elapsed() > Duration::from_secs(90) {
                break None;
            }
            let attempt = match op {
                Op::Create => {
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": key}, "data": data});
                    request(&client, "POST", &base, "application/json", Some(&body), Duration::from_secs(15))
                        .await
                }
                Op::Patch => {
                    let body = json!({"data": data});
                    let url = format!("{base}/{key}");
                    request(
                        &client,
                        "PATCH",
                        &url,
                        "application/merge-patch+json",
                        Some(&body),
                        Duration::from_secs(15),
                    )
                    .await
                }
                Op::Delete => {
                    let url = format!("{base}/{key}");
                    request(&client, "DELETE", &url, "application/json", None, Duration::from_secs(15)).await
                }
            };
            let rv_of = |body: &Bytes| {
                serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|object| parse_object(&object))
                    .map(|(_, rv, _)| rv)
            };
            match (&op, attempt) {
                (Op::Create, Ok((201, body))) => {
                    break Some(Acked { key: key.clone(), rv: rv_of(&body), seq: Some(seq) })
                }
                // A create that failed may still apply later (its first attempt in flight in a
                // frozen member), even after a retry and a delete: its key is uncertain.
                (Op::Create, Ok((status, _))) if status >= 500 => {
                    ledger.failed_attempts += 1;
                    ambiguous_create = true;
                    break None;
                }
                (Op::Create, Err(_)) => {
                    ledger.failed_attempts += 1;
                    ambiguous_create = true;
                    break None;
                }
                (Op::Patch, Ok((200, body))) => {
                    break Some(Acked { key: key.clone(), rv: rv_of(&body), seq: Some(seq) })
                }
                (Op::Delete, Ok((200 | 202, _))) => {
                    break Some(Acked { key: key.clone(), rv: None, seq: None })
                }
                (Op::Delete, Ok((404, _))) if resent => {
                    break Some(Acked { key: key.clone(), rv: None, seq: None })
                }
                (_, Ok((status, body))) if status == 429 || status >= 500 => {
                    // 5xx: the write may or may not have been applied.
                    resent = resent || status != 429;
                    ledger.failed_attempts += 1;
                    let _ = body;
                }
                (_, Ok((status, body))) => {
                    ledger.wrong.push(format!(
                        "{key}: {status} {} (resent: {resent})",
                        String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
                    ));
                    break None;
                }
                (_, Err(_)) => {
                    resent = true;
                    ledger.failed_attempts += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match outcome {
            Some(acked) => {
                ledger.latencies.push(started.elapsed());
                ledger.final_state.insert(key.clone(), acked.seq);
                match (&op, index) {
                    (Op::Create, _) => live.push(key.clone()),
                    (Op::Delete, Some(index)) => {
                        live.swap_remove(index);
                    }
                    _ => {}
                }
                ledger.acked.push(acked);
            }
            None => {
                // Undecided or refused: the key's state is unknown from here on.
                ledger.final_state.remove(&key);
                if ambiguous_create {
                    ledger.ambiguous_creates += 1;
                } else {
                    ledger.uncertain.push(key.clone());
                }
                if let Some(index) = index {
                    live.swap_remove(index);
                }
            }
        }
        tokio::time::sleep(config.pause).await;
    }
    ledger
}

/// Creates the sentinel ConfigMap `sentinel`, retrying until acknowledged; its
/// resourceVersion. Written after every writer stopped, it is the last write: a watcher that
/// has seen it has seen everything.
pub async fn write_sentinel(client: &Client, server: &str, namespace: &str) -> u64 {
    let url = format!("http://{server}/api/v1/namespaces/{namespace}/configmaps");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sentinel"},
            "data": {"seq": "0", "t": micros_now().to_string()}});
        let answer =
            match request(client, "POST", &url, "application/json", Some(&body), Duration::from_secs(15))
                .await
            {
                // A resend of a create that was applied: read it back.
                Ok((409, _)) => {
                    request(
                        client,
                        "GET",
                        &format!("{url}/sentinel"),
                        "application/json",
                        None,
                        Duration::from_secs(15),
                    )
                    .await
                }
                other => other,
            };
        match answer {
            Ok((200 | 201, body)) => {
                let object: Value = serde_json::from_slice(&body).unwrap();
                return parse_object(&object).unwrap().1;
            }
            other => {
                assert!(Instant::now() < deadline, "the sentinel write failed for 60 s: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Watchers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Put,
    Deleted,
}

/// A run of events between a list (or the watch's start) and a relist: every event in
/// `(start, end]` must be in it.
#[derive(Debug, Default)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub events: Vec<(u64, String, Kind)>,
}

/// What one watcher saw.
#[derive(Debug, Default)]
pub struct WatcherReport {
    pub server: String,
    pub segments: Vec<Segment>,
    pub state: State,
    pub last_rv: u64,
    /// Lists after the first one.
    pub relists: u64,
    /// 410 answers (status or ERROR event).
    pub gone: u64,
    /// Watches re-opened from the last resourceVersion (stream ended, broke, or refused).
    pub rewatches: u64,
    /// Watch streams that sent nothing, not even their end, for longer than their timeout.
    pub stalls: u64,
    /// Events at or below a resourceVersion already seen in the same segment.
    pub out_of_order: u64,
    /// Events whose (key, resourceVersion) was already received.
    pub duplicates: u64,
    /// Write sent → event received, in microseconds.
    pub delivery_micros: Vec<u32>,
    pub errors: Vec<String>,
}

/// How a watcher behaves.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    pub server: String,
    pub namespace: String,
    /// After this many events, drop the watch and stay away for the duration before
    /// re-watching from the last resourceVersion: a client that falls behind.
    pub lag: Option<(usize, Duration)>,
    pub timeout_seconds: u64,
    /// Record delivery latencies.
    pub measure: bool,
    /// Start from a list with resourceVersion=0 (served from the cache, as informers do);
    /// otherwise from a consistent list.
    pub cached_list: bool,
}

/// When the watchers should stop: once stopping, a watcher ends when it has seen `target`.
#[derive(Default)]
pub struct Finish {
    pub stopping: AtomicBool,
    pub target: AtomicU64,
}

/// Lists and watches until `finish` says so; returns what it saw.
pub async fn watcher(client: Client, config: WatcherConfig, finish: Arc<Finish>) -> WatcherReport {
    let mut report = WatcherReport { server: config.server.clone(), ..WatcherReport::default() };
    let base = format!("http://{}/api/v1/namespaces/{}/configmaps", config.server, config.namespace);
    let give_up = |report: &WatcherReport| {
        // Relaxed: the flags are read again on every loop; a late view only costs a loop.
        finish.stopping.load(Ordering::Relaxed)
            && report.last_rv >= finish.target.load(Ordering::Relaxed)
            && finish.target.load(Ordering::Relaxed) > 0
    };
    let mut since_lag = 0usize;
    let mut first = true;
    'list: loop {
        // List.
        let list_url = if config.cached_list { format!("{base}?resourceVersion=0") } else { base.clone() };
        let (state, rv) = loop {
            match request(&client, "GET", &list_url, "application/json", None, Duration::from_secs(20)).await
            {
                Ok((200, body)) => match parse_list(&body) {
                    Ok(listed) => break listed,
                    Err(error) => report.errors.push(error),
                },
                Ok((status, _)) if status == 429 || status >= 500 => {}
                Ok((status, body)) => {
                    report.errors.push(format!("list: {status} {}", String::from_utf8_lossy(&body)));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !first {
            report.relists += 1;
        }
        first = false;
        if rv < report.last_rv {
            // A cached list may be older than what this watcher saw: as an informer, take it
            // (the staleness rule allows it) and go on from its revision.
        }
        report.state = state;
        report.last_rv = rv;
        report.segments.push(Segment { start: rv, end: rv, events: Vec::new() });
        if give_up(&report) {
            break 'list;
        }
        // Watch, re-watching from the last resourceVersion until 410.
        loop {
            if give_up(&report) {
                break 'list;
            }
            let url = format!(
                "{base}?watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}",
                report.last_rv, config.timeout_seconds
            );
            let request = http::Request::builder().uri(&url).body(Full::new(Bytes::new())).unwrap();
            let response = match tokio::time::timeout(Duration::from_secs(20), client.request(request)).await
            {
                Ok(Ok(response)) => response,
                _ => {
                    report.rewatches += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match response.status().as_u16() {
                200 => {}
                410 => {
                    report.gone += 1;
                    continue 'list;
                }
                status => {
                    if status != 429 && status < 500 {
                        report.errors.push(format!("watch: {status}"));
                    }
                    report.rewatches += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let mut body = response.into_body();
            let mut buffer: Vec<u8> = Vec::new();
            let mut quiet = Instant::now();
            let stall_after = Duration::from_secs(config.timeout_seconds + 15);
            loop {
                if give_up(&report) {
                    break 'list;
                }
                let frame = match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                    Err(_) => {
                        if quiet.elapsed() > stall_after {
                            report.stalls += 1;
                            break;
                        }
                        continue;
                    }
                    Ok(None) | Ok(Some(Err(_))) => break,
                    Ok(Some(Ok(frame))) => frame,
                };
                quiet = Instant::now();
                let Ok(data) = frame.into_data() else { continue };
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let event: Value = match serde_json::from_slice(&line) {
                        Ok(event) => event,
                        Err(error) => {
                            report.errors.push(format!("event is not JSON: {error}"));
                            continue;
                        }
                    };
                    let kind = match event["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => Kind::Put,
                        Some("DELETED") => Kind::Deleted,
                        Some("BOOKMARK") => {
                            let rv = event["object"]["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|rv| rv.parse::<u64>().ok())
                                .unwrap_or(0);
                            if rv < report.last_rv {
                                report.out_of_order += 1;
                            } else {
                                report.last_rv = rv;
                                report.segments.last_mut().unwrap().end = rv;
                            }
                            continue;
                        }
                        Some("ERROR") => {
                            if event["object"]["code"] == 410 {
                                report.gone += 1;
                                continue 'list;
                            }
                            report.errors.push(format!("ERROR event {}", event["object"]));
                            break;
                        }
                        _ => {
                            report.errors.push(format!("unknown event {event}"));
                            continue;
                        }
                    };
                    let Some((name, rv, seq)) = parse_object(&event["object"]) else {
                        report.errors.push(format!("event without name or resourceVersion: {event}"));
                        continue;
                    };
                    let segment = report.segments.last().unwrap();
                    if segment.events.binary_search_by_key(&rv, |(seen, _, _)| *seen).is_ok() {
                        report.duplicates += 1;
                        continue;
                    }
                    if rv <= report.last_rv {
                        report.out_of_order += 1;
                        continue;
                    }
                    if config.measure && kind == Kind::Put {
                        if let Some(sent) =
                            event["object"]["data"]["t"].as_str().and_then(|t| t.parse::<u64>().ok())
                        {
                            report
                                .delivery_micros
                                .push(micros_now().saturating_sub(sent).min(u32::MAX as u64) as u32);
                        }
                    }
                    match kind {
                        Kind::Put => report.state.insert(name.clone(), (rv, seq)),
                        Kind::Deleted => report.state.remove(&name),
                    };
                    report.last_rv = rv;
                    let segment = report.segments.last_mut().unwrap();
                    segment.end = rv;
                    segment.events.push((rv, name, kind));
                    since_lag += 1;
                }
                if let Some((events, pause)) = config.lag {
                    if since_lag >= events {
                        since_lag = 0;
                        drop(body);
                        tokio::time::sleep(pause).await;
                        break;
                    }
                }
            }
            report.rewatches += 1;
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Checks

/// What the checks found. Every count but the informational ones must be 0.
#[derive(Debug, Default)]
pub struct Verdict {
    pub writes_acked: usize,
    /// Keys whose last acknowledged write is checked against the final list.
    pub keys_checked: usize,
    /// Keys whose final list entry is not what their last acknowledged write left.
    pub lost_writes: Vec<String>,
    /// Acknowledged writes (with a resourceVersion) seen by at least one watcher.
    pub writes_seen: usize,
    pub writes_with_rv: usize,
    /// Events missing from a watcher's segment though an acknowledged write or another
    /// watcher's event lies in its range.
    pub missed: u64,
    pub missed_examples: Vec<String>,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Watchers whose final state is not the final consistent list.
    pub diverged: usize,
    pub diverged_examples: Vec<String>,
    /// Two events at one resourceVersion for different keys.
    pub conflicts: u64,
    pub wrong_answers: Vec<String>,
    pub watcher_errors: Vec<String>,
    pub relists: u64,
    pub gone: u64,
    pub stalls: u64,
    pub rewatches: u64,
}

impl Verdict {
    /// Panics with the details if any check failed.
    pub fn assert_clean(&self) {
        let clean = self.lost_writes.is_empty()
            && self.missed == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.diverged == 0
            && self.conflicts == 0
            && self.wrong_answers.is_empty()
            && self.watcher_errors.is_empty();
        assert!(clean, "the fault lost or mangled something: {self:#?}");
    }
}

/// Checks the writers' ledgers and the watchers' reports against the final consistent list.
pub fn check(ledgers: &[Ledger], final_list: &State, watchers: &[WatcherReport]) -> Verdict {
    let mut verdict = Verdict::default();
    // No acknowledged write lost.
    for ledger in ledgers {
        verdict.writes_acked += ledger.acked.len();
        verdict.wrong_answers.extend(ledger.wrong.iter().cloned());
        for (key, expected) in &ledger.final_state {
            verdict.keys_checked += 1;
            let found = final_list.get(key).map(|&(_, seq)| seq);
            if found != *expected {
                verdict.lost_writes.push(format!("{key}: acknowledged {expected:?}, found {found:?}"));
            }
        }
    }
    // Every event any watcher saw, by resourceVersion; with every acknowledged write.
    let mut all: BTreeMap<u64, String> = BTreeMap::new();
    for ledger in ledgers {
        for acked in &ledger.acked {
            if let Some(rv) = acked.rv {
                verdict.writes_with_rv += 1;
                all.insert(rv, acked.key.clone());
            }
        }
    }
    let mut seen_rvs = std::collections::HashSet::new();
    for report in watchers {
        verdict.duplicates += report.duplicates;
        verdict.out_of_order += report.out_of_order;
        verdict.relists += report.relists;
        verdict.gone += report.gone;
        verdict.stalls += report.stalls;
        verdict.rewatches += report.rewatches;
        verdict
            .watcher_errors
            .extend(report.errors.iter().take(3).map(|error| format!("{}: {error}", report.server)));
        for segment in &report.segments {
            for (rv, key, _) in &segment.events {
                seen_rvs.insert(*rv);
                match all.get(rv) {
                    Some(other) if other != key => verdict.conflicts += 1,
                    Some(_) => {}
                    None => {
                        all.insert(*rv, key.clone());
                    }
                }
            }
        }
    }
    for ledger in ledgers {
        verdict.writes_seen +=
            ledger.acked.iter().filter(|acked| acked.rv.is_some_and(|rv| seen_rvs.contains(&rv))).count();
    }
    // No silent gap: within each segment, every known event in its range is there, in order.
    for (index, report) in watchers.iter().enumerate() {
        for segment in &report.segments {
            let mut got = segment.events.iter().map(|(rv, _, _)| *rv).peekable();
            if segment.end <= segment.start {
                continue;
            }
            for (&rv, key) in all.range(segment.start + 1..=segment.end) {
                while got.peek().is_some_and(|&next| next < rv) {
                    got.next();
                }
                if got.peek() == Some(&rv) {
                    got.next();
                } else {
                    verdict.missed += 1;
                    if verdict.missed_examples.len() < 5 {
                        verdict.missed_examples.push(format!(
                            "watcher {index} on {} missed {key}@{rv} in ({}, {}]",
                            report.server, segment.start, segment.end
                        ));
                    }
                }
            }
        }
        // Converged to the final list.
        if &report.state != final_list {
            verdict.diverged += 1;
            if verdict.diverged_examples.len() < 3 {
                let differing: Vec<String> = final_list
                    .iter()
                    .filter(|(key, value)| report.state.get(*key) != Some(value))
                    .map(|(key, value)| format!("{key}: list {value:?}, watcher {:?}", report.state.get(key)))
                    .chain(
                        report
                            .state
                            .keys()
                            .filter(|key| !final_list.contains_key(*key))
                            .map(|key| format!("{key}: only in the watcher")),
                    )
                    .take(5)
                    .collect();
                verdict.diverged_examples.push(format!(
                    "watcher {index} on {} at {}: {differing:?}",
                    report.server, report.last_rv
                ));
            }
        }
    }
    verdict
}

/// The `q` quantile (0..=1) of `values`, sorted in place.
pub fn quantile<T: Copy + Ord + Default>(values: &mut [T], q: f64) -> T {
    if values.is_empty() {
        return T::default();
    }
    values.sort_unstable();
    values[((values.len() - 1) as f64 * q).round() as usize]
}
