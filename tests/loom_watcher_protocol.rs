//! A loom model of the hand-off between the reflector and one watcher (`src/cacher/watcher.rs`,
//! `src/cacher/dispatcher.rs` and `src/cacher/ring.rs`), every step of it: the ring's tail and
//! slots, the watcher's mode, its bounded queue, the registration flag, the filter (most events
//! are not wanted), the batch and scan limits of a read, the "more" it reports, the switch back
//! to live with its `ring_until`, the waker registered before the re-check, and the
//! dispatcher's deferred wake-ups (one flush per storage batch), with the same orderings as the
//! code.
//!
//! loom cannot run the real types (`ArcSwapOption`, crossbeam's `ArrayQueue` and the real
//! `AtomicWaker` are not loom-aware), so the model restates the protocol step by step with
//! loom's atomics, a loom mutex standing for each linearizable structure (a ring slot, the
//! queue), loom's `AtomicWaker` for the wake-ups, and a task loop that polls the watcher when
//! woken: a watcher that sleeps while the reflector has finished and no wake-up came sleeps for
//! good, and the model fails. loom then checks every
//! interleaving (within a preemption bound): each wanted event reaches the watcher exactly
//! once, in order, whether it went through the queue or the ring, across queue overflows and
//! switches back to live.
//!
//! The protocol has three switches, each restoring one defect of an earlier version; the
//! `finds_*` tests check that the model catches each of them (and so would catch their return).
//! The real code is exercised under real threads by the ring's concurrent test, the cacher's
//! stalled/slow watcher tests, `tests/watch_stress.rs` and the model-based tests.

use std::collections::VecDeque;
use std::task::{Context, Poll, Wake, Waker};

use loom::future::AtomicWaker;
use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const LIVE: u8 = 0;
const CATCHING_UP: u8 = 1;
/// Which events the watcher wants (its filter): sparse, and the last one wanted.
const WANTED: [bool; 4] = [false, true, false, true];
const EVENTS: u64 = WANTED.len() as u64;
/// The reflector's storage batches: a flush of deferred wake-ups after each.
const FLUSH_AFTER: [u64; 2] = [1, 3];
const QUEUE_CAPACITY: usize = 1;
/// Lines per batch (the real MAX_BATCH, scaled down).
const BATCH: usize = 1;
/// Ring events examined per poll before yielding (the real SCAN_BUDGET, scaled down).
const SCAN_BUDGET: usize = 2;

/// Defects of earlier versions, to show that the model finds them.
#[derive(Clone, Copy, Default)]
struct Defects {
    /// The offer wakes only when the queue was empty before its push.
    wake_only_if_empty: bool,
    /// A catching-up read takes at most a batch of events, and a read that produced no line
    /// puts the watcher to sleep.
    sleep_after_empty_read: bool,
    /// After the switch back to live, the ring is read once, within the room left in the batch,
    /// and the queue is drained at once.
    bounded_switch_back_read: bool,
}

fn wanted(seq: u64) -> bool {
    WANTED[seq as usize]
}

struct Shared {
    /// Ring slots (event `i` at index `i`; the model never wraps).
    slots: Vec<Mutex<Option<u64>>>,
    tail: AtomicU64,
    mode: AtomicU8,
    registered: AtomicBool,
    queue: Mutex<VecDeque<u64>>,
    waker: AtomicWaker,
    /// A `Notify` permit (the earlier version's wake-up; see `wake`).
    permit: AtomicBool,
}

/// Wakes the watcher. The earlier version used a `Notify`, whose wake before the wait is kept
/// as a permit; the model of its defect keeps that too, so that only the defect makes it sleep.
fn wake(shared: &Shared, defects: Defects) {
    if defects.sleep_after_empty_read {
        shared.permit.store(true, Ordering::SeqCst);
    }
    shared.waker.wake();
}

/// The reflector: appends to the ring, dispatches, flushes wake-ups after each storage batch.
fn reflector(shared: &Shared, defects: Defects) {
    let mut wake_pending = false;
    let mut registered = false;
    for seq in 0..EVENTS {
        // The reflector applies registrations before a storage batch.
        if seq == 1 {
            shared.registered.store(true, Ordering::Release);
            registered = true;
            wake(shared, defects);
        }
        *shared.slots[seq as usize].lock().unwrap() = Some(seq);
        shared.tail.store(seq + 1, Ordering::Release);
        // Pairs with the watcher's fence between its mode store and tail load.
        fence(Ordering::SeqCst);
        // `Dispatcher::dispatch`: skip a watcher that is not live, then filter, then offer.
        if registered && shared.mode.load(Ordering::Acquire) == LIVE && wanted(seq) {
            // The earlier version looked at the queue before its push, apart from it.
            let was_empty = shared.queue.lock().unwrap().is_empty();
            let mut queue = shared.queue.lock().unwrap();
            if queue.len() < QUEUE_CAPACITY {
                queue.push_back(seq);
                drop(queue);
                if defects.wake_only_if_empty {
                    if was_empty {
                        wake(shared, defects);
                    }
                } else {
                    wake_pending = true;
                }
            } else {
                drop(queue);
                let _ = shared.mode.compare_exchange(LIVE, CATCHING_UP, Ordering::AcqRel, Ordering::Acquire);
                wake_pending = true;
            }
        }
        if FLUSH_AFTER.contains(&seq) && wake_pending {
            wake_pending = false;
            wake(shared, defects);
        }
    }
}

/// The watcher's side: `CacheWatch::poll_fill` as driven by its HTTP body.
struct Consumer {
    shared: Arc<Shared>,
    defects: Defects,
    next: u64,
    ring_until: u64,
    delivered: Vec<u64>,
}

impl Consumer {
    /// `read_ring`: from `next` up to `until` (the tail when `None`) within the limits; whether
    /// it got there.
    fn read_ring(
        &mut self,
        lines: &mut usize,
        budget: &mut usize,
        until: Option<u64>,
        max_events: u64,
    ) -> bool {
        let tail = self.shared.tail.load(Ordering::Acquire);
        let end = until.map_or(tail, |until| until.min(tail)).min(self.next.saturating_add(max_events));
        while self.next < end && *budget > 0 && *lines < BATCH {
            let event = self.shared.slots[self.next as usize]
                .lock()
                .unwrap()
                .expect("a slot below the tail is filled");
            if wanted(event) {
                self.delivered.push(event);
                *lines += 1;
            }
            *budget -= 1;
            self.next += 1;
        }
        self.next == until.map_or(tail, |until| until.min(tail))
    }

    /// `drain_queue`.
    fn drain_queue(&mut self, lines: &mut usize) {
        while *lines < BATCH {
            let Some(seq) = self.shared.queue.lock().unwrap().pop_front() else { break };
            if seq < self.next {
                continue;
            }
            let event = self.shared.slots[seq as usize].lock().unwrap().unwrap();
            self.delivered.push(event);
            *lines += 1;
            self.next = seq + 1;
        }
    }

    /// `collect_positioned`: whether more may be available at once.
    fn collect(&mut self, lines: &mut usize, budget: &mut usize) -> bool {
        *budget = budget.saturating_sub(1);
        if self.shared.mode.load(Ordering::Acquire) == LIVE {
            if self.next < self.ring_until {
                let until = self.ring_until;
                if !self.read_ring(lines, budget, Some(until), u64::MAX) {
                    return true;
                }
            }
            self.drain_queue(lines);
            return *lines >= BATCH && !self.shared.queue.lock().unwrap().is_empty()
                || self.shared.mode.load(Ordering::Acquire) != LIVE;
        }
        let max_events = if self.defects.sleep_after_empty_read { BATCH as u64 } else { u64::MAX };
        if !self.read_ring(lines, budget, None, max_events) {
            return !self.defects.sleep_after_empty_read;
        }
        if !self.shared.registered.load(Ordering::Acquire) {
            return false;
        }
        while self.shared.queue.lock().unwrap().pop_front().is_some() {}
        if self.shared.mode.compare_exchange(CATCHING_UP, LIVE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // Pairs with the reflector's fence between its tail store and mode loads.
            fence(Ordering::SeqCst);
            if self.defects.bounded_switch_back_read {
                let room = BATCH.saturating_sub(*lines).max(1) as u64;
                self.read_ring(lines, budget, None, room);
                self.ring_until = 0;
                return false;
            }
            self.ring_until = self.shared.tail.load(Ordering::Acquire);
        }
        true
    }

    /// `has_work`: the re-check after registering the waker.
    fn has_work(&self) -> bool {
        if self.shared.mode.load(Ordering::Acquire) == LIVE {
            self.next < self.ring_until || !self.shared.queue.lock().unwrap().is_empty()
        } else {
            self.shared.registered.load(Ordering::Acquire)
                || self.next < self.shared.tail.load(Ordering::Acquire)
        }
    }

    fn done(&self) -> bool {
        self.delivered.last() == Some(&(EVENTS - 1))
    }

    /// One poll of the body: fill a batch, or sleep once nothing is left.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut budget = SCAN_BUDGET;
        loop {
            if self.done() {
                return Poll::Ready(());
            }
            let mut lines = 0;
            let more = self.collect(&mut lines, &mut budget);
            if lines > 0 {
                // The body hands out the batch; hyper polls again at once.
                budget = SCAN_BUDGET;
                continue;
            }
            if more {
                if budget == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            self.shared.waker.register_by_ref(cx.waker());
            if self.defects.sleep_after_empty_read {
                // The earlier version: sleep unless a wake-up came (a `Notify` permit).
                if self.shared.permit.swap(false, Ordering::SeqCst) {
                    continue;
                }
                return Poll::Pending;
            }
            if self.has_work() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// The waker of the body's task.
struct Woken(Mutex<bool>);

impl Wake for Woken {
    fn wake(self: std::sync::Arc<Self>) {
        *self.0.lock().unwrap() = true;
    }
}

fn check(defects: Defects) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.max_branches = 100_000;
    builder.check(move || {
        let shared = Arc::new(Shared {
            slots: (0..EVENTS).map(|_| Mutex::new(None)).collect(),
            tail: AtomicU64::new(0),
            mode: AtomicU8::new(CATCHING_UP),
            registered: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            permit: AtomicBool::new(false),
        });
        let finished = Arc::new(AtomicBool::new(false));
        let producer = {
            let shared = Arc::clone(&shared);
            let finished = Arc::clone(&finished);
            thread::spawn(move || {
                reflector(&shared, defects);
                finished.store(true, Ordering::SeqCst);
            })
        };
        let mut consumer =
            Consumer { shared: Arc::clone(&shared), defects, next: 0, ring_until: 0, delivered: Vec::new() };
        // The body's task: polled when woken. A watcher that sleeps while the reflector has
        // nothing left to do, and no wake-up came, sleeps for good.
        let woken = std::sync::Arc::new(Woken(Mutex::new(false)));
        let waker = Waker::from(std::sync::Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let mut polls = 0;
        while consumer.poll(&mut cx).is_pending() {
            polls += 1;
            loop {
                if std::mem::take(&mut *woken.0.lock().unwrap()) {
                    break;
                }
                if finished.load(Ordering::SeqCst) && !*woken.0.lock().unwrap() {
                    panic!(
                        "the watcher sleeps for good: polls {polls} tail {} registered {} delivered {:?}, next {}, ring_until {}, mode {}, queue {:?}",
                        shared.tail.load(Ordering::SeqCst),
                        shared.registered.load(Ordering::SeqCst),
                        consumer.delivered,
                        consumer.next,
                        consumer.ring_until,
                        shared.mode.load(Ordering::SeqCst),
                        shared.queue.lock().unwrap()
                    );
                }
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        let expected: Vec<u64> = (0..EVENTS).filter(|&seq| wanted(seq)).collect();
        assert_eq!(consumer.delivered, expected, "next {} ring_until {}", consumer.next, consumer.ring_until);
    });
}

#[test]
fn every_wanted_event_reaches_the_watcher_exactly_once_in_order() {
    check(Defects::default());
}

#[test]
#[should_panic]
fn finds_a_watcher_asleep_after_a_read_without_a_match() {
    check(Defects { sleep_after_empty_read: true, ..Defects::default() });
}

#[test]
#[should_panic]
fn finds_the_wake_up_lost_when_the_queue_was_not_empty() {
    check(Defects { wake_only_if_empty: true, ..Defects::default() });
}

#[test]
#[should_panic]
fn finds_the_events_skipped_after_a_bounded_switch_back_read() {
    check(Defects { bounded_switch_back_read: true, ..Defects::default() });
}
