//! A loom model of the hand-off between the reflector and one watcher (`src/cacher/watcher.rs`
//! and `src/cacher/ring.rs`): the ring's tail, the watcher's mode, its bounded queue and the
//! registration flag, with the same orderings as the code.
//!
//! loom cannot run the real types (`ArcSwapOption`, crossbeam's `ArrayQueue` and tokio's
//! `Notify` are not loom-aware), so the model restates the protocol step by step with loom's
//! atomics, a loom mutex standing for each linearizable structure (a ring slot, the queue), and
//! `yield_now` standing for waiting on the notification. loom then checks every interleaving
//! (within a preemption bound): each event reaches the watcher exactly once, in order, whether
//! it went through the queue or the ring, across queue overflows and the switch back to live.
//! The real code is exercised under real threads by the ring's concurrent test, the cacher's
//! stalled/slow watcher tests and the model-based test.

use std::collections::VecDeque;

use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const LIVE: u8 = 0;
const CATCHING_UP: u8 = 1;
const EVENTS: u64 = 3;
const QUEUE_CAPACITY: usize = 1;

struct Shared {
    /// Ring slots (event `i` at index `i`; the model never wraps).
    slots: Vec<Mutex<Option<u64>>>,
    tail: AtomicU64,
    mode: AtomicU8,
    registered: AtomicBool,
    queue: Mutex<VecDeque<u64>>,
}

impl Shared {
    /// The dispatcher's `offer`.
    fn offer(&self, seq: u64) {
        if self.mode.load(Ordering::Acquire) != LIVE {
            return;
        }
        let mut queue = self.queue.lock().unwrap();
        if queue.len() < QUEUE_CAPACITY {
            queue.push_back(seq);
        } else {
            drop(queue);
            let _ = self.mode.compare_exchange(LIVE, CATCHING_UP, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The watcher's side: `CacheWatch::collect`.
struct Consumer {
    shared: Arc<Shared>,
    next: u64,
    delivered: Vec<u64>,
}

impl Consumer {
    fn read_ring(&mut self) -> bool {
        let tail = self.shared.tail.load(Ordering::Acquire);
        while self.next < tail {
            let event = self.shared.slots[self.next as usize]
                .lock()
                .unwrap()
                .expect("a slot below the tail is filled");
            self.delivered.push(event);
            self.next += 1;
        }
        self.next == self.shared.tail.load(Ordering::Acquire)
    }

    fn collect(&mut self) {
        if self.shared.mode.load(Ordering::Acquire) == LIVE {
            while let Some(seq) = self.shared.queue.lock().unwrap().pop_front() {
                if seq < self.next {
                    continue;
                }
                let event = self.shared.slots[seq as usize].lock().unwrap().unwrap();
                self.delivered.push(event);
                self.next = seq + 1;
            }
            if self.shared.mode.load(Ordering::Acquire) == LIVE {
                return;
            }
        }
        if self.shared.mode.load(Ordering::Acquire) == CATCHING_UP {
            let caught_up = self.read_ring();
            if caught_up && self.shared.registered.load(Ordering::Acquire) {
                while self.shared.queue.lock().unwrap().pop_front().is_some() {}
                if self
                    .shared
                    .mode
                    .compare_exchange(CATCHING_UP, LIVE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // Pairs with the reflector's fence between its tail store and mode loads.
                    fence(Ordering::SeqCst);
                    self.read_ring();
                }
            }
        }
    }
}

#[test]
fn every_event_reaches_the_watcher_exactly_once_in_order() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let shared = Arc::new(Shared {
            slots: (0..EVENTS).map(|_| Mutex::new(None)).collect(),
            tail: AtomicU64::new(0),
            mode: AtomicU8::new(CATCHING_UP),
            registered: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        });
        let producer = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let mut registered = false;
                for seq in 0..EVENTS {
                    // The reflector applies registrations between events.
                    if seq == 1 {
                        shared.registered.store(true, Ordering::Release);
                        registered = true;
                    }
                    *shared.slots[seq as usize].lock().unwrap() = Some(seq);
                    shared.tail.store(seq + 1, Ordering::Release);
                    // Pairs with the watcher's fence between its mode store and tail load.
                    fence(Ordering::SeqCst);
                    if registered {
                        shared.offer(seq);
                    }
                }
            })
        };
        let mut consumer = Consumer { shared: Arc::clone(&shared), next: 0, delivered: Vec::new() };
        // Two reads while the reflector runs (in every interleaving loom chooses), then the
        // reads that the wake-ups after its last event would cause.
        consumer.collect();
        consumer.collect();
        producer.join().unwrap();
        for _ in 0..3 {
            consumer.collect();
        }
        assert_eq!(
            consumer.delivered,
            (0..EVENTS).collect::<Vec<_>>(),
            "mode {} queue {:?} next {} tail {} registered {}",
            shared.mode.load(Ordering::SeqCst),
            shared.queue.lock().unwrap(),
            consumer.next,
            shared.tail.load(Ordering::SeqCst),
            shared.registered.load(Ordering::SeqCst)
        );
    });
}
