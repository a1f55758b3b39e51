//! The event ring: a bounded window of recent events, written by one producer (the reflector)
//! and read by any number of readers without locks.
//!
//! # Layout
//!
//! Events get consecutive *sequence numbers* as they are appended. Event `s` lives in slot
//! `s & mask` of a power-of-two array of [`ArcSwapOption`]s; the event carries its own `seq`, so
//! a reader that loads a slot knows whether it holds the event it wants or a newer one that
//! replaced it. The window is the events `head..tail`.
//!
//! # Invariants
//!
//! - Revisions strictly grow with sequence numbers.
//! - Every event with a revision greater than [`EventRing::oldest_revision`] and at most
//!   [`EventRing::revision`] is in the window, or is being appended.
//! - Only the [`RingWriter`] (one per ring, owned by the reflector) changes anything.
//!
//! # Capacity
//!
//! Like kube-apiserver's watch cache, the window keeps roughly the last [`RingLimits::window`]
//! (75 s by default) of events, never fewer than `min_events` and never more than
//! `max_events` or `max_bytes` (except that the newest `min_events` stay whatever their size).
//!
//! # Too old
//!
//! A reader that asks for the events after a revision older than
//! [`EventRing::oldest_revision`], or whose next event was evicted while it read, gets
//! [`TooOld`]: the API answers it with 410 Gone, and the client relists.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam::utils::CachePadded;

use super::object::CachedEvent;
use crate::storage::Revision;

/// The bounds of a ring's window.
#[derive(Clone, Debug)]
pub struct RingLimits {
    /// Events always kept (when there are that many).
    pub min_events: usize,
    /// Events at most (rounded up to a power of two for the slot array).
    pub max_events: usize,
    /// Bytes of events at most (as [`CachedEvent::size`] counts them), beyond `min_events`.
    pub max_bytes: usize,
    /// Events older than this are dropped, beyond `min_events`.
    pub window: Duration,
    /// The bytes every ring of the server may hold together (`--watch-cache-total-max-bytes`),
    /// shared by all of them; `None`: no cap beyond each ring's own.
    pub budget: Option<Arc<ByteBudget>>,
}

/// Bytes of events held by every ring sharing it, against a cap. Each ring evicts its own
/// oldest events (beyond its `min_events`) while the total is over the cap, so the resources
/// that write most give back first.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    /// Changed by each ring's writer as it pushes and evicts; read by the others. Relaxed: a
    /// bound checked a little late only delays an eviction by one push.
    used: AtomicUsize,
}

impl ByteBudget {
    /// A cap of `limit` bytes.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget { limit, used: AtomicUsize::new(0) }
    }

    /// The bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }
}

impl Default for RingLimits {
    fn default() -> Self {
        RingLimits {
            min_events: 100,
            max_events: 64 * 1024,
            max_bytes: 256 << 20,
            window: Duration::from_secs(75),
            budget: None,
        }
    }
}

/// The events after a revision are no longer in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {requested} (oldest available: {oldest})")]
pub struct TooOld {
    /// The revision asked for.
    pub requested: Revision,
    /// The oldest revision the ring can serve the events after.
    pub oldest: Revision,
}

/// The shared, read side of the ring. See the module docs.
pub struct EventRing {
    slots: Box<[ArcSwapOption<CachedEvent>]>,
    mask: u64,
    /// The sequence number of the oldest event in the window. Written by the writer (Release)
    /// before it clears the evicted slot; read with Acquire. A reader may see it stale (lower):
    /// the slot check then tells it the event is gone.
    head: CachePadded<AtomicU64>,
    /// One past the newest event's sequence number. Written by the writer (Release) after the
    /// slot is filled, then followed by a SeqCst fence; read with Acquire. The fence pairs with
    /// the one a watcher issues between switching back to its queue and reading `tail`: of the
    /// reflector's "store tail, fence, load mode" and the watcher's "store mode, fence, load
    /// tail", at least one load sees the other's store (see `watcher`; modelled in
    /// `tests/loom_watcher_protocol.rs`).
    tail: CachePadded<AtomicU64>,
    /// Every event with a revision above this is in the window. Written by the writer (Release)
    /// before `head` moves past an event; read with Acquire.
    oldest_revision: AtomicU64,
    /// The ring is complete up to this revision (its newest event, or a progress report).
    /// Written by the writer (Release) after `tail`; read with Acquire, so a reader that sees
    /// revision `r` and then loads `tail` finds every event up to `r` below it.
    revision: AtomicU64,
    /// Bytes of the events in the window (statistics; Relaxed).
    bytes: AtomicUsize,
    /// Incremented (SeqCst) by [`RingWriter::reset`] before it drops the events: a reader that
    /// loads the same epoch before and after a read knows that read saw no reset.
    epoch: AtomicU64,
}

impl EventRing {
    /// Sequence number one past the newest event.
    pub fn tail(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// Sequence number of the oldest event in the window.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// How many times the ring was reset (after relists).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The revision the ring is complete up to.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// The oldest revision whose following events the ring holds.
    pub fn oldest_revision(&self) -> Revision {
        self.oldest_revision.load(Ordering::Acquire)
    }

    /// Events in the window.
    pub fn len(&self) -> usize {
        (self.tail() - self.head()) as usize
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the events in the window.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The age of the oldest event in the window.
    pub fn window_age(&self) -> Option<Duration> {
        self.get(self.head()).map(|event| event.received.elapsed())
    }

    /// The event at `seq`, if it is still in the window, behind a guard: no reference count is
    /// touched, so readers of a hot slot do not contend on its `Arc`. Hold it briefly (arc-swap
    /// keeps a few fast guards per thread; more fall back to a slower path).
    pub fn load(&self, seq: u64) -> Option<EventGuard> {
        let guard = self.slots[(seq & self.mask) as usize].load();
        match guard.as_deref() {
            Some(event) if event.seq == seq => Some(EventGuard(guard)),
            _ => None,
        }
    }

    /// The event at `seq`, if it is still in the window.
    pub fn get(&self, seq: u64) -> Option<Arc<CachedEvent>> {
        let event = self.slots[(seq & self.mask) as usize].load_full()?;
        (event.seq == seq).then_some(event)
    }

    /// The sequence number of the first event with a revision above `revision`: where a watch
    /// "from `revision`" starts reading. [`TooOld`] if those events are gone.
    pub fn seq_after(&self, revision: Revision) -> Result<u64, TooOld> {
        loop {
            let oldest = self.oldest_revision();
            if revision < oldest {
                return Err(TooOld { requested: revision, oldest });
            }
            let (mut low, mut high) = (self.head(), self.tail());
            let mut torn = false;
            while low < high {
                let middle = low + (high - low) / 2;
                match self.get(middle) {
                    Some(event) if event.revision() > revision => high = middle,
                    Some(_) => low = middle + 1,
                    None => {
                        // Evicted while we searched: start again from the new window.
                        torn = true;
                        break;
                    }
                }
            }
            if torn {
                continue;
            }
            // The events between `revision` and the answer may have been evicted meanwhile.
            let oldest = self.oldest_revision();
            if revision < oldest {
                return Err(TooOld { requested: revision, oldest });
            }
            return Ok(low);
        }
    }

    /// Appends to `out` the events from `from` on, at most `max` of them, and returns the
    /// sequence number to read next. [`TooOld`] (with `cursor` as the revision asked for) if the
    /// event at `from` was evicted.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        cursor: Revision,
        out: &mut Vec<Arc<CachedEvent>>,
    ) -> Result<u64, TooOld> {
        let end = self.tail().min(from + max as u64);
        for seq in from..end {
            match self.get(seq) {
                Some(event) => out.push(event),
                None => return Err(TooOld { requested: cursor, oldest: self.oldest_revision() }),
            }
        }
        Ok(end.max(from))
    }
}

/// An event of the ring, read through a guard ([`EventRing::load`]).
pub struct EventGuard(arc_swap::Guard<Option<Arc<CachedEvent>>>);

impl std::ops::Deref for EventGuard {
    type Target = CachedEvent;

    fn deref(&self) -> &CachedEvent {
        self.0.as_deref().expect("an event guard holds an event")
    }
}

/// The write side of a ring: exactly one per ring, owned by the reflector.
///
/// It reads the ring's atomics with Relaxed: it is their only writer, so it always sees its own
/// latest stores.
pub struct RingWriter {
    ring: Arc<EventRing>,
    limits: RingLimits,
    bytes: usize,
    /// The size each slot's event was counted at when pushed (by slot index). An event grows
    /// after its push when a watcher fills its lazy forms (protobuf, the DELETED state), so
    /// eviction gives back what was counted, never a later, larger size.
    sizes: Vec<usize>,
}

impl RingWriter {
    /// A new empty ring, complete up to `revision`.
    pub fn new(limits: RingLimits, revision: Revision) -> RingWriter {
        let capacity = limits.max_events.max(limits.min_events).max(2).next_power_of_two();
        let slots = (0..capacity).map(|_| ArcSwapOption::empty()).collect();
        let ring = Arc::new(EventRing {
            slots,
            mask: capacity as u64 - 1,
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            oldest_revision: AtomicU64::new(revision),
            revision: AtomicU64::new(revision),
            bytes: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        });
        RingWriter { ring, limits, bytes: 0, sizes: vec![0; capacity] }
    }

    /// The shared read side.
    pub fn ring(&self) -> &Arc<EventRing> {
        &self.ring
    }

    /// The sequence number the next event must carry.
    pub fn next_seq(&self) -> u64 {
        self.ring.tail.load(Ordering::Relaxed)
    }

    /// Appends `event`, which must carry [`RingWriter::next_seq`] and a revision above every
    /// event before it; evicts what the limits require.
    pub fn push(&mut self, event: Arc<CachedEvent>) {
        let ring = Arc::clone(&self.ring);
        let seq = ring.tail.load(Ordering::Relaxed);
        assert_eq!(event.seq, seq, "ring events must be appended in sequence");
        debug_assert!(event.revision() > ring.revision.load(Ordering::Relaxed), "revisions must grow");
        let capacity = ring.slots.len() as u64;
        while seq - ring.head.load(Ordering::Relaxed) >= capacity {
            self.evict_oldest();
        }
        let revision = event.revision();
        let size = event.size();
        self.bytes += size;
        if let Some(budget) = &self.limits.budget {
            budget.used.fetch_add(size, Ordering::Relaxed);
        }
        self.sizes[(seq & ring.mask) as usize] = size;
        ring.slots[(seq & ring.mask) as usize].store(Some(event));
        ring.tail.store(seq + 1, Ordering::Release);
        // Orders the tail store before the dispatcher's loads of watcher modes that follow.
        fence(Ordering::SeqCst);
        ring.revision.store(revision, Ordering::Release);
        self.trim(Instant::now());
        // Statistics only.
        ring.bytes.store(self.bytes, Ordering::Relaxed);
    }

    /// Records that the ring is complete up to `revision` without a new event (a progress
    /// report from storage).
    pub fn advance(&mut self, revision: Revision) {
        if revision > self.ring.revision.load(Ordering::Relaxed) {
            self.ring.revision.store(revision, Ordering::Release);
        }
    }

    /// Drops every event and restarts the ring at `revision` (after a relist).
    pub fn reset(&mut self, revision: Revision) {
        self.ring.epoch.fetch_add(1, Ordering::SeqCst);
        while self.ring.head.load(Ordering::Relaxed) < self.ring.tail.load(Ordering::Relaxed) {
            self.evict_oldest();
        }
        self.ring.oldest_revision.store(revision, Ordering::Release);
        self.ring.revision.store(revision, Ordering::Release);
    }

    /// Evicts the events the limits no longer allow, as of `now`.
    pub fn trim(&mut self, now: Instant) {
        loop {
            let ring = &self.ring;
            let head = ring.head.load(Ordering::Relaxed);
            let len = (ring.tail.load(Ordering::Relaxed) - head) as usize;
            if len <= self.limits.min_events {
                return;
            }
            let too_big = len > self.limits.max_events
                || self.bytes > self.limits.max_bytes
                || self.limits.budget.as_ref().is_some_and(|budget| budget.over());
            let too_old = ring
                .get(head)
                .is_some_and(|event| now.saturating_duration_since(event.received) > self.limits.window);
            if !too_big && !too_old {
                return;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let ring = &self.ring;
        let head = ring.head.load(Ordering::Relaxed);
        let index = (head & ring.mask) as usize;
        let slot = &ring.slots[index];
        if let Some(event) = slot.load_full().filter(|event| event.seq == head) {
            // Readers must learn that `event` is gone before they can miss it.
            ring.oldest_revision.store(event.revision(), Ordering::Release);
            let size = std::mem::take(&mut self.sizes[index]);
            self.bytes -= size;
            if let Some(budget) = &self.limits.budget {
                budget.used.fetch_sub(size, Ordering::Relaxed);
            }
        }
        ring.head.store(head + 1, Ordering::Release);
        slot.store(None);
        ring.bytes.store(self.bytes, Ordering::Relaxed);
    }
}

impl Drop for RingWriter {
    /// A ring that goes (its resource removed) gives its bytes back to the budget.
    fn drop(&mut self) {
        if let Some(budget) = &self.limits.budget {
            budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cacher::object::{CachedObject, EventType, ResourceConfig};

    fn resource() -> ResourceConfig {
        ResourceConfig {
            prefix: "/things/".into(),
            kind: "Thing".into(),
            api_version: "v1".into(),
            namespaced: true,
            selectable_fields: vec![],
            indexed_field: None,
        }
    }

    fn event(seq: u64, revision: Revision) -> Arc<CachedEvent> {
        let object =
            CachedObject::decode("/things/ns/a", br#"{"metadata":{"name":"a"}}"#, revision, &resource())
                .unwrap();
        Arc::new(CachedEvent::new(seq, EventType::Added, Arc::new(object), None))
    }

    fn limits(min: usize, max: usize) -> RingLimits {
        RingLimits {
            min_events: min,
            max_events: max,
            max_bytes: usize::MAX,
            window: Duration::from_secs(3600),
            budget: None,
        }
    }

    /// An event that grows after its push (a watcher filled its DELETED state or its protobuf
    /// form) gives back what it was counted at: the ring's and the budget's bytes return to 0.
    #[test]
    fn an_event_that_grows_after_its_push_is_uncounted_at_its_pushed_size() {
        let budget = Arc::new(ByteBudget::new(usize::MAX));
        let mut writer = RingWriter::new(RingLimits { budget: Some(Arc::clone(&budget)), ..limits(2, 8) }, 0);
        let decode = |revision| {
            let json = br#"{"metadata":{"name":"a"},"data":{"k":"v"}}"#;
            Arc::new(CachedObject::decode("/things/ns/a", json, revision, &resource()).unwrap())
        };
        let first = Arc::new(CachedEvent::new(0, EventType::Modified, decode(1), Some(decode(0))));
        writer.push(Arc::clone(&first));
        let counted = budget.used();
        first.deleted_state(&resource());
        assert!(first.size() > counted, "the DELETED state adds to the event's size");
        writer.push(event(1, 2));
        writer.reset(2);
        assert_eq!(writer.bytes, 0);
        assert_eq!(budget.used(), 0);
    }

    /// Rings sharing a byte budget stay within it together: the ring that pushes past the cap
    /// drops its own oldest events, and a ring that goes gives its bytes back.
    #[test]
    fn rings_sharing_a_budget_stay_within_it_together() {
        let size = event(0, 1).size();
        let budget = Arc::new(ByteBudget::new(size * 10));
        let shared = RingLimits { budget: Some(Arc::clone(&budget)), ..limits(2, 1000) };
        let mut first = RingWriter::new(shared.clone(), 0);
        for seq in 0..8 {
            first.push(event(seq, seq + 1));
        }
        assert_eq!(budget.used(), size * 8);
        let mut second = RingWriter::new(shared.clone(), 0);
        for seq in 0..8 {
            second.push(event(seq, seq + 1));
            assert!(budget.used() <= size * 10, "over the cap after push {seq}");
        }
        // The second ring paid for its own pushes; the first kept all of its events.
        assert_eq!(first.ring().len(), 8);
        assert_eq!(second.ring().len(), 2, "its newest min_events stay");
        assert_eq!(budget.used(), size * 10);
        // Now the first ring pushes: it evicts its own oldest, down to what fits.
        first.push(event(8, 9));
        assert_eq!(first.ring().len(), 8);
        assert_eq!(budget.used(), size * 10);
        drop(second);
        assert_eq!(budget.used(), size * 8, "a dropped ring gives its bytes back");
        first.reset(100);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn finds_the_events_after_a_revision() {
        let mut writer = RingWriter::new(limits(1, 8), 10);
        for (i, revision) in [12, 13, 17, 20].into_iter().enumerate() {
            writer.push(event(i as u64, revision));
        }
        let ring = writer.ring();
        assert_eq!(ring.revision(), 20);
        assert_eq!(ring.seq_after(10), Ok(0));
        assert_eq!(ring.seq_after(12), Ok(1));
        assert_eq!(ring.seq_after(14), Ok(2));
        assert_eq!(ring.seq_after(20), Ok(4));
        assert_eq!(ring.seq_after(25), Ok(4));
        assert_eq!(ring.seq_after(9), Err(TooOld { requested: 9, oldest: 10 }));
        let mut out = Vec::new();
        assert_eq!(ring.read(1, 2, 12, &mut out), Ok(3));
        assert_eq!(out.iter().map(|e| e.revision()).collect::<Vec<_>>(), [13, 17]);
    }

    #[test]
    fn evicts_beyond_capacity_and_reports_too_old() {
        let mut writer = RingWriter::new(limits(1, 4), 0);
        for seq in 0..10 {
            writer.push(event(seq, seq + 1));
        }
        let ring = writer.ring();
        assert_eq!(ring.len(), 4);
        assert_eq!((ring.head(), ring.tail()), (6, 10));
        assert_eq!(ring.oldest_revision(), 6);
        assert_eq!(ring.seq_after(6), Ok(6));
        assert_eq!(ring.seq_after(5), Err(TooOld { requested: 5, oldest: 6 }));
        let mut out = Vec::new();
        assert!(ring.read(3, 10, 3, &mut out).is_err(), "evicted events must not be read");
        assert!(ring.get(5).is_none());
        assert_eq!(ring.get(7).unwrap().revision(), 8);
    }

    #[test]
    fn keeps_a_time_window_above_the_minimum() {
        let mut writer =
            RingWriter::new(RingLimits { window: Duration::from_millis(0), ..limits(3, 100) }, 0);
        for seq in 0..10 {
            writer.push(event(seq, seq + 1));
        }
        std::thread::sleep(Duration::from_millis(2));
        writer.trim(Instant::now());
        assert_eq!(writer.ring().len(), 3);
    }

    #[test]
    fn keeps_a_byte_bound_above_the_minimum() {
        // Revisions of two digits each, so that every event has the same size.
        let size = event(0, 10).size();
        let mut writer = RingWriter::new(RingLimits { max_bytes: size * 5, ..limits(2, 100) }, 0);
        for seq in 0..20 {
            writer.push(event(seq, seq + 10));
        }
        assert_eq!(writer.ring().len(), 5);
        assert_eq!(writer.ring().bytes(), size * 5);
    }

    #[test]
    fn reset_starts_over_at_a_revision() {
        let mut writer = RingWriter::new(limits(1, 8), 0);
        for seq in 0..5 {
            writer.push(event(seq, seq + 1));
        }
        writer.reset(50);
        let ring = writer.ring();
        assert!(ring.is_empty());
        assert_eq!(ring.seq_after(5), Err(TooOld { requested: 5, oldest: 50 }));
        assert_eq!(ring.seq_after(50), Ok(5));
        writer.push(event(5, 51));
        assert_eq!(writer.ring().seq_after(50), Ok(5));
    }

    #[test]
    fn concurrent_readers_never_see_a_gap_or_a_wrong_event() {
        // One writer appends as fast as it can into a small ring while readers follow it; every
        // read is either a run of consecutive revisions or TooOld.
        let mut writer = RingWriter::new(limits(1, 64), 0);
        let ring = Arc::clone(writer.ring());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let ring = Arc::clone(&ring);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    let mut too_old = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        let cursor = ring.revision().saturating_sub(40);
                        let Ok(mut seq) = ring.seq_after(cursor) else {
                            too_old += 1;
                            continue;
                        };
                        let mut expected = cursor + 1;
                        let mut out = Vec::new();
                        match ring.read(seq, 32, cursor, &mut out) {
                            Ok(next) => {
                                for event in &out {
                                    assert_eq!(event.revision(), expected, "gap or wrong event");
                                    assert_eq!(event.seq, seq);
                                    expected += 1;
                                    seq += 1;
                                }
                                assert_eq!(next, seq);
                                reads += 1;
                            }
                            Err(_) => too_old += 1,
                        }
                    }
                    (reads, too_old)
                })
            })
            .collect();
        for seq in 0..200_000u64 {
            writer.push(event(seq, seq + 1));
        }
        done.store(true, Ordering::Relaxed);
        let mut total = 0;
        for reader in readers {
            let (reads, _) = reader.join().unwrap();
            total += reads;
        }
        assert!(total > 0, "the readers never read");
    }
}
