//! Bounded memory: what the cache keeps per item outside its store (the limiter's failure
//! count, the work queue's slot, a pending delete) is dropped when the item is deleted,
//! evicted or becomes terminal, so a cache that sees millions of distinct ids over its life
//! holds state only for the items it has now.
//!
//! The limiter is observed through `ItemExponentialFailureRateLimiter::tracked_items`, the
//! queue through the cache's `Debug` output (`common::queue_figures`), pending deletes
//! through their effect (the item is gone after the next sweep).

mod common;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, ItemExponentialFailureRateLimiter,
};
use common::{
    id, increment, queue_figures, settle, sync_with, Behaviour, Counter, QueueFigures, Service,
};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

fn limiter() -> Arc<Limiter> {
    Arc::new(ItemExponentialFailureRateLimiter::new(Duration::from_millis(5), MAX_BACKOFF))
}

/// One failing item, backing off: the limiter counts it and the queue holds its retry.
async fn failing_item(capacity: u64) -> (AutoRefresh<String, Counter>, Arc<Limiter>, Arc<Service>) {
    let service = Service::new(Behaviour::Fail);
    let limiter = limiter();
    let cache = AutoRefresh::builder("memory")
        .sync(sync_with(&service))
        .resync_period(PERIOD)
        .capacity(capacity)
        .rate_limiter(Arc::clone(&limiter))
        .build()
        .unwrap();
    cache.get_or_create(id(0), Counter::new(3)).unwrap();
    (cache, limiter, service)
}

type Limiter = ItemExponentialFailureRateLimiter<String>;

fn assert_backing_off(cache: &AutoRefresh<String, Counter>, limiter: &Limiter) {
    assert_eq!(limiter.tracked_items(), 1, "the failure is counted");
    assert_eq!(queue_figures(cache).entries, 1, "the retry is queued");
}

fn assert_nothing_kept(cache: &AutoRefresh<String, Counter>, limiter: &Limiter) {
    assert_eq!(limiter.tracked_items(), 0, "the limiter still counts the item");
    assert_eq!(queue_figures(cache), QueueFigures::default(), "the queue still holds it");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_item_leaves_nothing_behind() {
    let (cache, limiter, _service) = failing_item(10).await;
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    assert_backing_off(&cache, &limiter);
    cache.delete(&id(0));
    assert_nothing_kept(&cache, &limiter);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_evicted_item_leaves_nothing_behind() {
    let (cache, limiter, _service) = failing_item(1).await;
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    assert_backing_off(&cache, &limiter);
    // A terminal newcomer (never queued itself) takes the only place.
    cache.get_or_create(id(1), Counter { value: 3, target: 3 }).unwrap();
    assert!(cache.get(&id(0)).is_err(), "evicted");
    assert_nothing_kept(&cache, &limiter);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_pending_delete_leaves_nothing_behind_after_the_sweep() {
    let (cache, limiter, _service) = failing_item(10).await;
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    assert_backing_off(&cache, &limiter);
    cache.delete_delayed(&id(0)).unwrap();
    sleep(PERIOD + Duration::from_millis(1)).await; // past the next sweep
    assert!(cache.get(&id(0)).is_err(), "removed by the sweep");
    assert_nothing_kept(&cache, &limiter);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_made_terminal_leaves_nothing_behind() {
    let (cache, limiter, _service) = failing_item(10).await;
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    assert_backing_off(&cache, &limiter);
    assert!(cache.update(&id(0), Counter { value: 3, target: 3 }));
    // Its retry comes due, finds it terminal and drops it (at most the backoff later).
    sleep(MAX_BACKOFF).await;
    assert_nothing_kept(&cache, &limiter);
    running.shutdown().await;
}

/// Whether the churn's sync function fails a call: about 30% of calls, decided by a hash
/// of a call counter (deterministic, no RNG crate).
fn fails(calls: &AtomicU64, failing: &AtomicBool) -> bool {
    let n = calls.fetch_add(1, Ordering::Relaxed);
    failing.load(Ordering::Relaxed) && n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32 & 0xFF < 77
}

/// Creates and gets rid of `total` distinct ids, a round of `ROUND` at a time, on a cache of
/// `CAPACITY`: a quarter deleted at once, a quarter deleted at the next sweep, the rest left
/// to become terminal (three refreshes) or to be evicted by later rounds; 30% of sync calls
/// fail throughout. At every round the limiter and the queue hold no more than the cache
/// could need; at the end, once the failures stop, they hold nothing.
async fn churn(total: usize) {
    const CAPACITY: u64 = 2_000;
    const ROUND: usize = 1_000;
    const BATCH: usize = 50;
    const WORKERS: usize = 8;
    let calls = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let sync = {
        let calls = Arc::clone(&calls);
        let failing = Arc::clone(&failing);
        move |batch: Batch<String, Counter>| {
            let fail = fails(&calls, &failing);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if fail {
                    return Err("the external system failed".into());
                }
                Ok(increment(batch))
            }
        }
    };
    let limiter = limiter();
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("churn")
        .sync(sync)
        .create_batches(FixedSizeBatches::new(NonZeroUsize::new(BATCH).unwrap()))
        .resync_period(PERIOD)
        .parallelism(WORKERS)
        .capacity(CAPACITY)
        .rate_limiter(Arc::clone(&limiter))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    let churn_id = |n: usize| format!("churn-{n}");
    // Ids removed while in flight are forgotten when their batch ends: at most every
    // worker's batch.
    let in_flight = WORKERS * BATCH;
    for round in 0..total / ROUND {
        let base = round * ROUND;
        for n in base..base + ROUND {
            cache.get_or_create(churn_id(n), Counter::new(3)).unwrap();
        }
        sleep(Duration::from_millis(150)).await;
        for n in (base..base + ROUND).step_by(4) {
            cache.delete(&churn_id(n));
            cache.delete_delayed(&churn_id(n + 1)).unwrap();
        }
        sleep(Duration::from_millis(150)).await;
        assert!(cache.len() as u64 <= CAPACITY);
        let tracked = limiter.tracked_items();
        assert!(tracked <= cache.len() + in_flight, "round {round}: the limiter tracks {tracked}");
        let queued = queue_figures(&cache).entries;
        assert!(queued <= cache.len() + in_flight, "round {round}: the queue holds {queued}");
    }
    failing.store(false, Ordering::Relaxed);
    sleep(PERIOD * 4 + MAX_BACKOFF).await;
    assert_eq!(limiter.tracked_items(), 0, "the limiter kept failure counts");
    assert_eq!(queue_figures(&cache), QueueFigures::default(), "the queue kept ids");
    // Every delete and delayed delete was carried out; what is left is terminal.
    let mut left = 0;
    for n in 0..total {
        if let Ok(item) = cache.get(&churn_id(n)) {
            assert!(n % 4 > 1, "{} was deleted", churn_id(n));
            assert_eq!(item.value, 3, "{} is not terminal: {item:?}", churn_id(n));
            left += 1;
        }
    }
    assert_eq!(left, cache.len());
    running.shutdown().await;
}

/// A million distinct ids over about five minutes of virtual time: 8 s in a debug build.
#[tokio::test(start_paused = true)]
async fn churn_of_a_million_distinct_ids_leaves_no_state_behind() {
    churn(1_000_000).await;
}
