//! The background refresh: the dispatcher (sweeps, retry timers, batching) and the workers.

use std::collections::HashMap;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use autorefresh_core::{
    EntryHandle, EntryState, EntryVersion, Item, ItemSyncResponse, ItemWrapper, SyncAction,
    SyncFailureKind,
};
use futures_util::FutureExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cache::Shared;
use crate::queue::Outcome;

/// The dispatcher task: every `resync_period` a sweep queues the non-terminal items; retries
/// are promoted when their deadline passes; due items are batched for the workers.
pub(crate) async fn run_dispatcher<K, V>(shared: Arc<Shared<K, V>>, cancel: CancellationToken)
where
    K: Hash + Eq + Clone + std::fmt::Debug + Send + Sync + 'static,
    V: Item,
{
    let mut sweeps = tokio::time::interval(shared.resync_period);
    sweeps.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let next_retry = shared.queue.promote_due();
        if shared.queue.has_pooled() {
            batch_due_items(&shared);
        }
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
                shared.queue.close();
                return;
            }
            _ = sweeps.tick() => sweep(&shared),
            () = retry_timer => {}
            () = shared.queue.dispatcher_woken() => {}
        }
    }
}

/// Removes the items pending `delete_delayed`, then queues every live non-terminal item.
fn sweep<K, V>(shared: &Shared<K, V>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    for (id, entry) in std::mem::take(&mut *shared.pending_deletes.lock()) {
        if shared.store.remove_entry(&id, &entry) {
            shared.forget(&id, &entry);
        }
    }

    const CHUNK: usize = 4096;
    let mut due = Vec::with_capacity(CHUNK);
    shared.store.for_each_entry(&mut |id, entry| {
        if entry.with(|item| !item.is_terminal()) && entry.state() == EntryState::Live {
            due.push((id.clone(), entry.clone()));
            if due.len() == CHUNK {
                shared.queue.add_all(due.drain(..));
            }
        }
    });
    shared.queue.add_all(due);
}

/// Hands the due items to the batcher and queues its batches for the workers.
fn batch_due_items<K, V>(shared: &Shared<K, V>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    let taken = shared.queue.take_pool();
    let mut ids = Vec::with_capacity(taken.len());
    let mut items = Vec::with_capacity(taken.len());
    for (id, entry) in taken {
        let (item, _, state) = entry.snapshot();
        if state == EntryState::Live && !item.is_terminal() {
            items.push(ItemWrapper::new(id.clone(), item));
        } else {
            shared.limiter.forget(&id);
        }
        ids.push(id);
    }
    if items.is_empty() {
        shared.queue.push_batches(&ids, Vec::new());
        return;
    }
    let batches =
        std::panic::catch_unwind(AssertUnwindSafe(|| shared.batcher.create_batches(items)));
    match batches {
        Ok(Ok(batches)) => {
            let batches = batches
                .into_iter()
                .map(|batch| batch.into_iter().map(|w| w.into_parts().0).collect())
                .collect();
            shared.queue.push_batches(&ids, batches);
        }
        Ok(Err(_)) => retry_after_failure(shared, SyncFailureKind::Error, ids),
        Err(_) => retry_after_failure(shared, SyncFailureKind::Panic, ids),
    }
}

/// The batcher failed: every id it was given is retried after its backoff.
fn retry_after_failure<K, V>(shared: &Shared<K, V>, kind: SyncFailureKind, ids: Vec<K>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    shared.metrics.sync_error(kind, ids.len());
    let backoffs = ids.into_iter().map(|id| {
        let backoff = shared.limiter.when(&id);
        (id, backoff)
    });
    shared.queue.fail_batching(backoffs.collect());
}

/// One worker: takes batches until cancelled. A batch in flight at cancellation is dropped.
pub(crate) async fn run_worker<K, V>(shared: Arc<Shared<K, V>>, cancel: CancellationToken)
where
    K: Hash + Eq + Clone + std::fmt::Debug + Send + Sync + 'static,
    V: Item,
{
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            batch = shared.queue.next_batch() => {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    () = sync_batch(&shared, batch) => {}
                }
            }
        }
    }
}

/// An item as dispatched: the entry its result goes to, and the version it must still have.
struct Dispatched<K, V> {
    id: K,
    entry: EntryHandle<V>,
    version: EntryVersion,
}

async fn sync_batch<K, V>(shared: &Shared<K, V>, batch: Vec<(K, EntryHandle<V>)>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut dispatched = Vec::with_capacity(batch.len());
    let mut wrappers = Vec::with_capacity(batch.len());
    for (id, entry) in batch {
        let (item, version, state) = entry.snapshot();
        if state == EntryState::Live && !item.is_terminal() {
            wrappers.push(ItemWrapper::new(id.clone(), item));
            dispatched.push(Dispatched { id, entry, version });
        } else {
            shared.limiter.forget(&id);
            outcomes.push((id, Outcome::Done));
        }
    }
    if !dispatched.is_empty() {
        let started = Instant::now();
        // A panic is caught whether it comes from the call itself or from its future.
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| shared.sync.sync(wrappers)));
        let result = match call {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        let failure = match result {
            Ok(Ok(responses)) => {
                shared.metrics.batch_synced(dispatched.len(), started.elapsed());
                apply(shared, &dispatched, responses);
                None
            }
            Ok(Err(_)) => Some(SyncFailureKind::Error),
            Err(_) => Some(SyncFailureKind::Panic),
        };
        if let Some(kind) = failure {
            shared.metrics.sync_error(kind, dispatched.len());
        }
        outcomes.extend(dispatched.into_iter().map(|d| {
            let outcome = match failure {
                None => {
                    shared.limiter.forget(&d.id);
                    Outcome::Done
                }
                Some(_) => Outcome::Retry(shared.limiter.when(&d.id)),
            };
            (d.id, outcome)
        }));
    }
    for id in shared.queue.finish(outcomes) {
        shared.limiter.forget(&id);
    }
}

/// Batches up to this size find their responses by a linear scan; larger ones build an index.
const LINEAR_LOOKUP_MAX: usize = 16;

/// Stores each `Update` whose entry is still the one dispatched, at the version dispatched.
fn apply<K, V>(
    shared: &Shared<K, V>,
    dispatched: &[Dispatched<K, V>],
    responses: Vec<ItemSyncResponse<K, V>>,
) where
    K: Hash + Eq,
    V: Item,
{
    let index: Option<HashMap<&K, usize>> = (dispatched.len() > LINEAR_LOOKUP_MAX)
        .then(|| dispatched.iter().enumerate().map(|(i, d)| (&d.id, i)).collect());
    for response in responses {
        let found = match &index {
            Some(index) => index.get(&response.id).map(|&i| &dispatched[i]),
            None => dispatched.iter().find(|d| d.id == response.id),
        };
        let Some(target) = found else {
            shared.metrics.ignored_response();
            continue;
        };
        if response.action == SyncAction::Update {
            target.entry.replace_if_version(target.version, response.item);
        }
    }
}
