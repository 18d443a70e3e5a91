//! The work queue: which entries are due for a sync, and which are in flight.
//!
//! It keeps client-go's dedupe rules (an entry waiting or in flight is never queued twice,
//! and an add while it is in flight makes it run once more afterwards), with the per-item
//! state kept in the entry itself rather than in a map keyed by id: each [`EntryHandle`]
//! carries one atomic word, its [`QueueState`], as a tokio task carries its state. Every change
//! of that word is one step of the state machine in [`state`] (one function, `transition`),
//! made by compare-and-swap; the sweep, the workers and every caller share it without a lock
//! on the common path.
//!
//! An entry moves `Idle` → `Queued` (in the pool, with the batcher, in a batch waiting for a
//! worker, or parked behind its id) → `Running` → `Idle`, or back to `Queued` (it became due
//! again while in flight, or a retry without backoff) or to `Delayed` (a retry after its
//! backoff). Every `Queued` entry is held by exactly one place, which must place it, start it,
//! or let it go; the holders that run user code meanwhile (the batcher's hand, a worker's
//! buffers) let go in their `Drop`, so a panic strands nothing.
//!
//! **One id, one call.** Identity is per entry: an id deleted and created again gets a new
//! entry, queued independently of the old one. Two calls for one id are still never in flight
//! at once, however the store and the callers race: a worker starts an entry only after
//! reserving its id (its hash, taken at the claim) in `in_flight`, under the lock it pops the
//! batch with, and an entry whose id is reserved already is parked there, still `Queued`,
//! until the worker holding the id releases it (in the lock of its next pop, after its call
//! ended) and the entry goes to the pool. The guard is
//! keyed by id (its hash; two ids with one hash only wait for each other), so it needs nothing
//! of the store nor of removals: it holds whatever the store does and whenever the queue
//! learns of a removal. The map holds only the ids in flight.
//!
//! Retries with a backoff wait in a small ordered map of deadlines; an entry's `Delayed` slot
//! names its record there (a ticket), and every change into or out of `Delayed` is made under
//! the queue's lock, so a record and its slot always agree. An earlier deadline wins over a
//! later one: a sweep (or a create) claims a delayed entry at once and drops its record.
//!
//! Removal (delete, eviction, a delayed delete, expiry) marks the entry removed and calls
//! [`WorkQueue::remove`], which needs no lookup: a queued entry goes back to `Idle` (whoever
//! holds it finds it so and drops it), a delayed one drops its record, and one in flight is
//! flagged so that it leaves the queue when its call ends instead of running again.
//!
//! For the metrics, the queue counts the entries `Queued` (the depth) and `Running`, from the
//! steps themselves (each step's change of slot, summed per batch or sweep chunk): the counts
//! may read below zero for an instant (a removal counted before the claim it undoes) and are
//! exact whenever the queue is at rest. Each batch carries when its oldest entry became due
//! (the queue latency).
//!
//! The queue's locks are never held while user code runs: ids are hashed when claimed, before
//! the lock, and the queue never calls the store, the limiter or a listener.

mod state;

#[cfg(all(test, autorefresh_loom))]
mod model;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::num::NonZeroUsize;
use std::time::Duration;

use autorefresh_core::engine::{QueueSlot, QueueState};
use autorefresh_core::EntryHandle;
use foldhash::HashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sync::{AtomicIsize, AtomicUsize, Mutex, Ordering};
use state::{step, Ended, Event, Stepped};

/// How one entry's attempt ended, as reported to [`WorkQueue::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Synced, or no longer needs syncing (terminal, removed, pending delete): leaves the
    /// queue unless it became due again meanwhile. The caller has already told the limiter to
    /// forget an entry that was backed off.
    Done,
    /// The batch failed: retry after this backoff, or at once if it became due again
    /// meanwhile.
    Retry(Duration),
    /// The worker gave it up (it panicked outside the sync call, or was cancelled): it leaves
    /// the queue unless it became due again meanwhile, its limiter state kept.
    Abandoned,
}

/// An id with its entry, as the queue holds and hands them out.
pub(crate) struct Queued<K, V> {
    pub(crate) id: K,
    /// The id's hash, taken when the entry was claimed (user code, outside the queue's locks),
    /// under which a worker reserves the id in flight.
    hash: u64,
    pub(crate) entry: EntryHandle<V>,
}

/// A due entry in the pool, waiting for the batcher.
pub(crate) struct Pooled<K, V> {
    pub(crate) item: Queued<K, V>,
    /// When it became due, for the queue latency.
    pub(crate) due: Instant,
}

/// An entry handed to a worker, now in flight.
pub(crate) struct TakenItem<K, V> {
    pub(crate) id: K,
    pub(crate) entry: EntryHandle<V>,
    /// The hash its id is registered in flight under, released by [`WorkQueue::finish`].
    hash: u64,
    /// Whether the limiter holds backoff state for it: `forget` it once it succeeds or needs
    /// no sync.
    pub(crate) backed_off: bool,
}

/// What a worker learns with its batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchInfo {
    /// When the longest-waiting of its entries became due.
    pub(crate) oldest_due: Instant,
    /// How many entries are still due and not yet handed to a worker.
    pub(crate) depth: usize,
}

/// One batch in the batch deque: its length and when its oldest entry became due.
struct Mark {
    len: usize,
    due: Instant,
}

/// The retries waiting for their deadline.
struct Delayed<K, V> {
    by_deadline: BTreeMap<(Instant, u64), Queued<K, V>>,
    deadline_of: BTreeMap<u64, Instant>,
    next_ticket: u64,
}

impl<K, V> Delayed<K, V> {
    fn new() -> Self {
        Self { by_deadline: BTreeMap::new(), deadline_of: BTreeMap::new(), next_ticket: 0 }
    }

    fn len(&self) -> usize {
        self.deadline_of.len()
    }

    fn ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket = (self.next_ticket + 1) % QueueState::TICKET_LIMIT;
        ticket
    }

    fn insert(&mut self, ticket: u64, deadline: Instant, item: Queued<K, V>) {
        self.deadline_of.insert(ticket, deadline);
        self.by_deadline.insert((deadline, ticket), item);
    }

    fn remove(&mut self, ticket: u64) -> Option<Queued<K, V>> {
        let deadline = self.deadline_of.remove(&ticket)?;
        self.by_deadline.remove(&(deadline, ticket))
    }

    fn earliest(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|(key, _)| key.0)
    }
}

struct Inner<K, V> {
    /// Due entries waiting for the batcher, in the order they became due.
    pool: Vec<Pooled<K, V>>,
    /// The entries of the batches waiting for a worker, batch after batch (may hold entries
    /// removed since, no longer `Queued`: the worker drops them).
    items: VecDeque<Queued<K, V>>,
    /// The batches' lengths, in the order of `items`.
    marks: VecDeque<Mark>,
    delayed: Delayed<K, V>,
    /// The ids in flight, and the entries parked behind them.
    in_flight: InFlight<K, V>,
    closed: bool,
}

/// The ids in flight, by the hash of each (two ids with one hash only wait for each other).
struct InFlight<K, V> {
    /// The hashes of the ids reserved by a worker: from its pop until the pop after its call
    /// ended, so a superset of the ids whose entry is `Running`.
    ids: HashSet<u64, BuildHasherDefault<Prehashed>>,
    /// The entries waiting for an id in flight, still `Queued` (rarely any).
    parked: HashMap<u64, Vec<Queued<K, V>>>,
}

impl<K, V> Default for InFlight<K, V> {
    fn default() -> Self {
        Self { ids: HashSet::default(), parked: HashMap::default() }
    }
}

impl<K, V> InFlight<K, V> {
    /// Reserves `item`'s id for the worker popping it (into `reserved`), or parks `item`
    /// behind the call of its id in flight (or drops it, if it is no longer `Queued`).
    fn reserve(&mut self, item: Queued<K, V>, reserved: &mut Vec<Queued<K, V>>) {
        if self.ids.insert(item.hash) {
            reserved.push(item);
        } else if item.entry.queue_state().slot == QueueSlot::Queued {
            self.parked.entry(item.hash).or_default().push(item);
        }
    }

    /// The call of the id under `hash` ended: its parked entries go to `released`.
    fn release(&mut self, hash: u64, released: &mut Vec<Queued<K, V>>) {
        let was_in = self.ids.remove(&hash);
        debug_assert!(was_in, "an id is reserved until its worker releases it");
        if !self.parked.is_empty() {
            released.extend(self.parked.remove(&hash).into_iter().flatten());
        }
    }
}

/// The hasher of [`InFlight::ids`]: its keys are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; any other input still hashes deterministically.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// Changes of the queue's counters, summed over a batch of steps and applied at once.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    queued: isize,
    running: isize,
}

impl Counted {
    fn add(&mut self, stepped: &Stepped) {
        let queued = |slot: QueueSlot| isize::from(slot == QueueSlot::Queued);
        let running = |slot: QueueSlot| isize::from(matches!(slot, QueueSlot::Running { .. }));
        let (before, after) = (stepped.previous.slot, stepped.step.next.slot);
        self.queued += queued(after) - queued(before);
        self.running += running(after) - running(before);
    }
}

/// The queue shared by the cache, the dispatcher and the workers.
pub(crate) struct WorkQueue<K, V> {
    inner: Mutex<Inner<K, V>>,
    /// Entries in `QueueSlot::Queued`: due and not yet handed to a worker.
    queued: AtomicIsize,
    /// Entries in `QueueSlot::Running`.
    running: AtomicIsize,
    /// Hashes ids for `in_flight`.
    hasher: foldhash::fast::RandomState,
    /// Wakes the dispatcher: the pool became non-empty or the earliest deadline moved closer.
    dispatcher_wake: Notify,
    /// Wakes one worker per batch pushed.
    batch_ready: Notify,
    /// Workers waiting (or about to wait) for a batch.
    idle: AtomicUsize,
}

impl<K, V> std::fmt::Debug for WorkQueue<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        let tracked = self.queued.load(Ordering::Relaxed)
            + self.running.load(Ordering::Relaxed)
            + inner.delayed.len() as isize;
        f.debug_struct("WorkQueue")
            .field("entries", &tracked)
            .field("pool", &inner.pool.len())
            .field("batches", &inner.marks.len())
            .field("delayed", &inner.delayed.len())
            .field("in_flight", &inner.in_flight.ids.len())
            .finish()
    }
}

/// Figures of the queue at one instant.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    /// Entries the queue tracks in any slot.
    pub(crate) tracked: isize,
    /// Entries due and not yet handed to a worker.
    pub(crate) ready: isize,
    /// Entries waiting for a retry deadline.
    pub(crate) delayed: usize,
    /// Entries in flight.
    pub(crate) running: isize,
    /// Ids registered in flight.
    pub(crate) in_flight: usize,
}

impl<K: Hash, V> WorkQueue<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                pool: Vec::new(),
                items: VecDeque::new(),
                marks: VecDeque::new(),
                delayed: Delayed::new(),
                in_flight: InFlight::default(),
                closed: false,
            }),
            queued: AtomicIsize::new(0),
            running: AtomicIsize::new(0),
            hasher: foldhash::fast::RandomState::default(),
            dispatcher_wake: Notify::new(),
            batch_ready: Notify::new(),
            idle: AtomicUsize::new(0),
        }
    }

    fn count(&self, counted: Counted) {
        if counted.queued != 0 {
            self.queued.fetch_add(counted.queued, Ordering::Relaxed);
        }
        if counted.running != 0 {
            self.running.fetch_add(counted.running, Ordering::Relaxed);
        }
    }

    /// Makes `entry` due: one compare-and-swap, or the lock for a delayed entry. Returns the
    /// step taken, if any.
    fn claim(&self, entry: &EntryHandle<V>) -> Option<Stepped> {
        match step(entry, Event::Claim { locked: false }) {
            Ok(stepped) => Some(stepped),
            Err(QueueState { slot: QueueSlot::Delayed { .. }, .. }) => {
                self.claim_locked(&mut self.inner.lock(), entry)
            }
            Err(_) => None,
        }
    }

    /// As [`claim`](Self::claim), under the lock: a delayed entry's record is dropped.
    fn claim_locked(&self, inner: &mut Inner<K, V>, entry: &EntryHandle<V>) -> Option<Stepped> {
        let stepped = step(entry, Event::Claim { locked: true }).ok()?;
        if let Some(ticket) = stepped.left_record() {
            inner.delayed.remove(ticket);
        }
        Some(stepped)
    }

    /// Makes `id` due now (a create); returns whether it was not due already.
    pub(crate) fn add(&self, id: K, entry: EntryHandle<V>) -> bool {
        let now = Instant::now();
        // Hashed before the lock: `Hash` is user code.
        let hash = self.hasher.hash_one(&id);
        let mut inner = self.inner.lock();
        if inner.closed {
            return false;
        }
        let Some(stepped) = self.claim_locked(&mut inner, &entry) else { return false };
        if stepped.enqueued() {
            let was_empty = inner.pool.is_empty();
            inner.pool.push(Pooled { item: Queued { id, hash, entry }, due: now });
            let mut counted = Counted::default();
            counted.add(&stepped);
            self.count(counted);
            drop(inner);
            if was_empty {
                self.dispatcher_wake.notify_one();
            }
        }
        true
    }

    /// A sweep's hand into the queue: see [`Sweeper::offer`]. With a fixed `batch_size`, it
    /// forms the batches itself as it goes; otherwise it fills the pool for the batcher.
    pub(crate) fn sweeper(&self, batch_size: Option<NonZeroUsize>) -> Sweeper<'_, K, V> {
        // Queued in chunks of whole batches (a batch larger than a chunk is one chunk).
        let chunk = batch_size.map_or(SWEEP_CHUNK, |size| SWEEP_CHUNK.max(size.get()));
        Sweeper {
            queue: self,
            batch_size,
            chunk,
            items: Vec::new(),
            counted: Counted::default(),
            added: 0,
        }
    }

    /// The entry left the store (it is marked removed): a queued one leaves the queue (whoever
    /// holds it drops it), a delayed one drops its retry, one in flight is not queued again
    /// when its call ends. Needs no id: the in-flight guard is released by the call's end.
    pub(crate) fn remove(&self, entry: &EntryHandle<V>) {
        let stepped = match step(entry, Event::Remove { locked: false }) {
            Ok(stepped) => stepped,
            Err(QueueState { slot: QueueSlot::Delayed { .. }, .. }) => {
                let mut inner = self.inner.lock();
                let Ok(stepped) = step(entry, Event::Remove { locked: true }) else { return };
                if let Some(ticket) = stepped.left_record() {
                    inner.delayed.remove(ticket);
                }
                stepped
            }
            Err(_) => return,
        };
        let mut counted = Counted::default();
        counted.add(&stepped);
        self.count(counted);
    }

    /// Cuts the pooled entries, in order, into batches of at most `size` and queues them for
    /// the workers: what a batcher that only cuts by position would do, without reading the
    /// items.
    pub(crate) fn batch_pool_in_runs(&self, size: NonZeroUsize) {
        let pushed = {
            let mut inner = self.inner.lock();
            let pool = std::mem::take(&mut inner.pool);
            let mut pushed = 0;
            let mut pool = pool.into_iter().peekable();
            while pool.peek().is_some() {
                let mut mark = Mark { len: 0, due: Instant::now() };
                for pooled in pool.by_ref().take(size.get()) {
                    mark.len += 1;
                    mark.due = mark.due.min(pooled.due);
                    inner.items.push_back(pooled.item);
                }
                inner.marks.push_back(mark);
                pushed += 1;
            }
            pushed
        };
        self.wake_workers(pushed);
    }

    /// Hands the pooled entries to the batcher: they stay `Queued`, held by the [`Hand`] until
    /// it places them in batches, lets them go or delays them; whatever it still holds when
    /// dropped (a panic in user code meanwhile) is let go, for the next sweep.
    pub(crate) fn take_pool(&self) -> Hand<'_, K, V> {
        let pooled = std::mem::take(&mut self.inner.lock().pool);
        Hand { queue: self, pooled: pooled.into_iter().map(Some).collect() }
    }

    /// Lets go of entries that a holder took `Queued` and can no longer place (`event` is
    /// `Leave` or `Abandon`); returns the ids whose limiter state the caller must forget.
    fn let_go(&self, items: impl IntoIterator<Item = Queued<K, V>>, event: Event) -> Vec<K> {
        let mut forget = Vec::new();
        let mut counted = Counted::default();
        for item in items {
            // Not `Queued`: removed since, already counted out.
            if let Ok(stepped) = step(&item.entry, event) {
                counted.add(&stepped);
                if stepped.step.forget {
                    forget.push(item.id);
                }
            }
        }
        self.count(counted);
        forget
    }

    /// The next batch for a worker, put in `into` (empty), its entries now in flight; waits
    /// until there is one. `popped` is a buffer; `release` holds the hashes of the ids this
    /// worker is done with (its calls ended, see [`finish`](Self::finish)): they are released
    /// in the lock this takes anyway, so that a finished call takes no lock of its own.
    pub(crate) async fn next_batch(
        &self,
        popped: &mut Vec<Queued<K, V>>,
        release: &mut Vec<u64>,
        into: &mut Vec<TakenItem<K, V>>,
    ) -> BatchInfo {
        loop {
            // The common case while a sweep is being worked off: no waiting, no wake-up.
            if let Some(info) = self.pop_batch(popped, release, into) {
                return info;
            }
            let notified = self.batch_ready.notified();
            // Announced before looking again: a batch pushed after that look sees an idle
            // worker and wakes it (`notify_one` keeps a permit if it is not waiting yet).
            let _idle = IdleGuard::enter(&self.idle);
            if let Some(info) = self.pop_batch(popped, release, into) {
                return info;
            }
            notified.await;
        }
    }

    /// Releases the ids of `release`, then takes the next batch: each entry whose id is free
    /// is reserved (its id registered in flight) under the lock, and started after it; the
    /// others are parked behind the id in flight. No user code runs here.
    fn pop_batch(
        &self,
        popped: &mut Vec<Queued<K, V>>,
        release: &mut Vec<u64>,
        into: &mut Vec<TakenItem<K, V>>,
    ) -> Option<BatchInfo> {
        loop {
            let (batch, wake_dispatcher) = {
                let mut inner = self.inner.lock();
                let wake_dispatcher = self.release_locked(&mut inner, release);
                let batch = inner.marks.pop_front().map(|mark| {
                    let Inner { items, in_flight, .. } = &mut *inner;
                    for item in items.drain(..mark.len) {
                        in_flight.reserve(item, popped);
                    }
                    if inner.marks.is_empty() && inner.items.capacity() > SHRINK_ABOVE {
                        // Idle again after a large sweep: give the memory back.
                        inner.items = VecDeque::new();
                        inner.marks = VecDeque::new();
                    }
                    (mark.due, !inner.marks.is_empty())
                });
                (batch, wake_dispatcher)
            };
            if wake_dispatcher {
                self.dispatcher_wake.notify_one();
            }
            let (due, more) = batch?;
            // Chain the wake-up: the next idle worker takes the next batch.
            if more && self.idle.load(Ordering::SeqCst) > 0 {
                self.batch_ready.notify_one();
            }
            if popped.len() > 1 {
                // Touch every entry first: these loads miss the cache and may overlap, where
                // the compare-and-swaps below would wait for each miss in turn.
                let mut sum = 0_u64;
                for item in popped.iter() {
                    sum = sum.wrapping_add(u64::from(item.entry.queue_state().backed_off));
                }
                std::hint::black_box(sum);
            }
            let mut counted = Counted::default();
            for item in popped.drain(..) {
                // The id is reserved: only this worker may start an entry of it.
                match step(&item.entry, Event::Start) {
                    Ok(stepped) => {
                        counted.add(&stepped);
                        let Queued { id, hash, entry } = item;
                        let backed_off = stepped.previous.backed_off;
                        into.push(TakenItem { id, entry, hash, backed_off });
                    }
                    // Removed since it was batched: its reservation goes at the next pop.
                    Err(_) => release.push(item.hash),
                }
            }
            self.count(counted);
            if !into.is_empty() {
                // Ids reserved for entries removed since they were batched are released now:
                // held until the next pop, a new entry of such an id would wait for this
                // batch's call, which does not carry it. (Rare: it takes the lock again.)
                self.release(release);
                let depth = self.queued.load(Ordering::Relaxed).max(0);
                return Some(BatchInfo { oldest_due: due, depth: depth as usize });
            }
        }
    }

    /// Under the lock: releases the ids of `release`; their parked entries go to the pool (or
    /// are let go, once closed). Returns whether the dispatcher must be woken.
    fn release_locked(&self, inner: &mut Inner<K, V>, release: &mut Vec<u64>) -> bool {
        if release.is_empty() {
            return false;
        }
        let mut released = Vec::new();
        for hash in release.drain(..) {
            inner.in_flight.release(hash, &mut released);
        }
        if released.is_empty() {
            return false;
        }
        if inner.closed {
            // Nothing queued any more; their limiter state went with the queue's close.
            self.let_go(released, Event::Close);
            return false;
        }
        let was_empty = inner.pool.is_empty();
        let now = Instant::now();
        inner.pool.extend(released.into_iter().map(|item| Pooled { item, due: now }));
        was_empty
    }

    /// Releases the ids of `release` now (a worker that stops, or gives up its batch).
    pub(crate) fn release(&self, release: &mut Vec<u64>) {
        if release.is_empty() {
            return;
        }
        let wake = self.release_locked(&mut self.inner.lock(), release);
        if wake {
            self.dispatcher_wake.notify_one();
        }
    }

    /// Lets go of entries a worker popped and did not start (it gave up its batch midway): the
    /// next sweep claims them again; their reserved ids go to `release`.
    pub(crate) fn abandon(&self, popped: &mut Vec<Queued<K, V>>, release: &mut Vec<u64>) {
        release.extend(popped.iter().map(|item| item.hash));
        // `Abandon` keeps the limiter state: nothing to forget.
        self.let_go(popped.drain(..), Event::Abandon);
    }

    /// How many entries are due and not yet handed to a worker.
    pub(crate) fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed).max(0) as usize
    }

    /// Records how each entry of a finished batch ended, and releases its id for the entries
    /// parked behind it. Returns the ids whose limiter state the caller must drop: entries
    /// removed from the store while in flight, or that failed after the queue closed (a
    /// failure asked the limiter for a backoff after the removal forgot it, or with nobody
    /// left to forget it). No user code runs here.
    pub(crate) fn finish(
        &self,
        outcomes: impl IntoIterator<Item = (TakenItem<K, V>, Outcome)>,
        release: &mut Vec<u64>,
    ) -> Vec<K> {
        let mut forget = Vec::new();
        let mut to_pool = Vec::new();
        let mut to_delay = Vec::new();
        let mut counted = Counted::default();
        for (taken, outcome) in outcomes {
            let ended = match outcome {
                Outcome::Done => Ended::Done,
                Outcome::Abandoned => Ended::Abandoned,
                Outcome::Retry(Duration::ZERO) => Ended::RetryNow,
                Outcome::Retry(_) => Ended::RetryLater { ticket: None },
            };
            // Its call ended: the id is released by the caller's next pop, or below.
            release.push(taken.hash);
            match step(&taken.entry, Event::Finish(ended)) {
                Ok(stepped) => {
                    counted.add(&stepped);
                    if stepped.step.forget {
                        forget.push(taken.id);
                    } else if stepped.enqueued() {
                        to_pool.push(Queued { id: taken.id, hash: taken.hash, entry: taken.entry });
                    }
                }
                Err(state) => {
                    // Only a delay needs the lock; nothing else can refuse a running entry.
                    debug_assert!(matches!(state.slot, QueueSlot::Running { .. }), "{state:?}");
                    if let Outcome::Retry(backoff) = outcome {
                        to_delay.push((taken, backoff));
                    }
                }
            }
        }
        self.count(counted);
        if to_pool.is_empty() && to_delay.is_empty() {
            return forget;
        }
        let now = Instant::now();
        let mut counted = Counted::default();
        let mut inner = self.inner.lock();
        // In this lock anyway: the ids are released now, their parked entries pooled.
        let wake_for_released = self.release_locked(&mut inner, release);
        if inner.closed {
            // Shut down while this batch ran: nothing is queued any more, and a retry's
            // backoff was recorded with nobody left to forget it.
            for (taken, _) in to_delay {
                let now_or_idle = step(&taken.entry, Event::Finish(Ended::RetryNow));
                if let Ok(stepped) = now_or_idle {
                    counted.add(&stepped);
                    let closed = step(&taken.entry, Event::Close);
                    if let Ok(stepped) = closed {
                        counted.add(&stepped);
                    }
                }
                forget.push(taken.id);
            }
            drop(inner);
            self.count(counted);
            forget.extend(self.let_go(to_pool, Event::Close));
            return forget;
        }
        let was_empty = inner.pool.is_empty();
        let earliest = inner.delayed.earliest();
        for (taken, backoff) in to_delay {
            let ticket = inner.delayed.ticket();
            let Ok(stepped) =
                step(&taken.entry, Event::Finish(Ended::RetryLater { ticket: Some(ticket) }))
            else {
                continue;
            };
            counted.add(&stepped);
            let item = Queued { id: taken.id, hash: taken.hash, entry: taken.entry };
            if stepped.step.forget {
                forget.push(item.id);
            } else if stepped.enqueued() {
                to_pool.push(item);
            } else {
                inner.delayed.insert(ticket, deadline(now, backoff), item);
            }
        }
        inner.pool.extend(to_pool.into_iter().map(|item| Pooled { item, due: now }));
        let new_earliest = inner.delayed.earliest();
        let wake = wake_for_released
            || (was_empty && !inner.pool.is_empty())
            || new_earliest.is_some_and(|new| earliest.is_none_or(|old| new < old));
        drop(inner);
        self.count(counted);
        if wake {
            self.dispatcher_wake.notify_one();
        }
        forget
    }

    /// Moves every retry whose deadline passed into the pool; returns the next deadline.
    pub(crate) fn promote_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut counted = Counted::default();
        let mut inner = self.inner.lock();
        let next = loop {
            let Some(entry) = inner.delayed.by_deadline.first_entry() else { break None };
            let (deadline, ticket) = *entry.key();
            if deadline > now {
                break Some(deadline);
            }
            let item = entry.remove();
            inner.delayed.deadline_of.remove(&ticket);
            if let Ok(stepped) = step(&item.entry, Event::Promote { ticket }) {
                counted.add(&stepped);
                inner.pool.push(Pooled { item, due: now });
            }
        };
        drop(inner);
        self.count(counted);
        next
    }

    /// Whether entries wait for the batcher.
    pub(crate) fn has_pooled(&self) -> bool {
        !self.inner.lock().pool.is_empty()
    }

    /// Waits until the dispatcher has something new to look at.
    pub(crate) async fn dispatcher_woken(&self) {
        self.dispatcher_wake.notified().await;
    }

    /// Stops queueing for good (shutdown): every queued, parked and delayed entry goes back to
    /// `Idle`; the calls in flight end as `Idle` too. Later adds are ignored. Returns the ids
    /// whose limiter state the caller must forget (retries nobody will run).
    pub(crate) fn close(&self) -> Vec<K> {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let pool = std::mem::take(&mut inner.pool).into_iter().map(|pooled| pooled.item);
        let items = std::mem::take(&mut inner.items);
        inner.marks = VecDeque::new();
        let delayed = std::mem::replace(&mut inner.delayed, Delayed::new());
        let parked = std::mem::take(&mut inner.in_flight.parked).into_values().flatten();
        let dropped: Vec<_> =
            pool.chain(items).chain(delayed.by_deadline.into_values()).chain(parked).collect();
        drop(inner);
        self.let_go(dropped, Event::Close)
    }

    /// Wakes up to `batches` idle workers (the rest follow by chained wake-ups).
    fn wake_workers(&self, batches: usize) {
        let idle = self.idle.load(Ordering::SeqCst);
        for _ in 0..batches.min(idle).min(WAKE_LIMIT) {
            self.batch_ready.notify_one();
        }
    }

    /// Queues a sweep's claimed entries: as batches of `size`, keeping a last short run back
    /// unless `last`, or into the pool.
    fn push_swept(&self, items: &mut Vec<Queued<K, V>>, size: Option<NonZeroUsize>, last: bool) {
        let count = items.len();
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if inner.closed {
            drop(inner);
            self.let_go(items.drain(..), Event::Close);
            return;
        }
        let pushed = match size {
            Some(size) => {
                let size = size.get();
                let full = if last { count } else { count - count % size };
                let mut left = full;
                while left > 0 {
                    let len = left.min(size);
                    inner.marks.push_back(Mark { len, due: now });
                    left -= len;
                }
                inner.items.extend(items.drain(..full));
                full.div_ceil(size)
            }
            None => {
                let was_empty = inner.pool.is_empty();
                inner.pool.extend(items.drain(..).map(|item| Pooled { item, due: now }));
                drop(inner);
                if was_empty {
                    self.dispatcher_wake.notify_one();
                }
                return;
            }
        };
        drop(inner);
        self.wake_workers(pushed);
    }

    /// The queue's figures now.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> QueueStats {
        let inner = self.inner.lock();
        let ready = self.queued.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        let delayed = inner.delayed.len();
        let in_flight = inner.in_flight.ids.len();
        QueueStats {
            tracked: ready + running + delayed as isize,
            ready,
            delayed,
            running,
            in_flight,
        }
    }
}

/// When a retry after `backoff` is due: `now + backoff`, or far in the future for a backoff too
/// long for an `Instant` (a `Duration::MAX` from a limiter or a `RetryAfter`).
fn deadline(now: Instant, backoff: Duration) -> Instant {
    now.checked_add(backoff).unwrap_or_else(|| now + FAR_FUTURE)
}

/// About 30 years: a deadline that never comes in practice, yet fits any clock.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// At most this many workers are woken at once; the rest follow by chained wake-ups.
const WAKE_LIMIT: usize = 64;

/// A drained batch deque holding room for more entries than this releases it.
const SHRINK_ABOVE: usize = 4096;

/// Counts a worker idle while it lives (dropped when it gets a batch or is cancelled).
struct IdleGuard<'a>(&'a AtomicUsize);

impl<'a> IdleGuard<'a> {
    fn enter(idle: &'a AtomicUsize) -> Self {
        idle.fetch_add(1, Ordering::SeqCst);
        Self(idle)
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The pooled entries handed to the batcher, still `Queued`. The batcher (user code) reads
/// them by position; they leave the hand only by [`push_batches`](Self::push_batches),
/// [`fail`](Self::fail) or its `Drop`, which lets go of what is left.
pub(crate) struct Hand<'q, K: Hash, V> {
    queue: &'q WorkQueue<K, V>,
    pooled: Vec<Option<Pooled<K, V>>>,
}

impl<K: Hash, V> Hand<'_, K, V> {
    /// The entries held, by position (`None` once placed or let go).
    pub(crate) fn pooled(&self) -> &[Option<Pooled<K, V>>] {
        &self.pooled
    }

    /// Lets go of the entries at `positions` (they need no sync: removed, terminal, pending
    /// delete). Returns the ids whose limiter state the caller must forget.
    pub(crate) fn leave(&mut self, positions: &[usize]) -> Vec<K> {
        let items = positions.iter().filter_map(|&p| self.pooled[p].take()).map(|p| p.item);
        self.queue.let_go(items, Event::Leave)
    }

    /// Queues the batches the batcher formed, given as positions in the hand (a position
    /// repeated or already placed is skipped), each with when its oldest entry became due;
    /// lets go of the entries left out of every batch. Returns the ids whose limiter state
    /// the caller must forget.
    pub(crate) fn push_batches(&mut self, batches: &[Vec<usize>]) -> Vec<K> {
        let mut formed = Vec::with_capacity(batches.len());
        for positions in batches {
            let mut batch = Vec::with_capacity(positions.len());
            let mut due: Option<Instant> = None;
            for &position in positions {
                if let Some(pooled) = self.pooled.get_mut(position).and_then(Option::take) {
                    due = Some(due.map_or(pooled.due, |d| d.min(pooled.due)));
                    batch.push(pooled.item);
                }
            }
            if let Some(due) = due {
                formed.push((batch, due));
            }
        }
        let pushed = {
            let mut inner = self.queue.inner.lock();
            if inner.closed {
                let dropped = formed.into_iter().flat_map(|(batch, _)| batch);
                drop(inner);
                self.queue.let_go(dropped, Event::Close);
                0
            } else {
                let mut pushed = 0;
                for (batch, due) in formed {
                    inner.marks.push_back(Mark { len: batch.len(), due });
                    inner.items.extend(batch);
                    pushed += 1;
                }
                pushed
            }
        };
        self.queue.wake_workers(pushed);
        let left_out = self.pooled.drain(..).flatten().map(|pooled| pooled.item);
        self.queue.let_go(left_out, Event::Leave)
    }

    /// The batcher failed: each entry held is retried after the backoff given for it, in
    /// order (the limiter was asked). Returns the ids of those removed meanwhile, which the
    /// caller must `forget`: their backoff was just recorded, perhaps after the removal
    /// forgot them.
    pub(crate) fn fail(&mut self, backoffs: &[Duration]) -> Vec<K> {
        let now = Instant::now();
        let held: Vec<_> = self.pooled.drain(..).flatten().map(|pooled| pooled.item).collect();
        let mut gone = Vec::new();
        let mut counted = Counted::default();
        let mut unpaired = Vec::new();
        {
            let mut inner = self.queue.inner.lock();
            for (position, item) in held.into_iter().enumerate() {
                // One backoff is asked for each entry; one without is let go all the same.
                let Some(&backoff) = backoffs.get(position) else {
                    unpaired.push(item);
                    continue;
                };
                let ticket = inner.delayed.ticket();
                let event = if inner.closed { Event::Close } else { Event::Delay { ticket } };
                match step(&item.entry, event) {
                    Ok(stepped) => {
                        counted.add(&stepped);
                        if inner.closed {
                            gone.push(item.id);
                        } else {
                            inner.delayed.insert(ticket, deadline(now, backoff), item);
                        }
                    }
                    Err(_) => gone.push(item.id),
                }
            }
        }
        self.queue.count(counted);
        gone.extend(self.queue.let_go(unpaired, Event::Leave));
        self.queue.dispatcher_wake.notify_one();
        gone
    }
}

impl<K: Hash, V> Drop for Hand<'_, K, V> {
    fn drop(&mut self) {
        let held = self.pooled.drain(..).flatten().map(|pooled| pooled.item);
        self.queue.let_go(held, Event::Abandon);
    }
}

/// A sweep hands its claimed entries to the queue this many at a time.
const SWEEP_CHUNK: usize = 4096;

/// A sweep's hand into the queue: claims each due entry with one compare-and-swap and queues
/// the claimed ones a chunk at a time. Dropped without [`finish`](Self::finish) (a sweep that
/// panicked), it still queues what it claimed: a claimed entry left out would never be queued
/// again.
pub(crate) struct Sweeper<'q, K: Hash, V> {
    queue: &'q WorkQueue<K, V>,
    batch_size: Option<NonZeroUsize>,
    /// Claimed entries are queued once this many wait.
    chunk: usize,
    items: Vec<Queued<K, V>>,
    /// The claims' changes of the counters, applied with each chunk.
    counted: Counted,
    added: usize,
}

impl<K: Hash + Clone, V> Sweeper<'_, K, V> {
    /// Makes `entry` due, unless it is due already; an entry in flight runs once more after.
    pub(crate) fn offer(&mut self, id: &K, entry: &EntryHandle<V>) {
        let Some(stepped) = self.queue.claim(entry) else { return };
        self.counted.add(&stepped);
        self.added += 1;
        if !stepped.enqueued() {
            return; // in flight: it runs again when its call ends
        }
        // `Clone` is user code: should it panic, the entry just claimed is let go.
        let mut abandon = AbandonOnUnwind { queue: self.queue, entry: Some(entry) };
        let hash = self.queue.hasher.hash_one(id);
        let id = id.clone();
        abandon.entry = None;
        if self.items.capacity() == 0 {
            self.items.reserve(self.chunk);
        }
        self.items.push(Queued { id, hash, entry: entry.clone() });
        if self.items.len() >= self.chunk {
            self.flush(false);
        }
    }

    /// Queues what is left; returns how many entries the sweep made due.
    pub(crate) fn finish(mut self) -> usize {
        self.flush(true);
        self.added
    }

    fn flush(&mut self, last: bool) {
        self.queue.count(std::mem::take(&mut self.counted));
        if !self.items.is_empty() {
            self.queue.push_swept(&mut self.items, self.batch_size, last);
        }
    }
}

impl<K: Hash, V> Drop for Sweeper<'_, K, V> {
    fn drop(&mut self) {
        self.queue.count(std::mem::take(&mut self.counted));
        if !self.items.is_empty() {
            self.queue.push_swept(&mut self.items, self.batch_size, true);
        }
    }
}

/// Lets go of one claimed entry if dropped: armed around user code that runs between a claim
/// and the entry's placing, and forgotten once that code returned.
struct AbandonOnUnwind<'q, 'e, K: Hash, V> {
    queue: &'q WorkQueue<K, V>,
    entry: Option<&'e EntryHandle<V>>,
}

impl<K: Hash, V> Drop for AbandonOnUnwind<'_, '_, K, V> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry {
            if let Ok(stepped) = step(entry, Event::Abandon) {
                let mut counted = Counted::default();
                counted.add(&stepped);
                self.queue.count(counted);
            }
        }
    }
}

#[cfg(test)]
mod tests;
