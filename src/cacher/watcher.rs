//! Watchers: one bounded SPSC queue per watch, a catch-up path through the ring, and shedding.
//!
//! # The states of a watch
//!
//! ```text
//!  initial events ──▶ positioning ──▶ catching up ◀──────────────▶ live ──▶ ended
//!  (watch-list only)   (seq_after)    reads the ring   queue full     queue
//! ```
//!
//! - **Initial events** (watch-list, or a watch without resourceVersion): ADDED events for the
//!   matching objects of a snapshot, in batches, then the events after the snapshot's revision.
//! - **Positioning**: the watch finds the ring position of the first event after its revision,
//!   or ends with [`WatchItem::Expired`] if those events are gone.
//! - **Catching up** ([`Mode::CATCHING_UP`]): the watch reads the ring itself from its own
//!   cursor, filters, and the dispatcher skips it (O(1) per event). Every watch starts here,
//!   since the dispatcher only learns of it at its next registration sweep.
//! - **Live** ([`Mode::LIVE`]): the dispatcher pushes the ring position of each event the
//!   watcher wants, with how to deliver it, into the watcher's bounded queue. The queue holds no
//!   event, only a `u64`, so a full queue costs a few hundred bytes and no event memory. A full
//!   queue switches the watcher back to catching up.
//! - **Ended** ([`Mode::CLOSED`]): the client went away, the watch was shed or timed out, or the
//!   cache relisted or stopped.
//!
//! Every read reports whether more may be available right now (a batch or scan limit was hit),
//! and a watch only sleeps when a read found nothing and the re-check after registering its
//! waker still finds nothing: it never sleeps with unread events.
//!
//! # The hand-offs
//!
//! **Wake-ups.** The consumer registers its waker ([`AtomicWaker`]) and then re-checks the queue,
//! the mode and the ring; the dispatcher pushes (or changes the mode) and then wakes. Of the
//! consumer's "register, load" and the dispatcher's "store, wake", the waker's read-modify-write
//! operations order one after the other, so either the re-check sees the entry or the wake finds
//! the waker. Wakes may be deferred by the dispatcher (see `dispatcher`, *Coalescing*) but are
//! never skipped.
//!
//! **Catching up → live.** The watch stores `LIVE` and then loads the ring's tail (`ring_until`),
//! while the reflector stores the tail and then loads the mode. Each side puts a SeqCst fence
//! between its store and its load, so at least one sees the other's store: every event below
//! `ring_until` is read from the ring, every event at or above it is pushed to the queue (the
//! dispatcher saw `LIVE`), and the watcher drops any it sees twice (by position). The ring part
//! is read in full, in as many batches as it takes, before any queue entry.
//! `tests/loom_watcher_protocol.rs` checks this protocol, batch limits and wake-ups included,
//! under every interleaving (and fails without either fence).
//!
//! # Shedding
//!
//! A watcher that falls behind the ring's window while catching up (its next event was evicted)
//! is shed: it ends with [`WatchItem::Expired`], which the API sends as an ERROR event with a
//! 410 Status before closing the stream, so the client relists. One stalled client therefore
//! costs one queue and nothing else, and never delays any other watcher.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam::queue::ArrayQueue;
use futures_util::task::AtomicWaker;

use super::object::{bookmark, CachedEvent, CachedObject, Delivery, Line, ResourceConfig, Wire};
use super::ring::{EventRing, TooOld};
use super::store::Snapshot;
use super::CacherShared;
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::Revision;

/// How many lines a watcher hands out at most per batch.
pub const MAX_BATCH: usize = 256;

/// How many bytes of lines a watcher hands out at most per batch (beyond one line).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How many ring events a watch examines at most per poll before it yields to other tasks
/// (a sparse selector can skip many events without producing a line).
pub const SCAN_BUDGET: usize = 4096;

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
            if *object.namespace != **namespace {
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
    /// dispatcher only, popped by the watch only (and emptied by the watch before it goes live).
    queue: ArrayQueue<u64>,
    /// A [`Mode`]. LIVE → CATCHING_UP by the dispatcher (queue full); CATCHING_UP → LIVE by the
    /// watch; anything → CLOSED by either side when the watch ends.
    pub(crate) mode: AtomicU8,
    /// Set (Release) by the dispatcher once the watcher is in its index; the watch reads it
    /// (Acquire) before switching to LIVE, since events dispatched before that would miss it.
    pub(crate) registered: AtomicBool,
    /// The consumer's waker: registered by the watch before it re-checks and sleeps; woken by
    /// the dispatcher after a push or a mode change, by registration, and by `close`.
    waker: AtomicWaker,
    /// Whether the watcher is in the dispatcher's list of wake-ups to make. Read and written
    /// by the dispatcher only (Relaxed).
    pub(crate) wake_pending: AtomicBool,
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

/// What an offer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// The position is in the queue.
    Queued,
    /// The queue was full: the watcher now catches up from the ring.
    Overflowed,
}

impl WatcherShared {
    pub(crate) fn new(filter: WatchFilter, queue_capacity: usize) -> Self {
        WatcherShared {
            filter,
            queue: ArrayQueue::new(queue_capacity.max(1)),
            mode: AtomicU8::new(Mode::CATCHING_UP),
            registered: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            wake_pending: AtomicBool::new(false),
        }
    }

    /// Whether the dispatcher should offer events (dispatcher side; after the ring's tail
    /// store and fence, see the module docs).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        // Acquire: pairs with the watch's AcqRel switch to LIVE, so the queue it emptied before
        // is seen empty here. The reflector's SeqCst fence after its tail store orders this load
        // after that store; it pairs with the watch's fence after its switch (module docs).
        self.mode.load(Ordering::Acquire) == Mode::LIVE
    }

    /// Queues an event for a live watcher (dispatcher side). Never blocks, never waits, never
    /// wakes: the dispatcher wakes the watcher after (see [`WatcherShared::wake`]).
    #[inline]
    pub(crate) fn offer(&self, event: &CachedEvent, delivery: Delivery) -> Offered {
        match self.queue.push(encode(event.seq, delivery)) {
            Ok(()) => Offered::Queued,
            Err(_) => {
                // AcqRel: releases the queue entries pushed before it to the watch's Acquire
                // mode loads; fails harmlessly if the watch closed meanwhile.
                let _ = self.mode.compare_exchange(
                    Mode::LIVE,
                    Mode::CATCHING_UP,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                Offered::Overflowed
            }
        }
    }

    /// Wakes the watch if it sleeps (after a push, a mode change or the registration).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Pops every queued entry; returns how many (benches only).
    pub(crate) fn drain_for_bench(&self) -> usize {
        let mut count = 0;
        while self.queue.pop().is_some() {
            count += 1;
        }
        count
    }

    /// Pops every queued entry: (ring position, how it reaches the watcher) (unit tests).
    #[cfg(test)]
    pub(crate) fn drain_entries(&self) -> Vec<(u64, Delivery)> {
        std::iter::from_fn(|| self.queue.pop()).map(decode).collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == Mode::CLOSED
    }

    pub(crate) fn close(&self) {
        // Release: the dispatcher's sweep (Relaxed) only needs to see it eventually; the wake's
        // read-modify-write orders it before the watch's re-check.
        self.mode.store(Mode::CLOSED, Ordering::Release);
        self.waker.wake();
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

/// What [`CacheWatch::poll_fill`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// One or more lines were added to the sink.
    Lines,
    /// The watch fell behind the cache's history: send an ERROR event with a 410 Status and
    /// end the stream (any lines already in the sink go first).
    Expired(TooOld),
}

/// Where a watch puts its lines.
pub trait LineSink {
    /// Appends one line (for JSON newline-terminated, for protobuf one length-prefixed frame).
    fn put(&mut self, line: Line<'_>);
    /// How many lines and bytes it holds.
    fn size(&self) -> (usize, usize);
    /// Drops everything after the first `lines` lines and `bytes` bytes (a previous `size`).
    fn truncate(&mut self, size: (usize, usize));
}

impl LineSink for Vec<Bytes> {
    fn put(&mut self, line: Line<'_>) {
        self.push(line.to_bytes());
    }

    fn size(&self) -> (usize, usize) {
        (self.len(), self.iter().map(Bytes::len).sum())
    }

    fn truncate(&mut self, (lines, _): (usize, usize)) {
        Vec::truncate(self, lines);
    }
}

/// Lines written into one buffer, to be sent in one go: each line's framing and the object's
/// shared bytes go straight in, so an event costs one copy of its bytes per watcher, into the
/// buffer that goes to the socket, and no line of its own. The buffer is reused from batch to
/// batch (once the previous batch's bytes are written and dropped, `reserve` takes the
/// allocation back), so a steady watch allocates nothing per batch.
#[derive(Debug, Default)]
pub struct LineBuffer {
    /// The bytes of the lines.
    pub bytes: BytesMut,
    /// How many lines.
    pub lines: usize,
}

impl LineBuffer {
    /// Takes the lines out as one chunk.
    pub fn take(&mut self) -> Bytes {
        self.lines = 0;
        self.bytes.split().freeze()
    }
}

impl LineSink for LineBuffer {
    fn put(&mut self, line: Line<'_>) {
        line.write_to(&mut self.bytes);
        self.lines += 1;
    }

    fn size(&self) -> (usize, usize) {
        (self.lines, self.bytes.len())
    }

    fn truncate(&mut self, (lines, bytes): (usize, usize)) {
        self.bytes.truncate(bytes);
        self.lines = lines;
    }
}

/// Why a watch stops reading.
enum Stop {
    TooOld(TooOld),
    /// The cache relisted under the watch: end it cleanly.
    Reset,
    /// The watch or its cache was closed.
    Closed,
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
/// between polls. Dropping it ends the watch.
pub struct CacheWatch {
    shared: Arc<WatcherShared>,
    cacher: Arc<CacherShared>,
    ring: Arc<EventRing>,
    resource: Arc<ResourceConfig>,
    /// The revision everything up to which has been delivered (or skipped as not wanted).
    cursor: Revision,
    /// The ring position to read next; `None` until positioned.
    next_seq: Option<u64>,
    /// While live: the ring must be read up to here (the tail seen right after switching to
    /// live) before any queue entry is taken.
    ring_until: u64,
    /// The ring's epoch when the watch positioned itself; a reset since ends the watch.
    epoch: u64,
    /// Whether the watch has been live once (later switches to live are catch-ups).
    was_live: bool,
    initial: Option<InitialEvents>,
    bookmarks: Option<Bookmarks>,
    /// A shed found after lines were already in the sink: handed out by the next poll.
    expired: Option<TooOld>,
    ended: bool,
    /// The form events are handed out in.
    wire: Wire,
}

struct InitialEvents {
    snapshot: Arc<Snapshot>,
    prefix: String,
    after: Option<Arc<str>>,
    initial_events_end: bool,
}

/// The bookmark timer: one per watch, reset once per bookmark.
struct Bookmarks {
    period: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
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
        let bookmarks =
            bookmark_interval.map(|period| Bookmarks { period, timer: Box::pin(tokio::time::sleep(period)) });
        CacheWatch {
            shared,
            cacher,
            ring,
            resource,
            cursor,
            next_seq: None,
            ring_until: 0,
            epoch: 0,
            was_live: false,
            initial,
            bookmarks,
            expired: None,
            ended: false,
            wire: Wire::Json,
        }
    }

    /// Hands events out in `wire`'s form from now on (JSON lines by default; a protobuf watch
    /// sets this before its first poll).
    pub fn set_wire(&mut self, wire: Wire) {
        self.wire = wire;
    }

    /// The form events are handed out in.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// The revision everything up to which has been handed out.
    pub fn cursor(&self) -> Revision {
        self.cursor
    }

    /// The next lines to write; `None` once the watch has ended (the cache closed, or after
    /// [`WatchItem::Expired`]).
    pub async fn next(&mut self) -> Option<WatchItem> {
        let mut lines = Vec::new();
        let filled = std::future::poll_fn(|cx| self.poll_fill(cx, &mut lines)).await?;
        Some(match filled {
            Filled::Lines => WatchItem::Lines(lines),
            Filled::Expired(too_old) => WatchItem::Expired(too_old),
        })
    }

    /// Adds to `sink` the lines available now, up to a batch: `Ready(Some(Filled::Lines))` once
    /// it added some; `Pending` (the waker registered) only when nothing is available;
    /// `Ready(None)` once the watch has ended.
    pub fn poll_fill<S: LineSink>(&mut self, cx: &mut Context<'_>, sink: &mut S) -> Poll<Option<Filled>> {
        let mut budget = SCAN_BUDGET;
        loop {
            if let Some(too_old) = self.expired.take() {
                self.end();
                return Poll::Ready(Some(Filled::Expired(too_old)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            if self.initial.is_some() {
                if self.initial_batch(sink) {
                    return Poll::Ready(Some(Filled::Lines));
                }
                continue;
            }
            let before = sink.size();
            match self.collect(sink, &mut budget) {
                Ok(more) => {
                    if sink.size().0 > before.0 {
                        return Poll::Ready(Some(Filled::Lines));
                    }
                    if more {
                        if budget == 0 {
                            // Examined a whole budget of events without a line: let other tasks
                            // run, and come back at once.
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        continue;
                    }
                }
                Err(Stop::TooOld(too_old)) => {
                    self.cacher.counters.shed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        resource = %self.resource.prefix, requested = too_old.requested, oldest = too_old.oldest,
                        "watcher shed: it fell behind the ring"
                    );
                    if sink.size().0 > before.0 {
                        self.expired = Some(too_old);
                        return Poll::Ready(Some(Filled::Lines));
                    }
                    self.end();
                    return Poll::Ready(Some(Filled::Expired(too_old)));
                }
                Err(Stop::Reset | Stop::Closed) => {
                    // A relist under the watch, or the end of the cache: end cleanly; the
                    // client re-watches from the revision it has.
                    sink.truncate(before);
                    self.end();
                    return Poll::Ready(None);
                }
            }
            // Nothing now. Register, then look again: a push (or mode change) made before the
            // registration is seen by this re-check, one made after wakes the waker.
            self.shared.waker.register(cx.waker());
            if self.has_work() {
                continue;
            }
            if let Some(bookmarks) = &mut self.bookmarks {
                if bookmarks.timer.as_mut().poll(cx).is_ready() {
                    let deadline = tokio::time::Instant::now() + bookmarks.period;
                    bookmarks.timer.as_mut().reset(deadline);
                    match self.bookmark() {
                        Ok((event_type, payload)) => {
                            sink.put(Line { wire: self.wire, event_type, payload: &payload });
                            return Poll::Ready(Some(Filled::Lines));
                        }
                        Err(too_old) => {
                            self.end();
                            return Poll::Ready(Some(Filled::Expired(too_old)));
                        }
                    }
                }
            }
            return Poll::Pending;
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.shared.close();
    }

    /// Whether a read now could find something (the re-check before sleeping).
    fn has_work(&self) -> bool {
        if self.cacher.is_closed() {
            return true;
        }
        let Some(next_seq) = self.next_seq else { return true };
        match self.shared.mode.load(Ordering::Acquire) {
            Mode::LIVE => next_seq < self.ring_until || !self.shared.queue.is_empty(),
            Mode::CATCHING_UP => {
                self.shared.registered.load(Ordering::Acquire) || next_seq < self.ring.tail()
            }
            _ => true,
        }
    }

    /// Adds the next batch of initial ADDED events (and the closing bookmark) to `sink`;
    /// whether it added any.
    fn initial_batch<S: LineSink>(&mut self, sink: &mut S) -> bool {
        let Some(initial) = self.initial.as_mut() else { return false };
        let (start, _) = sink.size();
        let mut last = None;
        let mut full = false;
        for object in initial.snapshot.range(&initial.prefix, initial.after.as_deref()) {
            if sink.size().0 - start == MAX_BATCH {
                full = true;
                break;
            }
            last = Some(Arc::clone(&object.key));
            if self.shared.filter.matches(object) {
                sink.put(object.added(self.wire, &self.resource));
            }
        }
        if full {
            initial.after = last;
            return true;
        }
        if initial.initial_events_end {
            let (event_type, payload) = bookmark(self.wire, &self.resource, initial.snapshot.revision, true);
            sink.put(Line { wire: self.wire, event_type, payload: &payload });
        }
        self.initial = None;
        sink.size().0 > start
    }

    /// Adds the lines available now to `sink`, from the ring or the queue per the watcher's
    /// mode; whether more may be available right away (a limit was hit, or the mode changed).
    fn collect<S: LineSink>(&mut self, sink: &mut S, budget: &mut usize) -> Result<bool, Stop> {
        if self.cacher.is_closed() {
            return Err(Stop::Closed);
        }
        if self.next_seq.is_none() {
            self.epoch = self.ring.epoch();
            self.next_seq = Some(self.ring.seq_after(self.cursor)?);
        }
        self.check_epoch()?;
        let more = self.collect_positioned(sink, budget)?;
        // Whatever was read must come from this epoch too.
        self.check_epoch()?;
        Ok(more)
    }

    fn check_epoch(&self) -> Result<(), Stop> {
        if self.ring.epoch() == self.epoch {
            Ok(())
        } else {
            Err(Stop::Reset)
        }
    }

    fn collect_positioned<S: LineSink>(&mut self, sink: &mut S, budget: &mut usize) -> Result<bool, Stop> {
        *budget = budget.saturating_sub(1);
        // Acquire: pairs with the dispatcher's compare-exchange to CATCHING_UP, made after the
        // queue push that failed, so the entries queued before it are seen here.
        match self.shared.mode.load(Ordering::Acquire) {
            Mode::LIVE => {
                if self.next_seq.expect("positioned") < self.ring_until {
                    let until = self.ring_until;
                    if !self.read_ring(sink, budget, Some(until))? {
                        return Ok(true);
                    }
                }
                self.drain_queue(sink)?;
                Ok(full(sink) && !self.shared.queue.is_empty()
                    || self.shared.mode.load(Ordering::Acquire) != Mode::LIVE)
            }
            Mode::CATCHING_UP => {
                if !self.read_ring(sink, budget, None)? {
                    return Ok(true);
                }
                if !self.shared.registered.load(Ordering::Acquire) {
                    // The registration wakes the watch.
                    return Ok(false);
                }
                // Whatever is still queued was read from the ring just now; the dispatcher does
                // not push while the watcher catches up, so the queue can be emptied safely.
                while self.shared.queue.pop().is_some() {}
                // Back to the queue; then read the ring up to the tail seen after the switch,
                // for what was appended before the dispatcher could see it.
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
                    self.ring_until = self.ring.tail();
                }
                Ok(true)
            }
            _ => Err(Stop::Closed),
        }
    }

    /// Reads the ring from the cursor up to `until` (the tail when `None`), within the batch and
    /// scan limits; returns whether it got there.
    fn read_ring<S: LineSink>(
        &mut self,
        sink: &mut S,
        budget: &mut usize,
        until: Option<u64>,
    ) -> Result<bool, TooOld> {
        let mut seq = self.next_seq.expect("positioned");
        // The revision is loaded before the tail: every event up to it lies below that tail.
        let complete = self.ring.revision();
        let tail = self.ring.tail();
        let end = until.map_or(tail, |until| until.min(tail));
        while seq < end && *budget > 0 && !full(sink) {
            let Some(event) = self.ring.load(seq) else {
                self.next_seq = Some(seq);
                return Err(TooOld { requested: self.cursor, oldest: self.ring.oldest_revision() });
            };
            // An event at or below the cursor is one the watch started after: one that came
            // behind an unreliable progress notification the watch was positioned by.
            if event.revision() > self.cursor {
                if let Some(delivery) = self.shared.filter.delivery(&event) {
                    sink.put(event.line_for(self.wire, delivery, &self.resource));
                }
                self.cursor = event.revision();
            }
            *budget -= 1;
            seq += 1;
        }
        self.next_seq = Some(seq);
        let reached = seq == end;
        if reached && until.is_none() {
            self.cursor = self.cursor.max(complete);
        }
        Ok(reached)
    }

    /// Pops what the dispatcher queued, up to a batch.
    fn drain_queue<S: LineSink>(&mut self, sink: &mut S) -> Result<(), TooOld> {
        while !full(sink) {
            let Some(item) = self.shared.queue.pop() else { break };
            let (seq, delivery) = decode(item);
            if seq < self.next_seq.expect("positioned") {
                continue; // Already read from the ring.
            }
            let Some(event) = self.ring.load(seq) else {
                return Err(TooOld { requested: self.cursor, oldest: self.ring.oldest_revision() });
            };
            if event.revision() > self.cursor {
                sink.put(event.line_for(self.wire, delivery, &self.resource));
                self.cursor = event.revision();
            }
            self.next_seq = Some(seq + 1);
        }
        Ok(())
    }

    /// A BOOKMARK at the newest revision the watch is complete up to. Looks at the ring first:
    /// a bookmark must never get ahead of an event the watch has yet to send, so if one is
    /// pending the bookmark stays at the cursor.
    fn bookmark(&mut self) -> Result<(&'static str, Bytes), TooOld> {
        if let (Some(from), None) = (self.next_seq, &self.initial) {
            let complete = self.ring.revision();
            let tail = self.ring.tail();
            let mut pending = false;
            let mut last = None;
            for seq in from..tail {
                let Some(event) = self.ring.load(seq) else {
                    return Err(TooOld { requested: self.cursor, oldest: self.ring.oldest_revision() });
                };
                if self.shared.filter.delivery(&event).is_some() {
                    pending = true;
                    break;
                }
                last = Some(event.revision());
            }
            if !pending {
                self.cursor = self.cursor.max(complete);
                if let Some(last) = last {
                    self.cursor = self.cursor.max(last);
                }
                self.next_seq = Some(tail);
                self.ring_until = self.ring_until.min(tail);
            }
        }
        Ok(bookmark(self.wire, &self.resource, self.cursor, false))
    }
}

/// Whether a batch is full.
fn full<S: LineSink>(sink: &S) -> bool {
    let (lines, bytes) = sink.size();
    lines >= MAX_BATCH || bytes >= MAX_BATCH_BYTES
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
