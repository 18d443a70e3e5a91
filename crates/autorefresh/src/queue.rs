//! The work queue: which items are due for a sync, keyed by id.
//!
//! It keeps client-go's dedupe rules (an id waiting or in flight is never queued twice, and
//! an add while it is in flight makes it run once more afterwards) in one keyed map, as
//! kube-runtime's scheduler does: each id is in exactly one [`Slot`], so it is never both
//! delayed and ready, and an earlier deadline always wins over a later one.
//!
//! An id moves `Pooled` (due, waiting for the batcher) → `Batching` (the batcher has it) →
//! `Batched` (in a batch waiting for a worker) → `Running` → gone, or back to `Pooled` or
//! `Delayed` (a retry after its backoff). The queue never calls user code and never touches
//! the store, so its lock is only ever held for map operations.

use std::collections::{hash_map, BTreeMap, VecDeque};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::time::Duration;

use autorefresh_core::{EntryHandle, EntryState};
use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How one id's attempt ended, as reported to [`WorkQueue::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Synced, or no longer needs syncing (terminal, removed, pending delete): leaves the
    /// queue unless it was added again meanwhile.
    Done,
    /// The batch failed: retry after this backoff, or at once if added again meanwhile.
    Retry(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Pooled,
    Batching,
    Batched,
    Delayed(DelayKey),
    Running { again: bool, removed: bool },
}

type DelayKey = (Instant, u64);

struct QueueEntry<V> {
    entry: EntryHandle<V>,
    slot: Slot,
    /// When the id last became due, for the queue latency.
    due_at: Instant,
    /// Whether the limiter's `when` was asked for this id since its last `forget`, so a
    /// success has limiter state to drop (most successes have none: no lock to take).
    backed_off: bool,
}

/// An id handed out by the queue, with its entry.
pub(crate) struct TakenItem<K, V> {
    pub(crate) id: K,
    pub(crate) entry: EntryHandle<V>,
    /// See [`QueueEntry::backed_off`]: `forget` it once it succeeds or needs no sync.
    pub(crate) backed_off: bool,
}

/// A batch handed to a worker.
pub(crate) struct TakenBatch<K, V> {
    /// The ids, now in flight, with their entries.
    pub(crate) items: Vec<TakenItem<K, V>>,
    /// When the longest-waiting of them became due.
    pub(crate) oldest_due: Instant,
    /// How many ids are still due and not yet handed to a worker.
    pub(crate) depth: usize,
}

struct State<K, V> {
    entries: HashMap<K, QueueEntry<V>>,
    /// Ids in `Slot::Pooled`, in the order they became due (may hold stale ids).
    pool: Vec<K>,
    /// Batches of ids in `Slot::Batched`, in the order they were formed (may hold stale ids).
    batches: VecDeque<Vec<K>>,
    /// How many ids the batches hold.
    batched_ids: usize,
    delayed: BTreeMap<DelayKey, K>,
    next_delay_seq: u64,
    closed: bool,
}

/// The queue shared by the cache, the dispatcher and the workers.
pub(crate) struct WorkQueue<K, V> {
    state: Mutex<State<K, V>>,
    /// Wakes the dispatcher: the pool became non-empty or the earliest deadline moved closer.
    dispatcher_wake: Notify,
    /// Wakes one worker per batch pushed.
    batch_ready: Notify,
}

impl<K, V> std::fmt::Debug for WorkQueue<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("WorkQueue")
            .field("entries", &state.entries.len())
            .field("pool", &state.pool.len())
            .field("batches", &state.batches.len())
            .field("delayed", &state.delayed.len())
            .finish()
    }
}

/// Figures of the queue at one instant.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    /// Ids the queue tracks in any slot.
    pub(crate) tracked: usize,
    /// Ids due and not yet handed to a worker.
    pub(crate) ready: usize,
    /// Ids waiting for a retry deadline.
    pub(crate) delayed: usize,
    /// Ids in flight.
    pub(crate) running: usize,
}

impl<K, V> WorkQueue<K, V>
where
    K: Hash + Eq + Clone,
{
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::default(),
                pool: Vec::new(),
                batches: VecDeque::new(),
                batched_ids: 0,
                delayed: BTreeMap::new(),
                next_delay_seq: 0,
                closed: false,
            }),
            dispatcher_wake: Notify::new(),
            batch_ready: Notify::new(),
        }
    }

    /// Makes `id` due now (a create); returns whether it was not due already.
    pub(crate) fn add(&self, id: K, entry: EntryHandle<V>) -> bool {
        self.add_all([(id, entry)]) == 1
    }

    /// Makes every id of `items` due now, under one lock; returns how many were not due
    /// already.
    pub(crate) fn add_all(&self, items: impl IntoIterator<Item = (K, EntryHandle<V>)>) -> usize {
        let now = Instant::now();
        let (added, woke) = {
            let mut state = self.state.lock();
            let was_empty = state.pool.is_empty();
            let added = items
                .into_iter()
                .map(|(id, entry)| state.add(id, entry, now))
                .filter(|&a| a)
                .count();
            (added, was_empty && !state.pool.is_empty())
        };
        if woke {
            self.dispatcher_wake.notify_one();
        }
        added
    }

    /// Makes room for `ids` tracked ids at once, so a large sweep does not grow the table
    /// step by step (each step rehashing every id already in it).
    pub(crate) fn reserve(&self, ids: usize) {
        let mut state = self.state.lock();
        let missing = ids.saturating_sub(state.entries.len());
        state.entries.reserve(missing);
    }

    /// Forgets `id` if it still refers to `entry` (the item was deleted or evicted). An
    /// attempt in flight finishes, but its id is not queued again unless it is re-added.
    pub(crate) fn remove(&self, id: &K, entry: &EntryHandle<V>) {
        let mut state = self.state.lock();
        let State { entries, delayed, .. } = &mut *state;
        let hash_map::Entry::Occupied(mut occupied) = entries.entry(id.clone()) else {
            return;
        };
        if !occupied.get().entry.same_entry(entry) {
            return;
        }
        match &mut occupied.get_mut().slot {
            Slot::Running { again, removed } => {
                *again = false;
                *removed = true;
            }
            Slot::Delayed(key) => {
                delayed.remove(key);
                occupied.remove();
            }
            Slot::Pooled | Slot::Batching | Slot::Batched => {
                occupied.remove();
            }
        }
    }

    /// Cuts the pooled ids, in order, into batches of at most `size` and queues them for the
    /// workers: what a batcher that only cuts by position would do, in one pass under the
    /// lock, without reading the items.
    pub(crate) fn batch_pool_in_runs(&self, size: NonZeroUsize) {
        let pushed = {
            let mut state = self.state.lock();
            let pool = std::mem::take(&mut state.pool);
            let State { entries, batches, batched_ids, .. } = &mut *state;
            let mut run = Vec::with_capacity(size.get().min(pool.len()));
            let mut pushed = 0;
            for id in pool {
                let Some(queued) = entries.get_mut(&id) else { continue };
                if queued.slot != Slot::Pooled {
                    continue;
                }
                queued.slot = Slot::Batched;
                run.push(id);
                if run.len() == size.get() {
                    *batched_ids += run.len();
                    batches.push_back(std::mem::replace(&mut run, Vec::with_capacity(size.get())));
                    pushed += 1;
                }
            }
            if !run.is_empty() {
                *batched_ids += run.len();
                batches.push_back(run);
                pushed += 1;
            }
            pushed
        };
        for _ in 0..pushed.min(WAKE_LIMIT) {
            self.batch_ready.notify_one();
        }
    }

    /// Hands the pooled ids to the batcher, with their entries.
    pub(crate) fn take_pool(&self) -> Vec<TakenItem<K, V>> {
        let mut state = self.state.lock();
        let pool = std::mem::take(&mut state.pool);
        let mut taken = Vec::with_capacity(pool.len());
        for id in pool {
            if let Some(queued) = state.entries.get_mut(&id) {
                if queued.slot == Slot::Pooled {
                    queued.slot = Slot::Batching;
                    taken.push(TakenItem {
                        id,
                        entry: queued.entry.clone(),
                        backed_off: queued.backed_off,
                    });
                }
            }
        }
        taken
    }

    /// Queues the batches the batcher formed from `taken`. An id not taken, or already in an
    /// earlier batch, is dropped from its batch; a taken id left out of every batch leaves
    /// the queue (the next sweep brings it back). Returns the ids that left the queue with
    /// limiter state ([`QueueEntry::backed_off`]), which the caller must `forget`: once the
    /// queue no longer holds the flag, a later success would not.
    pub(crate) fn push_batches(&self, taken: &[K], batches: Vec<Vec<K>>) -> Vec<K> {
        let mut backed_off = Vec::new();
        let pushed = {
            let mut state = self.state.lock();
            let mut pushed = 0;
            for mut batch in batches {
                batch.retain(|id| match state.entries.get_mut(id) {
                    Some(queued) if queued.slot == Slot::Batching => {
                        queued.slot = Slot::Batched;
                        true
                    }
                    _ => false,
                });
                if !batch.is_empty() {
                    state.batched_ids += batch.len();
                    state.batches.push_back(batch);
                    pushed += 1;
                }
            }
            for id in taken {
                if let hash_map::Entry::Occupied(occupied) = state.entries.entry(id.clone()) {
                    if occupied.get().slot == Slot::Batching && occupied.remove().backed_off {
                        backed_off.push(id.clone());
                    }
                }
            }
            pushed
        };
        for _ in 0..pushed.min(WAKE_LIMIT) {
            self.batch_ready.notify_one();
        }
        backed_off
    }

    /// The batcher failed on `taken`: each id is retried after its backoff. Returns the ids
    /// no longer waiting for the batcher (deleted or evicted meanwhile, perhaps created
    /// again), which the caller must `forget`: their backoff was just recorded, after the
    /// removal forgot them.
    pub(crate) fn fail_batching(&self, taken: Vec<(K, Duration)>) -> Vec<K> {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut state = self.state.lock();
        for (id, backoff) in taken {
            let batching = match state.entries.get_mut(&id) {
                Some(queued) if queued.slot == Slot::Batching => {
                    queued.backed_off = true;
                    true
                }
                _ => false,
            };
            if batching {
                state.delay(id, now + backoff);
            } else {
                gone.push(id);
            }
        }
        drop(state);
        self.dispatcher_wake.notify_one();
        gone
    }

    /// The next batch for a worker, its ids now in flight; waits until there is one.
    pub(crate) async fn next_batch(&self) -> TakenBatch<K, V> {
        loop {
            let notified = self.batch_ready.notified();
            if let Some(batch) = self.pop_batch() {
                return batch;
            }
            notified.await;
        }
    }

    fn pop_batch(&self) -> Option<TakenBatch<K, V>> {
        let mut state = self.state.lock();
        let mut oldest_due: Option<Instant> = None;
        while let Some(ids) = state.batches.pop_front() {
            state.batched_ids -= ids.len();
            let mut items = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(queued) = state.entries.get_mut(&id) {
                    if queued.slot == Slot::Batched {
                        queued.slot = Slot::Running { again: false, removed: false };
                        oldest_due =
                            Some(oldest_due.map_or(queued.due_at, |o| o.min(queued.due_at)));
                        items.push(TakenItem {
                            id,
                            entry: queued.entry.clone(),
                            backed_off: queued.backed_off,
                        });
                    }
                }
            }
            if let Some(oldest_due) = oldest_due {
                // Chain the wake-up: the next idle worker takes the next batch.
                if !state.batches.is_empty() {
                    self.batch_ready.notify_one();
                }
                return Some(TakenBatch { items, oldest_due, depth: state.depth() });
            }
        }
        None
    }

    /// How many ids are due and not yet handed to a worker (stale ids included).
    pub(crate) fn depth(&self) -> usize {
        self.state.lock().depth()
    }

    /// Records how each id of a finished batch ended. Returns the ids that were removed from
    /// the cache while in flight, or that failed after the queue closed, whose limiter state
    /// the caller must drop (again: a failure may have recorded one after the removal forgot
    /// it).
    pub(crate) fn finish(&self, outcomes: impl IntoIterator<Item = (K, Outcome)>) -> Vec<K> {
        let mut removed_in_flight = Vec::new();
        let now = Instant::now();
        let mut state = self.state.lock();
        let was_empty = state.pool.is_empty();
        let earliest = state.delayed.first_key_value().map(|(key, _)| key.0);
        for (id, outcome) in outcomes {
            let Some(queued) = state.entries.get_mut(&id) else {
                // No longer tracked (the queue closed at shutdown while this batch finished):
                // a retry's backoff was recorded with nobody left to forget it.
                if matches!(outcome, Outcome::Retry(_)) {
                    removed_in_flight.push(id);
                }
                continue;
            };
            let Slot::Running { again, removed } = queued.slot else {
                continue;
            };
            // A retry asked the limiter; anything else was followed by a `forget`.
            queued.backed_off = matches!(outcome, Outcome::Retry(_));
            if again {
                queued_to_pool(&mut state, id, now);
            } else if removed {
                state.entries.remove(&id);
                removed_in_flight.push(id);
            } else {
                match outcome {
                    Outcome::Done => {
                        state.entries.remove(&id);
                    }
                    Outcome::Retry(backoff) if backoff.is_zero() => {
                        queued_to_pool(&mut state, id, now)
                    }
                    Outcome::Retry(backoff) => state.delay(id, now + backoff),
                }
            }
        }
        if state.entries.is_empty() && state.entries.capacity() > SHRINK_ABOVE {
            // Idle again after a large sweep: give the memory back.
            state.entries = HashMap::default();
            state.batches = VecDeque::new();
        }
        let new_earliest = state.delayed.first_key_value().map(|(key, _)| key.0);
        let wake = (was_empty && !state.pool.is_empty())
            || new_earliest.is_some_and(|new| earliest.is_none_or(|old| new < old));
        drop(state);
        if wake {
            self.dispatcher_wake.notify_one();
        }
        removed_in_flight
    }

    /// Moves every retry whose deadline passed into the pool; returns the next deadline.
    pub(crate) fn promote_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.state.lock();
        while let Some(entry) = state.delayed.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let id = entry.remove();
            queued_to_pool(&mut state, id, now);
        }
        None
    }

    /// Whether ids wait for the batcher.
    pub(crate) fn has_pooled(&self) -> bool {
        !self.state.lock().pool.is_empty()
    }

    /// Waits until the dispatcher has something new to look at.
    pub(crate) async fn dispatcher_woken(&self) {
        self.dispatcher_wake.notified().await;
    }

    /// Stops queueing for good: clears every slot (shutdown). Later adds are ignored.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.entries = HashMap::default();
        state.pool = Vec::new();
        state.batches = VecDeque::new();
        state.batched_ids = 0;
        state.delayed = BTreeMap::new();
    }

    /// The queue's figures now.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> QueueStats {
        let state = self.state.lock();
        let mut stats = QueueStats { tracked: state.entries.len(), ..QueueStats::default() };
        for queued in state.entries.values() {
            match queued.slot {
                Slot::Pooled | Slot::Batching | Slot::Batched => stats.ready += 1,
                Slot::Delayed(_) => stats.delayed += 1,
                Slot::Running { .. } => stats.running += 1,
            }
        }
        stats
    }
}

/// At most this many workers are woken at once; the rest follow by chained wake-ups.
const WAKE_LIMIT: usize = 64;

/// An empty queue whose tables hold room for more ids than this releases them.
const SHRINK_ABOVE: usize = 4096;

fn queued_to_pool<K: Hash + Eq + Clone, V>(state: &mut State<K, V>, id: K, now: Instant) {
    if let Some(queued) = state.entries.get_mut(&id) {
        queued.slot = Slot::Pooled;
        queued.due_at = now;
        state.pool.push(id);
    }
}

impl<K: Hash + Eq + Clone, V> State<K, V> {
    fn depth(&self) -> usize {
        self.pool.len() + self.batched_ids
    }

    /// Makes `id` due; returns whether it was not due already.
    fn add(&mut self, id: K, entry: EntryHandle<V>, now: Instant) -> bool {
        if self.closed {
            return false;
        }
        match self.entries.entry(id) {
            hash_map::Entry::Vacant(vacant) => {
                self.pool.push(vacant.key().clone());
                vacant.insert(QueueEntry {
                    entry,
                    slot: Slot::Pooled,
                    due_at: now,
                    backed_off: false,
                });
                true
            }
            hash_map::Entry::Occupied(mut occupied) => {
                let queued = occupied.get_mut();
                if !queued.entry.same_entry(&entry) {
                    // The id was deleted and created again: the live entry is the one to sync.
                    if entry.state() == EntryState::Removed {
                        return false;
                    }
                    queued.entry = entry;
                }
                match &mut queued.slot {
                    Slot::Pooled | Slot::Batching | Slot::Batched => false,
                    Slot::Running { again, removed } => {
                        *again = true;
                        *removed = false;
                        true
                    }
                    Slot::Delayed(key) => {
                        self.delayed.remove(key);
                        queued.slot = Slot::Pooled;
                        queued.due_at = now;
                        self.pool.push(occupied.key().clone());
                        true
                    }
                }
            }
        }
    }

    fn delay(&mut self, id: K, deadline: Instant) {
        let key = (deadline, self.next_delay_seq);
        self.next_delay_seq += 1;
        if let Some(queued) = self.entries.get_mut(&id) {
            queued.slot = Slot::Delayed(key);
            self.delayed.insert(key, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<&'static str, u32> {
        WorkQueue::new()
    }

    fn ids(batch: &[TakenItem<&'static str, u32>]) -> Vec<&'static str> {
        batch.iter().map(|item| item.id).collect()
    }

    /// Takes the pool and queues it as one batch, as the dispatcher does.
    fn batch_all(queue: &WorkQueue<&'static str, u32>) {
        let taken: Vec<_> = queue.take_pool().into_iter().map(|item| item.id).collect();
        queue.push_batches(&taken, vec![taken.clone()]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_is_queued_once_and_runs_again_if_added_in_flight() {
        let queue = queue();
        let a = EntryHandle::new(1);
        queue.add("a", a.clone());
        queue.add("a", a.clone());
        batch_all(&queue);
        let batch = queue.pop_batch().unwrap();
        assert_eq!(ids(&batch.items), ["a"]);
        assert!(queue.pop_batch().is_none());

        queue.add("a", a.clone()); // while in flight: never dispatched twice at once
        batch_all(&queue);
        assert!(queue.pop_batch().is_none());
        assert_eq!(queue.stats().running, 1);

        queue.finish([("a", Outcome::Done)]);
        batch_all(&queue);
        assert_eq!(ids(&queue.pop_batch().unwrap().items), ["a"], "runs once more after");
        queue.finish([("a", Outcome::Done)]);
        assert_eq!(queue.stats(), QueueStats::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_its_deadline_unless_added_sooner() {
        let queue = queue();
        let a = EntryHandle::new(1);
        queue.add("a", a.clone());
        batch_all(&queue);
        queue.pop_batch().unwrap();
        queue.finish([("a", Outcome::Retry(Duration::from_secs(10)))]);
        assert_eq!(queue.stats().delayed, 1);
        let deadline = queue.promote_due().unwrap();
        assert_eq!(deadline - Instant::now(), Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(3)).await;
        queue.add("a", a.clone()); // a sweep: the earlier deadline wins
        assert_eq!(queue.promote_due(), None, "no longer delayed");
        assert_eq!(queue.stats().ready, 1);

        batch_all(&queue);
        queue.pop_batch().unwrap();
        queue.finish([("a", Outcome::Retry(Duration::from_secs(1)))]);
        assert!(queue.promote_due().is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(queue.promote_due(), None);
        assert!(queue.has_pooled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_id_is_not_queued_again_but_a_new_entry_is() {
        let queue = queue();
        let old = EntryHandle::new(1);
        queue.add("a", old.clone());
        batch_all(&queue);
        queue.pop_batch().unwrap();

        queue.remove(&"a", &old);
        queue.finish([("a", Outcome::Retry(Duration::from_secs(1)))]);
        assert_eq!(queue.stats(), QueueStats::default(), "removed while in flight: dropped");

        queue.add("a", old.clone());
        batch_all(&queue);
        queue.pop_batch().unwrap();
        old.mark_removed();
        let new = EntryHandle::new(2);
        queue.add("a", new.clone()); // deleted and created again while in flight
        queue.remove(&"a", &old); // the old entry's removal arrives late: ignored
        queue.finish([("a", Outcome::Done)]);
        batch_all(&queue);
        let batch = queue.pop_batch().unwrap();
        assert!(batch.items[0].entry.same_entry(&new));
    }

    #[tokio::test(start_paused = true)]
    async fn ids_the_batcher_drops_repeats_or_invents_are_handled() {
        let queue = queue();
        for id in ["a", "b", "c"] {
            queue.add(id, EntryHandle::new(0));
        }
        let taken: Vec<_> = queue.take_pool().into_iter().map(|item| item.id).collect();
        queue.push_batches(&taken, vec![vec!["a", "a", "x"], vec!["a", "b"]]);
        assert_eq!(ids(&queue.pop_batch().unwrap().items), ["a"]);
        assert_eq!(ids(&queue.pop_batch().unwrap().items), ["b"]);
        assert!(queue.pop_batch().is_none());
        assert_eq!(queue.stats().tracked, 2, "c was left out: it waits for the next sweep");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_finishing_after_close_is_returned_for_its_limiter_state() {
        let queue = queue();
        queue.add("a", EntryHandle::new(1));
        queue.add("b", EntryHandle::new(2));
        batch_all(&queue);
        queue.pop_batch().unwrap();
        queue.close(); // shutdown while the batch was in flight
        let forget =
            queue.finish([("a", Outcome::Retry(Duration::from_secs(1))), ("b", Outcome::Done)]);
        assert_eq!(forget, ["a"], "the retry's backoff must be forgotten; a success has none");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batching_delays_each_id_and_close_drops_everything() {
        let queue = queue();
        queue.add("a", EntryHandle::new(0));
        let taken = queue.take_pool();
        queue.fail_batching(
            taken.into_iter().map(|item| (item.id, Duration::from_secs(5))).collect(),
        );
        assert_eq!(queue.stats().delayed, 1);
        queue.close();
        queue.add("b", EntryHandle::new(0));
        assert_eq!(queue.stats(), QueueStats::default());
    }
}
