//! A time limit on each sync call: tower's [`TimeoutLayer`], and [`is_timeout`] to recognise
//! its error.
//!
//! A batch whose call does not finish within the limit fails with an [`Elapsed`] error: its
//! future is dropped, which cancels the call (the sync function must not rely on running to
//! completion), and the cache counts the failure as
//! [`SyncFailureKind::Timeout`](autorefresh_core::SyncFailureKind::Timeout) and retries each
//! of the batch's items after its backoff from the cache's
//! [`RateLimiter`](autorefresh_core::RateLimiter), like any failed batch. A hung external call
//! therefore holds a worker for at most the limit.
//!
//! The clock starts when the call is made, not while the layers outside it wait for
//! readiness (a concurrency permit, say). Where it sits decides what it bounds: outermost, it
//! bounds the whole call, in-place retries and rate-limit waits included; inside a retry
//! layer, it bounds each attempt (see
//! [`BackoffRetryPolicy::with_retry_timeouts`](crate::retry::BackoffRetryPolicy::with_retry_timeouts)).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
//! use autorefresh_tower::timeout::{is_timeout, TimeoutLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let hangs = service_fn(|_batch: Batch<u64, u32>| async {
//!     std::future::pending::<Result<Vec<ItemSyncResponse<u64, u32>>, SyncError>>().await
//! });
//! let sync = ServiceBuilder::new().layer(TimeoutLayer::new(Duration::from_secs(30))).service(hangs);
//!
//! let err = sync.oneshot(Vec::new()).await.unwrap_err();
//! assert!(is_timeout(err.as_ref()));
//! # }
//! ```

mod error;

pub use error::is_timeout;
pub use tower::timeout::error::Elapsed;
pub use tower::timeout::{Timeout, TimeoutLayer};
