//! The queue's protocol under loom: every interleaving (up to a preemption bound) of the
//! sweep's claim, the batcher, a worker's pop, start and finish (done, retry now, retry
//! later, run again), the removal of a queued, delayed or running entry, and the creation of
//! a new entry for an id whose old entry is in flight, on the real `WorkQueue` and
//! `EntryHandle` built on loom's atomics and locks.
//!
//! ```text
//! RUSTFLAGS="--cfg autorefresh_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p autorefresh --lib --release queue::model
//! ```
//!
//! Each scenario checks, in every interleaving: one id is never in two calls at once (a
//! per-id count of calls, checked as each call starts), and once the threads are done and the
//! queue is worked off on one thread, every live entry that was made due was started after it
//! became due, nothing is left `Queued`, `Running` or `Delayed`, no id is left registered in
//! flight, and the counters are back to zero.

use std::sync::Arc;

use loom::sync::atomic::AtomicUsize;
use loom::thread;

use super::*;

type Queue = WorkQueue<u32, u32>;

/// Calls in flight per id, and starts per entry (entries are numbered by their value).
struct Calls {
    in_call: [AtomicUsize; 2],
    started: [AtomicUsize; 4],
}

impl Calls {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_call: std::array::from_fn(|_| AtomicUsize::new(0)),
            started: std::array::from_fn(|_| AtomicUsize::new(0)),
        })
    }

    fn started(&self, entry: &EntryHandle<u32>) -> usize {
        self.started[entry.load() as usize].load(Ordering::SeqCst)
    }
}

/// Batches whatever is pooled, as the dispatcher does (all in one batch).
fn batch_pool(queue: &Queue) {
    let mut hand = queue.take_pool();
    let all: Vec<usize> = (0..hand.pooled().len()).collect();
    hand.push_batches(&[all]);
}

/// A worker: the ids of its ended calls wait in `release` for its next pop, as in the engine.
#[derive(Default)]
struct Worker {
    release: Vec<u64>,
}

impl Worker {
    /// One round: pops a batch if there is one (releasing the ids of the last), "syncs" it,
    /// finishes it with `outcome`. Returns whether it had a batch.
    fn round(&mut self, queue: &Queue, calls: &Calls, outcome: Outcome) -> bool {
        let mut into = Vec::new();
        if queue.pop_batch(&mut Vec::new(), &mut self.release, &mut into).is_none() {
            return false;
        }
        for taken in &into {
            let before = calls.in_call[taken.id as usize].fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "id {} in two sync calls at once", taken.id);
            calls.started[taken.entry.load() as usize].fetch_add(1, Ordering::SeqCst);
        }
        thread::yield_now();
        for taken in &into {
            calls.in_call[taken.id as usize].fetch_sub(1, Ordering::SeqCst);
        }
        queue.finish(into.into_iter().map(|taken| (taken, outcome)), &mut self.release);
        true
    }

    /// Two rounds (the second pop releases the first's ids), then stops (releasing the rest).
    fn run(mut self, queue: &Queue, calls: &Calls, outcome: Outcome) {
        self.round(queue, calls, outcome);
        self.round(queue, calls, outcome);
        queue.release(&mut self.release);
    }
}

/// Works the queue off on one thread, every retry treated as due.
fn drain(queue: &Queue, calls: &Calls) {
    for _ in 0..16 {
        queue.promote_due();
        let delayed: Vec<_> = {
            let mut inner = queue.inner.lock();
            let tickets: Vec<u64> = inner.delayed.deadline_of.keys().copied().collect();
            tickets.into_iter().filter_map(|t| inner.delayed.remove(t).map(|q| (t, q))).collect()
        };
        for (ticket, item) in delayed {
            // Deadlines are on tokio's clock, which does not move here: promote by hand.
            if let Ok(stepped) = step(&item.entry, Event::Promote { ticket }) {
                let mut counted = Counted::default();
                counted.add(&stepped);
                queue.count(counted);
                queue.inner.lock().pool.push(Pooled { item, due: Instant::now() });
            }
        }
        batch_pool(queue);
        let mut worker = Worker::default();
        while worker.round(queue, calls, Outcome::Done) {}
        queue.release(&mut worker.release);
    }
}

/// The queue at rest: nothing tracked, nothing registered.
fn assert_at_rest(queue: &Queue, entries: &[&EntryHandle<u32>]) {
    assert_eq!(queue.stats(), QueueStats::default());
    for entry in entries {
        let slot = entry.queue_state().slot;
        assert_eq!(slot, QueueSlot::Idle, "entry {} left {slot:?}", entry.load());
    }
}

fn model(scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(scenario);
}

/// Defects 1 and 2 of the review: an entry in flight is removed and its id created again
/// (sync on create) while a worker finishes the old call and another pops the new entry.
#[test]
fn an_id_removed_in_flight_and_created_again_runs_once_at_a_time_and_again() {
    model(|| {
        let queue = Arc::new(Queue::new());
        let calls = Calls::new();
        let old = EntryHandle::new(0);
        queue.add(0, old.clone());
        batch_pool(&queue);

        let worker = {
            let (queue, calls) = (Arc::clone(&queue), Arc::clone(&calls));
            thread::spawn(move || Worker::default().run(&queue, &calls, Outcome::Done))
        };
        let caller = {
            let (queue, old) = (Arc::clone(&queue), old.clone());
            thread::spawn(move || {
                old.mark_removed();
                queue.remove(&old);
                let new = EntryHandle::new(1);
                queue.add(0, new.clone());
                batch_pool(&queue);
                new
            })
        };
        let second = {
            let (queue, calls) = (Arc::clone(&queue), Arc::clone(&calls));
            thread::spawn(move || Worker::default().run(&queue, &calls, Outcome::Done))
        };
        worker.join().unwrap();
        let new = caller.join().unwrap();
        second.join().unwrap();
        drain(&queue, &calls);
        assert_eq!(calls.started(&new), 1, "the new entry is synced once");
        assert_at_rest(&queue, &[&old, &new]);
    });
}

/// A sweep claims an entry while its call ends (done or retried at once) and a caller
/// removes it: it is never stranded, and runs again only if live.
#[test]
fn a_claim_racing_the_end_of_a_call_and_a_removal_strands_nothing() {
    for outcome in [Outcome::Done, Outcome::Retry(Duration::ZERO)] {
        model(move || {
            let queue = Arc::new(Queue::new());
            let calls = Calls::new();
            let entry = EntryHandle::new(0);
            queue.add(0, entry.clone());
            batch_pool(&queue);
            let mut into = Vec::new();
            let mut release = Vec::new();
            queue.pop_batch(&mut Vec::new(), &mut release, &mut into).unwrap();

            let finisher = {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    queue.finish(into.into_iter().map(|taken| (taken, outcome)), &mut release);
                    queue.release(&mut release);
                })
            };
            let sweep = {
                let (queue, entry) = (Arc::clone(&queue), entry.clone());
                thread::spawn(move || {
                    let mut sweeper = queue.sweeper(None);
                    sweeper.offer(&0, &entry);
                    sweeper.finish();
                })
            };
            let remover = {
                let (queue, entry) = (Arc::clone(&queue), entry.clone());
                thread::spawn(move || {
                    entry.mark_removed();
                    queue.remove(&entry);
                })
            };
            finisher.join().unwrap();
            sweep.join().unwrap();
            remover.join().unwrap();
            drain(&queue, &calls);
            assert_at_rest(&queue, &[&entry]);
        });
    }
}

/// A retry is delayed while a sweep claims the entry and another entry of the same id is
/// created: the earlier deadline wins, the record and the slot agree, nothing is stranded.
#[test]
fn a_delayed_retry_racing_a_claim_and_a_removal_keeps_its_record_and_slot_in_step() {
    model(|| {
        let queue = Arc::new(Queue::new());
        let calls = Calls::new();
        let entry = EntryHandle::new(0);
        let other = EntryHandle::new(2);
        queue.add(0, entry.clone());
        queue.add(1, other.clone());
        batch_pool(&queue);
        let mut into = Vec::new();
        let mut release = Vec::new();
        queue.pop_batch(&mut Vec::new(), &mut release, &mut into).unwrap();

        let worker = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let retry = Outcome::Retry(Duration::from_secs(1));
                queue.finish(into.into_iter().map(|taken| (taken, retry)), &mut release);
                queue.release(&mut release);
            })
        };
        let sweep = {
            let (queue, entry) = (Arc::clone(&queue), entry.clone());
            thread::spawn(move || {
                let mut sweeper = queue.sweeper(NonZeroUsize::new(1));
                sweeper.offer(&0, &entry);
                sweeper.finish();
            })
        };
        let remover = {
            let (queue, other) = (Arc::clone(&queue), other.clone());
            thread::spawn(move || {
                other.mark_removed();
                queue.remove(&other);
            })
        };
        worker.join().unwrap();
        sweep.join().unwrap();
        remover.join().unwrap();
        {
            let inner = queue.inner.lock();
            assert_eq!(inner.delayed.by_deadline.len(), inner.delayed.deadline_of.len());
            for item in inner.delayed.by_deadline.values() {
                assert!(matches!(item.entry.queue_state().slot, QueueSlot::Delayed { .. }));
            }
        }
        drain(&queue, &calls);
        assert!(calls.started(&entry) >= 1, "the live entry runs again");
        assert_at_rest(&queue, &[&entry, &other]);
    });
}
