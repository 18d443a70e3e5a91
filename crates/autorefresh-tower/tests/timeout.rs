//! The timeout layer on the sync path, on paused tokio time.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{Batch, ItemSyncResponse, ItemWrapper, SyncAction, SyncError};
use autorefresh_tower::timeout::{is_timeout, Elapsed, TimeoutLayer};
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

type Responses = Vec<ItemSyncResponse<u64, u32>>;

/// Sets its flag when dropped: tells whether a call's future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Takes as many seconds as the batch's first item says; item 0 hangs forever.
fn slow_sync(
    dropped: Arc<AtomicBool>,
) -> impl tower::Service<Batch<u64, u32>, Response = Responses, Error = SyncError, Future = impl Send>
       + Clone {
    service_fn(move |batch: Batch<u64, u32>| {
        let guard = DropFlag(dropped.clone());
        async move {
            let secs = *batch[0].item();
            if secs == 0 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            std::mem::forget(guard);
            Ok::<Responses, SyncError>(
                batch
                    .into_iter()
                    .map(|w| {
                        let (id, item) = w.into_parts();
                        ItemSyncResponse { id, item, action: SyncAction::Update }
                    })
                    .collect(),
            )
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_fails_at_the_limit_and_is_cancelled() {
    let dropped = Arc::new(AtomicBool::new(false));
    let sync = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service(slow_sync(dropped.clone()));

    let start = Instant::now();
    let err = sync.oneshot(vec![ItemWrapper::new(1, 0)]).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(is_timeout(err.as_ref()));
    assert!(err.is::<Elapsed>());
    assert!(dropped.load(Ordering::SeqCst), "the hung call's future was not dropped");
}

#[tokio::test(start_paused = true)]
async fn a_call_within_the_limit_is_untouched() {
    let dropped = Arc::new(AtomicBool::new(false));
    let sync = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service(slow_sync(dropped.clone()));

    let start = Instant::now();
    let responses = sync.clone().oneshot(vec![ItemWrapper::new(1, 29)]).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(29));
    assert_eq!(responses, vec![ItemSyncResponse { id: 1, item: 29, action: SyncAction::Update }]);
    assert!(!dropped.load(Ordering::SeqCst));

    // One second over the limit fails, exactly at the limit.
    let start = Instant::now();
    let err = sync.oneshot(vec![ItemWrapper::new(1, 31)]).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(is_timeout(err.as_ref()));
}

#[tokio::test(start_paused = true)]
async fn the_inner_error_is_passed_through_and_is_not_a_timeout() {
    let sync =
        ServiceBuilder::new().layer(TimeoutLayer::new(Duration::from_secs(1))).service(service_fn(
            |_batch: Batch<u64, u32>| async { Err::<Responses, SyncError>("HTTP 500".into()) },
        ));
    let err = sync.oneshot(Vec::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "HTTP 500");
    assert!(!is_timeout(err.as_ref()));
}

#[derive(Debug)]
struct Wrapped(SyncError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sync of batch failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[test]
fn is_timeout_searches_the_source_chain() {
    let deep: SyncError = Box::new(Wrapped(Box::new(Wrapped(Elapsed::new().into()))));
    assert!(is_timeout(deep.as_ref()));
    let other: SyncError = Box::new(Wrapped(Box::new(Wrapped("refused".into()))));
    assert!(!is_timeout(other.as_ref()));
    assert!(!is_timeout(&std::fmt::Error));
}
