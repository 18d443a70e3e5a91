//! The sync path through tower layers, on paused time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::tower::concurrency::ConcurrencyLimitLayer;
use autorefresh::tower::rate_limit::SyncRateLimitLayer;
use autorefresh::tower::retry::{retry_layer, BackoffRetryPolicy, Jitter, Transient};
use autorefresh::tower::timeout::TimeoutLayer;
use autorefresh::{
    AutoRefresh, Batch, CancellationToken, ItemExponentialFailureRateLimiter, RetryAfter,
    SyncError, SyncService,
};
use common::{id, increment, load, Counter, Recorder};
use tokio::time::{sleep, Instant};
use tower::{Layer, Service};

/// S7: the sync for one item never returns. With a timeout layer and two workers, every other
/// item keeps refreshing and the hung one is retried with backoff.
#[tokio::test(start_paused = true)]
async fn a_hung_sync_times_out_and_refresh_goes_on() {
    let hung_calls = Arc::new(AtomicUsize::new(0));
    let sync = {
        let hung_calls = Arc::clone(&hung_calls);
        move |batch: Batch<String, Counter>| {
            let hung_calls = Arc::clone(&hung_calls);
            async move {
                if batch.iter().any(|w| w.id() == "item-0") {
                    hung_calls.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
                Ok(increment(batch))
            }
        }
    };
    let recorder = Arc::new(Recorder::default());
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("s7")
        .sync(sync)
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .parallelism(2)
        .resync_period(Duration::from_secs(1))
        .capacity(1000)
        .metrics(Arc::clone(&recorder))
        .rate_limiter(ItemExponentialFailureRateLimiter::<String>::new(
            Duration::from_millis(500),
            Duration::from_secs(60),
        ))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..100 {
        cache.get_or_create(id(i), Counter::new(1_000_000)).unwrap();
    }
    sleep(Duration::from_secs(30)).await;
    for i in 1..100 {
        let value = cache.get(&id(i)).unwrap().value;
        assert!(value >= 29, "item {i} refreshed only {value} times in 30 periods");
    }
    assert_eq!(cache.get(&id(0)).unwrap().value, 0);
    let hung = hung_calls.load(Ordering::SeqCst);
    assert!((3..=20).contains(&hung), "the hung item is retried, with backoff: {hung} calls");
    assert_eq!(load(&recorder.timeouts), hung - 1, "each attempt but the last timed out");
    running.shutdown().await;
}

/// A layer that records, in order, which layer saw each call.
#[derive(Clone)]
struct Record {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl<S> Layer<S> for Record {
    type Service = Recorded<S>;
    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { inner, record: self.clone() }
    }
}

#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    record: Record,
}

impl<S: Service<Batch<String, Counter>>> Service<Batch<String, Counter>> for Recorded<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, batch: Batch<String, Counter>) -> S::Future {
        self.record.log.lock().unwrap().push(self.record.name);
        self.inner.call(batch)
    }
}

#[tokio::test(start_paused = true)]
async fn layers_apply_in_service_builder_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sync = {
        let log = Arc::clone(&log);
        move |batch: Batch<String, Counter>| {
            log.lock().unwrap().push("sync");
            async move { Ok(increment(batch)) }
        }
    };
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("order")
        .sync(sync)
        .layer(Record { name: "outer", log: Arc::clone(&log) })
        .layer(Record { name: "inner", log: Arc::clone(&log) })
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    common::settle().await;
    assert_eq!(*log.lock().unwrap(), ["outer", "inner", "sync"]);
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_error_is_honoured_for_the_batch() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let sync = {
        let attempts = Arc::clone(&attempts);
        move |batch: Batch<String, Counter>| {
            let attempts = Arc::clone(&attempts);
            async move {
                let mut attempts = attempts.lock().unwrap();
                attempts.push(Instant::now());
                if attempts.len() == 1 {
                    let err: SyncError =
                        RetryAfter::new(Duration::from_secs(10)).with_source("HTTP 429").into();
                    return Err(err);
                }
                Ok(increment(batch))
            }
        }
    };
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("429")
        .sync(sync)
        .resync_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    sleep(Duration::from_secs(9)).await;
    assert_eq!(attempts.lock().unwrap().len(), 1, "the 5 ms backoff did not override it");
    sleep(Duration::from_secs(2)).await;
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1] - attempts[0], Duration::from_secs(10));
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    running.shutdown().await;
}

/// In flight now and the most seen at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
    calls: AtomicUsize,
}

fn slow_sync(
    concurrency: &Arc<Concurrency>,
) -> impl Fn(Batch<String, Counter>) -> common::SyncFuture + Send + Sync + 'static {
    let concurrency = Arc::clone(concurrency);
    move |batch| {
        let concurrency = Arc::clone(&concurrency);
        Box::pin(async move {
            concurrency.calls.fetch_add(1, Ordering::SeqCst);
            let now = concurrency.now.fetch_add(1, Ordering::SeqCst) + 1;
            concurrency.max.fetch_max(now, Ordering::SeqCst);
            sleep(Duration::from_millis(100)).await;
            concurrency.now.fetch_sub(1, Ordering::SeqCst);
            Ok(increment(batch))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_holds_across_all_workers() {
    let concurrency = Arc::new(Concurrency::default());
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("limit")
        .sync(slow_sync(&concurrency))
        .layer(ConcurrencyLimitLayer::new(3))
        .parallelism(10)
        .resync_period(Duration::from_secs(1))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..50 {
        cache.get_or_create(id(i), Counter::new(1_000_000)).unwrap();
    }
    sleep(Duration::from_secs(10)).await;
    assert_eq!(concurrency.max.load(Ordering::SeqCst), 3);
    assert!(concurrency.calls.load(Ordering::SeqCst) >= 250);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_holds_over_a_long_window() {
    let concurrency = Arc::new(Concurrency::default());
    let recorder = Arc::new(Recorder::default());
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("rate")
        .sync(slow_sync(&concurrency))
        .layer(SyncRateLimitLayer::per_second(10.0, 5).unwrap().with_metrics(recorder.clone()))
        .parallelism(10)
        .resync_period(Duration::from_millis(100))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..200 {
        cache.get_or_create(id(i), Counter::new(1_000_000)).unwrap();
    }
    sleep(Duration::from_secs(60)).await;
    let calls = concurrency.calls.load(Ordering::SeqCst);
    assert!(calls <= 5 + 10 * 60, "{calls} calls in 60 s at 10 per second");
    assert!(calls >= 10 * 59, "the limit is used: {calls} calls");
    assert!(load(&recorder.rate_limit_waits) > 0);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_layer_retries_transient_errors_in_place() {
    let calls = Arc::new(AtomicUsize::new(0));
    let sync = {
        let calls = Arc::clone(&calls);
        move |batch: Batch<String, Counter>| {
            let attempt = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 2 {
                    return Err(Transient::new("connection reset").into());
                }
                Ok(increment(batch))
            }
        }
    };
    let recorder = Arc::new(Recorder::default());
    let policy = BackoffRetryPolicy::new(3)
        .with_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .with_jitter(Jitter::None);
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("retry")
        .sync(sync)
        .layer(retry_layer(policy))
        .resync_period(Duration::from_secs(3600))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    sleep(Duration::from_millis(299)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "100 ms, then 200 ms between attempts");
    sleep(Duration::from_millis(2)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    assert_eq!(load(&recorder.errors), 0, "the queue never saw a failure");
    running.shutdown().await;
}

#[test]
fn the_sync_service_type_is_nameable_for_custom_layers() {
    fn takes(_: Option<SyncService<String, Counter>>) {}
    takes(None);
}
