//! The work queue: which entries are due for a sync, and which are in flight.
//!
//! It keeps client-go's dedupe rules (an entry waiting or in flight is never queued twice,
//! and an add while it is in flight makes it run once more afterwards), with the per-item
//! state kept in the entry itself rather than in a map keyed by id: each [`EntryHandle`]
//! carries one atomic word, its [`QueueState`], as a tokio task carries its state. Claiming an
//! entry for the queue, handing it to a worker and finishing it are each one compare-and-swap
//! on that word; no id is hashed or compared on the common path, and an id is cloned once, by
//! the sweep (the worker clones it once more for the sync function's batch).
//!
//! An entry moves `Idle` → `Queued` (in the pool, with the batcher, or in a batch waiting for
//! a worker) → `Running` → `Idle`, or back to `Queued` (it became due again while in flight,
//! or a retry without backoff) or to `Delayed` (a retry after its backoff). Every `Queued`
//! entry is held by exactly one place (the pool, the batcher's hands, or the batch deque), so
//! the compare-and-swap `Queued` → `Running` a worker makes hands it to one worker only.
//!
//! Retries with a backoff are rare, and wait in a small ordered map of deadlines; an entry's
//! `Delayed` slot names its record there (a ticket), and every change into or out of
//! `Delayed` is made under the queue's lock, so a record and its slot always agree. An earlier
//! deadline wins over a later one: a sweep (or a create) claims a delayed entry at once and
//! drops its record.
//!
//! Removal (delete, eviction, a delayed delete, expiry) marks the entry
//! [`EntryState::Removed`](autorefresh_core::EntryState) and calls [`WorkQueue::remove`],
//! which needs no lookup: a queued entry goes back to `Idle` (the worker that later pops it
//! skips it), a delayed one drops its record, and one in flight is flagged so that it leaves
//! the queue when its batch ends instead of running again.
//!
//! Identity is per entry, not per id: an id deleted and created again gets a new entry, with
//! its own state word, queued independently of the old one. Two syncs for the same id are
//! still never in flight at once: removing an entry that is in flight records its id in a
//! small map (`retired`) until its batch ends, and a worker that pops a new entry for an id
//! recorded there parks it (still `Queued`) until then. Workers look at that map only while it
//! holds an id (one atomic load otherwise). The record is made when the cache tells the queue
//! of the removal, just after the store dropped the entry; a new entry created for the id by
//! another thread and handed to a worker within that instant could overlap with the old
//! call. The old call's result is dropped either way (it applies only to the entry and
//! version it was dispatched with).
//!
//! For the metrics, the queue counts the entries `Queued` (the depth) and `Running` in two
//! atomics, changed once per batch or sweep chunk; each batch carries when its oldest entry
//! became due (the queue latency; a sweep's entries become due when their chunk is queued).
//!
//! The queue never calls user code and never touches the store, so its lock is only ever
//! held to move entries between its deques.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autorefresh_core::{EntryHandle, QueueSlot, QueueState};
use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How one entry's attempt ended, as reported to [`WorkQueue::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Synced, or no longer needs syncing (terminal, removed, pending delete): leaves the
    /// queue unless it became due again meanwhile.
    Done,
    /// The batch failed: retry after this backoff, or at once if it became due again
    /// meanwhile.
    Retry(Duration),
}

/// An id with its entry, as the queue holds and hands them out.
pub(crate) struct Queued<K, V> {
    pub(crate) id: K,
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

/// An entry that left the store while in flight, and the new entries for its id that wait
/// until its batch ends.
struct Retired<K, V> {
    old: EntryHandle<V>,
    waiting: Vec<Queued<K, V>>,
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
    /// removed since, no longer `Queued`: the worker skips them).
    items: VecDeque<Queued<K, V>>,
    /// The batches' lengths, in the order of `items`.
    marks: VecDeque<Mark>,
    delayed: Delayed<K, V>,
    closed: bool,
}

/// The queue shared by the cache, the dispatcher and the workers.
pub(crate) struct WorkQueue<K, V> {
    inner: Mutex<Inner<K, V>>,
    /// Entries in `QueueSlot::Queued`: due and not yet handed to a worker.
    queued: AtomicUsize,
    /// Entries in `QueueSlot::Running`.
    running: AtomicUsize,
    /// Ids whose entry left the store while in flight, until its batch ends: a new entry for
    /// the same id waits for it there.
    retired: Mutex<HashMap<K, Retired<K, V>>>,
    /// How many ids `retired` holds: workers look there only when it holds any.
    retired_count: AtomicUsize,
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
            + inner.delayed.len();
        f.debug_struct("WorkQueue")
            .field("entries", &tracked)
            .field("pool", &inner.pool.len())
            .field("batches", &inner.marks.len())
            .field("delayed", &inner.delayed.len())
            .finish()
    }
}

/// Figures of the queue at one instant.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    /// Entries the queue tracks in any slot.
    pub(crate) tracked: usize,
    /// Entries due and not yet handed to a worker.
    pub(crate) ready: usize,
    /// Entries waiting for a retry deadline.
    pub(crate) delayed: usize,
    /// Entries in flight.
    pub(crate) running: usize,
}

/// What claiming an entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// It is now `Queued`: the claimer must put it in the pool or a batch.
    Queued,
    /// It was in flight: it runs once more afterwards.
    Again,
    /// It was due or flagged already.
    Already,
}

/// The state change that makes an entry due, or `None` if it needs none (or, for a delayed
/// entry when `delayed_ok` is false, needs the queue's lock).
fn due(state: QueueState, delayed_ok: bool) -> Option<QueueState> {
    let slot = match state.slot {
        QueueSlot::Idle => QueueSlot::Queued,
        QueueSlot::Delayed { .. } if delayed_ok => QueueSlot::Queued,
        QueueSlot::Running { again: false, removed: false } => {
            QueueSlot::Running { again: true, removed: false }
        }
        _ => return None,
    };
    Some(QueueState { slot, ..state })
}

fn claim_of(previous: QueueSlot) -> Claim {
    match previous {
        QueueSlot::Running { .. } => Claim::Again,
        _ => Claim::Queued,
    }
}

impl<K: Hash + Eq + Clone, V> WorkQueue<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                pool: Vec::new(),
                items: VecDeque::new(),
                marks: VecDeque::new(),
                delayed: Delayed::new(),
                closed: false,
            }),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            retired: Mutex::new(HashMap::default()),
            retired_count: AtomicUsize::new(0),
            dispatcher_wake: Notify::new(),
            batch_ready: Notify::new(),
            idle: AtomicUsize::new(0),
        }
    }

    /// Makes `entry` due: one compare-and-swap, or the lock for a delayed entry.
    fn claim(&self, entry: &EntryHandle<V>) -> Claim {
        match entry.update_queue_state(|state| due(state, false)) {
            Ok(previous) => claim_of(previous.slot),
            Err(QueueState { slot: QueueSlot::Delayed { .. }, .. }) => {
                self.claim_locked(&mut self.inner.lock(), entry)
            }
            Err(_) => Claim::Already,
        }
    }

    /// As [`claim`](Self::claim), under the lock: a delayed entry's record is dropped.
    fn claim_locked(&self, inner: &mut Inner<K, V>, entry: &EntryHandle<V>) -> Claim {
        match entry.update_queue_state(|state| due(state, true)) {
            Ok(previous) => {
                if let QueueSlot::Delayed { ticket } = previous.slot {
                    inner.delayed.remove(ticket);
                }
                claim_of(previous.slot)
            }
            Err(_) => Claim::Already,
        }
    }

    /// Makes `id` due now (a create); returns whether it was not due already.
    pub(crate) fn add(&self, id: K, entry: EntryHandle<V>) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if inner.closed {
            return false;
        }
        match self.claim_locked(&mut inner, &entry) {
            Claim::Queued => {
                let was_empty = inner.pool.is_empty();
                inner.pool.push(Pooled { item: Queued { id, entry }, due: now });
                self.queued.fetch_add(1, Ordering::Relaxed);
                drop(inner);
                if was_empty {
                    self.dispatcher_wake.notify_one();
                }
                true
            }
            Claim::Again => true,
            Claim::Already => false,
        }
    }

    /// A sweep's hand into the queue: see [`Sweeper::offer`]. With a fixed `batch_size`, it
    /// forms the batches itself as it goes; otherwise it fills the pool for the batcher.
    pub(crate) fn sweeper(&self, batch_size: Option<NonZeroUsize>) -> Sweeper<'_, K, V> {
        // Queued in chunks of whole batches (a batch larger than a chunk is one chunk).
        let chunk = batch_size.map_or(SWEEP_CHUNK, |size| SWEEP_CHUNK.max(size.get()));
        Sweeper { queue: self, batch_size, chunk, items: Vec::new(), added: 0 }
    }

    /// The entry left the store (it is marked removed): a queued one leaves the queue (the
    /// worker that pops it skips it), a delayed one drops its retry, one in flight is not
    /// queued again when its batch ends.
    pub(crate) fn remove(&self, id: &K, entry: &EntryHandle<V>) {
        let change = |state: QueueState, delayed_ok: bool| {
            let slot = match state.slot {
                QueueSlot::Queued => QueueSlot::Idle,
                QueueSlot::Delayed { .. } if delayed_ok => QueueSlot::Idle,
                QueueSlot::Running { removed: false, .. } => {
                    QueueSlot::Running { again: false, removed: true }
                }
                _ => return None,
            };
            Some(QueueState { slot, ..state })
        };
        let previous = match entry.update_queue_state(|state| change(state, false)) {
            Err(QueueState { slot: QueueSlot::Delayed { .. }, .. }) => {
                let mut inner = self.inner.lock();
                match entry.update_queue_state(|state| change(state, true)) {
                    Ok(previous) => {
                        if let QueueSlot::Delayed { ticket } = previous.slot {
                            inner.delayed.remove(ticket);
                        }
                        previous
                    }
                    Err(_) => return,
                }
            }
            Ok(previous) => previous,
            Err(_) => return,
        };
        match previous.slot {
            QueueSlot::Queued => {
                decrement(&self.queued, 1);
            }
            QueueSlot::Running { .. } => {
                // Until its batch ends, a new entry for this id waits (see `pop_batch`).
                let mut retired = self.retired.lock();
                if let std::collections::hash_map::Entry::Vacant(vacant) = retired.entry(id.clone())
                {
                    vacant.insert(Retired { old: entry.clone(), waiting: Vec::new() });
                    self.retired_count.fetch_add(1, Ordering::Release);
                }
            }
            _ => {}
        }
    }

    /// The batches of `ended` (entries removed while in flight) ended: the new entries that
    /// waited for them are due.
    fn release(&self, ended: &[(K, EntryHandle<V>)]) {
        if ended.is_empty() || self.retired_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut waiting = Vec::new();
        {
            let mut retired = self.retired.lock();
            for (id, entry) in ended {
                if retired.get(id).is_some_and(|r| r.old.same_entry(entry)) {
                    if let Some(r) = retired.remove(id) {
                        waiting.extend(r.waiting);
                    }
                    decrement(&self.retired_count, 1);
                }
            }
        }
        if waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        let was_empty = inner.pool.is_empty();
        inner.pool.extend(waiting.into_iter().map(|item| Pooled { item, due: now }));
        drop(inner);
        if was_empty {
            self.dispatcher_wake.notify_one();
        }
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

    /// Hands the pooled entries to the batcher. They stay `Queued`: give each back with
    /// [`push_batches`](Self::push_batches), [`leave`](Self::leave) or
    /// [`fail_batching`](Self::fail_batching).
    pub(crate) fn take_pool(&self) -> Vec<Pooled<K, V>> {
        std::mem::take(&mut self.inner.lock().pool)
    }

    /// Queues the batches the batcher formed, each with when its oldest entry became due.
    pub(crate) fn push_batches(&self, batches: Vec<(Vec<Queued<K, V>>, Instant)>) {
        let pushed = {
            let mut inner = self.inner.lock();
            let mut pushed = 0;
            for (batch, due) in batches {
                if batch.is_empty() {
                    continue;
                }
                inner.marks.push_back(Mark { len: batch.len(), due });
                inner.items.extend(batch);
                pushed += 1;
            }
            pushed
        };
        self.wake_workers(pushed);
    }

    /// Taken entries the batcher left out of every batch leave the queue (the next sweep
    /// brings them back). Returns those with limiter state, which the caller must `forget`.
    pub(crate) fn leave(&self, items: impl IntoIterator<Item = Queued<K, V>>) -> Vec<K> {
        let mut backed_off = Vec::new();
        let mut left = 0;
        for item in items {
            let queued = item.entry.update_queue_state(|state| {
                (state.slot == QueueSlot::Queued)
                    .then_some(QueueState { slot: QueueSlot::Idle, backed_off: false })
            });
            if let Ok(previous) = queued {
                left += 1;
                if previous.backed_off {
                    backed_off.push(item.id);
                }
            }
        }
        decrement(&self.queued, left);
        backed_off
    }

    /// The batcher failed on the taken entries: each is retried after its backoff (the
    /// limiter was asked). Returns the ids of those removed meanwhile, which the caller must
    /// `forget`: their backoff was just recorded, perhaps after the removal forgot them.
    pub(crate) fn fail_batching(&self, items: Vec<(Queued<K, V>, Duration)>) -> Vec<K> {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut delayed = 0;
        {
            let mut inner = self.inner.lock();
            for (item, backoff) in items {
                let ticket = inner.delayed.ticket();
                let queued = item.entry.update_queue_state(|state| {
                    (state.slot == QueueSlot::Queued).then_some(QueueState {
                        slot: QueueSlot::Delayed { ticket },
                        backed_off: true,
                    })
                });
                if queued.is_ok() {
                    delayed += 1;
                    if !inner.closed {
                        inner.delayed.insert(ticket, now + backoff, item);
                    }
                } else {
                    gone.push(item.id);
                }
            }
        }
        decrement(&self.queued, delayed);
        self.dispatcher_wake.notify_one();
        gone
    }

    /// The next batch for a worker, put in `into` (empty), its entries now in flight; waits
    /// until there is one.
    pub(crate) async fn next_batch(
        &self,
        scratch: &mut Vec<Queued<K, V>>,
        into: &mut Vec<TakenItem<K, V>>,
    ) -> BatchInfo {
        loop {
            // The common case while a sweep is being worked off: no waiting, no wake-up.
            if let Some(info) = self.pop_batch(scratch, into) {
                return info;
            }
            let notified = self.batch_ready.notified();
            // Announced before looking again: a batch pushed after that look sees an idle
            // worker and wakes it (`notify_one` keeps a permit if it is not waiting yet).
            let _idle = IdleGuard::enter(&self.idle);
            if let Some(info) = self.pop_batch(scratch, into) {
                return info;
            }
            notified.await;
        }
    }

    fn pop_batch(
        &self,
        scratch: &mut Vec<Queued<K, V>>,
        into: &mut Vec<TakenItem<K, V>>,
    ) -> Option<BatchInfo> {
        loop {
            let (due, more) = {
                let mut inner = self.inner.lock();
                let mark = inner.marks.pop_front()?;
                scratch.extend(inner.items.drain(..mark.len));
                if inner.marks.is_empty() && inner.items.capacity() > SHRINK_ABOVE {
                    // Idle again after a large sweep: give the memory back.
                    inner.items = VecDeque::new();
                    inner.marks = VecDeque::new();
                }
                (mark.due, !inner.marks.is_empty())
            };
            // Chain the wake-up: the next idle worker takes the next batch.
            if more && self.idle.load(Ordering::SeqCst) > 0 {
                self.batch_ready.notify_one();
            }
            if scratch.len() > 1 {
                // Touch every entry first: these loads miss the cache and may overlap, where
                // the compare-and-swaps below would wait for each miss in turn.
                let mut sum = 0_u64;
                for item in scratch.iter() {
                    sum = sum.wrapping_add(u64::from(item.entry.queue_state().backed_off));
                }
                std::hint::black_box(sum);
            }
            if self.retired_count.load(Ordering::Acquire) > 0 {
                // A new entry whose id's old entry is still in flight waits for it.
                let mut retired = self.retired.lock();
                scratch.retain_mut(|item| match retired.get_mut(&item.id) {
                    Some(r) if !r.old.same_entry(&item.entry) => {
                        let id = item.id.clone();
                        let entry = item.entry.clone();
                        r.waiting.push(Queued { id, entry });
                        false
                    }
                    _ => true,
                });
            }
            for Queued { id, entry } in scratch.drain(..) {
                let running = entry.update_queue_state(|state| {
                    (state.slot == QueueSlot::Queued).then_some(QueueState {
                        slot: QueueSlot::Running { again: false, removed: false },
                        ..state
                    })
                });
                // Not queued: removed since it was batched.
                if let Ok(previous) = running {
                    into.push(TakenItem { id, entry, backed_off: previous.backed_off });
                }
            }
            if !into.is_empty() {
                self.running.fetch_add(into.len(), Ordering::Relaxed);
                let depth = decrement(&self.queued, into.len());
                return Some(BatchInfo { oldest_due: due, depth });
            }
        }
    }

    /// How many entries are due and not yet handed to a worker.
    pub(crate) fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Records how each entry of a finished batch ended. `backed_off` says whether the
    /// limiter holds state for it now (a retry asked it; a success was followed by a
    /// `forget`). Returns the ids of entries removed from the store while in flight, or that
    /// failed after the queue closed, whose limiter state the caller must drop (again: a
    /// failure may have recorded one after the removal forgot it).
    pub(crate) fn finish(
        &self,
        outcomes: impl IntoIterator<Item = (K, EntryHandle<V>, Outcome)>,
    ) -> Vec<K> {
        let mut removed_in_flight = Vec::new();
        let mut ended = Vec::new();
        let mut to_pool = Vec::new();
        let mut to_delay = Vec::new();
        let mut finished = 0;
        for (id, entry, outcome) in outcomes {
            finished += 1;
            let retried = matches!(outcome, Outcome::Retry(_));
            let changed = entry.update_queue_state(|state| {
                let QueueSlot::Running { again, removed } = state.slot else { return None };
                let slot = if removed {
                    QueueSlot::Idle
                } else if again || outcome == Outcome::Retry(Duration::ZERO) {
                    QueueSlot::Queued
                } else if retried {
                    return None; // delayed, under the lock
                } else {
                    QueueSlot::Idle
                };
                Some(QueueState { slot, backed_off: retried && !removed })
            });
            match changed {
                Ok(previous) => {
                    if matches!(previous.slot, QueueSlot::Running { removed: true, .. }) {
                        if retried {
                            removed_in_flight.push(id.clone());
                        }
                        ended.push((id, entry));
                    } else if matches!(previous.slot, QueueSlot::Running { again: true, .. })
                        || outcome == Outcome::Retry(Duration::ZERO)
                    {
                        to_pool.push((Queued { id, entry }, retried));
                    }
                }
                Err(QueueState { slot: QueueSlot::Running { .. }, .. }) => {
                    if let Outcome::Retry(backoff) = outcome {
                        to_delay.push((Queued { id, entry }, backoff));
                    }
                }
                Err(_) => {
                    // Not in flight any more: only a closed queue lets go of its entries.
                    if retried {
                        removed_in_flight.push(id);
                    }
                }
            }
        }
        decrement(&self.running, finished);
        if to_pool.is_empty() && to_delay.is_empty() {
            self.release(&ended);
            return removed_in_flight;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if inner.closed {
            // Shut down while this batch ran: nothing is queued any more, and a retry's
            // backoff was recorded with nobody left to forget it.
            let retried = to_pool.into_iter().filter(|(_, retried)| *retried);
            removed_in_flight.extend(retried.map(|(item, _)| item.id));
            removed_in_flight.extend(to_delay.into_iter().map(|(item, _)| item.id));
            return removed_in_flight;
        }
        let was_empty = inner.pool.is_empty();
        let earliest = inner.delayed.earliest();
        let mut queued = to_pool.len();
        for (item, backoff) in to_delay {
            let ticket = inner.delayed.ticket();
            let changed = item.entry.update_queue_state(|state| {
                let QueueSlot::Running { again, removed } = state.slot else { return None };
                let slot = if removed {
                    QueueSlot::Idle
                } else if again {
                    QueueSlot::Queued
                } else {
                    QueueSlot::Delayed { ticket }
                };
                Some(QueueState { slot, backed_off: !removed })
            });
            match changed {
                Ok(QueueState { slot: QueueSlot::Running { removed: true, .. }, .. }) => {
                    removed_in_flight.push(item.id.clone());
                    ended.push((item.id, item.entry));
                }
                Ok(QueueState { slot: QueueSlot::Running { again: true, .. }, .. }) => {
                    to_pool.push((item, true));
                    queued += 1;
                }
                Ok(_) => inner.delayed.insert(ticket, now + backoff, item),
                Err(_) => {}
            }
        }
        self.queued.fetch_add(queued, Ordering::Relaxed);
        inner.pool.extend(to_pool.into_iter().map(|(item, _)| Pooled { item, due: now }));
        let new_earliest = inner.delayed.earliest();
        let wake = (was_empty && !inner.pool.is_empty())
            || new_earliest.is_some_and(|new| earliest.is_none_or(|old| new < old));
        drop(inner);
        if wake {
            self.dispatcher_wake.notify_one();
        }
        self.release(&ended);
        removed_in_flight
    }

    /// Moves every retry whose deadline passed into the pool; returns the next deadline.
    pub(crate) fn promote_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let mut promoted = 0;
        let next = loop {
            let Some(entry) = inner.delayed.by_deadline.first_entry() else { break None };
            let (deadline, ticket) = *entry.key();
            if deadline > now {
                break Some(deadline);
            }
            let item = entry.remove();
            inner.delayed.deadline_of.remove(&ticket);
            let queued = item.entry.update_queue_state(|state| {
                (state.slot == QueueSlot::Delayed { ticket })
                    .then_some(QueueState { slot: QueueSlot::Queued, ..state })
            });
            if queued.is_ok() {
                promoted += 1;
                inner.pool.push(Pooled { item, due: now });
            }
        };
        self.queued.fetch_add(promoted, Ordering::Relaxed);
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

    /// Stops queueing for good: drops every queued, delayed and in-flight entry (shutdown).
    /// Later adds are ignored.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.pool = Vec::new();
        inner.items = VecDeque::new();
        inner.marks = VecDeque::new();
        inner.delayed = Delayed::new();
        self.queued.store(0, Ordering::Relaxed);
        self.running.store(0, Ordering::Relaxed);
        drop(inner);
        *self.retired.lock() = HashMap::default();
        self.retired_count.store(0, Ordering::Release);
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
            items.clear();
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
                self.queued.fetch_add(full, Ordering::Relaxed);
                full.div_ceil(size)
            }
            None => {
                let was_empty = inner.pool.is_empty();
                inner.pool.extend(items.drain(..).map(|item| Pooled { item, due: now }));
                self.queued.fetch_add(count, Ordering::Relaxed);
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
        QueueStats { tracked: ready + running + delayed, ready, delayed, running }
    }
}

/// Takes `n` from `counter`, never below 0 (a shutdown may have reset it); returns what is
/// left.
fn decrement(counter: &AtomicUsize, n: usize) -> usize {
    if n == 0 {
        return counter.load(Ordering::Relaxed);
    }
    let previous = counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_sub(n)))
        .unwrap_or_else(|c| c);
    previous.saturating_sub(n)
}

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

/// A sweep hands its claimed entries to the queue this many at a time.
const SWEEP_CHUNK: usize = 4096;

/// A sweep's hand into the queue: claims each due entry with one compare-and-swap and queues
/// the claimed ones a chunk at a time. Dropped without [`finish`](Self::finish) (a sweep that
/// panicked), it still queues what it claimed: a claimed entry left out would never be queued
/// again.
pub(crate) struct Sweeper<'q, K: Hash + Eq + Clone, V> {
    queue: &'q WorkQueue<K, V>,
    batch_size: Option<NonZeroUsize>,
    /// Claimed entries are queued once this many wait.
    chunk: usize,
    items: Vec<Queued<K, V>>,
    added: usize,
}

impl<K: Hash + Eq + Clone, V> Sweeper<'_, K, V> {
    /// Makes `entry` due, unless it is due already; an entry in flight runs once more after.
    pub(crate) fn offer(&mut self, id: &K, entry: &EntryHandle<V>) {
        match self.queue.claim(entry) {
            Claim::Queued => {
                if self.items.capacity() == 0 {
                    self.items.reserve(self.chunk);
                }
                self.items.push(Queued { id: id.clone(), entry: entry.clone() });
                self.added += 1;
                if self.items.len() >= self.chunk {
                    self.queue.push_swept(&mut self.items, self.batch_size, false);
                }
            }
            Claim::Again => self.added += 1,
            Claim::Already => {}
        }
    }

    /// Queues what is left; returns how many entries the sweep made due.
    pub(crate) fn finish(mut self) -> usize {
        self.flush();
        self.added
    }

    fn flush(&mut self) {
        if !self.items.is_empty() {
            self.queue.push_swept(&mut self.items, self.batch_size, true);
        }
    }
}

impl<K: Hash + Eq + Clone, V> Drop for Sweeper<'_, K, V> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Queue = WorkQueue<&'static str, u32>;

    fn queue() -> Queue {
        WorkQueue::new()
    }

    fn pop(queue: &Queue) -> Option<Vec<TakenItem<&'static str, u32>>> {
        let mut into = Vec::new();
        queue.pop_batch(&mut Vec::new(), &mut into).map(|_| into)
    }

    fn ids(batch: &[TakenItem<&'static str, u32>]) -> Vec<&'static str> {
        batch.iter().map(|item| item.id).collect()
    }

    /// Batches the pool as one batch, as the dispatcher does with a batcher.
    fn batch_all(queue: &Queue) {
        let taken = queue.take_pool();
        let due = taken.iter().map(|p| p.due).min().unwrap_or_else(Instant::now);
        queue.push_batches(vec![(taken.into_iter().map(|p| p.item).collect(), due)]);
    }

    fn finish(queue: &Queue, batch: Vec<TakenItem<&'static str, u32>>, outcome: Outcome) {
        queue.finish(batch.into_iter().map(|t| (t.id, t.entry, outcome)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_queued_once_and_runs_again_if_added_in_flight() {
        let queue = queue();
        let a = EntryHandle::new(1);
        assert!(queue.add("a", a.clone()));
        assert!(!queue.add("a", a.clone()), "already due");
        batch_all(&queue);
        let batch = pop(&queue).unwrap();
        assert_eq!(ids(&batch), ["a"]);
        assert!(pop(&queue).is_none());

        assert!(queue.add("a", a.clone())); // while in flight: never dispatched twice at once
        let mut sweep = queue.sweeper(Some(NonZeroUsize::MIN));
        sweep.offer(&"a", &a); // a sweep too
        assert_eq!(sweep.finish(), 0, "flagged once");
        batch_all(&queue);
        assert!(pop(&queue).is_none());
        assert_eq!(queue.stats().running, 1);

        finish(&queue, batch, Outcome::Done);
        batch_all(&queue);
        let again = pop(&queue).unwrap();
        assert_eq!(ids(&again), ["a"], "runs once more after");
        finish(&queue, again, Outcome::Done);
        assert_eq!(queue.stats(), QueueStats::default());
        assert_eq!(a.queue_state(), QueueState::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_batches_by_size_and_skips_what_is_due() {
        let queue = queue();
        let entries: Vec<_> = (0..5).map(EntryHandle::new).collect();
        queue.add("c", entries[2].clone()); // due already, in the pool
        let mut sweep = queue.sweeper(NonZeroUsize::new(2));
        for (id, entry) in ["a", "b", "c", "d", "e"].iter().zip(&entries) {
            sweep.offer(id, entry);
        }
        assert_eq!(sweep.finish(), 4);
        assert_eq!(ids(&pop(&queue).unwrap()), ["a", "b"]);
        assert_eq!(ids(&pop(&queue).unwrap()), ["d", "e"]);
        assert!(pop(&queue).is_none());
        assert_eq!(queue.stats().ready, 1, "c waits in the pool");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_queues_batches_larger_than_a_chunk_and_what_it_claimed_if_dropped() {
        let queue = queue();
        let size = NonZeroUsize::new(SWEEP_CHUNK + 10).unwrap();
        let entries: Vec<_> = (0..SWEEP_CHUNK + 15).map(|_| EntryHandle::new(0)).collect();
        let mut sweep = queue.sweeper(Some(size));
        for entry in &entries {
            sweep.offer(&"x", entry);
        }
        assert_eq!(sweep.finish(), SWEEP_CHUNK + 15);
        assert_eq!(pop(&queue).unwrap().len(), SWEEP_CHUNK + 10);
        assert_eq!(pop(&queue).unwrap().len(), 5);

        let a = EntryHandle::new(0);
        let mut sweep = queue.sweeper(Some(size));
        sweep.offer(&"a", &a);
        drop(sweep); // a sweep that panicked
        assert_eq!(ids(&pop(&queue).unwrap()), ["a"], "claimed, so queued");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_its_deadline_unless_added_sooner() {
        let queue = queue();
        let a = EntryHandle::new(1);
        queue.add("a", a.clone());
        batch_all(&queue);
        finish(&queue, pop(&queue).unwrap(), Outcome::Retry(Duration::from_secs(10)));
        assert_eq!(queue.stats().delayed, 1);
        assert!(a.queue_state().backed_off);
        let deadline = queue.promote_due().unwrap();
        assert_eq!(deadline - Instant::now(), Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(3)).await;
        let mut sweep = queue.sweeper(None);
        sweep.offer(&"a", &a); // a sweep: the earlier deadline wins
        assert_eq!(sweep.finish(), 1);
        assert_eq!(queue.promote_due(), None, "no longer delayed");
        assert_eq!(queue.stats(), QueueStats { tracked: 1, ready: 1, ..QueueStats::default() });

        batch_all(&queue);
        let batch = pop(&queue).unwrap();
        assert!(batch[0].backed_off, "the limiter still holds its failures");
        finish(&queue, batch, Outcome::Retry(Duration::from_secs(1)));
        assert!(queue.promote_due().is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(queue.promote_due(), None);
        assert!(queue.has_pooled());

        batch_all(&queue);
        finish(&queue, pop(&queue).unwrap(), Outcome::Retry(Duration::ZERO));
        assert!(queue.has_pooled(), "no backoff: due at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_entry_leaves_the_queue_wherever_it_is() {
        let queue = queue();
        // In flight: not queued again, and its backoff is handed back to forget.
        let a = EntryHandle::new(1);
        queue.add("a", a.clone());
        batch_all(&queue);
        let batch = pop(&queue).unwrap();
        queue.add("a", a.clone());
        a.mark_removed();
        queue.remove(&"a", &a);
        let forget = queue.finish(
            batch.into_iter().map(|t| (t.id, t.entry, Outcome::Retry(Duration::from_secs(1)))),
        );
        assert_eq!(forget, ["a"]);
        assert_eq!(queue.stats(), QueueStats::default(), "removed while in flight: dropped");

        // Queued: the worker skips it.
        let b = EntryHandle::new(2);
        queue.add("b", b.clone());
        batch_all(&queue);
        b.mark_removed();
        queue.remove(&"b", &b);
        assert_eq!(queue.stats(), QueueStats::default());
        assert!(pop(&queue).is_none());

        // Delayed: its retry is dropped.
        let c = EntryHandle::new(3);
        queue.add("c", c.clone());
        batch_all(&queue);
        finish(&queue, pop(&queue).unwrap(), Outcome::Retry(Duration::from_secs(5)));
        assert_eq!(queue.stats().delayed, 1);
        c.mark_removed();
        queue.remove(&"c", &c);
        assert_eq!(queue.stats(), QueueStats::default());
        assert_eq!(queue.promote_due(), None);

        // Deleted and created again while in flight: the new entry waits for the old one.
        let old = EntryHandle::new(4);
        queue.add("d", old.clone());
        batch_all(&queue);
        let batch = pop(&queue).unwrap();
        old.mark_removed();
        queue.remove(&"d", &old);
        let new = EntryHandle::new(5);
        assert!(queue.add("d", new.clone()));
        queue.add("e", EntryHandle::new(6));
        batch_all(&queue);
        assert_eq!(ids(&pop(&queue).unwrap()), ["e"], "d waits: never two in flight");
        assert!(pop(&queue).is_none());
        finish(&queue, batch, Outcome::Done);
        batch_all(&queue);
        let next = pop(&queue).unwrap();
        assert!(next[0].entry.same_entry(&new), "released when the old one ended");
        finish(&queue, next, Outcome::Done);
        assert_eq!(queue.stats().tracked, 1, "e is still in flight");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_the_batcher_leaves_out_or_fails_on_are_handled() {
        let queue = queue();
        for id in ["a", "b"] {
            queue.add(id, EntryHandle::new(0));
        }
        let mut taken = queue.take_pool().into_iter().map(|p| p.item);
        let a = taken.next().unwrap();
        a.entry.update_queue_state(|s| Some(QueueState { backed_off: true, ..s })).unwrap();
        let forget = queue.leave([a]);
        assert_eq!(forget, ["a"], "left out, with limiter state to drop");
        assert_eq!(queue.stats().tracked, 1);

        let b = taken.next().unwrap();
        let gone = queue.fail_batching(vec![(b, Duration::from_secs(5))]);
        assert!(gone.is_empty());
        assert_eq!(queue.stats(), QueueStats { tracked: 1, delayed: 1, ..QueueStats::default() });
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_finishing_after_close_is_returned_for_its_limiter_state() {
        let queue = queue();
        queue.add("a", EntryHandle::new(1));
        queue.add("b", EntryHandle::new(2));
        queue.add("c", EntryHandle::new(3));
        batch_all(&queue);
        let batch = pop(&queue).unwrap();
        queue.close(); // shutdown while the batch was in flight
        let forget = queue.finish(batch.into_iter().map(|t| {
            let outcome = match t.id {
                "a" => Outcome::Retry(Duration::from_secs(1)),
                "b" => Outcome::Retry(Duration::ZERO),
                _ => Outcome::Done,
            };
            (t.id, t.entry, outcome)
        }));
        assert_eq!(
            forget,
            ["b", "a"],
            "the retries' backoff must be forgotten; a success has none"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_drops_everything_and_ignores_later_adds() {
        let queue = queue();
        queue.add("a", EntryHandle::new(0));
        let b = EntryHandle::new(0);
        queue.add("b", b.clone());
        batch_all(&queue);
        let batch = pop(&queue).unwrap();
        queue.close();
        queue.add("c", EntryHandle::new(0));
        finish(&queue, batch, Outcome::Retry(Duration::from_secs(1)));
        assert_eq!(queue.stats(), QueueStats::default());
        assert!(!queue.has_pooled());
    }
}
