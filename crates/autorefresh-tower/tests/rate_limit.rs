//! The rate limit of sync calls, on paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{Batch, ItemSyncResponse, ItemWrapper, Metrics, RateLimiter, SyncError};
use autorefresh_tower::concurrency::ConcurrencyLimitLayer;
use autorefresh_tower::rate_limit::SyncRateLimitLayer;
use autorefresh_tower::timeout::{is_timeout, TimeoutLayer};
use autorefresh_tower::{BucketRateLimiter, InvalidRateLimit};
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Responses = Vec<ItemSyncResponse<u64, u32>>;

/// A sync service that records when each call reached it, and takes `busy` per call.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Recorder {
    fn service(
        &self,
        busy: Duration,
    ) -> impl Service<Batch<u64, u32>, Response = Responses, Error = SyncError, Future = impl Send>
           + Clone
           + Send
           + 'static {
        let calls = self.calls.clone();
        service_fn(move |_batch: Batch<u64, u32>| {
            calls.lock().push(Instant::now());
            async move {
                tokio::time::sleep(busy).await;
                Ok::<Responses, SyncError>(Vec::new())
            }
        })
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().clone()
    }
}

/// Records each `rate_limit_wait`.
#[derive(Default)]
struct Waits(Mutex<Vec<Duration>>);

impl Metrics for Waits {
    fn rate_limit_wait(&self, waited: Duration) {
        self.0.lock().push(waited);
    }
}

fn batch(items: u64) -> Batch<u64, u32> {
    (0..items).map(|id| ItemWrapper::new(id, 0)).collect()
}

#[tokio::test(start_paused = true)]
async fn the_rate_is_never_exceeded_over_a_long_window() {
    const QPS: f64 = 10.0;
    const BURST: u32 = 5;
    let window = Duration::from_secs(60);

    let recorder = Recorder::default();
    // Layered once, cloned into 10 workers that call as fast as they may.
    let sync = ServiceBuilder::new()
        .layer(SyncRateLimitLayer::per_second(QPS, BURST).unwrap())
        .service(recorder.service(Duration::from_millis(3)));
    let start = Instant::now();
    let end = start + window;
    let mut workers = JoinSet::new();
    for worker in 0..10 {
        let sync = sync.clone();
        workers.spawn(async move {
            while Instant::now() < end {
                sync.clone().oneshot(batch(1 + worker * 10)).await.unwrap();
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }

    let times: Vec<Instant> = recorder.times().into_iter().filter(|t| *t <= end).collect();
    let bound = |span: Duration| f64::from(BURST) + QPS * span.as_secs_f64();
    assert!(times.len() as f64 <= bound(window), "{} calls in {window:?}", times.len());
    // The budget is used, not wasted: within one call of the bound.
    assert!(times.len() as f64 >= bound(window) - 1.0, "only {} calls", times.len());

    // No shorter window exceeds it either: every window starting at a call.
    for span in [
        Duration::ZERO,
        Duration::from_millis(250),
        Duration::from_secs(1),
        Duration::from_secs(10),
    ] {
        for (i, first) in times.iter().enumerate() {
            let within = times[i..].iter().take_while(|t| **t - *first <= span).count();
            assert!(within as f64 <= bound(span), "{within} calls within {span:?} of {first:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_call_costs_one_token_whatever_its_batch_size() {
    let recorder = Recorder::default();
    let sync = ServiceBuilder::new()
        .layer(SyncRateLimitLayer::per_second(1.0, 2).unwrap())
        .service(recorder.service(Duration::ZERO));

    let start = Instant::now();
    for items in [100, 1, 100, 1] {
        sync.clone().oneshot(batch(items)).await.unwrap();
    }
    let offsets: Vec<_> = recorder.times().iter().map(|t| *t - start).collect();
    let secs = Duration::from_secs;
    assert_eq!(offsets, [secs(0), secs(0), secs(1), secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn waits_are_reported_to_metrics() {
    let waits = Arc::new(Waits::default());
    let recorder = Recorder::default();
    let sync = ServiceBuilder::new()
        .layer(SyncRateLimitLayer::per_second(1.0, 3).unwrap().with_metrics(waits.clone()))
        .service(recorder.service(Duration::ZERO));

    // Five workers at once: three go now, the others one and two seconds later.
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..5 {
        workers.spawn(sync.clone().oneshot(batch(1)));
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap().unwrap();
    }
    let secs = Duration::from_secs;
    let mut reported = waits.0.lock().clone();
    reported.sort();
    assert_eq!(reported, [secs(0), secs(0), secs(0), secs(1), secs(2)]);
    let mut offsets: Vec<_> = recorder.times().iter().map(|t| *t - start).collect();
    offsets.sort();
    assert_eq!(offsets, [secs(0), secs(0), secs(0), secs(1), secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_shared_limiter_is_one_budget_for_every_layer_built_on_it() {
    let bucket: Arc<dyn RateLimiter<()>> = Arc::new(BucketRateLimiter::new(2.0, 1).unwrap());
    let recorder = Recorder::default();
    let a = SyncRateLimitLayer::new(bucket.clone()).layer(recorder.service(Duration::ZERO));
    let b = SyncRateLimitLayer::new(bucket).layer(recorder.service(Duration::ZERO));

    let start = Instant::now();
    let (ra, rb) = tokio::join!(a.oneshot(batch(1)), b.oneshot(batch(1)));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_call_cancelled_while_waiting_never_reaches_the_service() {
    let recorder = Recorder::default();
    let sync = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(500)))
        .layer(SyncRateLimitLayer::per_second(1.0, 1).unwrap())
        .service(recorder.service(Duration::ZERO));

    sync.clone().oneshot(batch(1)).await.unwrap();
    let err = sync.clone().oneshot(batch(1)).await.unwrap_err();
    assert!(is_timeout(err.as_ref()));
    assert_eq!(recorder.times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_the_inner_services_and_takes_no_token() {
    let waits = Arc::new(Waits::default());
    let recorder = Recorder::default();
    let sync = ServiceBuilder::new()
        .layer(SyncRateLimitLayer::per_second(100.0, 10).unwrap().with_metrics(waits.clone()))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(recorder.service(Duration::from_secs(10)));

    // One call holds the only permit for 10 s.
    let busy = tokio::spawn(sync.clone().oneshot(batch(1)));
    tokio::task::yield_now().await;
    assert_eq!(recorder.times().len(), 1);

    // Another clone is not ready while it runs, and asked the limiter nothing.
    let mut other = sync.clone();
    let not_ready = tokio::time::timeout(Duration::from_secs(5), other.ready()).await;
    assert!(not_ready.is_err());
    assert_eq!(waits.0.lock().len(), 1);

    busy.await.unwrap().unwrap();
    other.ready().await.unwrap().call(batch(1)).await.unwrap();
    assert_eq!(waits.0.lock().len(), 2);
}

#[test]
fn bad_rates_are_errors() {
    assert_eq!(
        SyncRateLimitLayer::per_second(-1.0, 5).unwrap_err(),
        InvalidRateLimit::Qps { qps: -1.0 }
    );
    assert_eq!(
        SyncRateLimitLayer::per_second(1.0, 0).unwrap_err(),
        InvalidRateLimit::Burst { burst: 0 }
    );
    assert!(SyncRateLimitLayer::per_second(f64::NAN, 1).is_err());
}

#[test]
fn layer_service_and_future_are_send_sync_and_debug() {
    fn send_sync_debug<T: Send + Sync + std::fmt::Debug>() {}
    send_sync_debug::<SyncRateLimitLayer>();
    let layer = SyncRateLimitLayer::per_second(1.0, 1).unwrap();
    let service = layer.layer(tower::service_fn(|_: u8| async { Ok::<u8, SyncError>(1) }));
    assert!(format!("{layer:?}").contains("SyncRateLimitLayer"));
    fn clone_send<T: Clone + Send>(_: &T) {}
    clone_send(&service);
}
