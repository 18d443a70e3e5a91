//! Start, stop and abandonment, on paused time: shutdown while batches are in flight,
//! cancellation during a sync, dropping every handle without a shutdown, and start after
//! shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{AutoRefresh, Batch, CancellationToken, Error};
use common::{id, increment, queue_figures, settle, Counter, QueueFigures};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);

/// A sync function whose calls take `delay`, counting calls, calls that ended, and calls
/// dropped before they ended. It holds `probe`, so `Arc::strong_count(probe)` tells whether
/// the cache's shared state (which owns the sync function) is still alive.
#[derive(Default)]
struct Calls {
    started: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
}

struct DropGuard<'a> {
    calls: &'a Calls,
    done: bool,
}

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.calls.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sync_fn(
    calls: &Arc<Calls>,
    delay: Duration,
) -> impl Fn(Batch<String, Counter>) -> common::SyncFuture + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move |batch| {
        let calls = Arc::clone(&calls);
        Box::pin(async move {
            calls.started.fetch_add(1, Ordering::SeqCst);
            let mut guard = DropGuard { calls: &calls, done: false };
            sleep(delay).await;
            guard.done = true;
            calls.finished.fetch_add(1, Ordering::SeqCst);
            Ok(increment(batch))
        })
    }
}

fn cache(calls: &Arc<Calls>, delay: Duration) -> AutoRefresh<String, Counter> {
    AutoRefresh::builder("lifecycle")
        .sync(sync_fn(calls, delay))
        .resync_period(PERIOD)
        .parallelism(4)
        .build()
        .unwrap()
}

/// `shutdown` returns at once even though four calls would take an hour: their futures are
/// dropped (cancelled), their results never applied, the queue is cleared, and reads and
/// writes keep working.
#[tokio::test(start_paused = true)]
async fn shutdown_while_batches_are_in_flight_drops_them() {
    let calls = Arc::new(Calls::default());
    let cache = cache(&calls, Duration::from_secs(3600));
    for i in 0..10 {
        cache.get_or_create(id(i), Counter::new(1_000)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(calls.started.load(Ordering::SeqCst), 4, "one call per worker");
    let before = tokio::time::Instant::now();
    running.shutdown().await;
    assert_eq!(tokio::time::Instant::now(), before, "shutdown waited for no call");
    assert_eq!(calls.dropped.load(Ordering::SeqCst), 4, "every call in flight was dropped");
    assert_eq!(calls.finished.load(Ordering::SeqCst), 0);
    assert_eq!(queue_figures(&cache), QueueFigures::default(), "the queue is cleared");
    for i in 0..10 {
        assert_eq!(cache.get(&id(i)).unwrap().value, 0, "no result applied");
    }
    // Nothing runs any more, whatever the clock does.
    sleep(Duration::from_secs(7200)).await;
    assert_eq!(calls.started.load(Ordering::SeqCst), 4);
    cache.get_or_create(id(10), Counter::new(1_000)).unwrap();
    assert!(cache.update(&id(10), Counter::new(5)));
    cache.delete(&id(10));
    assert!(cache.get(&id(10)).is_err());
}

/// Cancelling the token given to `start` in the middle of a call stops the refresh the same
/// way; `stopped` resolves once every task ended.
#[tokio::test(start_paused = true)]
async fn cancelling_the_token_during_a_sync_cancels_it() {
    let calls = Arc::new(Calls::default());
    let cache = cache(&calls, Duration::from_secs(10));
    let token = CancellationToken::new();
    let running = cache.start(token.clone()).unwrap();
    cache.get_or_create(id(1), Counter::new(1_000)).unwrap();
    sleep(Duration::from_secs(5)).await; // halfway through the first call
    assert_eq!(calls.started.load(Ordering::SeqCst), 1);
    token.cancel();
    assert!(running.is_cancelled());
    running.stopped().await;
    assert_eq!(calls.dropped.load(Ordering::SeqCst), 1);
    sleep(Duration::from_secs(60)).await;
    assert_eq!(calls.started.load(Ordering::SeqCst), 1, "nothing after the cancellation");
    assert_eq!(cache.get(&id(1)).unwrap().value, 0);
}

/// Dropping every handle (the caches and `Running`) without a shutdown does not stop the
/// refresh: the tasks own the cache's shared state and keep syncing its items, once per
/// period and no more often (no task spins: on paused time the clock only moves when every
/// task is idle, so an hour passing at all shows it), until the token given to `start` is
/// cancelled or the runtime shuts down. Then the shared state is freed.
#[tokio::test(start_paused = true)]
async fn dropping_every_handle_keeps_refreshing_until_the_token_is_cancelled() {
    let calls = Arc::new(Calls::default());
    let cache = cache(&calls, Duration::ZERO);
    let token = CancellationToken::new();
    let running = cache.start(token.clone()).unwrap();
    cache.get_or_create(id(1), Counter::new(1_000_000)).unwrap();
    sleep(Duration::from_millis(1)).await;
    let created = calls.started.load(Ordering::SeqCst);
    drop(running);
    drop(cache);
    // Only the caller's `calls` and the sync function's copy remain.
    assert_eq!(Arc::strong_count(&calls), 2, "the tasks keep the cache alive");
    sleep(Duration::from_secs(3600)).await;
    let synced = calls.started.load(Ordering::SeqCst) - created;
    assert_eq!(synced, 3600, "one sync per period");
    token.cancel();
    settle().await;
    assert_eq!(Arc::strong_count(&calls), 1, "cancelled: the cache is freed");
}

/// The same when the runtime shuts down instead: its tasks are dropped, and the cache with
/// them.
#[test]
fn dropping_the_runtime_frees_an_abandoned_cache() {
    let calls = Arc::new(Calls::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = cache(&calls, Duration::from_secs(3600));
        let _abandoned = cache.start(CancellationToken::new()).unwrap();
        cache.get_or_create(id(1), Counter::new(10)).unwrap();
        sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.started.load(Ordering::SeqCst), 1);
    });
    // Ours, the sync function's, and the call in flight's.
    assert_eq!(Arc::strong_count(&calls), 3, "the tasks keep the cache alive");
    drop(runtime);
    assert_eq!(calls.dropped.load(Ordering::SeqCst), 1, "the call in flight was dropped");
    assert_eq!(Arc::strong_count(&calls), 1, "the cache is freed with the runtime");
}

/// A cache starts once: `start` after a shutdown is `Error::AlreadyStarted`, and the cache
/// stays usable as a plain map, never refreshed. A `delete_delayed` then is never carried
/// out (only a sweep carries it out): the item stays readable.
#[tokio::test(start_paused = true)]
async fn start_after_shutdown_is_an_error_and_the_cache_stays_a_plain_map() {
    let calls = Arc::new(Calls::default());
    let cache = cache(&calls, Duration::ZERO);
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(1_000)).unwrap();
    sleep(Duration::from_millis(1)).await;
    running.shutdown().await;
    let err = cache.start(CancellationToken::new()).unwrap_err();
    assert_eq!(err, Error::AlreadyStarted { name: "lifecycle".into() });
    let started = calls.started.load(Ordering::SeqCst);

    cache.get_or_create(id(2), Counter::new(1_000)).unwrap();
    cache.delete_delayed(&id(1)).unwrap();
    sleep(PERIOD * 100).await;
    assert_eq!(calls.started.load(Ordering::SeqCst), started, "never refreshed");
    assert_eq!(cache.get(&id(2)).unwrap().value, 0);
    assert!(cache.get(&id(1)).is_ok(), "a delayed delete waits for a sweep that never comes");
    cache.delete(&id(1));
    assert_eq!(cache.len(), 1);
}
