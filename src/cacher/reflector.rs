//! The reflector: keeps one resource's cache in step with storage. The only writer of the ring,
//! the store and the dispatcher of its cacher.
//!
//! 1. **List** the resource's prefix (in pages, at one revision). The first list starts a little
//!    in the past when storage still has that history (`CacheConfig::history_revisions`), so
//!    that the ring refills with recent events and clients that reconnect after a restart with
//!    a recent resourceVersion resume instead of relisting; if that list fails (compacted, or
//!    any other error), list now. Every later list
//!    (a *relist*) is at storage's current revision: a relist never publishes a revision older
//!    than one already served.
//! 2. **Replace** the store atomically (readers see the old state or the new one), restart the
//!    ring at the list's revision, and end every open watch (their clients re-watch from the
//!    revision they have, and relist only if it is too old).
//! 3. **Watch** from the list's revision: apply each event to the store, append it to the ring,
//!    publish the new snapshot, and dispatch it. Progress notifications advance the revision of
//!    an idle resource; an event that arrives behind one (etcd#15220) makes the reflector relist.
//! 4. When the watch breaks with a retryable error, **re-watch** from the last revision, with
//!    backoff; when storage says the revision is compacted, or the watch fails in a way a retry
//!    will not fix, go back to 1 and relist at the current revision.
//!
//! # Readiness
//!
//! The cache is *ready* (`CacherShared::ready`, which reads and watches wait for) once it has
//! reached the revision storage had when the first list began: at once for a list at the current
//! revision; for a list in the past, once the replayed events or a progress notification reach
//! it. With a storage whose progress notifications are not trusted (etcd before the etcd#15220
//! fix), an idle resource gets none it may use: the reflector also lists the keys and their
//! revisions at that target revision, and the catch-up is done once the replayed state is that
//! one, checked a catch-up period after the last batch. etcd replays history in revision order,
//! so the state can only match early if the only writes left to replay create and delete the
//! same keys (objects never visible in any list); such an event arriving later is behind the
//! cache's revision and makes the reflector relist, as any event behind a progress
//! notification does. Until then nothing is served from the cache, so the past state is never visible. A
//! catch-up that stops moving for [`CATCH_UP_STALL`] gives up and lists at the current revision.
//! Once ready, a cache stays ready: a relist keeps serving the previous, complete state until the
//! new one replaces it whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::dispatcher::{Dispatcher, Registration};
use super::object::{CachedEvent, CachedObject, EventType};
use super::ring::RingWriter;
use super::store::StoreWriter;
use super::{CacheConfig, CacherShared};
use crate::storage::{self, EventKind, ListOptions, Revision, Storage, StorageError, WatchMessage};

pub(crate) struct Reflector {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) shared: Arc<CacherShared>,
    pub(crate) ring: RingWriter,
    pub(crate) store: StoreWriter,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) registrations: mpsc::UnboundedReceiver<Registration>,
    pub(crate) config: CacheConfig,
}

enum WatchEnd {
    /// Relist at the current revision.
    Relist(RelistCause),
    /// Re-watch from the last revision after a pause if the error is retryable; else relist at
    /// the current revision after a pause.
    Broken(StorageError),
    /// The cacher was stopped.
    Stopped,
}

/// Why the reflector relisted (a label of the `watchcache_cache_relists_total` metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RelistCause {
    /// Storage no longer has the history the watch needs.
    Compacted,
    /// An event arrived behind a progress notification (etcd#15220).
    EventBehindProgress,
    /// The watch failed with an error a retry will not fix.
    WatchFailed,
    /// The first list's catch-up from the past stopped moving.
    CatchUpStalled,
}

impl RelistCause {
    /// The cause as a metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RelistCause::Compacted => "compacted",
            RelistCause::EventBehindProgress => "event_behind_progress",
            RelistCause::WatchFailed => "watch_failed",
            RelistCause::CatchUpStalled => "catch_up_stalled",
        }
    }
}

/// Where a list starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListFrom {
    /// The first list: in the past when possible, then caught up before the cache is ready.
    Past,
    /// Storage's current revision.
    Current,
}

/// A first list made in the past, not yet caught up to the revision storage had when it began.
struct CatchUp {
    /// The revision to reach before the cache is ready.
    target: Revision,
    /// When the catch-up last moved.
    moved: Instant,
    /// With a storage whose progress notifications are not trusted: every (key, revision) a
    /// list at `target` held, in key order. An idle resource cannot learn from an event that it
    /// has reached `target`; it has once its replayed state is this one (see `run`'s docs).
    state_at_target: Option<Vec<(String, Revision)>>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a catch-up from the past may go without moving before the reflector lists at the
/// current revision instead.
pub(crate) const CATCH_UP_STALL: Duration = Duration::from_secs(2);

/// How often a catch-up asks storage for progress and checks that it still moves.
const CATCH_UP_CHECK: Duration = Duration::from_millis(250);

impl Reflector {
    pub(crate) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut from = ListFrom::Past;
        'relist: loop {
            let (mut revision, mut catch_up) = match self.list_and_replace(from).await {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(resource = %self.shared.resource.prefix, %error, "list failed, retrying");
                    if !self.pause(&mut backoff).await {
                        break;
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                let end = self.watch_from(&mut revision, &mut catch_up).await;
                // Wake-ups still held back go out now.
                self.dispatcher.flush();
                match end {
                    WatchEnd::Stopped => break 'relist,
                    WatchEnd::Relist(cause) => {
                        self.count_relist(cause, revision, None);
                        from = ListFrom::Current;
                        continue 'relist;
                    }
                    WatchEnd::Broken(error) if error.is_retryable() => {
                        tracing::warn!(resource = %self.shared.resource.prefix, %error, revision, "watch broke, re-watching");
                        if !self.pause(&mut backoff).await {
                            break 'relist;
                        }
                    }
                    WatchEnd::Broken(error) => {
                        // Re-watching from the same revision would fail the same way, and so
                        // may a list at a past revision: relist at the current one.
                        self.count_relist(RelistCause::WatchFailed, revision, Some(&error));
                        from = ListFrom::Current;
                        if !self.pause(&mut backoff).await {
                            break 'relist;
                        }
                        continue 'relist;
                    }
                }
            }
        }
        self.close_all_watchers();
    }

    fn count_relist(&self, cause: RelistCause, revision: Revision, error: Option<&StorageError>) {
        let counter = match cause {
            RelistCause::Compacted => &self.shared.counters.relists_compacted,
            RelistCause::EventBehindProgress => &self.shared.counters.relists_event_behind_progress,
            RelistCause::WatchFailed => &self.shared.counters.relists_watch_failed,
            RelistCause::CatchUpStalled => &self.shared.counters.relists_catch_up_stalled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match error {
            Some(error) => tracing::warn!(
                resource = %self.shared.resource.prefix, cause = cause.as_str(), %error, revision,
                "relisting at the current revision"
            ),
            None => tracing::info!(
                resource = %self.shared.resource.prefix, cause = cause.as_str(), revision,
                "relisting at the current revision"
            ),
        }
    }

    /// Sleeps for the backoff (doubling it), serving registrations meanwhile; `false` if the
    /// cacher was stopped.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let deadline = tokio::time::Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return !self.shared.is_closed(),
                () = self.shared.stop.notified() => return false,
                registration = self.registrations.recv() => match registration {
                    Some(registration) => self.dispatcher.register(registration),
                    None => return false,
                },
            }
        }
    }

    /// Lists and replaces the cache's state; returns the list's revision, and the catch-up still
    /// to make before the cache is ready when the list was in the past.
    async fn list_and_replace(
        &mut self,
        from: ListFrom,
    ) -> Result<(Revision, Option<CatchUp>), StorageError> {
        let prefix = self.shared.resource.prefix.clone();
        let current = self.storage.current_revision().await?;
        // Revision 1 is an empty store: the history of every write is there until compacted.
        let past = current.saturating_sub(self.config.history_revisions).max(1);
        if from == ListFrom::Past && past < current {
            // An idle resource learns that it has caught up from a trusted progress
            // notification, or else by finding the state a list at `current` shows.
            let state_at_target = if self.storage.progress_notify_reliable() {
                None
            } else {
                Some(self.list_keys_at(&prefix, current).await?)
            };
            match self.list_at(&prefix, past).await {
                Ok(objects) => {
                    self.replace(objects, past, false);
                    let catch_up = CatchUp { target: current, moved: Instant::now(), state_at_target };
                    return Ok((past, Some(catch_up)));
                }
                Err(error) => tracing::info!(
                    resource = %self.shared.resource.prefix, %error, past,
                    "cannot list in the past, listing at the current revision"
                ),
            }
        }
        let objects = self.list_at(&prefix, current).await?;
        self.replace(objects, current, true);
        Ok((current, None))
    }

    /// Every (key, revision) under `prefix` at `revision`, in key order.
    async fn list_keys_at(
        &self,
        prefix: &str,
        revision: Revision,
    ) -> Result<Vec<(String, Revision)>, StorageError> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let options = ListOptions {
                revision: Some(revision),
                limit: Some(self.config.list_page_size),
                continue_after: after.take(),
            };
            let page = self.storage.list(prefix, options).await?;
            keys.extend(page.items.iter().map(|kv| (kv.key.clone(), kv.mod_revision)));
            if !page.more {
                return Ok(keys);
            }
            after = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// With untrusted progress notifications: whether the replayed state is the state at the
    /// catch-up's target, and if so, moves the cache to the target and marks it ready.
    fn check_caught_up_by_state(&mut self, revision: &mut Revision, catch_up: &mut Option<CatchUp>) {
        let Some(pending) = catch_up else { return };
        let Some(expected) = &pending.state_at_target else { return };
        let snapshot = self.shared.store.current();
        let same = snapshot.objects.len() == expected.len()
            && snapshot
                .objects
                .iter()
                .zip(expected)
                .all(|((key, object), (want, at))| &**key == want.as_str() && object.revision == *at);
        if !same {
            return;
        }
        let target = pending.target;
        tracing::info!(
            resource = %self.shared.resource.prefix, target,
            "caught up from the past: the replayed state is storage's at the target revision"
        );
        *catch_up = None;
        *revision = target;
        self.ring.advance(target);
        self.store.advance(target);
        self.store.publish();
        self.publish_revision(target);
        self.mark_synced();
    }

    async fn list_at(
        &self,
        prefix: &str,
        revision: Revision,
    ) -> Result<Vec<Arc<CachedObject>>, StorageError> {
        let mut objects = Vec::new();
        let mut after = None;
        loop {
            let options = ListOptions {
                revision: Some(revision),
                limit: Some(self.config.list_page_size),
                continue_after: after.take(),
            };
            let page = self.storage.list(prefix, options).await?;
            for kv in &page.items {
                match CachedObject::decode(&kv.key, &kv.value, kv.mod_revision, &self.shared.resource) {
                    Ok(object) => objects.push(Arc::new(object)),
                    Err(error) => {
                        self.shared.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, "skipping an object that cannot be decoded");
                    }
                }
            }
            if !page.more {
                return Ok(objects);
            }
            after = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// Replaces the state with a complete list at `revision`; `synced` when that is the current
    /// revision (the cache is ready).
    fn replace(&mut self, objects: Vec<Arc<CachedObject>>, revision: Revision, synced: bool) {
        // Watches registered so far belong to the old state: index them, then end them all.
        while let Ok(registration) = self.registrations.try_recv() {
            self.dispatcher.register(registration);
        }
        self.ring.reset(revision);
        self.store.replace(objects, revision);
        self.shared.event_revision.store(revision, Ordering::Release);
        self.close_all_watchers();
        self.publish_revision(revision);
        if synced {
            self.mark_synced();
        }
    }

    /// Marks the cache ready, once.
    fn mark_synced(&self) {
        let newly = self.shared.ready.send_if_modified(|ready| !std::mem::replace(ready, true));
        if newly {
            tracing::info!(
                resource = %self.shared.resource.prefix,
                revision = self.store.revision(),
                objects = self.shared.store.current().len(),
                "cache synced"
            );
        }
    }

    /// Whether a catch-up has reached its target (and the cache is now ready).
    fn check_caught_up(&self, catch_up: &mut Option<CatchUp>) {
        if let Some(pending) = catch_up {
            if self.store.revision() >= pending.target {
                *catch_up = None;
                self.mark_synced();
            } else {
                pending.moved = Instant::now();
            }
        }
    }

    fn close_all_watchers(&mut self) {
        // Closing wakes every watcher: wake-ups still held back are moot.
        self.dispatcher.discard_pending();
        for watcher in self.dispatcher.all() {
            watcher.close();
        }
        self.dispatcher.sweep();
    }

    async fn watch_from(&mut self, revision: &mut Revision, catch_up: &mut Option<CatchUp>) -> WatchEnd {
        let prefix = self.shared.resource.prefix.clone();
        let mut watch = match self.storage.watch(&prefix, *revision).await {
            Ok(watch) => watch,
            Err(StorageError::Compacted { .. }) => return WatchEnd::Relist(RelistCause::Compacted),
            Err(error) => return WatchEnd::Broken(error),
        };
        if let Some(pending) = catch_up {
            pending.moved = Instant::now();
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first check one period in, not at once (see the catch-up check below).
        let mut catch_up_check =
            tokio::time::interval_at(tokio::time::Instant::now() + CATCH_UP_CHECK, CATCH_UP_CHECK);
        catch_up_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The one timer of delayed wake-ups (see `dispatcher`, *Coalescing*).
        let flush_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_timer);
        let mut flush_armed = false;
        let mut flushing = false;
        let mut last_flush =
            Instant::now().checked_sub(self.config.delivery_linger).unwrap_or_else(Instant::now);
        loop {
            if self.dispatcher.has_pending() && !flush_armed && !flushing {
                let due = last_flush + self.config.delivery_linger;
                let now = Instant::now();
                if now >= due || self.dispatcher.pending_events() * 2 >= self.config.watcher_queue {
                    flushing = true;
                } else {
                    flush_timer.as_mut().reset(due.into());
                    flush_armed = true;
                }
            }
            if flushing {
                // A chunk of wake-ups, then a yield, so that other tasks (the writes) run
                // between chunks rather than behind the whole fan-out.
                if self.dispatcher.flush_some(self.config.flush_chunk) {
                    tokio::task::yield_now().await;
                    continue;
                }
                flushing = false;
                // The linger counts from the end of a flush: the longer a fan-out takes, the
                // more events the next one carries per write.
                last_flush = Instant::now();
            }
            tokio::select! {
                biased;
                () = self.shared.stop.notified() => return WatchEnd::Stopped,
                () = &mut flush_timer, if flush_armed => {
                    flush_armed = false;
                    flushing = true;
                }
                registration = self.registrations.recv() => match registration {
                    Some(registration) => self.dispatcher.register(registration),
                    None => return WatchEnd::Stopped,
                },
                message = watch.next() => match message {
                    Some(Ok(WatchMessage::Events(events))) => {
                        // Registrations first, so that a new watcher sees these events.
                        while let Ok(registration) = self.registrations.try_recv() {
                            self.dispatcher.register(registration);
                        }
                        for event in events {
                            if event.revision() <= self.store.revision() {
                                // Behind a progress notification that ran ahead of it (an etcd
                                // without the etcd#15220 fix): the cache cannot place it.
                                tracing::warn!(
                                    resource = %self.shared.resource.prefix,
                                    event = event.revision(),
                                    cache = self.store.revision(),
                                    "an event arrived behind a progress notification, relisting"
                                );
                                return WatchEnd::Relist(RelistCause::EventBehindProgress);
                            }
                            *revision = event.revision();
                            self.apply(event);
                        }
                        self.finish_batch();
                        self.check_caught_up(catch_up);
                    }
                    Some(Ok(WatchMessage::Progress(progress))) => {
                        if progress > self.store.revision() {
                            if self.storage.progress_notify_reliable() {
                                *revision = progress;
                                self.ring.advance(progress);
                                self.store.advance(progress);
                                self.store.publish();
                            }
                            // From an etcd without the etcd#15220 fix the notification may run
                            // ahead of an event still to come, so only the waiters' revision
                            // moves: a watch from a revision the client read from storage may
                            // start (it skips any event at or below its revision), while the
                            // ring, the store, bookmarks and the re-watch point stay at the
                            // events the cache has applied.
                            self.publish_revision(progress);
                            self.check_caught_up(catch_up);
                        }
                    }
                    Some(Err(StorageError::Compacted { .. })) => return WatchEnd::Relist(RelistCause::Compacted),
                    Some(Err(error)) => return WatchEnd::Broken(error),
                    None => return WatchEnd::Broken(StorageError::Unavailable("the storage watch ended".into())),
                },
                () = self.shared.progress_requests.notified() => watch.request_progress(),
                _ = catch_up_check.tick(), if catch_up.is_some() => {
                    // Checked a tick after the last batch, not at once, so that etcd has sent
                    // the rest of a history it sends in several responses.
                    self.check_caught_up_by_state(revision, catch_up);
                    if catch_up.is_none() {
                        continue;
                    }
                    if catch_up.as_ref().is_some_and(|pending| pending.moved.elapsed() >= CATCH_UP_STALL) {
                        return WatchEnd::Relist(RelistCause::CatchUpStalled);
                    }
                    // An idle resource learns that it has caught up from a progress notification.
                    watch.request_progress();
                }
                _ = tick.tick() => {
                    self.ring.trim(Instant::now());
                    self.store.trim(Instant::now());
                    self.update_gauges();
                }
            }
        }
    }

    fn apply(&mut self, event: storage::Event) {
        let revision = event.revision();
        let resource = Arc::clone(&self.shared.resource);
        let key: Arc<str> = Arc::from(event.kv.key.as_str());
        let prev = self.store.get(&key).cloned();
        let (kind, object) = match event.kind {
            EventKind::Put => {
                match CachedObject::decode_with_key(Arc::clone(&key), &event.kv.value, revision, &resource) {
                    Ok(object) => {
                        let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
                        (kind, Arc::new(object))
                    }
                    Err(error) => {
                        self.shared.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, "skipping a write that cannot be decoded");
                        self.store.advance(revision);
                        return;
                    }
                }
            }
            EventKind::Delete => {
                let last = match (&prev, &event.prev) {
                    (Some(prev), _) => Some(Arc::clone(prev)),
                    (None, Some(stored)) => {
                        CachedObject::decode(&key, &stored.value, stored.mod_revision, &resource)
                            .ok()
                            .map(Arc::new)
                    }
                    (None, None) => None,
                };
                let Some(deleted) = last.and_then(|last| last.restamped(revision, &resource).ok()) else {
                    // Nothing the cache held or can show: only the revision moves.
                    self.store.advance(revision);
                    return;
                };
                (EventType::Deleted, Arc::new(deleted))
            }
        };
        let stored = (kind != EventType::Deleted).then(|| Arc::clone(&object));
        let cached = Arc::new(CachedEvent::new(self.ring.next_seq(), kind, object, prev));
        self.store.apply(&key, stored, revision);
        self.store.publish();
        // Release: pairs with the Acquire load of consistent reads.
        self.shared.event_revision.store(revision, Ordering::Release);
        self.ring.push(Arc::clone(&cached));
        self.dispatcher.dispatch(&cached);
        self.shared.counters.events.fetch_add(1, Ordering::Relaxed);
    }

    fn finish_batch(&mut self) {
        let revision = self.store.revision();
        if revision > self.ring.ring().revision() {
            // Writes that could not be decoded still move the revision.
            self.ring.advance(revision);
            self.store.publish();
        }
        self.publish_revision(revision);
        self.update_gauges();
    }

    /// Publishes the revision waiters may rely on; it never goes back.
    fn publish_revision(&self, revision: Revision) {
        self.shared.revision.send_if_modified(|published| {
            let moved = revision > *published;
            if moved {
                *published = revision;
            }
            moved
        });
    }

    fn update_gauges(&self) {
        let counters = &self.shared.counters;
        counters.delivered.store(self.dispatcher.stats.delivered, Ordering::Relaxed);
        counters.overflowed.store(self.dispatcher.stats.overflowed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use tokio::sync::{mpsc, Notify};

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use crate::cacher::object::ResourceConfig;
    use crate::cacher::{
        CacheConfig, CacheError, Cacher, ListRequest, ReadVersion, WatchFilter, WatchItem, WatchStart,
    };
    use crate::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
    use crate::storage::{
        Deleted, KeyValue, ListOptions, ListResult, Result, Revision, Storage, StorageError, WatchMessage,
        WatchStream,
    };

    /// A store whose progress notifications run ahead of its events, as etcd's before the
    /// etcd#15220 fix can: every batch of events is preceded by a notification at its revision.
    struct Overtaking(EmbeddedStorage);

    #[async_trait]
    impl Storage for Overtaking {
        fn describe(&self) -> String {
            "overtaking".into()
        }
        fn progress_notify_reliable(&self) -> bool {
            false
        }
        async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
            self.0.create(key, value).await
        }
        async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
            self.0.get(key).await
        }
        async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
            self.0.list(prefix, options).await
        }
        async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
            self.0.update(key, value, expected).await
        }
        async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
            self.0.delete(key, expected).await
        }
        async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream> {
            let mut inner = self.0.watch(prefix, after_revision).await?;
            let (sender, receiver) = mpsc::channel(16);
            tokio::spawn(async move {
                while let Some(message) = inner.next().await {
                    if let Ok(WatchMessage::Events(events)) = &message {
                        let ahead = events.last().map(|event| event.revision()).unwrap_or_default();
                        if sender.send(Ok(WatchMessage::Progress(ahead))).await.is_err() {
                            return;
                        }
                    }
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
            });
            Ok(WatchStream::new(receiver, Arc::new(Notify::new())))
        }
        async fn count(&self, prefix: &str) -> Result<u64> {
            self.0.count(prefix).await
        }
        async fn current_revision(&self) -> Result<Revision> {
            self.0.current_revision().await
        }
        async fn compact(&self, revision: Revision) -> Result<()> {
            self.0.compact(revision).await
        }
    }

    fn things() -> ResourceConfig {
        ResourceConfig {
            prefix: "/things/".into(),
            kind: "Thing".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec![],
            indexed_field: None,
        }
    }

    fn thing(name: &str) -> Bytes {
        Bytes::from(format!(r#"{{"kind":"Thing","metadata":{{"name":"{name}","namespace":"ns"}}}}"#))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_that_overtakes_events_neither_ends_watches_nor_skips_events() {
        let storage: Arc<dyn Storage> =
            Arc::new(Overtaking(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap()));
        let cacher = Cacher::start(Arc::clone(&storage), things(), CacheConfig::default());
        assert!(cacher.wait_ready(Duration::from_secs(5)).await);
        let start = storage.current_revision().await.unwrap();
        let mut watch =
            cacher.watch(WatchFilter::everything(), WatchStart::After(start), true).await.unwrap();
        let mut written = Vec::new();
        for index in 0..20 {
            let created =
                storage.create(&format!("/things/ns/t{index}"), thing(&format!("t{index}"))).await.unwrap();
            written.push(created.mod_revision);
        }
        // A client that read a revision from storage watches from it at once: the cache may
        // know it only from a notification, and the event at it may still come after.
        let last = *written.last().unwrap();
        let mut late =
            cacher.watch(WatchFilter::everything(), WatchStart::After(last - 1), false).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < written.len() {
            let item =
                tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("an event in time");
            let Some(WatchItem::Lines(lines)) = item else { panic!("the watch ended: {item:?}") };
            for line in lines {
                let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
                if event["type"] == "BOOKMARK" {
                    continue;
                }
                assert_eq!(event["type"], "ADDED");
                seen.push(
                    event["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse::<Revision>()
                        .unwrap(),
                );
            }
        }
        assert_eq!(seen, written, "every event once, in order, and the watch still open");
        // The late watch gets exactly the one event after its revision.
        let item = tokio::time::timeout(Duration::from_secs(5), late.next()).await.expect("an event in time");
        let Some(WatchItem::Lines(lines)) = item else { panic!("the late watch ended: {item:?}") };
        let event: serde_json::Value = serde_json::from_slice(&lines[0]).unwrap();
        assert_eq!(event["object"]["metadata"]["resourceVersion"], last.to_string());
        assert_eq!(lines.len(), 1);
    }

    /// A store that has lost its history below a floor revision without reporting compaction:
    /// watches after a revision below the floor and lists at a revision below it fail with an
    /// internal error. Once `break_watches` is set, the next message of every open watch is
    /// replaced by an internal error that ends it.
    struct LostHistory {
        inner: EmbeddedStorage,
        /// Read (Acquire) by `watch` and `list`; stored (Release) by the test before it sets
        /// `break_watches`, so a watch that breaks sees the floor.
        floor: Arc<AtomicU64>,
        /// Relaxed: the watch tasks poll it; the floor's Release/Acquire orders what matters.
        break_watches: Arc<AtomicBool>,
        failed_lists: Arc<AtomicU64>,
        /// Drop every progress notification (as etcd's gRPC proxy ignores progress requests).
        drop_progress: bool,
    }

    impl LostHistory {
        fn new(inner: EmbeddedStorage) -> LostHistory {
            LostHistory {
                inner,
                floor: Arc::new(AtomicU64::new(0)),
                break_watches: Arc::new(AtomicBool::new(false)),
                failed_lists: Arc::new(AtomicU64::new(0)),
                drop_progress: false,
            }
        }
    }

    #[async_trait]
    impl Storage for LostHistory {
        fn describe(&self) -> String {
            "lost history".into()
        }
        async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
            self.inner.create(key, value).await
        }
        async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
            if options.revision.is_some_and(|revision| revision < self.floor.load(Ordering::Acquire)) {
                self.failed_lists.fetch_add(1, Ordering::Relaxed);
                return Err(StorageError::Internal("history lost".into()));
            }
            self.inner.list(prefix, options).await
        }
        async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
            self.inner.update(key, value, expected).await
        }
        async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
            self.inner.delete(key, expected).await
        }
        async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream> {
            if after_revision < self.floor.load(Ordering::Acquire) {
                return Err(StorageError::Internal("history lost".into()));
            }
            let mut inner = self.inner.watch(prefix, after_revision).await?;
            let broken = Arc::clone(&self.break_watches);
            let drop_progress = self.drop_progress;
            let (sender, receiver) = mpsc::channel(16);
            tokio::spawn(async move {
                while let Some(message) = inner.next().await {
                    if drop_progress && matches!(message, Ok(WatchMessage::Progress(_))) {
                        continue;
                    }
                    if broken.load(Ordering::Relaxed) {
                        let _ = sender.send(Err(StorageError::Internal("watch failed".into()))).await;
                        return;
                    }
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
            });
            Ok(WatchStream::new(receiver, Arc::new(Notify::new())))
        }
        async fn count(&self, prefix: &str) -> Result<u64> {
            self.inner.count(prefix).await
        }
        async fn current_revision(&self) -> Result<Revision> {
            self.inner.current_revision().await
        }
        async fn compact(&self, revision: Revision) -> Result<()> {
            self.inner.compact(revision).await
        }
    }

    fn everything(version: ReadVersion) -> ListRequest {
        ListRequest { filter: WatchFilter::everything(), limit: None, continue_from: None, version }
    }

    async fn names(cacher: &Cacher, version: ReadVersion) -> std::result::Result<Vec<String>, CacheError> {
        let list = cacher.list(&everything(version)).await?;
        Ok(list.items.iter().map(|object| object.key.to_string()).collect())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_that_fails_for_good_relists_at_the_current_revision_without_compaction() {
        let faulty = LostHistory::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
        let (floor, break_watches) = (Arc::clone(&faulty.floor), Arc::clone(&faulty.break_watches));
        let storage: Arc<dyn Storage> = Arc::new(faulty);
        let cacher = Cacher::start(Arc::clone(&storage), things(), CacheConfig::default());
        assert!(cacher.wait_ready(Duration::from_secs(5)).await);
        let first = storage.create("/things/ns/t1", thing("t1")).await.unwrap();
        assert_eq!(
            names(&cacher, ReadVersion::NotOlderThan(first.mod_revision)).await.unwrap(),
            ["/things/ns/t1"]
        );
        // History up to the cache's revision is lost; the next write makes its watch fail.
        floor.store(first.mod_revision + 1, Ordering::Release);
        break_watches.store(true, Ordering::Relaxed);
        let second = storage.create("/things/ns/t2", thing("t2")).await.unwrap();
        // Neither re-watching from the cache's revision nor listing in the past can work: the
        // reflector must list at the current revision and watch from there.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = names(&cacher, ReadVersion::Any).await.unwrap();
            if seen.len() == 2 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the cache never recovered: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cacher.stats().revision >= second.mod_revision);
        assert_eq!(cacher.stats().relists.watch_failed, 1);
        assert_eq!(cacher.stats().relists.compacted, 0);
        // And it follows storage again.
        break_watches.store(false, Ordering::Relaxed);
        let third = storage.create("/things/ns/t3", thing("t3")).await.unwrap();
        let seen = names(&cacher, ReadVersion::NotOlderThan(third.mod_revision)).await.unwrap();
        assert_eq!(seen, ["/things/ns/t1", "/things/ns/t2", "/things/ns/t3"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_trusted_progress_an_idle_resource_catches_up_from_the_past_by_its_state() {
        let inner = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        let mut revisions = Vec::new();
        for index in 0..20 {
            let kv = inner
                .create(&format!("/things/ns/t{index:02}"), thing(&format!("t{index:02}")))
                .await
                .unwrap();
            revisions.push(kv.mod_revision);
        }
        inner.delete("/things/ns/t19", None).await.unwrap();
        // Later writes elsewhere: the things are idle at storage's current revision, and no
        // event of theirs can tell the replay it has reached it.
        for index in 0..5 {
            inner.create(&format!("/others/ns/o{index}"), thing("o")).await.unwrap();
        }
        let current = inner.current_revision().await.unwrap();
        let storage: Arc<dyn Storage> = Arc::new(Overtaking(inner));
        let cacher = Cacher::start(Arc::clone(&storage), things(), CacheConfig::default());
        assert!(cacher.wait_ready(Duration::from_secs(10)).await);
        assert_eq!(cacher.stats().relists.catch_up_stalled, 0, "the catch-up stalled and relisted");
        assert!(cacher.stats().revision >= current);
        // The ring holds the history: a client resumes from an early revision and gets the
        // 10 creates and the delete after it, without 410.
        let mut watch =
            cacher.watch(WatchFilter::everything(), WatchStart::After(revisions[9]), false).await.unwrap();
        let mut lines = 0;
        while lines < 11 {
            let item = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap();
            let Some(WatchItem::Lines(batch)) = item else { panic!("the watch ended: {item:?}") };
            lines += batch.len();
        }
        assert_eq!(lines, 11);
        let listed = names(&cacher, ReadVersion::Any).await.unwrap();
        assert_eq!(listed.len(), 19);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_list_in_the_past_is_never_served_before_it_has_caught_up() {
        let inner = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        let count = 3_000;
        for index in 0..count {
            inner.create(&format!("/things/ns/t{index:05}"), thing(&format!("t{index:05}"))).await.unwrap();
        }
        let current = inner.current_revision().await.unwrap();
        let storage: Arc<dyn Storage> = Arc::new(inner);
        // The first list is in the past (an empty store) and replays the writes; a read that
        // comes at once waits until the replay is complete.
        let cacher = Cacher::start(Arc::clone(&storage), things(), CacheConfig::default());
        let list = cacher.list(&everything(ReadVersion::Any)).await.unwrap();
        assert_eq!(list.items.len(), count, "a partial state was served");
        assert!(list.revision >= current);
        assert!(cacher.is_ready());
        // The ring was refilled from history: a client resumes from an early revision.
        let mut watch =
            cacher.watch(WatchFilter::everything(), WatchStart::After(current - 10), false).await.unwrap();
        let item = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap();
        let Some(WatchItem::Lines(lines)) = item else { panic!("the watch ended: {item:?}") };
        assert_eq!(lines.len(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catch_up_that_stalls_lists_at_the_current_revision() {
        let inner = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        inner.create("/things/ns/t1", thing("t1")).await.unwrap();
        // The last write is to another resource: only a progress notification can tell the
        // catch-up that it is complete, and this store drops them all.
        inner.create("/others/ns/o1", thing("o1")).await.unwrap();
        let faulty = LostHistory { drop_progress: true, ..LostHistory::new(inner) };
        let storage: Arc<dyn Storage> = Arc::new(faulty);
        let config =
            CacheConfig { consistent_read_timeout: Duration::from_millis(200), ..CacheConfig::default() };
        let cacher = Cacher::start(Arc::clone(&storage), things(), config);
        // Not ready until the catch-up gives up: reads answer NotReady after their bounded wait.
        assert_eq!(names(&cacher, ReadVersion::Any).await, Err(CacheError::NotReady));
        let watch = cacher.watch(WatchFilter::everything(), WatchStart::After(1), false).await;
        assert!(matches!(watch, Err(CacheError::NotReady)), "{:?}", watch.err());
        assert!(cacher.wait_ready(super::CATCH_UP_STALL * 3).await, "the stalled catch-up never gave up");
        assert_eq!(names(&cacher, ReadVersion::Any).await.unwrap(), ["/things/ns/t1"]);
        assert_eq!(cacher.stats().relists.catch_up_stalled, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_that_cannot_list_answers_not_ready_after_a_bounded_wait() {
        let faulty = LostHistory::new(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap());
        faulty.floor.store(u64::MAX, Ordering::Release);
        let failed_lists = Arc::clone(&faulty.failed_lists);
        let storage: Arc<dyn Storage> = Arc::new(faulty);
        let config =
            CacheConfig { consistent_read_timeout: Duration::from_secs(1), ..CacheConfig::default() };
        storage.create("/things/ns/t1", thing("t1")).await.unwrap();
        let cacher = Cacher::start(Arc::clone(&storage), things(), config);
        // The cache's own reads wait (bounded), then answer NotReady.
        let started = tokio::time::Instant::now();
        assert_eq!(names(&cacher, ReadVersion::Any).await, Err(CacheError::NotReady));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "{waited:?}");
        let started = tokio::time::Instant::now();
        assert_eq!(names(&cacher, ReadVersion::NotOlderThan(1)).await, Err(CacheError::NotReady));
        assert!(started.elapsed() >= Duration::from_secs(1));
        // A consistent read is storage's to answer, at once: it does not wait for the cache.
        let started = tokio::time::Instant::now();
        assert_eq!(names(&cacher, ReadVersion::Consistent).await.unwrap(), ["/things/ns/t1"]);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(!cacher.is_ready());
        assert!(failed_lists.load(Ordering::Relaxed) >= 1);
    }

    fn revision_of(line: &[u8]) -> (String, Revision, bool) {
        let event: serde_json::Value = serde_json::from_slice(line).unwrap();
        let revision = event["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        let end = event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true";
        (event["type"].as_str().unwrap().to_owned(), revision, end)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreliable_progress_moves_neither_the_store_nor_bookmarks_nor_watch_lists() {
        let storage: Arc<dyn Storage> =
            Arc::new(Overtaking(EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap()));
        let config = CacheConfig { bookmark_interval: Duration::from_millis(100), ..CacheConfig::default() };
        let cacher = Cacher::start(Arc::clone(&storage), things(), config);
        assert!(cacher.wait_ready(Duration::from_secs(5)).await);
        let start = storage.current_revision().await.unwrap();
        let mut watch =
            cacher.watch(WatchFilter::everything(), WatchStart::After(start), true).await.unwrap();
        let written = storage.create("/things/ns/t1", thing("t1")).await.unwrap().mod_revision;
        // Writes elsewhere: the store's watch reports progress past them.
        storage.create("/others/ns/o1", thing("o1")).await.unwrap();
        let current = storage.create("/others/ns/o2", thing("o2")).await.unwrap().mod_revision;
        let mut bookmarks = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < deadline {
            let Ok(item) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await else {
                continue;
            };
            let Some(WatchItem::Lines(lines)) = item else { panic!("the watch ended: {item:?}") };
            for line in lines {
                match revision_of(&line) {
                    (kind, revision, _) if kind == "BOOKMARK" => bookmarks.push(revision),
                    (_, revision, _) => assert_eq!(revision, written),
                }
            }
        }
        assert!(!bookmarks.is_empty(), "no bookmark in a second");
        assert!(bookmarks.iter().all(|&bookmark| bookmark <= written), "a bookmark got ahead: {bookmarks:?}");
        // Cached reads stay at the events applied.
        let list = cacher.list(&everything(ReadVersion::Any)).await.unwrap();
        assert_eq!(list.revision, written);
        // A consistent watch-list cannot trust the cache: its initial state is storage's.
        let mut listing = cacher
            .watch(
                WatchFilter::everything(),
                WatchStart::InitialState { version: ReadVersion::Consistent, initial_events_end: true },
                true,
            )
            .await
            .unwrap();
        let item = tokio::time::timeout(Duration::from_secs(5), listing.next()).await.unwrap();
        let Some(WatchItem::Lines(lines)) = item else { panic!("the watch-list ended: {item:?}") };
        let seen: Vec<_> = lines.iter().map(|line| revision_of(line)).collect();
        assert_eq!(seen[0], ("ADDED".to_owned(), written, false));
        let (kind, revision, end) = seen.last().unwrap().clone();
        assert!(kind == "BOOKMARK" && end, "{seen:?}");
        assert!(revision >= current, "the initial-events-end bookmark is stale: {revision} < {current}");
    }
}
