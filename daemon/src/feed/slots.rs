//! Who owns each slot of a stream's ring, and the driver's wait for the client to hand
//! slots back.
//!
//! Batches are announced and handed back in order, so the client says what it has handed
//! back with one count. An x86-64 client stores the count in the ring header, which costs
//! it no system call, and sends `Release` only when the daemon has asked for it there (a
//! doorbell) or before it waits for a batch; other clients send `Release` every time. The
//! driver asks for the doorbell only when it has no free slot, and then for half the slots
//! in circulation at once, so a client that is slower than decoding makes one system call
//! per few batches instead of one per batch. See Note [Slot hand-off].

use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use audiodecode_protocol::ring::NO_DOORBELL;

use crate::feed::ring::RingMemory;

pub struct SlotLedger {
    ring: Arc<RingMemory>,
    state: Mutex<State>,
    changed: Condvar,
}

/// What `status` shows of a ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCounts {
    /// Slots in circulation.
    pub depth: u32,
    /// Batches announced since the stream opened.
    pub announced: u64,
    /// Batches the client has handed back.
    pub handed_back: u64,
}

struct State {
    /// Slots in circulation that the driver may fill, oldest hand-back first.
    free: VecDeque<u32>,
    /// Announced slots not yet handed back, in announcement order.
    announced: VecDeque<u32>,
    announcements: u64,
    released: u64,
    /// Slots in circulation; the ring may have more, parked.
    depth: u32,
    /// The depth the tuner wants: handed-back slots are parked while `depth` is above it.
    target: u32,
    parked: Vec<u32>,
    closed: bool,
}

impl State {
    /// Account for the client's first `count` batches being handed back.
    fn catch_up(&mut self, count: u64) {
        while self.released < count {
            let Some(slot) = self.announced.pop_front() else {
                break; // a count past what was announced: the client is confused
            };
            self.released += 1;
            if self.depth > self.target {
                self.depth -= 1;
                self.parked.push(slot);
            } else {
                self.free.push_back(slot);
            }
        }
    }
}

impl SlotLedger {
    /// The slots of `ring`, the first `depth` in circulation.
    pub fn new(ring: Arc<RingMemory>, depth: u32) -> Self {
        let slots = ring.geometry().slots;
        let depth = depth.min(slots);
        Self {
            ring,
            state: Mutex::new(State {
                free: (0..depth).collect(),
                announced: VecDeque::new(),
                announcements: 0,
                released: 0,
                depth,
                target: depth,
                parked: (depth..slots).rev().collect(),
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock, so a panic elsewhere cannot spoil it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free slot, waiting for the client to hand one back if need be; `None` once the
    /// stream is closed.
    pub fn take(&self) -> Option<u32> {
        let ring = &self.ring;
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            state.catch_up(ring.client_released());
            if let Some(slot) = state.free.pop_front() {
                ring.set_doorbell(NO_DOORBELL);
                return Some(slot);
            }
            let batch = u64::from((state.depth / 2).max(1));
            ring.set_doorbell(state.released + batch);
            // The client stores its count, then reads the doorbell; this side stores the
            // doorbell, then reads the count. Either it sees the doorbell or this re-read
            // sees its count. (Were both to miss, the client still sends `Release` before
            // it waits for a batch, so nothing can stall for good.)
            fence(Ordering::SeqCst);
            state.catch_up(ring.client_released());
            if state.free.is_empty() && !state.closed {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// The driver filled `slot` with batch `seq` and is about to announce it.
    pub fn announce(&self, seq: u64, slot: u32) {
        let mut state = self.lock();
        state.announced.push_back(slot);
        self.ring.publish(state.announcements, seq, slot);
        state.announcements += 1;
    }

    /// The client's `Release`: it has handed back its first `count` batches.
    pub fn released(&self, count: u64) {
        self.lock().catch_up(count);
        self.changed.notify_all();
    }

    /// Grow the depth by one (a parked slot goes back into circulation at once), or shrink
    /// it by one down to `floor` (the next slot handed back is parked).
    pub fn retarget(&self, grow: bool, floor: u32) {
        let mut state = self.lock();
        state.target = if grow {
            (state.target + 1).min(self.ring.geometry().slots)
        } else {
            state.target.saturating_sub(1).max(floor.min(state.target))
        };
        while state.depth < state.target {
            let Some(slot) = state.parked.pop() else {
                break;
            };
            state.depth += 1;
            state.free.push_back(slot);
        }
        drop(state);
        self.changed.notify_all();
    }

    pub fn counts(&self) -> SlotCounts {
        let state = self.lock();
        SlotCounts {
            depth: state.depth,
            announced: state.announcements,
            handed_back: state.released,
        }
    }

    /// The stream is closing: a waiting driver gives up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use audiodecode_protocol::ring::{
        RingGeometry, ANNOUNCED_OFFSET, ANNOUNCE_LOG_OFFSET, DOORBELL_OFFSET, RELEASED_OFFSET,
    };

    /// A ring of `slots` slots and its ledger with `depth` in circulation.
    fn ledger(slots: u32, depth: u32) -> (Arc<RingMemory>, Arc<SlotLedger>) {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(9_000);
        let g = RingGeometry::new(slots, 2, 1, 16, 16000);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let ring = Arc::new(RingMemory::create(g, serial).expect("ring"));
        (Arc::clone(&ring), Arc::new(SlotLedger::new(ring, depth)))
    }

    /// Take and announce `batches` slots, as batches 0, 1, ...
    fn fill_all(ledger: &SlotLedger, batches: u64) {
        for seq in 0..batches {
            let slot = ledger.take().expect("free");
            ledger.announce(seq, slot);
        }
    }

    fn depth_and_filled(ledger: &SlotLedger) -> (u32, u64) {
        let c = ledger.counts();
        (c.depth, c.announced - c.handed_back)
    }

    fn header_word(ring: &RingMemory, offset: u64) -> u64 {
        ring.word(offset).load(Ordering::SeqCst)
    }

    #[test]
    fn slots_circulate_in_hand_back_order() {
        let (r, ledger) = ledger(4, 2);
        let a = ledger.take().expect("free");
        let b = ledger.take().expect("free");
        assert_eq!((a, b), (0, 1));
        ledger.announce(10, a);
        ledger.announce(11, b);
        assert_eq!(header_word(&r, ANNOUNCED_OFFSET), 2);
        assert_eq!(header_word(&r, ANNOUNCE_LOG_OFFSET + 8), (11 << 32) | 1);
        ledger.released(1);
        assert_eq!(ledger.take(), Some(0));
        assert_eq!(depth_and_filled(&ledger), (2, 1));
    }

    #[test]
    fn the_count_in_shared_memory_frees_slots_without_a_message() {
        let (r, ledger) = ledger(2, 2);
        fill_all(&ledger, 2);
        r.word(RELEASED_OFFSET).store(1, Ordering::SeqCst);
        assert_eq!(ledger.take(), Some(0));
        assert_eq!(ledger.counts().handed_back, 1);
    }

    #[test]
    fn a_waiting_driver_asks_for_half_its_slots_and_wakes_on_release() {
        let (r, ledger) = ledger(4, 4);
        fill_all(&ledger, 4);
        assert_eq!(header_word(&r, DOORBELL_OFFSET), NO_DOORBELL);
        let waiter = {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || ledger.take())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while header_word(&r, DOORBELL_OFFSET) == NO_DOORBELL {
            assert!(
                std::time::Instant::now() < deadline,
                "no doorbell asked for"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(header_word(&r, DOORBELL_OFFSET), 2);
        ledger.released(2);
        assert_eq!(waiter.join().expect("joins"), Some(0));
        assert_eq!(header_word(&r, DOORBELL_OFFSET), NO_DOORBELL);
        assert_eq!(ledger.take(), Some(1));
    }

    #[test]
    fn closing_wakes_a_waiting_driver() {
        let (_ring, ledger) = ledger(2, 2);
        fill_all(&ledger, 2);
        let waiter = {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || ledger.take())
        };
        std::thread::sleep(Duration::from_millis(20));
        ledger.close();
        assert_eq!(waiter.join().expect("joins"), None);
    }

    #[test]
    fn shrinking_parks_handed_back_slots_and_growing_returns_them() {
        let (_ring, ledger) = ledger(4, 4);
        fill_all(&ledger, 4);
        ledger.retarget(false, 2);
        ledger.retarget(false, 2);
        ledger.retarget(false, 2); // not below the floor
        ledger.released(3);
        assert_eq!(depth_and_filled(&ledger), (2, 1));
        assert_eq!(ledger.take(), Some(2));
        ledger.retarget(true, 2);
        assert_eq!(depth_and_filled(&ledger).0, 3);
        assert_eq!(ledger.take(), Some(1));
    }

    #[test]
    fn a_count_past_the_announcements_frees_only_what_was_announced() {
        let (_ring, ledger) = ledger(2, 2);
        let slot = ledger.take().expect("free");
        ledger.announce(0, slot);
        ledger.released(99);
        assert_eq!(ledger.counts().handed_back, 1);
        assert_eq!(depth_and_filled(&ledger), (2, 0));
    }
}
