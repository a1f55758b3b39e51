//! The embedded backend: a durable store in one file, on redb.
//!
//! # Layout
//!
//! One redb database with three tables:
//!
//! - `kv`: key → `create_revision (u64 LE) ‖ mod_revision (u64 LE) ‖ value`, the current state;
//! - `log`: revision → one encoded [`Event`] (with the previous value), the history that watches
//!   and lists at past revisions read;
//! - `meta`: `revision` (the latest write's revision) and `compacted` (every log entry below it
//!   is gone).
//!
//! Each write assigns the next revision, updates `kv`, appends to `log` and bumps `meta` in one
//! transaction, so the three never disagree.
//!
//! # Writes: one writer thread, group commit
//!
//! All writes go through one thread that owns the write side of the database. It takes every
//! request that is waiting (up to [`MAX_BATCH`]), applies them one after another in a single
//! transaction (each sees the ones before it, and a failed precondition affects only its own
//! request), commits once with [`Durability::Immediate`] (fsync), publishes the new revision,
//! and only then answers. A write is acknowledged only once it is on disk; concurrent writers
//! share one fsync.
//!
//! # History
//!
//! The writer keeps the last `history_revisions` revisions in `log`, trimming at most
//! [`MAX_TRIM_PER_BATCH`] entries per batch so that trimming never stalls writes.
//! [`Storage::compact`] trims further at once.
//!
//! # Write failures
//!
//! A write that fails with an I/O error (a full disk, a data directory that turned read-only, a
//! failing device) leaves redb refusing every later write until the database is reopened, and
//! the commit that failed may or may not be on disk. The writer then stops taking writes: it
//! logs one error line saying why, answers that write and every later one at once with the
//! failure ([`StorageError::NoSpace`] for a full disk, which the API answers with 507, or
//! [`StorageError::Unavailable`], 503), and [`Storage::write_failure`] reports it, so that
//! `/readyz` fails. Reads go on from what is committed. Nothing is lost or torn: every
//! acknowledged write was committed before its answer, and redb's commits are atomic. Once the
//! operator has freed space (or made the directory writable), a restart reopens the store and
//! writes resume.
//!
//! # Watches
//!
//! A watch is a task that reads `log` from its own cursor whenever the published revision moves
//! past it. It never misses a write: a write is published after its commit, and the task re-reads
//! the published revision after every read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use crossbeam::channel as cb;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::{
    validate_key, validate_list, validate_prefix, validate_value, Deleted, Event, EventKind, KeyValue,
    ListOptions, ListResult, Result, Revision, Storage, StorageError, WatchMessage, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// The most write requests applied in one transaction.
pub const MAX_BATCH: usize = 256;
/// The most log entries the writer trims in one batch while keeping the history window.
pub const MAX_TRIM_PER_BATCH: usize = 1024;
/// The most log entries a watch reads at once.
const WATCH_READ_BATCH: usize = 1024;
/// The capacity of a watch's message channel.
const WATCH_CHANNEL: usize = 64;

/// Settings of the embedded backend.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// How many revisions of history to keep for watches and past-revision lists.
    pub history_revisions: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { history_revisions: 100_000 }
    }
}

/// The embedded backend. See the module docs.
pub struct EmbeddedStorage {
    db: Arc<Database>,
    /// The revision of the latest committed write. Written only by the writer thread, after the
    /// commit and before the writer answers; read by watches and `current_revision`.
    revision: Arc<watch::Sender<Revision>>,
    writer: Mutex<Option<Writer>>,
    description: String,
    /// The one reader of new log entries for the watches at the log's head; started by the
    /// first watch.
    router: std::sync::OnceLock<Arc<Router>>,
    /// Why the store refuses writes, once a write failed with an I/O error (see *Write
    /// failures*). Set once, by the writer thread.
    failure: Arc<std::sync::OnceLock<StorageError>>,
}

struct Writer {
    requests: cb::Sender<WriteRequest>,
    thread: JoinHandle<()>,
}

impl EmbeddedStorage {
    /// Opens (or creates) the durable store in directory `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| {
            StorageError::Internal(format!("cannot create data directory {}: {error}", dir.display()))
        })?;
        let path: PathBuf = dir.join("watchcache.redb");
        let db = Database::create(&path)
            .map_err(|error| StorageError::Internal(format!("cannot open {}: {error}", path.display())))?;
        Self::start(db, options, format!("embedded redb at {}", dir.display()), Durability::Immediate)
    }

    /// Opens an empty store that lives in memory only.
    pub fn in_memory(options: EmbeddedOptions) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_error)?;
        Self::start(db, options, "in-memory".to_owned(), Durability::Immediate)
    }

    /// For tests and fuzzing only, never a server: [`EmbeddedStorage::in_memory`] with redb's
    /// non-durable commits ([`Durability::None`]). They skip the work that makes a commit
    /// survive a crash, which a store in memory cannot anyway, so writes are several times
    /// cheaper; but redb may hold the pages they free until a durable commit, so memory can grow
    /// with every write: keep such a store short-lived. Every other behaviour is the same.
    #[doc(hidden)]
    pub fn in_memory_volatile(options: EmbeddedOptions) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_error)?;
        Self::start(db, options, "in-memory (volatile)".to_owned(), Durability::None)
    }

    fn start(
        db: Database,
        options: EmbeddedOptions,
        description: String,
        durability: Durability,
    ) -> Result<Self> {
        let db = Arc::new(db);
        let revision = initialize(&db)?;
        let revision = Arc::new(watch::Sender::new(revision));
        let (requests, receiver) = cb::unbounded();
        let failure = Arc::new(std::sync::OnceLock::new());
        let thread = {
            let writer = WriterThread {
                db: Arc::clone(&db),
                published: Arc::clone(&revision),
                history_revisions: options.history_revisions,
                failure: Arc::clone(&failure),
                description: description.clone(),
                durability,
            };
            std::thread::Builder::new()
                .name("embedded-writer".into())
                .spawn(move || writer.run(&receiver))
                .map_err(|error| StorageError::Internal(format!("cannot start writer: {error}")))?
        };
        Ok(EmbeddedStorage {
            db,
            revision,
            writer: Mutex::new(Some(Writer { requests, thread })),
            description,
            router: std::sync::OnceLock::new(),
            failure,
        })
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        if let Some(failure) = self.failure.get() {
            return Err(failure.clone());
        }
        let (reply, answer) = oneshot::channel();
        {
            let writer = self.writer.lock().expect("writer lock poisoned");
            let writer = writer.as_ref().ok_or_else(|| StorageError::Unavailable("store closed".into()))?;
            writer
                .requests
                .send(WriteRequest { op, reply })
                .map_err(|_| StorageError::Internal("writer thread stopped".into()))?;
        }
        answer.await.map_err(|_| StorageError::Internal("writer thread stopped".into()))?
    }

    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(db_error)?;
            read(&txn)
        })
        .await
        .map_err(|error| StorageError::Internal(format!("read task failed: {error}")))?
    }
}

impl Drop for EmbeddedStorage {
    fn drop(&mut self) {
        // Closing the request channel stops the writer once it has answered what it holds;
        // joining it releases the database file before a reopen.
        let writer = self.writer.get_mut().ok().and_then(Option::take);
        if let Some(Writer { requests, thread }) = writer {
            drop(requests);
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl Storage for EmbeddedStorage {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        validate_key(key)?;
        validate_value(key, &value)?;
        match self.write(WriteOp::Create { key: key.to_owned(), value }).await? {
            WriteOutcome::Put(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let key = key.to_owned();
        self.read(move |txn| {
            let table = match txn.open_table(KV) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(db_error(error)),
            };
            let found = table.get(key.as_str()).map_err(db_error)?;
            found.map(|guard| decode_kv(&key, guard.value())).transpose()
        })
        .await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        validate_list(prefix, &options)?;
        let prefix = prefix.to_owned();
        self.read(move |txn| list_in(txn, &prefix, &options)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: Revision) -> Result<KeyValue> {
        validate_key(key)?;
        validate_value(key, &value)?;
        let op = WriteOp::Update { key: key.to_owned(), value, expected: expected_mod_revision };
        match self.write(op).await? {
            WriteOutcome::Put(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<Deleted> {
        validate_key(key)?;
        match self.write(WriteOp::Delete { key: key.to_owned(), expected: expected_mod_revision }).await? {
            WriteOutcome::Deleted(deleted) => Ok(deleted),
            other => Err(unexpected(other)),
        }
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_owned();
        // Fail at once for a compacted start, as etcd does.
        let compacted = self.read(|txn| Ok(read_meta(txn)?.1)).await?;
        check_watch_start(after_revision, compacted)?;
        let (sender, messages) = mpsc::channel(WATCH_CHANNEL);
        let progress = Arc::new(Notify::new());
        let router = Arc::clone(self.router.get_or_init(|| Router::start(&self.db, &self.revision)));
        let task = WatchTask {
            db: Arc::downgrade(&self.db),
            prefix,
            cursor: after_revision,
            revision: self.revision.subscribe(),
            sender,
            progress: Arc::clone(&progress),
            router,
        };
        tokio::spawn(task.run());
        Ok(WatchStream::new(messages, progress))
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_owned();
        self.read(move |txn| {
            let table = match txn.open_table(KV) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(error) => return Err(db_error(error)),
            };
            let mut count = 0;
            for entry in table.range(prefix.as_str()..).map_err(db_error)? {
                let (key, _) = entry.map_err(db_error)?;
                if !key.value().starts_with(prefix.as_str()) {
                    break;
                }
                count += 1;
            }
            Ok(count)
        })
        .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(*self.revision.borrow())
    }

    fn write_failure(&self) -> Option<StorageError> {
        self.failure.get().cloned()
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.write(WriteOp::Compact { revision }).await? {
            WriteOutcome::Compacted => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn internal(error: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(error.to_string())
}

/// A redb error as a [`StorageError`]. I/O errors keep what they are: a full disk becomes
/// [`StorageError::NoSpace`], any other I/O error (a read-only file system, a failing disk)
/// [`StorageError::Unavailable`], so that the writer can stop taking writes (see *Write
/// failures*). redb answers every later write with `PreviousIo` until the database is reopened.
fn db_error(error: impl Into<redb::Error>) -> StorageError {
    match error.into() {
        redb::Error::Io(io) => io_error(&io),
        redb::Error::PreviousIo => StorageError::Unavailable(
            "an earlier write failed with an I/O error; the store must be reopened".into(),
        ),
        other => StorageError::Internal(other.to_string()),
    }
}

fn io_error(io: &std::io::Error) -> StorageError {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    if io.kind() == std::io::ErrorKind::StorageFull || matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT)) {
        StorageError::NoSpace(io.to_string())
    } else {
        StorageError::Unavailable(format!("I/O error: {io}"))
    }
}

fn unexpected(outcome: WriteOutcome) -> StorageError {
    StorageError::Internal(format!("unexpected writer answer {outcome:?}"))
}

fn check_watch_start(after_revision: Revision, compacted: Revision) -> Result<()> {
    if after_revision + 1 < compacted {
        return Err(StorageError::Compacted { requested: after_revision + 1, compacted });
    }
    Ok(())
}

/// Creates the tables of a new store and returns the latest revision.
fn initialize(db: &Database) -> Result<Revision> {
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(Durability::Immediate).map_err(db_error)?;
    let revision = {
        txn.open_table(KV).map_err(db_error)?;
        txn.open_table(LOG).map_err(db_error)?;
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let revision = meta.get(META_REVISION).map_err(db_error)?.map(|guard| guard.value());
        match revision {
            Some(revision) => revision,
            None => {
                meta.insert(META_REVISION, 1).map_err(db_error)?;
                meta.insert(META_COMPACTED, 0).map_err(db_error)?;
                1
            }
        }
    };
    txn.commit().map_err(db_error)?;
    Ok(revision)
}

/// `(revision, compacted)` as of `txn`.
fn read_meta(txn: &redb::ReadTransaction) -> Result<(Revision, Revision)> {
    let meta = txn.open_table(META).map_err(db_error)?;
    let get = |name| -> Result<u64> {
        Ok(meta.get(name).map_err(db_error)?.map(|guard| guard.value()).unwrap_or(0))
    };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn encode_kv(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    let mut reader = Reader(bytes);
    let create_revision = reader.u64()?;
    let mod_revision = reader.u64()?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(reader.0),
        create_revision,
        mod_revision,
    })
}

/// Log record: `kind u8 ‖ key_len u32 ‖ key ‖ create u64 ‖ value_len u32 ‖ value ‖ has_prev u8
/// [‖ prev_create u64 ‖ prev_mod u64 ‖ prev_value (rest)]`. The event's revision is the log key.
fn encode_event(event: &Event) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |prev| 16 + prev.value.len());
    let mut out = Vec::with_capacity(26 + event.kv.key.len() + event.kv.value.len() + prev_len);
    out.push(match event.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    out.extend_from_slice(&(event.kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(event.kv.key.as_bytes());
    out.extend_from_slice(&event.kv.create_revision.to_le_bytes());
    out.extend_from_slice(&(event.kv.value.len() as u32).to_le_bytes());
    out.extend_from_slice(&event.kv.value);
    match &event.prev {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            out.extend_from_slice(&prev.value);
        }
    }
    out
}

/// The key of an encoded event, without decoding the rest.
fn event_key(bytes: &[u8]) -> Result<&str> {
    let mut reader = Reader(bytes);
    reader.u8()?;
    let len = reader.u32()? as usize;
    std::str::from_utf8(reader.take(len)?).map_err(internal)
}

fn decode_event(revision: Revision, bytes: &[u8]) -> Result<Event> {
    let mut reader = Reader(bytes);
    let kind = match reader.u8()? {
        0 => EventKind::Put,
        1 => EventKind::Delete,
        other => return Err(StorageError::Internal(format!("corrupt log entry kind {other}"))),
    };
    let key_len = reader.u32()? as usize;
    let key = std::str::from_utf8(reader.take(key_len)?).map_err(internal)?.to_owned();
    let create_revision = reader.u64()?;
    let value_len = reader.u32()? as usize;
    let value = Bytes::copy_from_slice(reader.take(value_len)?);
    let prev = match reader.u8()? {
        0 => None,
        _ => Some(KeyValue {
            key: key.clone(),
            create_revision: reader.u64()?,
            mod_revision: reader.u64()?,
            value: Bytes::copy_from_slice(reader.0),
        }),
    };
    Ok(Event { kind, kv: KeyValue { key, value, create_revision, mod_revision: revision }, prev })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.0.len() < len {
            return Err(StorageError::Internal("corrupt record: truncated".into()));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

fn list_in(txn: &redb::ReadTransaction, prefix: &str, options: &ListOptions) -> Result<ListResult> {
    let (current, compacted) = read_meta(txn)?;
    let revision = options.revision.unwrap_or(current);
    if revision > current {
        return Err(StorageError::FutureRevision { requested: revision, current });
    }
    if revision < compacted {
        return Err(StorageError::Compacted { requested: revision, compacted });
    }
    let limit = options.limit.filter(|&limit| limit > 0).unwrap_or(usize::MAX);
    let start = options.continue_after.as_deref().unwrap_or(prefix);
    let kv = txn.open_table(KV).map_err(db_error)?;

    // State at `revision` = current state, with every key written since then replaced by its
    // value before the first of those writes (`None`: it did not exist).
    let mut rewound: std::collections::BTreeMap<String, Option<KeyValue>> = Default::default();
    if revision < current {
        let log = txn.open_table(LOG).map_err(db_error)?;
        for entry in log.range(revision + 1..=current).map_err(db_error)? {
            let (rev, bytes) = entry.map_err(db_error)?;
            let bytes = bytes.value();
            let key = event_key(bytes)?;
            if !key.starts_with(prefix) || key <= start && options.continue_after.is_some() {
                continue;
            }
            if !rewound.contains_key(key) {
                rewound.insert(key.to_owned(), decode_event(rev.value(), bytes)?.prev);
            }
        }
    }

    let mut items = Vec::new();
    let mut more = false;
    let mut push = |item: KeyValue, items: &mut Vec<KeyValue>| -> bool {
        if items.len() == limit {
            more = true;
            return false;
        }
        items.push(item);
        true
    };
    let mut rewound_iter = rewound.into_iter().peekable();
    let mut current_iter = kv.range(start..).map_err(db_error)?;
    let excluded_start = options.continue_after.is_some();
    'merge: loop {
        let next_current = loop {
            match current_iter.next() {
                None => break None,
                Some(entry) => {
                    let (key, value) = entry.map_err(db_error)?;
                    let key = key.value();
                    if !key.starts_with(prefix) {
                        break None;
                    }
                    if excluded_start && key == start {
                        continue;
                    }
                    break Some((key.to_owned(), value.value().to_vec()));
                }
            }
        };
        // Emit the rewound keys that sort before the next current key.
        while let Some((key, _)) = rewound_iter.peek() {
            if next_current.as_ref().is_some_and(|(current_key, _)| current_key < key) {
                break;
            }
            let (key, old) = rewound_iter.next().expect("peeked");
            let same_as_current = next_current.as_ref().is_some_and(|(current_key, _)| *current_key == key);
            if let Some(old) = old {
                if !push(old, &mut items) {
                    break 'merge;
                }
            }
            if same_as_current {
                continue 'merge;
            }
        }
        match next_current {
            None => break,
            Some((key, value)) => {
                if !push(decode_kv(&key, &value)?, &mut items) {
                    break;
                }
            }
        }
    }
    Ok(ListResult { items, revision, more })
}

// ---------------------------------------------------------------------------------------------
// Writes

#[derive(Debug)]
enum WriteOp {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected: Revision },
    Delete { key: String, expected: Option<Revision> },
    Compact { revision: Revision },
}

#[derive(Debug)]
enum WriteOutcome {
    Put(KeyValue),
    Deleted(Deleted),
    Compacted,
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// The writer thread's state: the write side of the database and what it publishes.
struct WriterThread {
    db: Arc<Database>,
    published: Arc<watch::Sender<Revision>>,
    history_revisions: u64,
    failure: Arc<std::sync::OnceLock<StorageError>>,
    description: String,
    /// Immediate (fsync) for every store a server opens; None only for `in_memory_volatile`.
    durability: Durability,
}

impl WriterThread {
    fn run(self, requests: &cb::Receiver<WriteRequest>) {
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // Requests queued before the failure was set get it without touching the database.
            if let Some(failure) = self.failure.get() {
                for request in batch {
                    let _ = request.reply.send(Err(failure.clone()));
                }
                continue;
            }
            let ops: Vec<&WriteOp> = batch.iter().map(|request| &request.op).collect();
            match apply_batch(&self.db, &ops, self.history_revisions, self.durability) {
                Ok((revision, outcomes)) => {
                    self.published.send_if_modified(|published| {
                        let changed = *published != revision;
                        *published = revision;
                        changed
                    });
                    for (request, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = request.reply.send(outcome);
                    }
                }
                Err(error) => {
                    let error = self.fail(error);
                    for request in batch {
                        let _ = request.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// The answer to a batch that failed with `error`; an I/O error stops all writes from now on.
    fn fail(&self, error: StorageError) -> StorageError {
        let failure = match error {
            StorageError::NoSpace(cause) => StorageError::NoSpace(format!(
                "{} cannot write: {cause}; writes are refused until space is freed and watchcache is restarted",
                self.description
            )),
            StorageError::Unavailable(cause) => StorageError::Unavailable(format!(
                "{} cannot write: {cause}; writes are refused until the data directory is writable again and watchcache is restarted",
                self.description
            )),
            other => {
                tracing::error!(error = %other, store = %self.description, "embedded store commit failed");
                return other;
            }
        };
        if self.failure.set(failure.clone()).is_ok() {
            tracing::error!(
                error = %failure,
                "the embedded store stopped taking writes: reads go on from what is committed, /readyz fails"
            );
        }
        failure
    }
}

/// Applies `ops` in one transaction; returns the revision after it and each op's outcome.
fn apply_batch(
    db: &Database,
    ops: &[&WriteOp],
    history_revisions: u64,
    durability: Durability,
) -> Result<(Revision, Vec<Result<WriteOutcome>>)> {
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(durability).map_err(db_error)?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let revision;
    {
        let mut kv = txn.open_table(KV).map_err(db_error)?;
        let mut log = txn.open_table(LOG).map_err(db_error)?;
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let get = |meta: &redb::Table<&str, u64>, name| -> Result<u64> {
            Ok(meta.get(name).map_err(db_error)?.map(|guard| guard.value()).unwrap_or(0))
        };
        let mut state =
            BatchState { revision: get(&meta, META_REVISION)?, compacted: get(&meta, META_COMPACTED)? };
        for op in ops {
            outcomes.push(state.apply(&mut kv, &mut log, op));
        }
        // Keep the history window, a bounded step at a time.
        if state.revision > history_revisions {
            state.trim(&mut log, state.revision - history_revisions, MAX_TRIM_PER_BATCH)?;
        }
        meta.insert(META_REVISION, state.revision).map_err(db_error)?;
        meta.insert(META_COMPACTED, state.compacted).map_err(db_error)?;
        revision = state.revision;
    }
    txn.commit().map_err(db_error)?;
    Ok((revision, outcomes))
}

struct BatchState {
    revision: Revision,
    compacted: Revision,
}

type KvTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type LogTable<'t> = redb::Table<'t, u64, &'static [u8]>;

impl BatchState {
    fn apply(&mut self, kv: &mut KvTable<'_>, log: &mut LogTable<'_>, op: &WriteOp) -> Result<WriteOutcome> {
        match op {
            WriteOp::Create { key, value } => {
                if kv.get(key.as_str()).map_err(db_error)?.is_some() {
                    return Err(StorageError::AlreadyExists { key: key.clone() });
                }
                self.put(kv, log, key, value, None)
            }
            WriteOp::Update { key, value, expected } => {
                let prev = self.current(kv, key)?;
                if prev.mod_revision != *expected {
                    return Err(StorageError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        actual: prev.mod_revision,
                    });
                }
                self.put(kv, log, key, value, Some(prev))
            }
            WriteOp::Delete { key, expected } => {
                let prev = self.current(kv, key)?;
                if let Some(expected) = expected {
                    if prev.mod_revision != *expected {
                        return Err(StorageError::Conflict {
                            key: key.clone(),
                            expected: *expected,
                            actual: prev.mod_revision,
                        });
                    }
                }
                self.revision += 1;
                let event = Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.clone(),
                        value: Bytes::new(),
                        create_revision: 0,
                        mod_revision: self.revision,
                    },
                    prev: Some(prev.clone()),
                };
                kv.remove(key.as_str()).map_err(db_error)?;
                log.insert(self.revision, encode_event(&event).as_slice()).map_err(db_error)?;
                Ok(WriteOutcome::Deleted(Deleted { prev, revision: self.revision }))
            }
            WriteOp::Compact { revision } => {
                if *revision <= self.compacted {
                    return Err(StorageError::Compacted { requested: *revision, compacted: self.compacted });
                }
                if *revision > self.revision {
                    return Err(StorageError::FutureRevision {
                        requested: *revision,
                        current: self.revision,
                    });
                }
                self.trim(log, *revision, usize::MAX)?;
                Ok(WriteOutcome::Compacted)
            }
        }
    }

    fn current(&self, kv: &KvTable<'_>, key: &str) -> Result<KeyValue> {
        match kv.get(key).map_err(db_error)? {
            Some(guard) => decode_kv(key, guard.value()),
            None => Err(StorageError::NotFound { key: key.to_owned() }),
        }
    }

    fn put(
        &mut self,
        kv: &mut KvTable<'_>,
        log: &mut LogTable<'_>,
        key: &str,
        value: &Bytes,
        prev: Option<KeyValue>,
    ) -> Result<WriteOutcome> {
        self.revision += 1;
        let create_revision = prev.as_ref().map_or(self.revision, |prev| prev.create_revision);
        let stored = KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            create_revision,
            mod_revision: self.revision,
        };
        kv.insert(key, encode_kv(create_revision, self.revision, value).as_slice()).map_err(db_error)?;
        let event = Event { kind: EventKind::Put, kv: stored.clone(), prev };
        log.insert(self.revision, encode_event(&event).as_slice()).map_err(db_error)?;
        Ok(WriteOutcome::Put(stored))
    }

    /// Removes log entries below `target`, at most `max` of them, and advances `compacted`.
    fn trim(&mut self, log: &mut LogTable<'_>, target: Revision, max: usize) -> Result<()> {
        if target <= self.compacted {
            return Ok(());
        }
        let mut removed = 0;
        let mut new_compacted = target;
        let doomed: Vec<u64> = {
            let mut doomed = Vec::new();
            for entry in log.range(..target).map_err(db_error)? {
                let (revision, _) = entry.map_err(db_error)?;
                if removed == max {
                    new_compacted = revision.value();
                    break;
                }
                doomed.push(revision.value());
                removed += 1;
            }
            doomed
        };
        for revision in doomed {
            log.remove(revision).map_err(db_error)?;
        }
        self.compacted = self.compacted.max(new_compacted);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Watches

// A watch is a task with two modes. Behind the log's head it *catches up*: it reads the log
// from its own cursor, as many entries at a time as it likes, and so may start from any kept
// revision and fall behind without holding anyone up. Once it has read everything, it *joins*
// the router: one task per store that reads each new log entry once and offers it to the
// joined watches whose prefix it falls under. A write to one prefix thus costs one log read,
// not one per watch, and wakes only the watches it concerns. A joined watch whose channel is
// full is handed back its cursor and catches up on its own, so a slow consumer never holds up
// the router or the other watches. Idle joined watches hear the router's position at most once
// a second (a progress message), and at once when they ask.

/// The router's shared state: the joined watches and how far the log has been routed.
struct Router {
    table: Mutex<RouterTable>,
}

struct RouterTable {
    /// Every log entry up to this revision has been offered to the joined watches.
    position: Revision,
    joined: Vec<Joined>,
    next_id: u64,
}

struct Joined {
    id: u64,
    prefix: String,
    sender: mpsc::Sender<Result<WatchMessage>>,
    /// Events up to this revision reached the watch before it joined.
    cursor: Revision,
    /// The highest revision the watch's client knows to be complete.
    told: Revision,
    /// Where the router hands the watch back when it leaves the router.
    slot: Arc<HandBack>,
}

/// The router's hand-back of a watch: the revision it has delivered up to.
#[derive(Default)]
struct HandBack {
    cursor: Mutex<Option<Revision>>,
    notify: Notify,
}

impl Router {
    fn start(db: &Arc<Database>, revision: &Arc<watch::Sender<Revision>>) -> Arc<Router> {
        let mut receiver = revision.subscribe();
        let position = *receiver.borrow_and_update();
        let router =
            Arc::new(Router { table: Mutex::new(RouterTable { position, joined: Vec::new(), next_id: 0 }) });
        tokio::spawn(Router::run(Arc::downgrade(&router), Arc::downgrade(db), receiver));
        router
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterTable> {
        self.table.lock().expect("router lock poisoned")
    }

    async fn run(
        router: std::sync::Weak<Router>,
        db: std::sync::Weak<Database>,
        mut revision: watch::Receiver<Revision>,
    ) {
        let mut idle_progress = tokio::time::interval(std::time::Duration::from_secs(1));
        idle_progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(this) = router.upgrade() else { return };
            let latest = *revision.borrow_and_update();
            let position = this.lock().position;
            if position < latest {
                let Some(db) = db.upgrade() else { return };
                let read = tokio::task::spawn_blocking(move || read_log(&db, "/", position, latest))
                    .await
                    .unwrap_or_else(|error| {
                        Err(StorageError::Internal(format!("watch read failed: {error}")))
                    });
                match read {
                    Ok((events, read_to)) => this.route(&events, read_to),
                    Err(error) => {
                        // Each watch meets the error on its own, reading from its cursor (a
                        // compaction past the router's position is `Compacted` for them, as
                        // it would be for a watch reading alone). With no one joined, the
                        // router may skip to the head: a watch joins only at or past it.
                        tracing::warn!(%error, "the watch router could not read the log; watches catch up alone");
                        {
                            let mut table = this.lock();
                            for joined in table.joined.drain(..) {
                                hand_back(&joined, position.max(joined.cursor));
                            }
                            table.position = latest;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
            drop(this);
            tokio::select! {
                changed = revision.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = idle_progress.tick() => {
                    let Some(this) = router.upgrade() else { return };
                    let mut table = this.lock();
                    let position = table.position;
                    for joined in &mut table.joined {
                        let known = position.max(joined.cursor);
                        if joined.told < known && joined.sender.try_send(Ok(WatchMessage::Progress(known))).is_ok() {
                            joined.told = known;
                        }
                    }
                }
            }
        }
    }

    /// Offers `events` (every log entry after the position, up to `read_to`) to the joined
    /// watches, each the ones under its prefix and after its cursor.
    fn route(&self, events: &[Event], read_to: Revision) {
        let mut table = self.lock();
        let position = table.position;
        table.joined.retain_mut(|joined| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|event| {
                    event.revision() > joined.cursor && event.kv.key.starts_with(joined.prefix.as_str())
                })
                .cloned()
                .collect();
            let Some(last) = mine.last().map(Event::revision) else { return true };
            match joined.sender.try_send(Ok(WatchMessage::Events(mine))) {
                Ok(()) => {
                    joined.told = last;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    hand_back(joined, position.max(joined.cursor));
                    false
                }
                // The watch is gone; its task sees the closed channel too.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        table.position = read_to;
    }
}

fn hand_back(joined: &Joined, cursor: Revision) {
    *joined.slot.cursor.lock().expect("hand-back lock poisoned") = Some(cursor);
    joined.slot.notify.notify_one();
}

struct WatchTask {
    /// Weak, so that a watch never keeps a closed store's file open.
    db: std::sync::Weak<Database>,
    prefix: String,
    /// Every write up to this revision has been read from the log.
    cursor: Revision,
    revision: watch::Receiver<Revision>,
    sender: mpsc::Sender<Result<WatchMessage>>,
    progress: Arc<Notify>,
    router: Arc<Router>,
}

impl WatchTask {
    async fn run(mut self) {
        // The highest revision the client knows to be complete.
        let mut told = self.cursor;
        loop {
            let latest = *self.revision.borrow_and_update();
            if self.cursor < latest {
                let Some(db) = self.db.upgrade() else {
                    // The store was closed.
                    return;
                };
                let prefix = self.prefix.clone();
                let cursor = self.cursor;
                let read = tokio::task::spawn_blocking(move || read_log(&db, &prefix, cursor, latest))
                    .await
                    .unwrap_or_else(|error| {
                        Err(StorageError::Internal(format!("watch read failed: {error}")))
                    });
                match read {
                    Ok((events, read_to)) => {
                        self.cursor = read_to;
                        if !events.is_empty() {
                            told = events.last().expect("not empty").revision();
                            if self.sender.send(Ok(WatchMessage::Events(events))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = self.sender.send(Err(error)).await;
                        return;
                    }
                }
                continue;
            }
            if told < self.cursor {
                told = self.cursor;
                if self.sender.send(Ok(WatchMessage::Progress(told))).await.is_err() {
                    return;
                }
            }
            // Caught up: join the router unless it has routed past the cursor already (then
            // the revision has moved too, and there is more to read first).
            if let Some(slot) = self.join(told) {
                match self.joined(slot).await {
                    Some(cursor) => {
                        self.cursor = cursor;
                        told = told.max(cursor);
                        continue;
                    }
                    None => return,
                }
            }
            tokio::select! {
                changed = self.revision.changed() => {
                    if changed.is_err() {
                        // The store was closed.
                        return;
                    }
                }
                _ = self.progress.notified() => {
                    if self.sender.send(Ok(WatchMessage::Progress(self.cursor))).await.is_err() {
                        return;
                    }
                }
                _ = self.sender.closed() => return,
            }
        }
    }

    /// Joins the router if it has not routed past the cursor; the slot it will be handed back
    /// through, with its id.
    fn join(&self, told: Revision) -> Option<(u64, Arc<HandBack>)> {
        let mut table = self.router.lock();
        if table.position > self.cursor {
            return None;
        }
        let id = table.next_id;
        table.next_id += 1;
        let slot = Arc::new(HandBack::default());
        table.joined.push(Joined {
            id,
            prefix: self.prefix.clone(),
            sender: self.sender.clone(),
            cursor: self.cursor,
            told,
            slot: Arc::clone(&slot),
        });
        Some((id, slot))
    }

    /// Waits while joined: answers progress requests and leaves when the client does. The
    /// cursor to catch up from when the router hands the watch back; `None` when the watch
    /// ended.
    async fn joined(&self, (id, slot): (u64, Arc<HandBack>)) -> Option<Revision> {
        loop {
            tokio::select! {
                () = slot.notify.notified() => {
                    let cursor = slot.cursor.lock().expect("hand-back lock poisoned").take();
                    if let Some(cursor) = cursor {
                        return Some(cursor);
                    }
                }
                () = self.progress.notified() => {
                    // Under the router's lock, so that the progress comes after every event
                    // routed up to the position it names.
                    let mut table = self.router.lock();
                    let position = table.position;
                    if let Some(joined) = table.joined.iter_mut().find(|joined| joined.id == id) {
                        let known = position.max(joined.cursor);
                        if joined.sender.try_send(Ok(WatchMessage::Progress(known))).is_ok() {
                            joined.told = known;
                        }
                    }
                }
                () = self.sender.closed() => {
                    self.router.lock().joined.retain(|joined| joined.id != id);
                    return None;
                }
            }
        }
    }
}

/// Reads the events under `prefix` after `cursor`, up to `latest` and at most
/// [`WATCH_READ_BATCH`] log entries; returns them and the revision read up to.
fn read_log(
    db: &Database,
    prefix: &str,
    cursor: Revision,
    latest: Revision,
) -> Result<(Vec<Event>, Revision)> {
    let txn = db.begin_read().map_err(db_error)?;
    let (_, compacted) = read_meta(&txn)?;
    check_watch_start(cursor, compacted)?;
    let log = txn.open_table(LOG).map_err(db_error)?;
    let mut events = Vec::new();
    let mut read_to = latest;
    for (count, entry) in log.range(cursor + 1..=latest).map_err(db_error)?.enumerate() {
        let (revision, bytes) = entry.map_err(db_error)?;
        if count == WATCH_READ_BATCH {
            read_to = revision.value() - 1;
            break;
        }
        let bytes = bytes.value();
        if event_key(bytes)?.starts_with(prefix) {
            events.push(decode_event(revision.value(), bytes)?);
        }
    }
    Ok((events, read_to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_log_encoding() {
        let prev = KeyValue {
            key: "/a/b".into(),
            value: Bytes::from_static(b"old"),
            create_revision: 3,
            mod_revision: 5,
        };
        for event in [
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: "/a/b".into(),
                    value: Bytes::from_static(b"new"),
                    create_revision: 3,
                    mod_revision: 9,
                },
                prev: Some(prev.clone()),
            },
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: "/a/b".into(),
                    value: Bytes::from_static(b"x"),
                    create_revision: 9,
                    mod_revision: 9,
                },
                prev: None,
            },
            Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: "/a/b".into(), value: Bytes::new(), create_revision: 0, mod_revision: 9 },
                prev: Some(prev),
            },
        ] {
            let bytes = encode_event(&event);
            assert_eq!(event_key(&bytes).unwrap(), "/a/b");
            assert_eq!(decode_event(9, &bytes).unwrap(), event);
            assert!(decode_event(9, &bytes[..bytes.len() / 2]).is_err() || event.prev.is_some());
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        assert!(decode_kv("/a", &[1, 2, 3]).is_err());
        assert!(decode_event(1, &[0, 9, 0, 0, 0, b'/']).is_err());
        assert!(decode_event(1, &[7]).is_err());
    }

    async fn next_message(stream: &mut WatchStream) -> WatchMessage {
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("a watch message within 10 s")
            .expect("the stream is open")
            .expect("not an error")
    }

    /// A watch that stops reading fills its channel and is handed back by the router; the others
    /// go on meanwhile, and once it reads again it gets every event, in order, exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_watch_neither_blocks_the_others_nor_misses_an_event() {
        let storage = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        let start = storage.current_revision().await.unwrap();
        let mut stalled = storage.watch("/a/", start).await.unwrap();
        let mut live = storage.watch("/a/", start).await.unwrap();
        // Both join the router once they have read the (empty) log.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let writes = WATCH_CHANNEL * 4;
        let mut seen_live = Vec::new();
        for index in 0..writes {
            storage.create(&format!("/a/k{index:04}"), Bytes::from_static(b"{}")).await.unwrap();
            // The live watch hears each write while the stalled one reads nothing.
            while seen_live.len() <= index {
                if let WatchMessage::Events(events) = next_message(&mut live).await {
                    seen_live.extend(events.into_iter().map(|event| event.kv.key));
                }
            }
        }
        let mut seen_stalled = Vec::new();
        while seen_stalled.len() < writes {
            if let WatchMessage::Events(events) = next_message(&mut stalled).await {
                seen_stalled.extend(events.into_iter().map(|event| event.kv.key));
            }
        }
        let want: Vec<String> = (0..writes).map(|index| format!("/a/k{index:04}")).collect();
        assert_eq!(seen_live, want);
        assert_eq!(seen_stalled, want);
        // And it has joined again: a new write reaches it.
        storage.create("/a/last", Bytes::from_static(b"{}")).await.unwrap();
        loop {
            if let WatchMessage::Events(events) = next_message(&mut stalled).await {
                assert_eq!(events.iter().map(|event| event.kv.key.as_str()).collect::<Vec<_>>(), ["/a/last"]);
                break;
            }
        }
    }

    /// A watch on a prefix nobody writes to is not woken per write: it hears the head at most
    /// once a second, and at once when it asks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_elsewhere_do_not_wake_a_watch_per_write() {
        let storage = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        let start = storage.current_revision().await.unwrap();
        let mut idle = storage.watch("/b/", start).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let began = std::time::Instant::now();
        for index in 0..300 {
            storage.create(&format!("/a/k{index}"), Bytes::from_static(b"{}")).await.unwrap();
        }
        let head = storage.current_revision().await.unwrap();
        idle.request_progress();
        let mut messages = 0;
        loop {
            messages += 1;
            match next_message(&mut idle).await {
                WatchMessage::Progress(revision) if revision == head => break,
                WatchMessage::Progress(revision) => assert!(revision < head),
                WatchMessage::Events(events) => panic!("events from another prefix: {events:?}"),
            }
        }
        let seconds = began.elapsed().as_secs() as usize;
        assert!(messages <= seconds + 2, "{messages} messages in {seconds} s for 300 writes elsewhere");
    }
}
