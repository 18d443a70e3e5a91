//! The background refresh: the dispatcher (sweeps, retry timers, batching) and the workers.

use std::any::Any;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{
    EntryHandle, EntryState, EntryVersion, Item, ItemSyncResponse, ItemWrapper, RetryAfter,
    SyncAction, SyncFailureKind, SyncResult,
};
use foldhash::HashMap;
use futures_util::FutureExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::Shared;
use crate::queue::{BatchInfo, Outcome, Pooled, Queued, TakenItem, WorkQueue};
use crate::removal::RemovalCause;
use crate::sync_service::SyncPath;

/// How often the dispatcher reports the work in flight.
const UNFINISHED_WORK_PERIOD: Duration = Duration::from_secs(1);

/// The dispatcher task: every `resync_period` a sweep queues the non-terminal items; retries
/// are promoted when their deadline passes; due items are batched for the workers.
pub(crate) async fn run_dispatcher<K, V>(shared: Arc<Shared<K, V>>, cancel: CancellationToken)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    let mut sweeps = tokio::time::interval(shared.resync_period);
    sweeps.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reports = tokio::time::interval(UNFINISHED_WORK_PERIOD);
    reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let next_retry = shared.queue.promote_due();
        survive(&shared, "batching", || batch_due_items(&shared));
        let retry_timer = async {
            match next_retry {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Nothing will take queued work any more: stop queueing and let it go.
                let forget = shared.queue.close();
                survive(&shared, "shutdown", || forget_all(&shared, &forget));
                return;
            }
            _ = sweeps.tick() => survive(&shared, "sweep", || sweep(&shared)),
            () = retry_timer => {}
            () = shared.queue.dispatcher_woken() => {}
            _ = reports.tick() => survive(&shared, "report", || report_unfinished_work(&shared)),
        }
    }
}

/// Removes the items pending `delete_delayed`, then queues every live non-terminal item (but
/// those adaptive refresh, if on, lets wait) and removes the terminal ones past the terminal
/// TTL, if set.
fn sweep<K, V>(shared: &Shared<K, V>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    let _span = tracing::debug_span!("autorefresh.sweep", cache = %shared.name).entered();
    // Taken first: the guard of a `for` expression would be held through the whole loop, and
    // with it the callbacks into the queue, the limiter and the cluster.
    let pending = std::mem::take(&mut *shared.pending_deletes.lock());
    // Each one carried out even if user code panics on another.
    for_each_all(pending, |(id, entry)| {
        if shared.store.remove_entry(&id, &entry) {
            shared.forget(&id, &entry, RemovalCause::DeleteDelayed);
            if let Some(cluster) = &shared.cluster {
                cluster.deleted(&id);
            }
        }
    });
    if shared.notifier.watching() {
        shared.notifier.prune();
    }

    // Claimed entries go straight into batches when the batcher only cuts by position, so
    // workers start at once; otherwise into the pool, for the batcher.
    let mut sweeper = shared.queue.sweeper(shared.batcher.fixed_size());
    let mut stalest: Option<u64> = None;
    let now = shared.ticks();
    let terminal_ttl = shared.terminal_ttl;
    let adaptive = shared.adaptive;
    let mut expired = Vec::new();
    let cluster = shared.cluster.as_deref();
    // A cluster whose task panicked gives this instance nothing to refresh.
    let cluster_failed = shared.cluster_failed.load(Ordering::Relaxed);
    shared.store.for_each_entry(&mut |id, entry| {
        // Another instance of the cluster syncs this one (and expires it).
        if cluster.is_some_and(|cluster| cluster_failed || !cluster.refreshes(id)) {
            return;
        }
        // One read of the entry: locking it again inside the closure could deadlock.
        let due_since = entry.inspect_streak(|item, state, refreshed_at, streak| {
            if state != EntryState::Live {
                return None;
            }
            if !is_terminal(item) {
                // Adaptive refresh: an item that kept syncing unchanged waits longer.
                if adaptive.is_some_and(|a| a.skips(now, refreshed_at, streak)) {
                    return None;
                }
                return Some(refreshed_at);
            }
            if terminal_ttl.is_some_and(|ttl| now.saturating_sub(refreshed_at) >= ttl) {
                expired.push((id.clone(), entry.clone()));
            }
            None
        });
        if let Some(refreshed_at) = due_since {
            stalest = Some(stalest.map_or(refreshed_at, |s| s.min(refreshed_at)));
            sweeper.offer(id, entry);
        }
    });
    let added = sweeper.finish();
    if let Some(ttl) = terminal_ttl {
        expire_terminal(shared, expired, now, ttl);
    }
    shared.metrics.queue_added(added);
    shared.metrics.size(shared.store.len());
    // Nothing to refresh is nothing stale: an idle cache must not keep its last figure.
    let stalest = stalest.map_or(0, |stalest| shared.ticks().saturating_sub(stalest));
    shared.metrics.staleness(Duration::from_nanos(stalest));
    tracing::debug!(cache = %shared.name, queued = added, "sweep done");
}

/// Removes the items the sweep found terminal for at least `ttl`, checked again: one a caller
/// updated since is kept.
fn expire_terminal<K, V>(
    shared: &Shared<K, V>,
    expired: Vec<(K, EntryHandle<V>)>,
    now: u64,
    ttl: u64,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    for (id, entry) in expired {
        let snapshot = entry.snapshot();
        let still_expired = snapshot.state == EntryState::Live
            && is_terminal(&snapshot.item)
            && now.saturating_sub(snapshot.refreshed_at) >= ttl;
        // Checked and marked at once: an update after the snapshot wins.
        if still_expired
            && entry.mark_removed_if_version(snapshot.version)
            && shared.store.remove_entry(&id, &entry)
        {
            shared.forget(&id, &entry, RemovalCause::TerminalExpired);
            if let Some(cluster) = &shared.cluster {
                cluster.deleted(&id);
            }
        }
    }
}

/// Hands the due items to the batcher and queues its batches for the workers.
///
/// The entries taken from the pool stay in the queue's [`Hand`] while user code runs (the
/// items' `Clone` and `is_terminal`, the batcher, the ids' `Eq` and `Hash`, the limiter): a
/// panic there lets go of them for the next sweep instead of stranding them. The metrics and
/// the limiter's `forget` are told once every entry is placed.
fn batch_due_items<K, V>(shared: &Shared<K, V>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    if !shared.queue.has_pooled() {
        return;
    }
    if let Some(size) = shared.batcher.fixed_size() {
        shared.queue.batch_pool_in_runs(size);
        shared.metrics.queue_depth(shared.queue.depth());
        return;
    }
    let mut hand = shared.queue.take_pool();
    let mut items = Vec::with_capacity(hand.pooled().len());
    let mut gone = Vec::new();
    for (position, pooled) in hand.pooled().iter().enumerate() {
        let Some(pooled) = pooled else { continue };
        let snapshot = pooled.item.entry.snapshot();
        if snapshot.state == EntryState::Live && !is_terminal(&snapshot.item) {
            items.push(ItemWrapper::new(pooled.item.id.clone(), snapshot.item));
        } else {
            gone.push(position);
        }
    }
    let mut forget = hand.leave(&gone);
    let count = items.len();
    if count > 0 {
        let batches =
            std::panic::catch_unwind(AssertUnwindSafe(|| shared.batcher.create_batches(items)));
        let failure = match batches {
            Ok(Ok(batches)) => {
                let positions = match_batches(hand.pooled(), &batches);
                forget.extend(hand.push_batches(&positions));
                None
            }
            Ok(Err(err)) => {
                tracing::warn!(cache = %shared.name, items = count, error = %err, "batcher failed");
                Some(SyncFailureKind::Error)
            }
            Err(panic) => {
                tracing::warn!(
                    cache = %shared.name,
                    items = count,
                    panic = panic_message(&*panic),
                    "batcher panicked"
                );
                Some(SyncFailureKind::Panic)
            }
        };
        if let Some(kind) = failure {
            // Every entry given to the batcher is retried after its backoff.
            let held = hand.pooled().iter().flatten();
            let backoffs: Vec<Duration> =
                held.map(|pooled| shared.limiter.when(&pooled.item.id)).collect();
            forget.extend(hand.fail(&backoffs));
            drop(hand);
            forget_all(shared, &forget);
            shared.metrics.sync_error(kind, count);
            shared.metrics.retried(count);
            return;
        }
    }
    drop(hand);
    forget_all(shared, &forget);
    shared.metrics.queue_depth(shared.queue.depth());
}

/// Finds the held entry of each id the batcher put in a batch, by its position in the hand,
/// each at most once (an id it repeats or invents is dropped; a repeat is skipped when the
/// batches are placed).
fn match_batches<K, V>(
    held: &[Option<Pooled<K, V>>],
    batches: &[Vec<ItemWrapper<K, V>>],
) -> Vec<Vec<usize>>
where
    K: Hash + Eq,
{
    // Built only if the batches do not keep the held order.
    let mut index: Option<HashMap<&K, usize>> = None;
    let mut found = Vec::with_capacity(batches.len());
    let mut next = 0;
    for batch in batches {
        let mut positions = Vec::with_capacity(batch.len());
        for wrapper in batch {
            let position = if held
                .get(next)
                .is_some_and(|s| s.as_ref().is_some_and(|p| p.item.id == *wrapper.id()))
            {
                Some(next)
            } else {
                let index = index.get_or_insert_with(|| {
                    held.iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.as_ref().map(|p| (&p.item.id, i)))
                        .collect()
                });
                index.get(wrapper.id()).copied()
            };
            if let Some(position) = position {
                next = position + 1;
                positions.push(position);
            }
        }
        found.push(positions);
    }
    found
}

/// Reports the batches in flight: their summed running time and the longest one's.
fn report_unfinished_work<K, V>(shared: &Shared<K, V>) {
    let now = shared.ticks();
    let (mut total, mut longest) = (0_u64, 0_u64);
    for slot in shared.in_flight.iter() {
        let started = slot.load(Ordering::Relaxed);
        if started != 0 {
            let running = now.saturating_sub(started - 1);
            total = total.saturating_add(running);
            longest = longest.max(running);
        }
    }
    shared.metrics.unfinished_work(Duration::from_nanos(total), Duration::from_nanos(longest));
}

/// Worker `index`: takes batches until cancelled. A batch in flight at cancellation is
/// dropped (its entries given up, see [`Scratch`]).
pub(crate) async fn run_worker<K, V>(
    shared: Arc<Shared<K, V>>,
    index: usize,
    cancel: CancellationToken,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    // The cancellation is watched once for the worker's life, not once per batch: a
    // `cancelled()` future registers with the token's shared lock each time it is made.
    let work = async {
        let mut service = shared.sync.clone();
        let mut scratch = Scratch::new(Arc::clone(&shared.queue));
        loop {
            let outcome = AssertUnwindSafe(async {
                let info = shared
                    .queue
                    .next_batch(&mut scratch.popped, &mut scratch.release, &mut scratch.taken)
                    .await;
                sync_batch(&shared, index, &mut service, info, &mut scratch).await;
            })
            .catch_unwind()
            .await;
            if let Err(panic) = outcome {
                // User code outside the sync function (an id's `Hash` or `Clone`, an item's
                // `Clone`, a limiter, metrics) panicked: this worker goes on, with a fresh
                // service, and the batch's entries not yet finished are given up (the next
                // sweep brings them back): left running, they would never be queued again.
                tracing::error!(
                    cache = %shared.name,
                    panic = panic_message(&*panic),
                    "a worker caught a panic outside the sync function"
                );
                service = shared.sync.clone();
                scratch.give_up();
            }
            // Batches that complete at once never wait: yield now and then, so that the
            // cancellation and the other tasks get their turn.
            tokio::task::consume_budget().await;
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => {}
        () = work => {}
    }
}

/// A worker's buffers, kept from batch to batch so that a batch allocates little. Every
/// entry of the batch is in one of them until the queue is told how it ended, and user code
/// runs only while they hold it: should it panic (or the worker be cancelled), the entries
/// still held are given up, by [`give_up`](Self::give_up) or when the buffers are dropped.
struct Scratch<K: Hash, V> {
    queue: Arc<WorkQueue<K, V>>,
    /// Popped, still `Queued`: not yet started (empty but while a pop runs).
    popped: Vec<Queued<K, V>>,
    /// The ids (their hashes) of the calls that ended, released by the next pop.
    release: Vec<u64>,
    /// Started, not yet read.
    taken: Vec<TakenItem<K, V>>,
    /// The version each of `taken` was read at, or `None` if it needs no sync.
    versions: Vec<Option<EntryVersion>>,
    /// Taken entries that need no sync (not live, or terminal).
    skipped: Vec<TakenItem<K, V>>,
    dispatched: Vec<Dispatched<K, V>>,
    /// How each dispatched entry ended, in the order of `dispatched`.
    outcomes: Vec<Outcome>,
    changes: Vec<Change<V>>,
}

impl<K: Hash, V> Scratch<K, V> {
    fn new(queue: Arc<WorkQueue<K, V>>) -> Self {
        Self {
            queue,
            popped: Vec::new(),
            release: Vec::new(),
            taken: Vec::new(),
            versions: Vec::new(),
            skipped: Vec::new(),
            dispatched: Vec::new(),
            outcomes: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Gives up every entry still held: the popped ones go back to `Idle`, the started ones
    /// end as [`Outcome::Abandoned`] (their ids released).
    fn give_up(&mut self) {
        self.queue.abandon(&mut self.popped, &mut self.release);
        let taken = self.taken.drain(..).chain(self.skipped.drain(..));
        let started = taken.chain(self.dispatched.drain(..).map(|d| d.taken));
        // Abandoned entries owe the limiter nothing new: there is nothing to forget.
        let abandoned = started.map(|taken| (taken, Outcome::Abandoned));
        let _ = self.queue.finish(abandoned, &mut self.release);
        // No next pop may come: the ids are released now.
        self.queue.release(&mut self.release);
        self.versions.clear();
        self.outcomes.clear();
        self.changes.clear();
    }
}

impl<K: Hash, V> Drop for Scratch<K, V> {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// An item as dispatched: its entry (the result goes there), and the version it must still
/// have.
struct Dispatched<K, V> {
    taken: TakenItem<K, V>,
    version: EntryVersion,
}

async fn sync_batch<K, V>(
    shared: &Shared<K, V>,
    index: usize,
    service: &mut SyncPath<K, V>,
    info: BatchInfo,
    scratch: &mut Scratch<K, V>,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    // The clock is read twice per batch: here and when the call returns.
    let popped_at = Instant::now();
    let now = shared.ticks_at(popped_at);
    shared.metrics.queue_latency(popped_at.saturating_duration_since(info.oldest_due));
    shared.metrics.queue_depth(info.depth);
    let mut wrappers = Vec::with_capacity(scratch.taken.len());
    let mut stalest = now;
    // Read first (user code: the items' `Clone` and `is_terminal`, the ids' `Clone`), every
    // entry staying in `taken`; sorted out after, with no user code.
    scratch.versions.clear();
    for taken in &scratch.taken {
        let snapshot = taken.entry.snapshot();
        let version = (snapshot.state == EntryState::Live && !is_terminal(&snapshot.item))
            .then_some(snapshot.version);
        if version.is_some() {
            stalest = stalest.min(snapshot.refreshed_at);
            wrappers.push(ItemWrapper::new(taken.id.clone(), snapshot.item));
        }
        scratch.versions.push(version);
    }
    for (taken, version) in scratch.taken.drain(..).zip(scratch.versions.drain(..)) {
        match version {
            Some(version) => scratch.dispatched.push(Dispatched { taken, version }),
            None => scratch.skipped.push(taken),
        }
    }
    if !scratch.skipped.is_empty() {
        for taken in scratch.skipped.iter().filter(|taken| taken.backed_off) {
            shared.limiter.forget(&taken.id);
        }
        let skipped = scratch.skipped.drain(..).map(|t| (t, Outcome::Done));
        let removed = shared.queue.finish(skipped, &mut scratch.release);
        // Released now, not at the next pop: the sync call of the rest may be long, and a new
        // entry of a removed id would wait for it.
        shared.queue.release(&mut scratch.release);
        forget_all(shared, &removed);
    }
    let dispatched = &mut scratch.dispatched;
    if dispatched.is_empty() {
        return;
    }
    shared.metrics.age_at_sync(Duration::from_nanos(now - stalest));
    let span = tracing::debug_span!(
        "autorefresh.batch",
        cache = %shared.name,
        items = dispatched.len(),
        attempt = shared.limiter.num_requeues(&dispatched[0].taken.id) + 1,
    );
    shared.in_flight[index].store(now + 1, Ordering::Relaxed);
    let result = call(service, wrappers).instrument(span.clone()).await;
    let returned_at = Instant::now();
    let elapsed = returned_at.saturating_duration_since(popped_at);
    shared.in_flight[index].store(0, Ordering::Relaxed);
    let _entered = span.enter();
    let failure = match result {
        Ok(Ok(responses)) => {
            shared.metrics.batch_synced(dispatched.len(), elapsed);
            apply(
                shared,
                dispatched,
                responses,
                &mut scratch.changes,
                shared.ticks_at(returned_at),
            );
            None
        }
        Ok(Err(err)) => {
            let kind = if autorefresh_tower::timeout::is_timeout(err.as_ref()) {
                SyncFailureKind::Timeout
            } else {
                SyncFailureKind::Error
            };
            tracing::warn!(cache = %shared.name, items = dispatched.len(), kind = kind.as_str(), error = %err, "sync failed");
            Some((kind, RetryAfter::find(err.as_ref())))
        }
        Err(panic) => {
            tracing::warn!(
                cache = %shared.name,
                items = dispatched.len(),
                panic = panic_message(&*panic),
                "sync panicked"
            );
            // The service may have been left mid-call: start again from the shared one.
            *service = shared.sync.clone();
            Some((SyncFailureKind::Panic, None))
        }
    };
    if let Some((kind, _)) = failure {
        shared.metrics.sync_error(kind, dispatched.len());
        shared.metrics.retried(dispatched.len());
    }
    // The limiter (user code) is asked first, the entries still held; the queue is told
    // after, all at once.
    let outcomes = &mut scratch.outcomes;
    outcomes.clear();
    for d in dispatched.iter() {
        outcomes.push(match failure {
            None => {
                if d.taken.backed_off {
                    shared.limiter.forget(&d.taken.id);
                }
                Outcome::Done
            }
            Some((_, retry_after)) => {
                let backoff = shared.limiter.when(&d.taken.id);
                Outcome::Retry(retry_after.map_or(backoff, |after| after.max(backoff)))
            }
        });
    }
    let finished = dispatched.drain(..).zip(outcomes.drain(..)).map(|(d, o)| (d.taken, o));
    let removed = shared.queue.finish(finished, &mut scratch.release);
    forget_all(shared, &removed);
}

/// Tells the limiter to forget each of `ids`, every one even if one panics (the first panic
/// then goes on): a forget skipped leaves limiter state that nothing drops any more.
fn forget_all<K: 'static, V>(shared: &Shared<K, V>, ids: &[K]) {
    for_each_all(ids, |id| shared.limiter.forget(id));
}

/// Runs `f` on every item, all of them even if some panic; the first panic then resumes.
pub(crate) fn for_each_all<T>(items: impl IntoIterator<Item = T>, mut f: impl FnMut(T)) {
    let mut first_panic = None;
    for item in items {
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| f(item))) {
            first_panic.get_or_insert(panic);
        }
    }
    if let Some(panic) = first_panic {
        std::panic::resume_unwind(panic);
    }
}

/// Calls the sync path once, catching a panic from the call or from its future.
async fn call<K, V>(
    service: &mut SyncPath<K, V>,
    batch: Vec<ItemWrapper<K, V>>,
) -> Result<SyncResult<K, V>, Box<dyn Any + Send>>
where
    K: Send + 'static,
    V: Send + 'static,
{
    AssertUnwindSafe(service.call(batch)).catch_unwind().await
}

/// Batches up to this size find their responses by a linear scan; larger ones build an index.
const LINEAR_LOOKUP_MAX: usize = 16;

/// What a batch's responses ask of one dispatched item.
enum Change<V> {
    None,
    Update(V),
    Delete,
}

/// Stores each `Update` whose entry is still the one dispatched, at the version dispatched,
/// and records every dispatched entry still at that version as refreshed now; removes the
/// entries a `Delete` names on the same condition. Subscribers are told.
fn apply<K, V>(
    shared: &Shared<K, V>,
    dispatched: &[Dispatched<K, V>],
    responses: Vec<ItemSyncResponse<K, V>>,
    changes: &mut Vec<Change<V>>,
    now: u64,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    // Built only if responses come out of the batch's order and the batch is not small.
    let mut index: Option<HashMap<&K, usize>> = None;
    changes.clear();
    changes.extend(dispatched.iter().map(|_| Change::None));
    for (position, response) in responses.into_iter().enumerate() {
        // Most sync functions answer in the batch's order: try the same position first.
        let found = if dispatched.get(position).is_some_and(|d| d.taken.id == response.id) {
            Some(position)
        } else if dispatched.len() <= LINEAR_LOOKUP_MAX {
            dispatched.iter().position(|d| d.taken.id == response.id)
        } else {
            let index = index.get_or_insert_with(|| {
                dispatched.iter().enumerate().map(|(i, d)| (&d.taken.id, i)).collect()
            });
            index.get(&response.id).copied()
        };
        let Some(i) = found else {
            shared.metrics.ignored_response();
            continue;
        };
        match response.action {
            SyncAction::Update => changes[i] = Change::Update(response.item),
            SyncAction::Delete => changes[i] = Change::Delete,
            _ => {}
        }
    }
    let notifier = &shared.notifier;
    // Asked once per batch, and only if it has an update to send.
    let mut broadcasting: Option<bool> = None;
    for (target, change) in dispatched.iter().zip(changes.drain(..)) {
        let (id, entry) = (&target.taken.id, &target.taken.entry);
        match change {
            Change::None => {
                entry.apply_refresh(target.version, None, now);
            }
            Change::Update(item) => {
                let broadcast = (*broadcasting.get_or_insert_with(|| notifier.broadcasting()))
                    .then(|| item.clone());
                let shared_item = shared.cluster.as_ref().map(|cluster| (cluster, item.clone()));
                if entry.apply_refresh(target.version, Some(item), now) {
                    if notifier.watching() {
                        notifier.changed(id, entry);
                    }
                    if let Some(item) = broadcast {
                        notifier.broadcast(id.clone(), item);
                    }
                    if let Some((cluster, item)) = shared_item {
                        cluster.refreshed(id, &item);
                    }
                }
            }
            Change::Delete => {
                // Only if still live at the version dispatched, checked and marked at once: a
                // caller's update, before or during this, wins.
                if entry.mark_removed_if_version(target.version)
                    && shared.store.remove_entry(id, entry)
                {
                    shared.forget(id, entry, RemovalCause::SyncDeleted);
                    if let Some(cluster) = &shared.cluster {
                        cluster.deleted(id);
                    }
                }
            }
        }
    }
}

/// `item.is_terminal()`, where a panic counts as not terminal (the item keeps being synced,
/// and the sync may bring a value that answers) instead of ending the task that asked.
fn is_terminal<V: Item>(item: &V) -> bool {
    std::panic::catch_unwind(AssertUnwindSafe(|| item.is_terminal())).unwrap_or(false)
}

/// Runs one step of the dispatcher; a panic in user code it calls (a limiter, metrics, a
/// store) is logged and the dispatcher goes on with its next step.
fn survive<K, V>(shared: &Shared<K, V>, step: &str, run: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(run)) {
        tracing::error!(
            cache = %shared.name,
            step,
            panic = panic_message(&*panic),
            "the dispatcher caught a panic"
        );
    }
}

/// The message of a caught panic, when it is a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
