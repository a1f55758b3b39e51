//! The etcd backend: kube-apiserver's key layout on an etcd cluster.
//!
//! A key `/configmaps/default/settings` is stored at `<prefix>/configmaps/default/settings`
//! (prefix `/registry` by default). Store revisions are etcd's revisions.
//!
//! # Values
//!
//! The layers above keep objects as JSON. kube-apiserver stores built-in objects as Kubernetes
//! protobuf (`k8s\0` and a `runtime.Unknown` envelope, its default `--storage-media-type`) and
//! custom resources as JSON, so this backend reads both: every value that leaves it (get, list,
//! watch events and their previous values, the pairs create, update and delete return) and
//! starts with `k8s\0` is decoded to the object's JSON; any other value is passed on untouched.
//! A `k8s\0` value that cannot be decoded is a [`StorageError::Internal`] naming its etcd key,
//! never a value passed on as is: a get or a list fails as a whole, and a watch delivers the
//! revisions before that write and then ends with the error. A delete still removes such a
//! value (the one way out of it) and then fails saying so: the one error after which something
//! was written.
//!
//! Writes follow [`EtcdOptions::media_type`]: [`StorageMediaType::Json`] stores values as given;
//! [`StorageMediaType::Protobuf`] stores a JSON object whose `apiVersion` and `kind` name a
//! built-in type with a protobuf form as kube-apiserver would, and anything else (custom
//! resources, values that are not such an object) as given. The pair a create or update returns
//! then holds the JSON of what was stored (decoded back), so it matches later reads.
//!
//! - A create is a transaction on `create_revision == 0`; an update and a guarded delete are
//!   transactions on `mod_revision`.
//! - A watch asks for previous values and progress notifications; a compacted start revision
//!   ends it with [`StorageError::Compacted`].
//!
//! # Several endpoints
//!
//! etcd-client balances one channel over all the endpoints it is given, and then fails requests
//! while one of them is down. This backend instead keeps one client per endpoint, sends each
//! request to a *preferred* endpoint, and on a transport error or a timeout moves on to the next
//! endpoint (which becomes the preferred one if it answers). An update or delete whose answer
//! was lost may therefore be sent twice; both are conditional on the revision they expect, so
//! the second fails its compare (and an update that finds its own value reports success) rather
//! than applying twice. A create is never sent again once it may have reached etcd: its compare
//! (`create_revision == 0`) holds again after a delete, so a first attempt still in flight in a
//! frozen member could apply after the resend and a later delete and bring the object back. Its
//! lost answer is a 503 saying the create may or may not have been applied.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, Notify};

use crate::protobuf;

use super::{
    validate_key, validate_list, validate_prefix, validate_value, CompactionClaim, Deleted, Event, EventKind,
    KeyValue, ListOptions, ListResult, Result, Revision, Storage, StorageError, WatchMessage, WatchStream,
};

/// How many times, in this process, requests moved to another etcd endpoint after the
/// preferred one failed or timed out (`watchcache_etcd_endpoint_switches` in `/metrics`).
/// Relaxed: a statistic, read on its own.
pub static ENDPOINT_SWITCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Settings of the etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// The key prefix, e.g. `/registry`.
    pub prefix: String,
    /// How long one request may take on one endpoint before the next one is tried.
    pub request_timeout: Duration,
    /// How long [`EtcdStorage::connect`] keeps retrying before it gives up.
    pub startup_timeout: Duration,
    /// How built-in objects are written (reads accept both forms whatever this says).
    pub media_type: StorageMediaType,
}

/// How the etcd backend writes objects: kube-apiserver's `--storage-media-type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageMediaType {
    /// Values as given: the JSON the API layer writes.
    #[default]
    Json,
    /// Built-in objects as Kubernetes protobuf (`k8s\0` envelope), as kube-apiserver writes
    /// them by default; custom resources and anything without a protobuf form as given.
    Protobuf,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            prefix: "/registry".into(),
            request_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(10),
            media_type: StorageMediaType::Json,
        }
    }
}

/// The etcd backend. See the module docs.
pub struct EtcdStorage {
    endpoints: Vec<Endpoint>,
    /// The index of the endpoint requests go to first. Any request may move it; readers may see
    /// a stale value, which only costs one failed attempt.
    preferred: AtomicUsize,
    prefix: String,
    request_timeout: Duration,
    media_type: StorageMediaType,
    server_version: String,
}

struct Endpoint {
    url: String,
    client: Mutex<Option<Client>>,
}

impl EtcdStorage {
    /// Connects to the cluster at `endpoints`, retrying for up to `options.startup_timeout`
    /// until one endpoint answers.
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StorageError::Unavailable("no etcd endpoint given".into()));
        }
        let prefix = options.prefix.trim_end_matches('/').to_owned();
        if !prefix.is_empty() {
            validate_key(&prefix).map_err(|_| StorageError::InvalidKey {
                key: options.prefix.clone(),
                reason: "the etcd prefix must be a path such as /registry",
            })?;
        }
        let mut storage = EtcdStorage {
            endpoints: endpoints
                .iter()
                .map(|url| Endpoint { url: url.trim().to_owned(), client: Mutex::new(None) })
                .collect(),
            preferred: AtomicUsize::new(0),
            prefix,
            request_timeout: options.request_timeout,
            media_type: options.media_type,
            server_version: String::new(),
        };
        let deadline = tokio::time::Instant::now() + options.startup_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            match storage.run(|mut client| async move { client.status().await }).await {
                Ok(status) => {
                    storage.server_version = status.version().to_owned();
                    return Ok(storage);
                }
                Err(error) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(%error, "etcd not reachable yet, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    return Err(StorageError::Unavailable(format!(
                        "cannot reach etcd at {} within {:?}: {error}",
                        endpoints.join(","),
                        options.startup_timeout
                    )))
                }
            }
        }
    }

    /// The version the etcd server reported when connecting, e.g. `3.4.23`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, full: &[u8]) -> Result<String> {
        std::str::from_utf8(full)
            .ok()
            .and_then(|key| key.strip_prefix(self.prefix.as_str()))
            .map(str::to_owned)
            .ok_or_else(|| {
                StorageError::Internal(format!("etcd returned a key outside the prefix: {full:?}"))
            })
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = self.strip(kv.key())?;
        Ok(KeyValue {
            value: decode_value(&self.prefix, &key, kv.value())?,
            key,
            create_revision: kv.create_revision() as Revision,
            mod_revision: kv.mod_revision() as Revision,
        })
    }

    /// What to store for `value` at `key` under the media type, and the JSON to hand back for
    /// it: `(stored, returned)`.
    fn encode_value(&self, key: &str, value: Bytes) -> Result<(Bytes, Bytes)> {
        if value.starts_with(&protobuf::MAGIC) {
            // Already protobuf: stored as is, and only if it can be read back.
            let returned = decode_value(&self.prefix, key, &value)?;
            return Ok((value, returned));
        }
        if self.media_type == StorageMediaType::Json {
            return Ok((value.clone(), value));
        }
        let Ok(object) = serde_json::from_slice::<serde_json::Value>(&value) else {
            return Ok((value.clone(), value));
        };
        let text = |name: &str| object.get(name).and_then(serde_json::Value::as_str);
        let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
            return Ok((value.clone(), value));
        };
        let schema = protobuf::schema();
        if !schema.has_kind(api_version, kind) {
            return Ok((value.clone(), value));
        }
        let encoded = schema.encode_object(&object).map_err(|error| {
            StorageError::Internal(format!(
                "cannot store key {key:?} as protobuf: {api_version}, Kind={kind}: {error}"
            ))
        })?;
        let stored = Bytes::from(encoded);
        let returned = decode_value(&self.prefix, key, &stored)?;
        Ok((stored, returned))
    }

    async fn client(&self, index: usize) -> Result<Client> {
        let endpoint = &self.endpoints[index];
        if let Some(client) = endpoint.client.lock().expect("endpoint lock poisoned").as_ref() {
            return Ok(client.clone());
        }
        // Require a leader (gRPC metadata `hasleader=true`), as kube-apiserver's watches do with
        // clientv3.WithRequireLeader: a member cut off from the leader cancels the watch (after a
        // few election timeouts) instead of letting it stall, and fails a unary request at once
        // ("etcdserver: no leader", Unavailable) instead of holding it until the request timeout.
        // etcd-client sets it per client, so it covers every request, and `run` moves on to the
        // next endpoint.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        // Connecting builds the channel; the connection itself is made by the first request.
        let client = Client::connect([endpoint.url.as_str()], Some(options))
            .await
            .map_err(|error| StorageError::Unavailable(format!("{}: {error}", endpoint.url)))?;
        // Two tasks may connect at once; the last one's client is kept, both work.
        *endpoint.client.lock().expect("endpoint lock poisoned") = Some(client.clone());
        Ok(client)
    }

    /// Runs `request` on the preferred endpoint, then on each other one while the failure is a
    /// transport failure or a timeout.
    async fn run<T, F, Fut>(&self, request: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.run_tracked(request, Resend::Always).await.map(|(answer, _)| answer)
    }

    /// [`Self::run`], also saying whether the answer is to a resend: an earlier attempt failed
    /// in a way that may have left the request applied (its answer was lost). With
    /// [`Resend::OnlyUnsent`], a request that may have reached etcd is not sent again: the
    /// failure is returned, saying the write may or may not have been applied.
    async fn run_tracked<T, F, Fut>(&self, request: F, resend: Resend) -> Result<(T, bool)>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut resent = false;
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut last_error = StorageError::Unavailable("no endpoint tried".into());
        for attempt in 0..count {
            let index = (first + attempt) % count;
            let url = &self.endpoints[index].url;
            let client = match self.client(index).await {
                Ok(client) => client,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            match tokio::time::timeout(self.request_timeout, request(client)).await {
                Ok(Ok(answer)) => {
                    if attempt > 0 {
                        let from = &self.endpoints[first].url;
                        tracing::warn!(endpoint = %url, %from, "etcd endpoint changed: requests now go to this one");
                        self.preferred.store(index, Ordering::Relaxed);
                        ENDPOINT_SWITCHES.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok((answer, resent));
                }
                Ok(Err(error)) => {
                    let unsent = never_sent(&error);
                    let error = map_error(error);
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    tracing::warn!(endpoint = %url, %error, "etcd endpoint failed");
                    if !unsent {
                        if resend == Resend::OnlyUnsent {
                            return Err(StorageError::Unavailable(format!(
                                "{url}: {error}; the write may or may not have been applied"
                            )));
                        }
                        resent = true;
                    }
                    last_error = error;
                }
                Err(_) => {
                    tracing::warn!(endpoint = %url, "etcd endpoint timed out");
                    if resend == Resend::OnlyUnsent {
                        return Err(StorageError::Unavailable(format!(
                            "{url} did not answer within {:?}; the write may or may not have been applied",
                            self.request_timeout
                        )));
                    }
                    resent = true;
                    last_error = StorageError::Unavailable(format!(
                        "{url} did not answer within {:?}",
                        self.request_timeout
                    ));
                }
            }
        }
        Err(last_error)
    }
}

/// When [`EtcdStorage::run_tracked`] may send a request again to the next endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resend {
    /// After any transport failure or timeout: reads, and writes whose resend is harmless.
    Always,
    /// Only when the request cannot have reached etcd (the connection was never made). A create
    /// is one: its compare (`create_revision == 0`) holds again once the key is deleted, so a
    /// first attempt still in flight in a member that was frozen or cut off can apply *after* a
    /// resend succeeded and a later delete, bringing the object back.
    OnlyUnsent,
}

/// Whether a failed request can never have reached etcd: the connection was not made.
fn never_sent(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("tcp connect error")
        || text.contains("Connection refused")
        || text.contains("error trying to connect")
}

/// Whether an etcd server of `version` sends progress notifications only once every event
/// before them was sent (etcd#15220, fixed in 3.4.31 and 3.5.13; kube-apiserver requires those
/// for consistent reads from its cache). Debian's etcd 3.4.23 predates the fix.
pub fn progress_notify_reliable(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter_map(|part| part.parse::<u64>().ok());
    let (major, minor, patch) = (parts.next(), parts.next(), parts.next());
    match (major, minor, patch) {
        (Some(3), Some(4), Some(patch)) => patch >= 31,
        (Some(3), Some(5), Some(patch)) => patch >= 13,
        (Some(3), Some(minor), _) => minor >= 6,
        (Some(major), _, _) => major > 3,
        _ => false,
    }
}

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The JSON of a value read from etcd at `<prefix><key>`: Kubernetes protobuf (`k8s\0`)
/// decoded, any other value as is.
fn decode_value(prefix: &str, key: &str, value: &[u8]) -> Result<Bytes> {
    if !value.starts_with(&protobuf::MAGIC) {
        return Ok(Bytes::copy_from_slice(value));
    }
    let object = protobuf::schema().decode_object(value).map_err(|error| {
        StorageError::Internal(format!(
            "the value of etcd key \"{prefix}{key}\" is Kubernetes protobuf that cannot be decoded: {error}"
        ))
    })?;
    Ok(Bytes::from(serde_json::to_vec(&object).expect("a JSON value always encodes")))
}

fn map_error(error: etcd_client::Error) -> StorageError {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                StorageError::Compacted { requested: 0, compacted: 0 }
            } else if message.contains("required revision is a future revision") {
                StorageError::FutureRevision { requested: 0, current: 0 }
            } else if message.contains("database space exceeded") {
                // etcd's NOSPACE alarm: its quota is reached and it refuses writes until an
                // operator compacts, defragments and disarms the alarm.
                StorageError::NoSpace(format!("etcd: {message}"))
            } else {
                match i32::from(status.code()) {
                    // Cancelled: the connection went away under the call (tonic's answer to a
                    // reset), or etcd's "request cancelled"; either may have applied it.
                    GRPC_CANCELLED | GRPC_UNKNOWN | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE
                        if !message.contains("etcdserver: request is too large") =>
                    {
                        StorageError::Unavailable(format!("{:?}: {message}", status.code()))
                    }
                    _ => StorageError::Internal(format!("etcd: {:?}: {message}", status.code())),
                }
            }
        }
        Error::TransportError(error) => StorageError::Unavailable(format!("transport: {error}")),
        Error::IoError(error) => StorageError::Unavailable(format!("i/o: {error}")),
        Error::WatchError(error) => StorageError::Unavailable(format!("watch: {error}")),
        other => StorageError::Internal(format!("etcd: {other}")),
    }
}

// The gRPC status codes `map_error` treats as transient.
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// Fills in the revisions of a `Compacted` or `FutureRevision` error that etcd reported without
/// them.
fn with_revisions(error: StorageError, requested: Revision, current: Option<Revision>) -> StorageError {
    match error {
        StorageError::Compacted { compacted, .. } => StorageError::Compacted { requested, compacted },
        StorageError::FutureRevision { current: known, .. } => {
            StorageError::FutureRevision { requested, current: current.unwrap_or(known) }
        }
        other => other,
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|header| header.revision() as Revision)
        .ok_or_else(|| StorageError::Internal("etcd response without header".into()))
}

#[async_trait]
impl Storage for EtcdStorage {
    fn progress_notify_reliable(&self) -> bool {
        progress_notify_reliable(&self.server_version)
    }

    fn describe(&self) -> String {
        let urls: Vec<&str> = self.endpoints.iter().map(|endpoint| endpoint.url.as_str()).collect();
        let writes = match self.media_type {
            StorageMediaType::Json => "JSON",
            StorageMediaType::Protobuf => "protobuf",
        };
        format!("etcd {} at {} under {}, writing {writes}", self.server_version, urls.join(","), self.prefix)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        validate_key(key)?;
        let (stored, value) = self.encode_value(key, value)?;
        validate_value(key, &stored)?;
        let full = self.full_key(key);
        // Never resent once it may have reached etcd (see `Resend::OnlyUnsent`): a lost answer
        // is an error saying the create may or may not have been applied, as kube-apiserver's
        // timeout is.
        let (response, _) = self
            .run_tracked(
                |mut client| {
                    let txn = Txn::new()
                        .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(full.clone(), stored.to_vec(), None)])
                        .or_else([TxnOp::get(full.clone(), None)]);
                    async move { client.txn(txn).await }
                },
                Resend::OnlyUnsent,
            )
            .await?;
        if !response.succeeded() {
            return Err(StorageError::AlreadyExists { key: key.to_owned() });
        }
        let revision = header_revision(response.header())?;
        Ok(KeyValue { key: key.to_owned(), value, create_revision: revision, mod_revision: revision })
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let full = self.full_key(key);
        let response = self
            .run(|mut client| {
                let full = full.clone();
                async move { client.get(full, None).await }
            })
            .await?;
        response.kvs().first().map(|kv| self.key_value(kv)).transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        validate_list(prefix, &options)?;
        let full_prefix = self.full_key(prefix);
        let end = prefix_end(full_prefix.as_bytes());
        let start: Vec<u8> = match &options.continue_after {
            Some(after) => {
                let mut start = self.full_key(after).into_bytes();
                start.push(0);
                start
            }
            None => full_prefix.clone().into_bytes(),
        };
        let limit = options.limit.filter(|&limit| limit > 0);
        let response = self
            .run(|mut client| {
                let mut get = GetOptions::new().with_range(end.clone());
                if let Some(limit) = limit {
                    get = get.with_limit(limit as i64);
                }
                if let Some(revision) = options.revision {
                    get = get.with_revision(revision as i64);
                }
                let start = start.clone();
                async move { client.get(start, Some(get)).await }
            })
            .await
            .map_err(|error| with_revisions(error, options.revision.unwrap_or(0), None))?;
        let current = header_revision(response.header())?;
        let items = response.kvs().iter().map(|kv| self.key_value(kv)).collect::<Result<Vec<_>>>()?;
        Ok(ListResult { items, revision: options.revision.unwrap_or(current), more: response.more() })
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision) -> Result<KeyValue> {
        validate_key(key)?;
        let (stored, value) = self.encode_value(key, value)?;
        validate_value(key, &stored)?;
        let full = self.full_key(key);
        let (response, resent) = self
            .run_tracked(
                |mut client| {
                    let txn = Txn::new()
                        .when([
                            Compare::version(full.clone(), CompareOp::Greater, 0),
                            Compare::mod_revision(
                                full.clone(),
                                CompareOp::Equal,
                                expected_mod_revision as i64,
                            ),
                        ])
                        .and_then([TxnOp::put(
                            full.clone(),
                            stored.to_vec(),
                            Some(PutOptions::new().with_prev_key()),
                        )])
                        .or_else([TxnOp::get(full.clone(), None)]);
                    async move { client.txn(txn).await }
                },
                Resend::Always,
            )
            .await?;
        let revision = header_revision(response.header())?;
        let mut answers = response.op_responses().into_iter();
        match answers.next() {
            Some(TxnOpResponse::Put(put)) if response.succeeded() => {
                let create_revision =
                    put.prev_key().map_or(revision, |prev| prev.create_revision() as Revision);
                Ok(KeyValue { key: key.to_owned(), value, create_revision, mod_revision: revision })
            }
            Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
                None => Err(StorageError::NotFound { key: key.to_owned() }),
                // A resend whose first attempt was applied: the key holds our value, written
                // after the revision we expected.
                Some(current)
                    if resent
                        && current.value() == &stored[..]
                        && current.mod_revision() as Revision > expected_mod_revision =>
                {
                    Ok(KeyValue {
                        key: key.to_owned(),
                        value,
                        create_revision: current.create_revision() as Revision,
                        mod_revision: current.mod_revision() as Revision,
                    })
                }
                Some(current) => Err(StorageError::Conflict {
                    key: key.to_owned(),
                    expected: expected_mod_revision,
                    actual: current.mod_revision() as Revision,
                }),
            },
            _ => Err(StorageError::Internal("unexpected etcd transaction answer".into())),
        }
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted> {
        validate_key(key)?;
        let full = self.full_key(key);
        let response = self
            .run(|mut client| {
                let mut txn = Txn::new();
                if let Some(expected) = expected_mod_revision {
                    txn = txn.when([Compare::mod_revision(full.clone(), CompareOp::Equal, expected as i64)]);
                }
                let txn = txn
                    .and_then([TxnOp::delete(full.clone(), Some(DeleteOptions::new().with_prev_key()))])
                    .or_else([TxnOp::get(full.clone(), None)]);
                async move { client.txn(txn).await }
            })
            .await?;
        let revision = header_revision(response.header())?;
        match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(deleted)) if response.succeeded() => {
                match deleted.prev_kvs().first() {
                    // The delete took effect whatever the value held: say so rather than let
                    // the error read as "nothing was written".
                    Some(prev) => match self.key_value(prev) {
                        Ok(prev) => Ok(Deleted { prev, revision }),
                        Err(StorageError::Internal(reason)) => Err(StorageError::Internal(format!(
                            "key {key:?} was deleted at revision {revision}, but {reason}"
                        ))),
                        Err(error) => Err(error),
                    },
                    None => Err(StorageError::NotFound { key: key.to_owned() }),
                }
            }
            Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
                None => Err(StorageError::NotFound { key: key.to_owned() }),
                Some(current) => Err(StorageError::Conflict {
                    key: key.to_owned(),
                    expected: expected_mod_revision.unwrap_or(0),
                    actual: current.mod_revision() as Revision,
                }),
            },
            _ => Err(StorageError::Internal("unexpected etcd transaction answer".into())),
        }
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream> {
        validate_prefix(prefix)?;
        let full_prefix = self.full_key(prefix);
        let end = prefix_end(full_prefix.as_bytes());
        let stream = self
            .run(|mut client| {
                let options = WatchOptions::new()
                    .with_range(end.clone())
                    .with_start_revision(after_revision as i64 + 1)
                    .with_prev_key()
                    .with_progress_notify();
                let key = full_prefix.clone();
                async move { client.watch(key, Some(options)).await }
            })
            .await?;
        let (sender, messages) = mpsc::channel(64);
        let progress = Arc::new(Notify::new());
        let task = EtcdWatch {
            prefix: self.prefix.clone(),
            stream,
            sender,
            progress: Arc::clone(&progress),
            requested: after_revision + 1,
        };
        tokio::spawn(task.run());
        Ok(WatchStream::new(messages, progress))
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        validate_prefix(prefix)?;
        let full_prefix = self.full_key(prefix);
        let end = prefix_end(full_prefix.as_bytes());
        let response = self
            .run(|mut client| {
                let options = GetOptions::new().with_range(end.clone()).with_count_only();
                let key = full_prefix.clone();
                async move { client.get(key, Some(options)).await }
            })
            .await?;
        Ok(response.count() as u64)
    }

    async fn current_revision(&self) -> Result<Revision> {
        let key = self.full_key("/");
        let response = self
            .run(|mut client| {
                let key = key.clone();
                async move { client.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        header_revision(response.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(StorageError::FutureRevision { requested: revision, current });
        }
        self.run(|mut client| async move { client.compact(revision as i64, None).await })
            .await
            .map_err(|error| with_revisions(error, revision, Some(current)))?;
        Ok(())
    }

    /// kube-apiserver's election, on the same key (`compact_rev_key`, outside any prefix, since
    /// compaction is of the whole cluster), so that watchcache replicas and kube-apiservers
    /// sharing one etcd compact once per interval between them.
    async fn claim_compaction(&self, seen_version: i64, revision: Revision) -> Result<CompactionClaim> {
        let response = self
            .run(|mut client| {
                let txn = Txn::new()
                    .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, seen_version)])
                    .and_then([TxnOp::put(COMPACT_REV_KEY, revision.to_string(), None)])
                    .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
                async move { client.txn(txn).await }
            })
            .await?;
        let current_revision = header_revision(response.header())?;
        if response.succeeded() {
            return Ok(CompactionClaim { won: true, version: seen_version + 1, current_revision });
        }
        let version = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                _ => None,
            })
            .unwrap_or(0);
        Ok(CompactionClaim { won: false, version, current_revision })
    }
}

/// The key on which compactions are elected, as kube-apiserver names it.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

struct EtcdWatch {
    prefix: String,
    stream: etcd_client::WatchStream,
    sender: mpsc::Sender<Result<WatchMessage>>,
    progress: Arc<Notify>,
    /// The first revision the watch asked for, for the `Compacted` error.
    requested: Revision,
}

impl EtcdWatch {
    async fn run(mut self) {
        loop {
            let message = tokio::select! {
                message = self.stream.message() => message,
                _ = self.progress.notified() => {
                    if let Err(error) = self.stream.request_progress().await {
                        let _ = self.sender.send(Err(map_error(error))).await;
                        return;
                    }
                    continue;
                }
                _ = self.sender.closed() => return,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    let _ = self
                        .sender
                        .send(Err(StorageError::Unavailable("etcd closed the watch".into())))
                        .await;
                    return;
                }
                Err(error) => {
                    let _ = self.sender.send(Err(map_error(error))).await;
                    return;
                }
            };
            if response.compact_revision() > 0 {
                let error = StorageError::Compacted {
                    requested: self.requested,
                    compacted: response.compact_revision() as Revision,
                };
                let _ = self.sender.send(Err(error)).await;
                return;
            }
            if response.canceled() {
                let reason = response.cancel_reason().to_owned();
                let _ = self
                    .sender
                    .send(Err(StorageError::Unavailable(format!("watch canceled: {reason}"))))
                    .await;
                return;
            }
            let (message, error) = if response.events().is_empty() {
                if response.created() {
                    continue;
                }
                match header_revision(response.header()) {
                    Ok(revision) => (Some(WatchMessage::Progress(revision)), None),
                    Err(error) => (None, Some(error)),
                }
            } else {
                let (events, error) = self.events(&response);
                ((!events.is_empty()).then_some(WatchMessage::Events(events)), error)
            };
            if let Some(message) = message {
                if self.sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            if let Some(error) = error {
                let _ = self.sender.send(Err(error)).await;
                return;
            }
            if let Some(last) = response.events().last().and_then(|event| event.kv()) {
                self.requested = last.mod_revision() as Revision + 1;
            }
        }
    }

    /// The events of `response`, their values decoded, and the error that ends the watch if
    /// one of them cannot be decoded. The events before it are kept, but only whole revisions:
    /// a watch resumed after the last revision delivered meets the failing write again rather
    /// than skipping it.
    fn events(&self, response: &etcd_client::WatchResponse) -> (Vec<Event>, Option<StorageError>) {
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            match self.event(event) {
                Ok(decoded) => events.push(decoded),
                Err(error) => {
                    match event.kv() {
                        Some(kv) => events.retain(|kept| kept.revision() < kv.mod_revision() as Revision),
                        None => events.clear(),
                    }
                    return (events, Some(error));
                }
            }
        }
        (events, None)
    }

    fn event(&self, event: &etcd_client::Event) -> Result<Event> {
        let key_value = |kv: &etcd_client::KeyValue| -> Result<KeyValue> {
            let key = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|key| key.strip_prefix(self.prefix.as_str()))
                .ok_or_else(|| {
                    StorageError::Internal("etcd watch returned a key outside the prefix".into())
                })?;
            Ok(KeyValue {
                key: key.to_owned(),
                value: decode_value(&self.prefix, key, kv.value())?,
                create_revision: kv.create_revision() as Revision,
                mod_revision: kv.mod_revision() as Revision,
            })
        };
        let kv = event.kv().ok_or_else(|| StorageError::Internal("etcd event without kv".into()))?;
        let kind = match event.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        };
        let mut kv = key_value(kv)?;
        if kind == EventKind::Delete {
            kv.create_revision = 0;
            kv.value = Bytes::new();
        }
        let prev = event.prev_kv().map(key_value).transpose()?;
        Ok(Event { kind, kv, prev })
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix_end, progress_notify_reliable};

    #[test]
    fn progress_notifications_are_trusted_from_the_fixed_versions_on() {
        for (version, reliable) in [
            ("3.4.23", false),
            ("3.4.30", false),
            ("3.4.31", true),
            ("3.5.12", false),
            ("3.5.13", true),
            ("3.6.0", true),
            ("3.3.27", false),
            ("4.0.0", true),
            ("", false),
        ] {
            assert_eq!(progress_notify_reliable(version), reliable, "{version}");
        }
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
