//! The retry layer with `BackoffRetryPolicy`, on paused tokio time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{Batch, ItemSyncResponse, ItemWrapper, RetryAfter, SyncError};
use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy, Jitter, Transient};
use autorefresh_tower::timeout::{is_timeout, TimeoutLayer};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

type Responses = Vec<ItemSyncResponse<u64, u32>>;

const MS: Duration = Duration::from_millis(1);

/// When each call came, and the ids of its batch.
type CallLog = Vec<(Instant, Vec<u64>)>;

/// Makes the error of one scripted failure.
type MakeError = Box<dyn Fn() -> SyncError + Send>;

/// A sync service that records when it was called and with what, and answers each call with
/// the next of `script`'s results (then `Ok` forever).
#[derive(Clone)]
struct Scripted {
    calls: Arc<Mutex<CallLog>>,
    script: Arc<Mutex<Vec<MakeError>>>,
}

impl Scripted {
    fn new(script: Vec<MakeError>) -> Self {
        let mut script = script;
        script.reverse();
        Self { calls: Arc::default(), script: Arc::new(Mutex::new(script)) }
    }

    /// Fails `n` times with what `error` makes.
    fn failing(n: usize, error: impl Fn() -> SyncError + Clone + Send + 'static) -> Self {
        Self::new((0..n).map(|_| Box::new(error.clone()) as MakeError).collect())
    }

    fn service(
        &self,
    ) -> impl Service<Batch<u64, u32>, Response = Responses, Error = SyncError, Future = impl Send>
           + Clone
           + Send
           + 'static {
        let this = self.clone();
        service_fn(move |batch: Batch<u64, u32>| {
            let ids = batch.iter().map(|w| *w.id()).collect();
            this.calls.lock().push((Instant::now(), ids));
            let outcome = this.script.lock().pop().map(|make| make());
            async move {
                match outcome {
                    Some(error) => Err(error),
                    None => Ok(Vec::new()),
                }
            }
        })
    }

    fn count(&self) -> usize {
        self.calls.lock().len()
    }

    /// The gaps between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock();
        calls.windows(2).map(|pair| pair[1].0 - pair[0].0).collect()
    }
}

fn transient() -> SyncError {
    Transient::new("connection reset").into()
}

fn batch() -> Batch<u64, u32> {
    vec![ItemWrapper::new(1, 0), ItemWrapper::new(2, 0)]
}

fn exact(max_retries: u32) -> BackoffRetryPolicy {
    BackoffRetryPolicy::new(max_retries)
        .with_backoff(100 * MS, Duration::from_secs(1))
        .with_jitter(Jitter::None)
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_up_to_max_retries() {
    let scripted = Scripted::failing(10, transient);
    let sync = ServiceBuilder::new().layer(retry_layer(exact(3))).service(scripted.service());

    let err = sync.oneshot(batch()).await.unwrap_err();
    assert_eq!(scripted.count(), 4, "1 attempt + 3 retries");
    assert_eq!(err.to_string(), "transient error: connection reset");
    // Every attempt carried the whole batch.
    assert!(scripted.calls.lock().iter().all(|(_, ids)| ids == &[1, 2]));
}

#[tokio::test(start_paused = true)]
async fn a_success_after_transient_failures_is_returned() {
    let scripted = Scripted::failing(2, transient);
    let sync = ServiceBuilder::new().layer(retry_layer(exact(3))).service(scripted.service());

    let start = Instant::now();
    assert!(sync.oneshot(batch()).await.is_ok());
    assert_eq!(scripted.count(), 3);
    assert_eq!(start.elapsed(), 300 * MS);
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_from_base_and_caps_at_max_without_jitter() {
    let scripted = Scripted::failing(100, transient);
    let sync = ServiceBuilder::new().layer(retry_layer(exact(6))).service(scripted.service());

    sync.oneshot(batch()).await.unwrap_err();
    let expected: Vec<_> = [100, 200, 400, 800, 1000, 1000].into_iter().map(|ms| ms * MS).collect();
    assert_eq!(scripted.gaps(), expected);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_at_most_the_exponential_delay() {
    let policy = exact(4).with_jitter(Jitter::Full);
    for _ in 0..20 {
        let scripted = Scripted::failing(100, transient);
        let sync =
            ServiceBuilder::new().layer(retry_layer(policy.clone())).service(scripted.service());
        sync.oneshot(batch()).await.unwrap_err();
        let gaps = scripted.gaps();
        assert_eq!(gaps.len(), 4);
        for (n, gap) in gaps.into_iter().enumerate() {
            assert!(gap <= policy.delay_for(n as u32), "retry {n} waited {gap:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn equal_jitter_waits_between_half_and_all_of_the_delay() {
    let policy = exact(4).with_jitter(Jitter::Equal);
    for _ in 0..20 {
        let scripted = Scripted::failing(100, transient);
        let sync =
            ServiceBuilder::new().layer(retry_layer(policy.clone())).service(scripted.service());
        sync.oneshot(batch()).await.unwrap_err();
        for (n, gap) in scripted.gaps().into_iter().enumerate() {
            let delay = policy.delay_for(n as u32);
            // Paused time fires timers on the millisecond: allow one of rounding up.
            assert!(gap >= delay / 2 && gap <= delay + MS, "retry {n} waited {gap:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried_in_place() {
    let scripted = Scripted::failing(10, || "HTTP 404".into());
    let sync = ServiceBuilder::new().layer(retry_layer(exact(5))).service(scripted.service());

    let start = Instant::now();
    let err = sync.oneshot(batch()).await.unwrap_err();
    assert_eq!(err.to_string(), "HTTP 404");
    assert_eq!(scripted.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_errors_go_back_to_the_queue() {
    let cases: Vec<fn() -> SyncError> = vec![
        || RetryAfter::new(Duration::from_secs(30)).into(),
        // Beside a Transient, whichever wraps which: the queue honours the delay.
        || RetryAfter::new(Duration::from_secs(30)).with_source(Transient::new("HTTP 429")).into(),
        || Transient::new(RetryAfter::new(Duration::from_secs(30))).into(),
    ];
    for make in cases {
        let scripted = Scripted::failing(10, make);
        let sync = ServiceBuilder::new().layer(retry_layer(exact(5))).service(scripted.service());
        let err = sync.oneshot(batch()).await.unwrap_err();
        assert_eq!(scripted.count(), 1, "{err}");
        assert_eq!(RetryAfter::find(err.as_ref()), Some(Duration::from_secs(30)));
    }
}

/// A user error type that keeps its cause as `source`.
#[derive(Debug)]
struct ApiError {
    status: u16,
    cause: Option<SyncError>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API answered {}", self.status)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[tokio::test(start_paused = true)]
async fn transient_is_found_through_a_source_chain() {
    let deep = || -> SyncError {
        Box::new(ApiError {
            status: 503,
            cause: Some(Box::new(ApiError {
                status: 0,
                cause: Some(Transient::new("reset").into()),
            })),
        })
    };
    let scripted = Scripted::failing(2, deep);
    let sync = ServiceBuilder::new().layer(retry_layer(exact(3))).service(scripted.service());
    assert!(sync.oneshot(batch()).await.is_ok());
    assert_eq!(scripted.count(), 3);

    // The same error type without a Transient inside is permanent.
    let shallow = || -> SyncError { Box::new(ApiError { status: 400, cause: None }) };
    let scripted = Scripted::failing(2, shallow);
    let sync = ServiceBuilder::new().layer(retry_layer(exact(3))).service(scripted.service());
    assert!(sync.oneshot(batch()).await.is_err());
    assert_eq!(scripted.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_count_does_not_leak_across_requests() {
    let scripted = Scripted::failing(100, transient);
    let mut sync = ServiceBuilder::new().layer(retry_layer(exact(2))).service(scripted.service());

    // The same service instance, request after request: each gets its 2 retries.
    for round in 1..=3 {
        let future = sync.ready().await.unwrap().call(batch());
        future.await.unwrap_err();
        assert_eq!(scripted.count(), 3 * round);
    }
    // And so does each clone, as the cache's workers use them.
    for round in 4..=5 {
        sync.clone().oneshot(batch()).await.unwrap_err();
        assert_eq!(scripted.count(), 3 * round);
    }
    // The backoff restarts from the base for each request.
    let gaps = scripted.gaps();
    assert_eq!(&gaps[..2], &[100 * MS, 200 * MS]);
    assert_eq!(&gaps[3..5], &[100 * MS, 200 * MS]);
}

#[tokio::test(start_paused = true)]
async fn zero_max_retries_calls_once() {
    let scripted = Scripted::failing(10, transient);
    let sync = ServiceBuilder::new().layer(retry_layer(exact(0))).service(scripted.service());
    sync.oneshot(batch()).await.unwrap_err();
    assert_eq!(scripted.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_outside_bounds_all_the_attempts() {
    let scripted = Scripted::failing(100, transient);
    let sync = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(350)))
        .layer(retry_layer(exact(10)))
        .service(scripted.service());

    let start = Instant::now();
    let err = sync.oneshot(batch()).await.unwrap_err();
    assert!(is_timeout(err.as_ref()));
    assert_eq!(start.elapsed(), 350 * MS);
    // Calls at 0, 100 and 300 ms; the next would have been at 700 ms.
    assert_eq!(scripted.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn timeouts_inside_are_retried_only_when_asked() {
    let hangs = || {
        service_fn(|_batch: Batch<u64, u32>| async {
            std::future::pending::<Result<Responses, SyncError>>().await
        })
    };

    // By default an attempt's timeout is final.
    let sync = ServiceBuilder::new()
        .layer(retry_layer(exact(2)))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(hangs());
    let start = Instant::now();
    let err = sync.oneshot(batch()).await.unwrap_err();
    assert!(is_timeout(err.as_ref()));
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // With `with_retry_timeouts`, each attempt is bounded and retried: 1 s + 100 ms + 1 s +
    // 200 ms + 1 s.
    let sync = ServiceBuilder::new()
        .layer(retry_layer(exact(2).with_retry_timeouts(true)))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(hangs());
    let start = Instant::now();
    let err = sync.oneshot(batch()).await.unwrap_err();
    assert!(is_timeout(err.as_ref()));
    assert_eq!(start.elapsed(), 3300 * MS);
}

#[test]
fn the_policy_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<BackoffRetryPolicy>();
    fn send<T: Send>() {}
    send::<autorefresh_tower::retry::future::Backoff>();
}
