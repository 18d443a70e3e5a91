//! Hit and miss counts kept per thread, so the read path never contends on one atomic.
//!
//! Each thread that reads claims one of [`SLOTS`] process-wide slot indices on its first read
//! and releases it when it exits. A slot has a single writer at a time, so recording is a
//! plain load and store on a cache line no other thread writes (no locked instruction, no
//! line ping-pong). Threads beyond [`SLOTS`] alive at once share an overflow stripe, with
//! `fetch_add`: slower, never wrong. The stripes only grow; [`ReadCounters::take`] reports the
//! growth since its last call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// How many threads can own a slot at once.
pub(crate) const SLOTS: usize = 64;

/// The index of the shared stripe for threads without a slot.
const OVERFLOW: usize = SLOTS;

/// Which slots are owned, one bit each.
static CLAIMED: AtomicU64 = AtomicU64::new(0);

/// A slot owned by the current thread until it exits.
struct Slot(usize);

impl Slot {
    fn claim() -> Self {
        let mut claimed = CLAIMED.load(Ordering::Relaxed);
        loop {
            let free = (!claimed).trailing_zeros() as usize;
            if free >= SLOTS {
                return Self(OVERFLOW);
            }
            // Acquire: see every store of the slot's previous owner.
            match CLAIMED.compare_exchange_weak(
                claimed,
                claimed | (1 << free),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Self(free),
                Err(now) => claimed = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0 < SLOTS {
            // Release: the next owner sees this thread's last stores.
            CLAIMED.fetch_and(!(1 << self.0), Ordering::Release);
        }
    }
}

thread_local! {
    static SLOT: Slot = Slot::claim();
}

/// The calling thread's stripe: its own slot, or [`OVERFLOW`] (also while the thread's
/// locals are being destroyed).
#[inline]
fn slot() -> usize {
    SLOT.try_with(|slot| slot.0).unwrap_or(OVERFLOW)
}

/// One stripe's counts, alone on its cache lines: 128 bytes covers the line and its
/// neighbour, which x86's adjacent-line prefetcher pulls in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Stripe {
    #[inline]
    fn add(counter: &AtomicU64, index: usize) {
        if index < SLOTS {
            // This thread is the stripe's only writer: no read-modify-write needed.
            counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        } else {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Cache hits and misses, one stripe per slot plus the overflow stripe. The stripes are
/// inline (about 8 KiB), so a hit reaches its stripe at a fixed offset from the owner's
/// pointer, without loading another pointer first.
#[derive(Debug)]
pub(crate) struct ReadCounters {
    stripes: [Stripe; SLOTS + 1],
    /// The sums reported by the last `take`: (hits, misses).
    taken: Mutex<(u64, u64)>,
}

impl ReadCounters {
    pub(crate) fn new() -> Self {
        Self { stripes: std::array::from_fn(|_| Stripe::default()), taken: Mutex::new((0, 0)) }
    }

    #[inline]
    pub(crate) fn hit(&self) {
        let index = slot();
        Stripe::add(&self.stripes[index].hits, index);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        let index = slot();
        Stripe::add(&self.stripes[index].misses, index);
    }

    /// The hits and misses recorded since the last `take`. Each count is reported by exactly
    /// one `take`, whichever thread calls it and whenever.
    pub(crate) fn take(&self) -> (u64, u64) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let (hits, misses) = self.stripes.iter().fold((0_u64, 0_u64), |(h, m), stripe| {
            (
                h.wrapping_add(stripe.hits.load(Ordering::Relaxed)),
                m.wrapping_add(stripe.misses.load(Ordering::Relaxed)),
            )
        });
        // Under the lock, every stripe reads at least what the previous take read.
        let delta = (hits.wrapping_sub(taken.0), misses.wrapping_sub(taken.1));
        *taken = (hits, misses);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn count_from_threads(counters: &Arc<ReadCounters>, threads: usize, hits: u64) {
        // All alive at once, so more than SLOTS threads exercise the overflow stripe.
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (counters, barrier) = (Arc::clone(counters), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    counters.miss();
                    barrier.wait();
                    for _ in 0..hits {
                        counters.hit();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }

    #[test]
    fn take_reports_each_count_once() {
        let counters = Arc::new(ReadCounters::new());
        count_from_threads(&counters, 4, 1000);
        assert_eq!(counters.take(), (4000, 4));
        assert_eq!(counters.take(), (0, 0));
        counters.hit();
        assert_eq!(counters.take(), (1, 0));
    }

    #[test]
    fn more_threads_than_slots_share_the_overflow_stripe() {
        let counters = Arc::new(ReadCounters::new());
        count_from_threads(&counters, SLOTS + 16, 100);
        assert_eq!(counters.take(), ((SLOTS as u64 + 16) * 100, SLOTS as u64 + 16));
    }

    #[test]
    fn slots_are_reused_after_threads_exit() {
        let counters = Arc::new(ReadCounters::new());
        // Sequential threads: far more than SLOTS in total, never more than one at a time.
        for _ in 0..(3 * SLOTS) {
            count_from_threads(&counters, 1, 10);
        }
        assert_eq!(counters.take(), (3 * SLOTS as u64 * 10, 3 * SLOTS as u64));
    }

    #[test]
    fn take_while_counting_loses_nothing() {
        let counters = Arc::new(ReadCounters::new());
        let writer = {
            let counters = Arc::clone(&counters);
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    counters.hit();
                }
            })
        };
        let mut total = 0;
        while !writer.is_finished() {
            total += counters.take().0;
        }
        writer.join().unwrap();
        total += counters.take().0;
        assert_eq!(total, 100_000);
    }

    #[test]
    fn stripes_are_padded() {
        assert_eq!(std::mem::align_of::<Stripe>(), 128);
        assert_eq!(std::mem::size_of::<[Stripe; 2]>(), 256);
    }
}
