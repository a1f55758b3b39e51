//! The reflector: keeps one resource's cache in step with storage. The only writer of the ring,
//! the store and the dispatcher of its cacher.
//!
//! 1. **List** the resource's prefix (in pages, at one revision), starting a little in the past
//!    when storage still has that history (`CacheConfig::history_revisions`), so that the ring
//!    refills with recent events and clients that reconnect after a restart with a recent
//!    resourceVersion resume instead of relisting. If that revision is compacted, list now.
//! 2. **Replace** the store atomically (readers see the old state or the new one), restart the
//!    ring at the list's revision, and end every open watch (their clients re-watch from the
//!    revision they have, and relist only if it is too old).
//! 3. **Watch** from the list's revision: apply each event to the store, append it to the ring,
//!    publish the new snapshot, and dispatch it. Progress notifications advance the revision of
//!    an idle resource; an event that arrives behind one (etcd#15220) makes the reflector relist.
//! 4. When the watch breaks, **re-watch** from the last revision, with backoff; when storage says
//!    the revision is compacted, go back to 1.

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
    /// Relist.
    Compacted,
    /// Re-watch from the last revision after a pause.
    Broken(StorageError),
    /// The cacher was stopped.
    Stopped,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Reflector {
    pub(crate) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        'relist: loop {
            let mut revision = match self.list_and_replace().await {
                Ok(revision) => revision,
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
                let end = self.watch_from(&mut revision).await;
                // Wake-ups still held back go out now.
                self.dispatcher.flush();
                match end {
                    WatchEnd::Stopped => break 'relist,
                    WatchEnd::Compacted => {
                        tracing::info!(resource = %self.shared.resource.prefix, revision, "watch compacted, relisting");
                        continue 'relist;
                    }
                    WatchEnd::Broken(error) => {
                        tracing::warn!(resource = %self.shared.resource.prefix, %error, revision, "watch broke, re-watching");
                        if !self.pause(&mut backoff).await {
                            break 'relist;
                        }
                    }
                }
            }
        }
        self.close_all_watchers();
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

    async fn list_and_replace(&mut self) -> Result<Revision, StorageError> {
        let prefix = self.shared.resource.prefix.clone();
        let current = self.storage.current_revision().await?;
        // Revision 1 is an empty store: the history of every write is there until compacted.
        let past = current.saturating_sub(self.config.history_revisions).max(1);
        let attempts = if past < current { vec![past, current] } else { vec![current] };
        let mut last_error = None;
        for at in attempts {
            match self.list_at(&prefix, at).await {
                Ok(objects) => {
                    self.replace(objects, at);
                    return Ok(at);
                }
                Err(error @ StorageError::Compacted { .. }) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
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

    fn replace(&mut self, objects: Vec<Arc<CachedObject>>, revision: Revision) {
        // Watches registered so far belong to the old state: index them, then end them all.
        while let Ok(registration) = self.registrations.try_recv() {
            self.dispatcher.register(registration);
        }
        self.ring.reset(revision);
        self.store.replace(objects, revision);
        self.shared.event_revision.store(revision, Ordering::Release);
        self.close_all_watchers();
        self.shared.revision.send_replace(revision);
        self.shared.ready.send_replace(true);
    }

    fn close_all_watchers(&mut self) {
        // Closing wakes every watcher: wake-ups still held back are moot.
        self.dispatcher.discard_pending();
        for watcher in self.dispatcher.all() {
            watcher.close();
        }
        self.dispatcher.sweep();
    }

    async fn watch_from(&mut self, revision: &mut Revision) -> WatchEnd {
        let prefix = self.shared.resource.prefix.clone();
        let mut watch = match self.storage.watch(&prefix, *revision).await {
            Ok(watch) => watch,
            Err(StorageError::Compacted { .. }) => return WatchEnd::Compacted,
            Err(error) => return WatchEnd::Broken(error),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                                return WatchEnd::Compacted;
                            }
                            *revision = event.revision();
                            self.apply(event);
                        }
                        self.finish_batch();
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
                        }
                    }
                    Some(Err(StorageError::Compacted { .. })) => return WatchEnd::Compacted,
                    Some(Err(error)) => return WatchEnd::Broken(error),
                    None => return WatchEnd::Broken(StorageError::Unavailable("the storage watch ended".into())),
                },
                () = self.shared.progress_requests.notified() => watch.request_progress(),
                _ = tick.tick() => {
                    self.ring.trim(Instant::now());
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

    use crate::cacher::object::ResourceConfig;
    use crate::cacher::{CacheConfig, Cacher, WatchFilter, WatchItem, WatchStart};
    use crate::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
    use crate::storage::{
        Deleted, KeyValue, ListOptions, ListResult, Result, Revision, Storage, WatchMessage, WatchStream,
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
}
