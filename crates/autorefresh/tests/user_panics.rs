//! A panic in user code other than the sync function and the batcher (an item's
//! `is_terminal`, a rate limiter, a metrics observer) does not end the refresh.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, Item, ItemSyncResponse, Metrics, RateLimiter,
    SyncAction, SyncError,
};
use common::{id, settle};
use tokio::time::sleep;

/// An item whose `is_terminal` panics when it explodes.
#[derive(Clone, Debug)]
struct Touchy {
    syncs: u32,
    explodes: bool,
}

impl Item for Touchy {
    fn is_terminal(&self) -> bool {
        assert!(!self.explodes, "is_terminal panicked on purpose");
        false
    }
}

fn count_syncs(
    calls: &Arc<AtomicUsize>,
    fail_for: Option<String>,
) -> impl Fn(Batch<String, Touchy>) -> common::BoxFuture<String, Touchy> + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move |batch: Batch<String, Touchy>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let fail = batch.iter().any(|w| Some(w.id()) == fail_for.as_ref());
        Box::pin(async move {
            if fail {
                let err: SyncError = "down for this one".into();
                return Err(err);
            }
            Ok(batch
                .into_iter()
                .map(|w| {
                    let (id, item) = w.into_parts();
                    let item = Touchy { syncs: item.syncs + 1, ..item };
                    ItemSyncResponse { id, item, action: SyncAction::Update }
                })
                .collect())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_is_terminal_that_panics_counts_as_not_terminal() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache: AutoRefresh<String, Touchy> = AutoRefresh::builder("touchy")
        .sync(count_syncs(&calls, None))
        .resync_period(Duration::from_secs(1))
        .sync_on_create(false)
        .build()
        .unwrap();
    for n in 0..10 {
        cache.get_or_create(id(n), Touchy { syncs: 0, explodes: n == 3 }).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(3500)).await;
    for n in 0..10 {
        assert_eq!(cache.get(&id(n)).unwrap().syncs, 4, "item {n}: every sweep went through");
    }
    running.shutdown().await;
}

/// A limiter whose `when` panics.
#[derive(Debug)]
struct PanickingLimiter;

impl RateLimiter<String> for PanickingLimiter {
    fn when(&self, _id: &String) -> Duration {
        panic!("when panicked on purpose")
    }
    fn forget(&self, _id: &String) {}
    fn num_requeues(&self, _id: &String) -> u32 {
        0
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_limiter_does_not_end_the_worker() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache: AutoRefresh<String, Touchy> = AutoRefresh::builder("limiter")
        .sync(count_syncs(&calls, Some(id(0))))
        .rate_limiter(PanickingLimiter)
        .parallelism(1)
        .resync_period(Duration::from_secs(1))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(0), Touchy { syncs: 0, explodes: false }).unwrap(); // fails, then panics
    settle().await;
    for n in 1..5 {
        cache.get_or_create(id(n), Touchy { syncs: 0, explodes: false }).unwrap();
    }
    sleep(Duration::from_millis(3500)).await;
    for n in 1..5 {
        assert!(cache.get(&id(n)).unwrap().syncs >= 3, "item {n}: the one worker went on");
    }
    running.shutdown().await;
}

/// The batch a panicking limiter abandoned is not left in flight for good: its item is
/// synced again at the next sweep.
#[tokio::test(start_paused = true)]
async fn an_item_whose_retry_panicked_is_synced_again_at_the_next_sweep() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache: AutoRefresh<String, Touchy> = AutoRefresh::builder("stranded")
        .sync(count_syncs(&calls, Some(id(0))))
        .rate_limiter(PanickingLimiter)
        .parallelism(1)
        .resync_period(Duration::from_secs(1))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(0), Touchy { syncs: 0, explodes: false }).unwrap(); // fails, then panics
    sleep(Duration::from_millis(3500)).await;
    // At create, then at the sweeps of 1, 2 and 3 s.
    assert!(calls.load(Ordering::SeqCst) >= 4, "{} calls", calls.load(Ordering::SeqCst));
    running.shutdown().await;
}

/// A metrics observer that panics after each sweep.
#[derive(Debug)]
struct PanickingMetrics;

impl Metrics for PanickingMetrics {
    fn size(&self, _items: usize) {
        panic!("size panicked on purpose");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_metrics_observer_does_not_end_the_sweeps() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache: AutoRefresh<String, Touchy> = AutoRefresh::builder("metrics")
        .sync(count_syncs(&calls, None))
        .metrics(PanickingMetrics)
        .resync_period(Duration::from_secs(1))
        .sync_on_create(false)
        .build()
        .unwrap();
    cache.get_or_create(id(1), Touchy { syncs: 0, explodes: false }).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(3500)).await;
    assert_eq!(cache.get(&id(1)).unwrap().syncs, 4, "a sweep every period");
    running.shutdown().await;
}
