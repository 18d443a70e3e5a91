//! The concurrency limit across workers, on paused tokio time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{Batch, ItemSyncResponse, ItemWrapper, SyncError};
use autorefresh_tower::concurrency::{ConcurrencyLimitLayer, GlobalConcurrencyLimitLayer};
use autorefresh_tower::rate_limit::SyncRateLimitLayer;
use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy, Jitter, Transient};
use autorefresh_tower::timeout::TimeoutLayer;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Responses = Vec<ItemSyncResponse<u64, u32>>;

/// Counts the calls in flight and the most seen at once.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashSet<u64>>>,
}

impl InFlight {
    /// A sync service taking one second per call; when `flaky`, the first call for each batch
    /// fails transiently.
    fn service(
        &self,
        flaky: bool,
    ) -> impl Service<Batch<u64, u32>, Response = Responses, Error = SyncError, Future = impl Send>
           + Clone
           + Send
           + 'static {
        let this = self.clone();
        service_fn(move |batch: Batch<u64, u32>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let first_try = this.seen.lock().insert(*batch[0].id());
                let now = this.now.fetch_add(1, Ordering::SeqCst) + 1;
                this.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                this.now.fetch_sub(1, Ordering::SeqCst);
                if flaky && first_try {
                    return Err(Transient::new("flaky").into());
                }
                Ok::<Responses, SyncError>(Vec::new())
            }
        })
    }
}

/// Drives `batches` oneshots at once, each on its own clone of `sync`, as the cache's
/// workers do.
async fn run_workers<S>(sync: S, batches: u64) -> Vec<Result<Responses, SyncError>>
where
    S: Service<Batch<u64, u32>, Response = Responses, Error = SyncError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut workers = JoinSet::new();
    for id in 0..batches {
        let sync = sync.clone();
        workers.spawn(async move { sync.oneshot(vec![ItemWrapper::new(id, 0)]).await });
    }
    let mut results = Vec::new();
    while let Some(result) = workers.join_next().await {
        results.push(result.expect("worker panicked"));
    }
    results
}

#[tokio::test(start_paused = true)]
async fn ten_workers_never_exceed_three_in_flight() {
    let counts = InFlight::default();
    // Layered once, then cloned into each worker.
    let sync =
        ServiceBuilder::new().layer(ConcurrencyLimitLayer::new(3)).service(counts.service(false));

    let start = Instant::now();
    let results = run_workers(sync, 10).await;
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(counts.most.load(Ordering::SeqCst), 3);
    assert_eq!(counts.calls.load(Ordering::SeqCst), 10);
    // 10 one-second calls, 3 at a time: 4 rounds.
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn the_limit_holds_under_retries_timeouts_and_a_rate_limit() {
    let counts = InFlight::default();
    let policy = BackoffRetryPolicy::new(2).with_jitter(Jitter::None);
    let sync = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(60)))
        .layer(retry_layer(policy))
        .layer(ConcurrencyLimitLayer::new(3))
        .layer(SyncRateLimitLayer::per_second(100.0, 10).unwrap())
        .service(counts.service(true));

    let results = run_workers(sync, 10).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(counts.most.load(Ordering::SeqCst), 3);
    // Every batch failed once and was retried in place.
    assert_eq!(counts.calls.load(Ordering::SeqCst), 20);
}

#[tokio::test(start_paused = true)]
async fn each_application_of_the_layer_is_its_own_limit_unless_global() {
    // Applying `ConcurrencyLimitLayer` twice makes two semaphores: 2 + 2 in flight.
    let counts = InFlight::default();
    let layer = ConcurrencyLimitLayer::new(2);
    let (a, b) = (layer.layer(counts.service(false)), layer.layer(counts.service(false)));
    let (_, _) = tokio::join!(run_workers(a, 5), run_workers(b, 5));
    assert_eq!(counts.most.load(Ordering::SeqCst), 4);

    // `GlobalConcurrencyLimitLayer` shares one semaphore between the services it makes.
    let counts = InFlight::default();
    let layer = GlobalConcurrencyLimitLayer::new(2);
    let (a, b) = (layer.layer(counts.service(false)), layer.layer(counts.service(false)));
    let (_, _) = tokio::join!(run_workers(a, 5), run_workers(b, 5));
    assert_eq!(counts.most.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_gives_its_permit_back() {
    let counts = InFlight::default();
    let sync = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(500)))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(counts.service(false));

    // Every call times out halfway; if permits leaked, the second would wait forever.
    for _ in 0..3 {
        assert!(sync.clone().oneshot(vec![ItemWrapper::new(1, 0)]).await.is_err());
    }
    assert_eq!(counts.calls.load(Ordering::SeqCst), 3);
}
