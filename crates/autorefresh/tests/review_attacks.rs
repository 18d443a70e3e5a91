//! Review of the id-keyed in-flight guard and the one-function state machine: defects found,
//! each as a failing test on paused tokio time.

mod common;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, ItemExponentialFailureRateLimiter,
    RateLimiter, RetryAfter, SyncError,
};
use common::{id, increment, queue_figures, sync_with, Behaviour, Counter, Service};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);

/// A limiter over client-go's exponential one, with a trap: `when` panics on one chosen call,
/// `forget` panics on the first forget of one chosen id.
struct Trapped {
    inner: ItemExponentialFailureRateLimiter<String>,
    when_calls: AtomicUsize,
    when_panics_at: usize,
    forget_panics_for: Option<String>,
    forget_fired: AtomicBool,
}

impl Trapped {
    fn new(base: Duration) -> Self {
        Self {
            inner: ItemExponentialFailureRateLimiter::new(base, Duration::from_secs(100)),
            when_calls: AtomicUsize::new(0),
            when_panics_at: usize::MAX,
            forget_panics_for: None,
            forget_fired: AtomicBool::new(false),
        }
    }
}

impl RateLimiter<String> for Trapped {
    fn when(&self, id: &String) -> Duration {
        // Panics before recording anything: only the earlier calls' failures are recorded.
        if self.when_calls.fetch_add(1, Ordering::SeqCst) == self.when_panics_at {
            panic!("when panicked on purpose");
        }
        self.inner.when(id)
    }

    fn forget(&self, id: &String) {
        self.inner.forget(id);
        if self.forget_panics_for.as_ref() == Some(id)
            && !self.forget_fired.swap(true, Ordering::SeqCst)
        {
            panic!("forget panicked on purpose");
        }
    }

    fn num_requeues(&self, id: &String) -> u32 {
        self.inner.num_requeues(id)
    }
}

/// Guarantee (4): after shutdown no limiter state is left. `WorkQueue::close` steps every
/// delayed (and pooled, batched, parked) entry with `Event::Close`, whose `forget` is set for a
/// backed-off entry, and drops that answer: nobody forgets the retry's backoff. (`finish`'s
/// closed path returns those ids; `close` returns nothing, and `push_swept`/`push_batches`
/// discard `let_go(.., Close)`'s ids too.)
#[tokio::test(start_paused = true)]
async fn shutdown_forgets_the_backoff_of_delayed_retries() {
    let service = Service::new(Behaviour::Fail);
    let limiter = Arc::new(ItemExponentialFailureRateLimiter::<String>::new(
        Duration::from_secs(10),
        Duration::from_secs(100),
    ));
    let cache = AutoRefresh::builder("close")
        .sync(sync_with(&service))
        .rate_limiter(Arc::clone(&limiter))
        .resync_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(0), Counter::new(100)).unwrap();
    sleep(PERIOD).await;
    assert_eq!(service.calls(), 1);
    assert_eq!(queue_figures(&cache).delayed, 1, "waiting 10 s for its retry");
    assert_eq!(limiter.tracked_items(), 1);
    running.shutdown().await;
    assert_eq!(queue_figures(&cache).delayed, 0);
    assert_eq!(limiter.tracked_items(), 0, "the delayed retry's backoff outlives shutdown");
}

/// Guarantees (3)/(4): a limiter `when` that panics on the second item of a failed batch.
/// The first item's failure was recorded by `when`; the worker gives the batch up as
/// `Abandoned`, which keeps the entry's `backed_off` bit as it was at start (false). Its next
/// success sees `backed_off == false` and never forgets it: the limiter keeps its count for
/// good (a later failure backs off from 2×base, `num_requeues` is wrong). The batcher's
/// failure path (`batch_due_items`: `when` for each held entry, then `Hand` dropped) has the
/// same hole.
#[tokio::test(start_paused = true)]
async fn a_when_panicking_mid_batch_leaves_no_limiter_state_behind() {
    let service = Service::new(Behaviour::Fail);
    let limiter = Arc::new(Trapped { when_panics_at: 1, ..Trapped::new(Duration::from_millis(5)) });
    let cache = AutoRefresh::builder("when")
        .sync(sync_with(&service))
        .create_batches(FixedSizeBatches::new(NonZeroUsize::new(2).unwrap()))
        .rate_limiter(Arc::clone(&limiter))
        .resync_period(PERIOD)
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(0), Counter::new(100)).unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(service.calls(), 1, "one batch of two, failed");
    service.set_behaviour(Behaviour::Increment);
    sleep(PERIOD * 3).await;
    for i in 0..2 {
        assert!(cache.get(&id(i)).unwrap().value >= 2, "item {i} synced since");
    }
    let left: Vec<_> = (0..2).filter(|&i| limiter.num_requeues(&id(i)) > 0).collect();
    assert!(
        left.is_empty(),
        "synced fine since, yet the limiter still counts failures of {left:?}"
    );
    running.shutdown().await;
    assert_eq!(limiter.inner.tracked_items(), 0);
}

/// Guarantee (3): a panic in user code strands nothing. The sweep takes every pending
/// `delete_delayed` at once (`mem::take`) and removes them in a loop; `forget_removed`
/// re-raises a panic of the limiter's `forget` (or `cluster.deleted` panics) for the first
/// one, the loop unwinds, and the other pending deletes are dropped: those items stay in the
/// store for good, delete-pending (never synced again, never removed, `delete_delayed` again
/// is a no-op since `mark_delete_pending` already happened).
#[tokio::test(start_paused = true)]
async fn a_panicking_forget_does_not_lose_the_other_pending_deletes() {
    let service = Service::new(Behaviour::Increment);
    let limiter = Arc::new(Trapped {
        forget_panics_for: Some(id(0)),
        ..Trapped::new(Duration::from_millis(5))
    });
    let cache = AutoRefresh::builder("pending")
        .sync(sync_with(&service))
        .rate_limiter(Arc::clone(&limiter))
        .resync_period(PERIOD)
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..3 {
        cache.get_or_create(id(i), Counter::new(100)).unwrap();
    }
    sleep(Duration::from_millis(100)).await;
    cache.delete_delayed(&id(0)).unwrap();
    cache.delete_delayed(&id(1)).unwrap();
    sleep(PERIOD * 5).await;
    assert!(limiter.forget_fired.load(Ordering::SeqCst));
    assert!(cache.get(&id(0)).is_err(), "removed (its forget panicked after)");
    assert!(cache.get(&id(1)).is_err(), "item-1's delete_delayed was lost with the panic");
    assert_eq!(cache.len(), 1);
    running.shutdown().await;
}

/// Guarantee (2), end to end: a sync error asking to retry after `Duration::MAX` (or an
/// uncapped limiter's backoff) makes `finish` panic on `now + backoff` under the queue's lock;
/// the worker catches it, but the batch was already handed to `finish`: the second item stays
/// `Running` with nobody holding it and is never synced again.
#[tokio::test(start_paused = true)]
async fn a_retry_after_too_long_for_an_instant_loses_no_item() {
    let failed = Arc::new(AtomicBool::new(false));
    let sync = {
        let failed = Arc::clone(&failed);
        move |batch: Batch<String, Counter>| {
            let first = !failed.swap(true, Ordering::SeqCst);
            async move {
                if first {
                    let err: SyncError = RetryAfter::new(Duration::MAX).into();
                    return Err(err);
                }
                Ok(increment(batch))
            }
        }
    };
    let cache = AutoRefresh::builder("retry-after")
        .sync(sync)
        .create_batches(FixedSizeBatches::new(NonZeroUsize::new(2).unwrap()))
        .resync_period(PERIOD)
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(0), Counter::new(100)).unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    sleep(PERIOD * 5).await;
    assert!(failed.load(Ordering::SeqCst));
    for i in 0..2 {
        assert!(cache.get(&id(i)).unwrap().value >= 2, "item {i} is never synced again");
    }
    running.shutdown().await;
    assert_eq!(queue_figures(&cache).entries, 0, "the queue's counters at rest");
}
