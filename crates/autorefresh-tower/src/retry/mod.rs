//! In-place retries of a failed sync call, with exponential backoff and jitter, for the
//! errors the sync function marks [`Transient`].
//!
//! [`BackoffRetryPolicy`] is a [`tower::retry::Policy`]; [`retry_layer`] wraps it in tower's
//! [`RetryLayer`]. When a call fails with a [`Transient`] error (anywhere in its
//! [`source`](std::error::Error::source) chain), the same batch is called again after a
//! backoff, up to `max_retries` times; the result of the last attempt is what the cache sees.
//! Every other error goes straight back to the cache, which retries each of the batch's items
//! after its own backoff from the cache's [`RateLimiter`](autorefresh_core::RateLimiter):
//!
//! | error | retried in place |
//! |---|---|
//! | [`Transient`] anywhere in the chain | yes, up to `max_retries` times |
//! | [`RetryAfter`] anywhere in the chain (even beside a [`Transient`]) | no: the queue honours its delay |
//! | the timeout layer's [`Elapsed`](crate::timeout::Elapsed) | only with [`with_retry_timeouts`](BackoffRetryPolicy::with_retry_timeouts) |
//! | anything else (permanent) | no |
//!
//! Tower clones the policy for each request, so the attempt count of one batch never leaks
//! into another, and the policy can be shared by all the cache's workers. Backoff waits run
//! on [`tokio::time`], so they follow a paused test clock.
//!
//! Put the retry layer outside the concurrency and rate limits: each attempt then takes its
//! own permit and token, and a batch waiting out its backoff holds neither.
//!
//! [`RetryAfter`]: autorefresh_core::RetryAfter
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
//! use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy, Jitter, Transient};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! // Fails twice with a transient error, then succeeds.
//! let flaky = service_fn(move |_batch: Batch<u64, u32>| {
//!     let attempt = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if attempt < 2 {
//!             return Err(Transient::new("connection reset").into());
//!         }
//!         Ok::<Vec<ItemSyncResponse<u64, u32>>, SyncError>(Vec::new())
//!     }
//! });
//! let policy = BackoffRetryPolicy::new(3)
//!     .with_backoff(Duration::from_millis(100), Duration::from_secs(5))
//!     .with_jitter(Jitter::None);
//! let sync = ServiceBuilder::new().layer(retry_layer(policy)).service(flaky);
//!
//! let start = tokio::time::Instant::now();
//! assert!(sync.oneshot(Vec::new()).await.is_ok());
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(start.elapsed(), Duration::from_millis(100 + 200));
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod policy;

pub use error::Transient;
pub use layer::retry_layer;
pub use policy::{BackoffRetryPolicy, Jitter};
pub use tower::retry::{Retry, RetryLayer};
