//! Watchers: one bounded SPSC queue per watch, a catch-up path through the ring, and shedding.
//!
//! # Two paths to a watcher
//!
//! A watcher is *live* or *catching up* (see [`Mode`]).
//!
//! - **Live**: the dispatcher pushes the position (ring sequence number) of each event the
//!   watcher wants, with how to deliver it, into the watcher's bounded queue. The queue holds
//!   no event, only a `u64`, so a full queue costs a few hundred bytes and no event memory.
//! - **Catching up**: when the queue is full, the dispatcher switches the watcher to catching up
//!   and skips it from then on, at O(1) per event. The watcher reads the ring itself from its own
//!   cursor, filters, and switches back to live once it has read everything.
//!
//! Switching back is the one delicate step: the watcher stores `LIVE` and then reads the ring up
//! to its tail, while the reflector appends to the ring (storing `tail`) and then loads the mode.
//! Each side puts a SeqCst fence between its store and its load, so at least one sees the other's
//! store: every event is either read from the ring or pushed to the queue, and the watcher drops
//! any it sees twice (by position). `tests/loom_watcher_protocol.rs` checks this protocol under
//! every interleaving (and fails without either fence).
//!
//! # Shedding
//!
//! A watcher that falls behind the ring's window while catching up (its next event was evicted)
//! is shed: it ends with [`WatchItem::Expired`], which the API sends as an ERROR event with a
//! 410 Status before closing the stream, so the client relists. One stalled client therefore
//! costs one queue and nothing else, and never delays any other watcher.

use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use tokio::sync::Notify;

use super::object::{bookmark_line, CachedEvent, CachedObject, Delivery, ResourceConfig};
use super::ring::{EventRing, TooOld};
use super::store::Snapshot;
use super::CacherShared;
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::Revision;

/// How many lines a watcher hands out at most per batch.
pub const MAX_BATCH: usize = 256;

/// The modes of a watcher (stored in an `AtomicU8`).
pub(crate) struct Mode;

impl Mode {
    /// Events arrive through the queue.
    pub(crate) const LIVE: u8 = 0;
    /// The watcher reads the ring itself; the dispatcher skips it.
    pub(crate) const CATCHING_UP: u8 = 1;
    /// The watch ended; the dispatcher drops it at its next sweep.
    pub(crate) const CLOSED: u8 = 2;
}

/// What a watch wants to see.
#[derive(Debug)]
pub struct WatchFilter {
    /// Only objects in this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl WatchFilter {
    /// A filter that lets everything through.
    pub fn everything() -> WatchFilter {
        WatchFilter {
            namespace: None,
            labels: LabelSelector::everything(),
            fields: FieldSelector::everything(),
        }
    }

    /// Whether `object` passes.
    pub fn matches(&self, object: &CachedObject) -> bool {
        if let Some(namespace) = &self.namespace {
            if object.namespace != *namespace {
                return false;
            }
        }
        (self.labels.is_everything() || self.labels.matches(&object.labels))
            && (self.fields.is_everything() || self.fields.matches(object))
    }

    /// How `event` reaches a watcher with this filter, if it does.
    pub fn delivery(&self, event: &CachedEvent) -> Option<Delivery> {
        let now = self.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|prev| self.matches(prev));
        event.delivery(now, before)
    }
}

/// What the dispatcher and the watch share.
pub(crate) struct WatcherShared {
    pub(crate) filter: WatchFilter,
    /// Positions of events for this watcher, each `seq << 2 | delivery`. Pushed by the
    /// dispatcher only, popped by the watch only.
    queue: ArrayQueue<u64>,
    /// A [`Mode`]. LIVE → CATCHING_UP by the dispatcher (queue full) or on relist;
    /// CATCHING_UP → LIVE by the watch; anything → CLOSED by either side when the watch ends.
    pub(crate) mode: AtomicU8,
    /// Set (Release) by the dispatcher once the watcher is in its index; the watch reads it
    /// (Acquire) before switching to LIVE, since events dispatched before that would miss it.
    pub(crate) registered: AtomicBool,
    /// Wakes the watch: new queue entries, a mode change, the cache closing.
    pub(crate) wake: Notify,
}

fn encode(seq: u64, delivery: Delivery) -> u64 {
    seq << 2
        | match delivery {
            Delivery::AsIs => 0,
            Delivery::AsAdded => 1,
            Delivery::AsDeleted => 2,
        }
}

fn decode(item: u64) -> (u64, Delivery) {
    let delivery = match item & 3 {
        0 => Delivery::AsIs,
        1 => Delivery::AsAdded,
        _ => Delivery::AsDeleted,
    };
    (item >> 2, delivery)
}

impl WatcherShared {
    pub(crate) fn new(filter: WatchFilter, queue_capacity: usize) -> Self {
        WatcherShared {
            filter,
            queue: ArrayQueue::new(queue_capacity.max(1)),
            mode: AtomicU8::new(Mode::CATCHING_UP),
            registered: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Offers an event to the watcher (dispatcher side). Never blocks, never waits.
    /// Returns `false` if the queue was full and the watcher now catches up.
    #[inline]
    pub(crate) fn offer(&self, event: &CachedEvent, delivery: Delivery) -> bool {
        // The reflector's fence after its tail store orders this load after it; it pairs with
        // the watch's fence after its switch to LIVE (see the module docs).
        if self.mode.load(Ordering::Acquire) != Mode::LIVE {
            return true;
        }
        let was_empty = self.queue.is_empty();
        match self.queue.push(encode(event.seq, delivery)) {
            Ok(()) => {
                if was_empty {
                    self.wake.notify_one();
                }
                true
            }
            Err(_) => {
                // AcqRel: releases the queue entries pushed before it to the watch's Acquire
                // mode loads; fails harmlessly if the watch closed meanwhile.
                let _ = self.mode.compare_exchange(
                    Mode::LIVE,
                    Mode::CATCHING_UP,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                self.wake.notify_one();
                false
            }
        }
    }

    /// Pops every queued entry; returns how many (benches only).
    pub(crate) fn drain_for_bench(&self) -> usize {
        let mut count = 0;
        while self.queue.pop().is_some() {
            count += 1;
        }
        count
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == Mode::CLOSED
    }

    pub(crate) fn close(&self) {
        // Release: the dispatcher's sweep (Relaxed) only needs to see it eventually.
        self.mode.store(Mode::CLOSED, Ordering::Release);
        self.wake.notify_one();
    }
}

/// What a watch hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// Newline-terminated JSON watch events, to be written in one go.
    Lines(Vec<Bytes>),
    /// The watch fell behind the cache's history (or the cache relisted under it): send an
    /// ERROR event with a 410 Status and end the stream.
    Expired(TooOld),
}

/// Why a watch stops reading.
enum Stop {
    TooOld(TooOld),
    Reset,
}

impl From<TooOld> for Stop {
    fn from(too_old: TooOld) -> Stop {
        Stop::TooOld(too_old)
    }
}

/// Where a watch starts.
pub(crate) enum Start {
    /// ADDED events for every matching object of this snapshot, then the events after it.
    /// With `initial_events_end`, a BOOKMARK annotated `k8s.io/initial-events-end` follows the
    /// initial events.
    Snapshot { snapshot: Arc<Snapshot>, initial_events_end: bool },
    /// The events after this revision.
    After(Revision),
}

/// One watch on a [`super::Cacher`]: a stream of [`WatchItem`]s.
///
/// The watch is driven by its consumer (the HTTP response that writes it): nothing runs for it
/// between calls to [`CacheWatch::next`]. Dropping it ends the watch.
pub struct CacheWatch {
    shared: Arc<WatcherShared>,
    cacher: Arc<CacherShared>,
    ring: Arc<EventRing>,
    resource: Arc<ResourceConfig>,
    /// The revision everything up to which has been delivered (or skipped as not wanted).
    cursor: Revision,
    /// The ring position to read next; `None` until the initial events are out.
    next_seq: Option<u64>,
    /// The ring's epoch when the watch positioned itself; a reset since ends the watch.
    epoch: u64,
    /// Whether the watch has been live once (later switches to live are catch-ups).
    was_live: bool,
    initial: Option<InitialEvents>,
    bookmarks: Option<tokio::time::Interval>,
    ended: bool,
}

struct InitialEvents {
    snapshot: Arc<Snapshot>,
    prefix: String,
    after: Option<Arc<str>>,
    initial_events_end: bool,
}

impl CacheWatch {
    pub(crate) fn new(
        shared: Arc<WatcherShared>,
        cacher: Arc<CacherShared>,
        start: Start,
        bookmark_interval: Option<Duration>,
    ) -> CacheWatch {
        let ring = Arc::clone(&cacher.ring);
        let resource = Arc::clone(&cacher.resource);
        let (cursor, initial) = match start {
            Start::Snapshot { snapshot, initial_events_end } => {
                let prefix = match &shared.filter.namespace {
                    Some(namespace) => format!("{}{namespace}/", resource.prefix),
                    None => resource.prefix.clone(),
                };
                (snapshot.revision, Some(InitialEvents { snapshot, prefix, after: None, initial_events_end }))
            }
            Start::After(revision) => (revision, None),
        };
        let bookmarks = bookmark_interval.map(|period| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        CacheWatch {
            shared,
            cacher,
            ring,
            resource,
            cursor,
            next_seq: None,
            epoch: 0,
            was_live: false,
            initial,
            bookmarks,
            ended: false,
        }
    }

    /// The revision everything up to which has been handed out.
    pub fn cursor(&self) -> Revision {
        self.cursor
    }

    /// The next lines to write; `None` once the watch has ended (the cache closed, or after
    /// [`WatchItem::Expired`]).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(lines) = self.initial_batch() {
                return Some(WatchItem::Lines(lines));
            }
            let mut lines = Vec::new();
            match self.collect(&mut lines) {
                Ok(()) => {}
                Err(Stop::TooOld(too_old)) => {
                    self.cacher.counters.shed.fetch_add(1, Ordering::Relaxed);
                    self.end();
                    return Some(WatchItem::Expired(too_old));
                }
                Err(Stop::Reset) => {
                    // The cache relisted under this watch: end it cleanly; the client re-watches
                    // from the revision it has.
                    self.end();
                    return None;
                }
            }
            if !lines.is_empty() {
                return Some(WatchItem::Lines(lines));
            }
            if self.shared.is_closed() || self.cacher.is_closed() {
                self.end();
                return None;
            }
            // Nothing to send: wait for the dispatcher, a bookmark tick, or the end.
            let wake = self.shared.wake.notified();
            match &mut self.bookmarks {
                Some(bookmarks) => {
                    tokio::select! {
                        () = wake => {}
                        _ = bookmarks.tick() => {
                            match self.bookmark() {
                                Ok(line) => return Some(WatchItem::Lines(vec![line])),
                                Err(too_old) => {
                                    self.end();
                                    return Some(WatchItem::Expired(too_old));
                                }
                            }
                        }
                    }
                }
                None => wake.await,
            }
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.shared.close();
    }

    /// Hands out the next batch of initial ADDED events (and the closing bookmark).
    fn initial_batch(&mut self) -> Option<Vec<Bytes>> {
        let initial = self.initial.as_mut()?;
        let mut lines = Vec::new();
        let mut last = None;
        for object in initial.snapshot.range(&initial.prefix, initial.after.as_deref()) {
            if lines.len() == MAX_BATCH {
                break;
            }
            last = Some(Arc::clone(&object.key));
            if self.shared.filter.matches(object) {
                lines.push(object.added_line());
            }
        }
        if lines.len() == MAX_BATCH {
            initial.after = last;
            return Some(lines);
        }
        if initial.initial_events_end {
            lines.push(bookmark_line(&self.resource, initial.snapshot.revision, true));
        }
        self.initial = None;
        if lines.is_empty() {
            None
        } else {
            Some(lines)
        }
    }

    /// Appends the lines available now, from the ring or the queue, per the watcher's mode.
    fn collect(&mut self, lines: &mut Vec<Bytes>) -> Result<(), Stop> {
        if self.next_seq.is_none() {
            self.epoch = self.ring.epoch();
            self.next_seq = Some(self.ring.seq_after(self.cursor)?);
        }
        self.check_epoch()?;
        self.collect_positioned(lines)?;
        // Whatever was read must come from this epoch too.
        self.check_epoch()
    }

    fn check_epoch(&self) -> Result<(), Stop> {
        if self.ring.epoch() == self.epoch {
            Ok(())
        } else {
            Err(Stop::Reset)
        }
    }

    fn collect_positioned(&mut self, lines: &mut Vec<Bytes>) -> Result<(), TooOld> {
        // Acquire: pairs with the dispatcher's compare-exchange to CATCHING_UP, made after the
        // queue push that failed, so the entries queued before it are seen here.
        if self.shared.mode.load(Ordering::Acquire) == Mode::LIVE {
            self.drain_queue(lines)?;
            if self.shared.mode.load(Ordering::Acquire) == Mode::LIVE || lines.len() >= MAX_BATCH {
                return Ok(());
            }
        }
        if self.shared.mode.load(Ordering::Acquire) == Mode::CATCHING_UP {
            let caught_up = self.read_ring(lines)?;
            if caught_up && self.shared.registered.load(Ordering::Acquire) {
                // Whatever is still queued was read from the ring just now; the dispatcher does
                // not push while the watcher catches up, so the queue can be emptied safely.
                while self.shared.queue.pop().is_some() {}
                // Back to the queue; then read the ring once more for what was appended before
                // the dispatcher could see the switch (duplicates are dropped by position).
                // AcqRel; the fence below orders it before the ring's tail load.
                if self
                    .shared
                    .mode
                    .compare_exchange(Mode::CATCHING_UP, Mode::LIVE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    if self.was_live {
                        self.cacher.counters.caught_up.fetch_add(1, Ordering::Relaxed);
                    }
                    self.was_live = true;
                    // Pairs with the reflector's fence between its tail store and mode loads.
                    fence(Ordering::SeqCst);
                    self.read_ring(lines)?;
                }
            }
        }
        Ok(())
    }

    /// Reads the ring from the cursor, up to a batch; returns whether it reached the tail.
    fn read_ring(&mut self, lines: &mut Vec<Bytes>) -> Result<bool, TooOld> {
        let from = self.next_seq.expect("positioned");
        // The revision is loaded before the tail (inside `read`): every event up to it lies
        // below that tail.
        let complete = self.ring.revision();
        let mut events = Vec::new();
        let room = MAX_BATCH.saturating_sub(lines.len()).max(1);
        let next = self.ring.read(from, room, self.cursor, &mut events)?;
        for event in &events {
            if let Some(delivery) = self.shared.filter.delivery(event) {
                lines.push(event.line(delivery, &self.resource));
            }
            self.cursor = event.revision();
        }
        self.next_seq = Some(next);
        let caught_up = next == self.ring.tail();
        if caught_up {
            self.cursor = self.cursor.max(complete);
        }
        Ok(caught_up)
    }

    /// Pops what the dispatcher queued, up to a batch.
    fn drain_queue(&mut self, lines: &mut Vec<Bytes>) -> Result<(), TooOld> {
        while lines.len() < MAX_BATCH {
            let Some(item) = self.shared.queue.pop() else { break };
            let (seq, delivery) = decode(item);
            let next_seq = self.next_seq.expect("positioned");
            if seq < next_seq {
                continue; // Already read from the ring.
            }
            let Some(event) = self.ring.get(seq) else {
                return Err(TooOld { requested: self.cursor, oldest: self.ring.oldest_revision() });
            };
            lines.push(event.line(delivery, &self.resource));
            self.cursor = event.revision();
            self.next_seq = Some(seq + 1);
        }
        Ok(())
    }

    /// A BOOKMARK at the newest revision the watch is complete up to. Looks at the ring first:
    /// a bookmark must never get ahead of an event the watch has yet to send, so if one is
    /// pending the bookmark stays at the cursor.
    fn bookmark(&mut self) -> Result<Bytes, TooOld> {
        if let (Some(from), None) = (self.next_seq, &self.initial) {
            let complete = self.ring.revision();
            let tail = self.ring.tail();
            let mut events = Vec::new();
            let next = self.ring.read(from, (tail - from) as usize, self.cursor, &mut events)?;
            if !events.iter().any(|event| self.shared.filter.delivery(event).is_some()) {
                self.cursor = self.cursor.max(complete);
                if let Some(last) = events.last() {
                    self.cursor = self.cursor.max(last.revision());
                }
                self.next_seq = Some(next);
            }
        }
        Ok(bookmark_line(&self.resource, self.cursor, false))
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        self.shared.close();
        self.cacher.unregister();
        self.cacher.counters.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_entries_round_trip() {
        for delivery in [Delivery::AsIs, Delivery::AsAdded, Delivery::AsDeleted] {
            assert_eq!(decode(encode(12345, delivery)), (12345, delivery));
        }
    }
}
