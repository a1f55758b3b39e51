//! The storage interface, and the backends that implement it.
//!
//! [`Storage`] is kube-apiserver's `storage.Interface` in async Rust: a versioned key-value store
//! with create, get, list, compare-and-swap update, delete, watch from a revision, count and
//! compaction. Every backend passes the same conformance suite (`tests/conformance.rs`):
//!
//! - [`embedded::EmbeddedStorage`], the default: durable, on [redb](https://docs.rs/redb), with an
//!   event log that serves watches from a past revision. Its in-memory variant serves
//!   `--in-memory` and tests.
//! - [`etcd::EtcdStorage`]: an etcd cluster with kube-apiserver's key layout.
//!
//! # Keys
//!
//! A key is a path such as `/configmaps/default/settings`: it starts with `/`, has no empty, `.`
//! or `..` segment and no control character. A backend maps it under its own prefix (the etcd
//! backend writes `/registry/configmaps/default/settings`), so a valid key can never reach
//! outside the prefix. A list or watch prefix follows the same rules and may end with `/`.
//!
//! # Revisions
//!
//! Every successful write gets the store's next revision: a `u64` that only grows. A key-value
//! pair carries the revision that created its key and the revision of its last modification
//! (`mod_revision`, which the API layer shows as `metadata.resourceVersion`). Failed writes
//! consume no revision.
//!
//! # History and compaction
//!
//! A store keeps the history of writes since its *compacted revision* `C`: a watch can start
//! after any revision `R >= C - 1` (it is delivered the events of revisions `> R`) and a list can
//! be served at any revision `R` with `C <= R <= current`. Older requests fail with
//! [`StorageError::Compacted`]; a caller that gets it must start again from a fresh list.
//!
//! # Errors
//!
//! [`StorageError::Unavailable`] is the only retryable error: the operation may or may not have
//! been applied (a write whose answer was lost). Every other error is final for that request and
//! guarantees that nothing was written.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

pub mod compactor;
pub mod embedded;
pub mod etcd;

/// A store revision. Revision 1 is an empty store; the first write gets revision 2.
pub type Revision = u64;

/// The largest value a backend accepts: 1.5 MiB, etcd's default request limit.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The result type of every storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, without the backend's prefix.
    pub key: String,
    /// The stored bytes; empty in the `kv` of a [`EventKind::Delete`] event.
    pub value: Bytes,
    /// The revision that created this key (the last create, if it was deleted in between).
    pub create_revision: Revision,
    /// The revision of the last write to this key; for a delete event, the revision of the
    /// delete.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What a write did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or its value replaced.
    Put,
    /// The key was deleted.
    Delete,
}

/// One write, as seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key after the write. For a delete, `value` is empty, `create_revision` is 0 and
    /// `mod_revision` is the revision of the delete.
    pub kv: KeyValue,
    /// The key before the write; `None` when a put created the key.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the write.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What a watch delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events, in revision order, all after the previous message's revision.
    Events(Vec<Event>),
    /// Every event up to and including this revision that matches the watch has been
    /// delivered. Sent when the watch has caught up past writes to other keys, and in answer
    /// to [`WatchStream::request_progress`].
    Progress(Revision),
}

/// Options of [`Storage::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision instead of the latest one.
    pub revision: Option<Revision>,
    /// Return at most this many items (`None` or 0: no limit).
    pub limit: Option<usize>,
    /// Start after this key (exclusive); must lie under the listed prefix.
    pub continue_after: Option<String>,
}

/// The answer of [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// The items, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Whether more keys follow the last item (only ever true when a limit was given).
    pub more: bool,
}

/// The answer of [`Storage::delete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The key-value pair that was deleted.
    pub prev: KeyValue,
    /// The revision of the delete.
    pub revision: Revision,
}

/// The errors of the storage layer.
#[allow(missing_docs)] // The fields are named for what they hold; the variants say what they mean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound { key: String },
    /// A create found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    /// A precondition on the key's `mod_revision` did not hold.
    #[error("conflict on key {key:?}: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    /// The requested revision is older than the history the store keeps.
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current: {current})")]
    FutureRevision { requested: Revision, current: Revision },
    /// The key (or prefix) is not a valid key.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The value is larger than [`MAX_VALUE_BYTES`].
    #[error("value of {size} bytes for key {key:?} exceeds the limit of {limit} bytes")]
    ValueTooLarge { key: String, size: usize, limit: usize },
    /// The store could not be reached or did not answer in time. Retryable; a write may or may
    /// not have been applied.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store has no space left for writes: the embedded store's disk is full, or etcd reached
    /// its space quota (`mvcc: database space exceeded`). Reads go on; writes fail until an
    /// operator frees space.
    #[error("storage is full: {0}")]
    NoSpace(String),
    /// The store failed in a way a retry will not fix (I/O error, corrupt data, bug).
    #[error("storage failure: {0}")]
    Internal(String),
}

impl StorageError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// A stream of [`WatchMessage`]s from [`Storage::watch`].
///
/// Messages arrive in revision order. The stream ends (`None`) when the backend closes it, after
/// an error at the latest: [`StorageError::Compacted`] when the history it needs is gone, or
/// [`StorageError::Unavailable`] when the connection broke. Dropping the stream cancels the
/// watch.
pub struct WatchStream {
    messages: mpsc::Receiver<Result<WatchMessage>>,
    progress_requests: Arc<Notify>,
}

impl WatchStream {
    /// Builds a stream fed by a backend's task. The task sends into `messages` and answers each
    /// wake-up of `progress_requests` with a [`WatchMessage::Progress`].
    pub(crate) fn new(
        messages: mpsc::Receiver<Result<WatchMessage>>,
        progress_requests: Arc<Notify>,
    ) -> Self {
        WatchStream { messages, progress_requests }
    }

    /// The next message; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchMessage>> {
        self.messages.recv().await
    }

    /// Asks the backend for a [`WatchMessage::Progress`] as soon as it can tell one.
    pub fn request_progress(&self) {
        self.progress_requests.notify_one();
    }
}

/// A versioned key-value store: the seed's storage interface.
///
/// Implementations are cheap to share (`Arc<dyn Storage>`), safe to call from many tasks at
/// once, and never block the async runtime (blocking I/O goes to blocking threads).
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// A one-line description for logs, e.g. `embedded redb at ./watchcache-data`.
    fn describe(&self) -> String;

    /// Whether a [`WatchMessage::Progress`] at revision `R` guarantees that every matching event
    /// up to `R` was delivered before it. A watch cache may then treat itself as current up to
    /// `R` (consistent reads from cache); otherwise it must read storage for them.
    fn progress_notify_reliable(&self) -> bool {
        true
    }

    /// Creates `key` with `value`. Fails with [`StorageError::AlreadyExists`] if the key exists.
    /// Returns the stored pair, whose `create_revision` and `mod_revision` are the write's
    /// revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Reads `key` at the latest revision; `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists the keys under `prefix` in key order, at the latest revision or at
    /// `options.revision`, after `options.continue_after`, at most `options.limit` of them.
    ///
    /// A list at a past revision sees exactly the state after that revision's write. Fails with
    /// [`StorageError::Compacted`] or [`StorageError::FutureRevision`] for a revision outside
    /// the kept history.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult>;

    /// Replaces the value of `key` if its `mod_revision` is still `expected_mod_revision`
    /// (compare-and-swap). Fails with [`StorageError::NotFound`] if the key does not exist and
    /// [`StorageError::Conflict`] (carrying the current revision) if it changed.
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision) -> Result<KeyValue>;

    /// Deletes `key`, if `expected_mod_revision` is `None` or equals the key's `mod_revision`.
    /// Returns the deleted pair and the delete's revision. Fails with
    /// [`StorageError::NotFound`] or [`StorageError::Conflict`].
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted>;

    /// Watches the keys under `prefix`, delivering every write with a revision greater than
    /// `after_revision`, in order, with the previous value of each key. Writes that happen while
    /// the watch starts are included. Fails (at once, or as the stream's last message) with
    /// [`StorageError::Compacted`] when `after_revision + 1` is older than the kept history.
    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream>;

    /// Counts the keys under `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// The revision of the latest write (1 for an empty store).
    async fn current_revision(&self) -> Result<Revision>;

    /// Why the store refuses every write, if it does: the embedded store after a write hit an
    /// I/O error such as a full disk or a read-only data directory (it stays so until the
    /// process restarts; see `embedded`, *Write failures*). `/readyz` fails while this is set.
    fn write_failure(&self) -> Option<StorageError> {
        None
    }

    /// Discards the history before `revision`: afterwards lists at older revisions and watches
    /// after revisions older than `revision - 1` fail with [`StorageError::Compacted`]. The
    /// current value of every key is kept. Compacting to a revision at or below the compacted
    /// revision fails with [`StorageError::Compacted`]; beyond the current revision, with
    /// [`StorageError::FutureRevision`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// One round of kube-apiserver's compaction election (see [`compactor`]): a
    /// compare-and-swap that succeeds only if no one claimed a round since the claim this
    /// process last saw (`seen_version`), recording `revision` as the revision to compact to.
    ///
    /// A store with a single writer, such as the embedded one, has no one to race: the default
    /// always wins.
    async fn claim_compaction(&self, seen_version: i64, _revision: Revision) -> Result<CompactionClaim> {
        Ok(CompactionClaim {
            won: true,
            version: seen_version + 1,
            current_revision: self.current_revision().await?,
        })
    }
}

/// The answer of [`Storage::claim_compaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionClaim {
    /// Whether this process won the round and should compact.
    pub won: bool,
    /// The claim's version as now stored: the `seen_version` of the next round.
    pub version: i64,
    /// Storage's revision when the claim was made: the revision to compact to next round.
    pub current_revision: Revision,
}

/// Reads `key`, computes its new value with `update`, and writes it with a compare-and-swap on
/// the revision that was read, retrying from a fresh read whenever another writer got there
/// first: kube-apiserver's `GuaranteedUpdate`.
///
/// `update` receives the current pair (`None` if the key does not exist, in which case the
/// returned value is created) and may be called several times; an error from it ends the loop
/// and is returned as is.
pub async fn guaranteed_update<E, F>(storage: &dyn Storage, key: &str, mut update: F) -> Result<KeyValue, E>
where
    E: From<StorageError>,
    F: FnMut(Option<&KeyValue>) -> Result<Bytes, E>,
{
    let mut current = storage.get(key).await?;
    loop {
        let value = update(current.as_ref())?;
        let written = match &current {
            Some(kv) => storage.update(key, value, kv.mod_revision).await,
            None => storage.create(key, value).await,
        };
        match written {
            Ok(kv) => return Ok(kv),
            Err(StorageError::Conflict { .. })
            | Err(StorageError::AlreadyExists { .. })
            | Err(StorageError::NotFound { .. }) => {
                current = storage.get(key).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Checks that `key` is a valid key (see the module docs).
pub fn validate_key(key: &str) -> Result<()> {
    validate_path(key, false)
}

/// Checks that `prefix` is a valid list or watch prefix: a key, or a key followed by `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    validate_path(prefix, true)
}

fn validate_path(path: &str, trailing_slash_allowed: bool) -> Result<()> {
    let invalid = |reason| Err(StorageError::InvalidKey { key: path.to_owned(), reason });
    if path.is_empty() {
        return invalid("the key is empty");
    }
    if !path.starts_with('/') {
        return invalid("a key must start with '/'");
    }
    if path.chars().any(|c| c.is_control()) {
        return invalid("a key must not contain control characters");
    }
    let body = match path.strip_suffix('/') {
        Some(body) if trailing_slash_allowed => body,
        _ => path,
    };
    if body.is_empty() {
        // The prefix "/" lists everything.
        return if trailing_slash_allowed { Ok(()) } else { invalid("the key has no segment") };
    }
    for segment in body[1..].split('/') {
        match segment {
            "" => return invalid("a key must not contain an empty segment"),
            "." | ".." => return invalid("a key must not contain '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks the size of a value to be written at `key`.
pub fn validate_value(key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StorageError::ValueTooLarge {
            key: key.to_owned(),
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Checks a list's options against its prefix.
pub fn validate_list(prefix: &str, options: &ListOptions) -> Result<()> {
    validate_prefix(prefix)?;
    if let Some(after) = &options.continue_after {
        validate_key(after)?;
        if !after.starts_with(prefix) {
            return Err(StorageError::InvalidKey {
                key: after.clone(),
                reason: "the continue key is not under the listed prefix",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_leave_the_prefix_are_rejected() {
        for key in ["", "pods/a", "/pods//a", "/pods/../secrets/a", "/./a", "/a\n", "/", "/a/"] {
            assert!(matches!(validate_key(key), Err(StorageError::InvalidKey { .. })), "{key:?} accepted");
        }
        for key in ["/pods/default/a", "/a", "/apps/deployments/ns/x.y"] {
            validate_key(key).unwrap();
        }
        for prefix in ["/", "/pods/", "/pods/default/", "/pods"] {
            validate_prefix(prefix).unwrap();
        }
        assert!(validate_prefix("/pods//").is_err());
    }

    #[test]
    fn values_over_the_limit_are_rejected() {
        validate_value("/a", &vec![0; MAX_VALUE_BYTES]).unwrap();
        assert_eq!(
            validate_value("/a", &vec![0; MAX_VALUE_BYTES + 1]),
            Err(StorageError::ValueTooLarge {
                key: "/a".into(),
                size: MAX_VALUE_BYTES + 1,
                limit: MAX_VALUE_BYTES
            })
        );
    }
}
