//! Rate limiters and tower middleware for the autorefresh cache.
//!
//! This crate has two halves.
//!
//! # Rate limiters for retries
//!
//! The cache asks its [`RateLimiter`](autorefresh_core::RateLimiter) how long an item waits
//! before a retry after its batch failed, and tells it to forget the item once it succeeds or
//! leaves the cache. The [`limiter`] module provides the limiters Kubernetes controllers use,
//! with the behaviour and defaults of client-go's `k8s.io/client-go/util/workqueue`:
//!
//! - [`ItemExponentialFailureRateLimiter`]: per-item `base * 2^failures`, capped.
//! - [`ItemFastSlowRateLimiter`]: per-item fast delay for the first attempts, then a slow one.
//! - [`BucketRateLimiter`]: one token bucket over all items (`golang.org/x/time/rate`).
//! - [`MaxOfRateLimiter`]: the longest delay of several limiters.
//! - [`default_controller_rate_limiter`]: client-go's `DefaultControllerRateLimiter`, the
//!   cache's default.
//! - [`NoDelayRateLimiter`]: never waits, still counts requeues.
//!
//! ```
//! use std::time::Duration;
//! use autorefresh_core::RateLimiter;
//! use autorefresh_tower::default_controller_rate_limiter;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let limiter = default_controller_rate_limiter::<u64>();
//!
//! // One item failing again and again backs off exponentially...
//! assert_eq!(limiter.when(&7), Duration::from_millis(5));
//! assert_eq!(limiter.when(&7), Duration::from_millis(10));
//! assert_eq!(limiter.when(&7), Duration::from_millis(20));
//! assert_eq!(limiter.num_requeues(&7), 3);
//!
//! // ...and its success resets it.
//! limiter.forget(&7);
//! assert_eq!(limiter.when(&7), Duration::from_millis(5));
//!
//! // Many items failing at once share a bucket of 100 retries at 10 per second: with time
//! // paused, the 101st retry overall waits 100 ms although its own backoff is 5 ms.
//! for id in 100..196 {
//!     assert_eq!(limiter.when(&id), Duration::from_millis(5));
//! }
//! assert_eq!(limiter.when(&1_000), Duration::from_millis(100));
//! # }
//! ```
//!
//! # Middleware for the sync path
//!
//! The cache calls the user's sync function through a
//! [`tower::Service<Batch<K, V>>`](tower::Service) whose error is
//! [`SyncError`](autorefresh_core::SyncError) (the same type as [`tower::BoxError`]). It
//! applies the user's layers to it once, hands every worker a clone of the result and drives
//! each batch with [`ServiceExt::oneshot`](tower::ServiceExt::oneshot); state a layer shares
//! through an `Arc` (a semaphore, a token bucket) is therefore shared by all workers. Any
//! tower layer fits; these are the ones this domain needs:
//!
//! | Module | Layer | What it does |
//! |---|---|---|
//! | [`timeout`] | [`TimeoutLayer`](timeout::TimeoutLayer) (tower's) | fails a call that runs too long; [`is_timeout`] recognises it |
//! | [`retry`] | [`retry_layer`]`(`[`BackoffRetryPolicy`]`)` | retries calls failing with a [`Transient`] error in place, with exponential backoff and jitter |
//! | [`concurrency`] | [`ConcurrencyLimitLayer`](concurrency::ConcurrencyLimitLayer) (tower's) | at most `k` calls in flight across all workers |
//! | [`rate_limit`] | [`SyncRateLimitLayer`] | at most `qps` calls per second (burst `burst`) across all workers |
//!
//! A failed call, whatever the reason (an error not retried in place, retries exhausted, a
//! timeout), fails its batch: the cache retries each of its items after the backoff of its
//! own rate limiter, honouring a [`RetryAfter`](autorefresh_core::RetryAfter) delay.
//!
//! The layer listed first in a [`ServiceBuilder`](tower::ServiceBuilder) is the outermost.
//! The order below puts the timeout around everything (a batch never holds a worker for
//! longer), and the retry outside the limits (each attempt takes its own permit and token;
//! a batch waiting out its backoff holds neither).
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use autorefresh_core::{Batch, ItemSyncResponse, SyncAction, SyncError};
//! use autorefresh_tower::concurrency::ConcurrencyLimitLayer;
//! use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy, Transient};
//! use autorefresh_tower::rate_limit::SyncRateLimitLayer;
//! use autorefresh_tower::timeout::{is_timeout, TimeoutLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), autorefresh_core::SyncError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! // The user's sync function: fails transiently once, then reports every job done; job 13
//! // hangs forever.
//! let sync = service_fn(move |batch: Batch<String, bool>| {
//!     let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         if first {
//!             return Err(Transient::new("connection reset").into());
//!         }
//!         if batch.iter().any(|job| job.id() == "job-13") {
//!             std::future::pending::<()>().await;
//!         }
//!         Ok::<_, SyncError>(
//!             batch
//!                 .into_iter()
//!                 .map(|job| ItemSyncResponse { id: job.id().clone(), item: true, action: SyncAction::Update })
//!                 .collect::<Vec<_>>(),
//!         )
//!     }
//! });
//!
//! // What `AutoRefreshBuilder::layer` calls compose to.
//! let sync = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .layer(retry_layer(BackoffRetryPolicy::new(3)))
//!     .layer(ConcurrencyLimitLayer::new(4))
//!     .layer(SyncRateLimitLayer::per_second(10.0, 5)?)
//!     .service(sync);
//!
//! // Each worker drives its batch on a clone.
//! let job = |id: &str| autorefresh_core::ItemWrapper::new(id.to_string(), false);
//! let responses = sync.clone().oneshot(vec![job("job-1"), job("job-2")]).await?;
//! assert_eq!(responses.len(), 2);
//! assert_eq!(calls.load(Ordering::SeqCst), 2); // the transient failure was retried in place
//!
//! let err = sync.clone().oneshot(vec![job("job-13")]).await.unwrap_err();
//! assert!(is_timeout(err.as_ref())); // counted as SyncFailureKind::Timeout by the cache
//! # Ok(())
//! # }
//! ```
//!
//! All time is read from [`tokio::time`], so everything here can be tested on a paused tokio
//! clock. Nothing here panics on user input: a bad token bucket is an [`InvalidRateLimit`]
//! error.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod concurrency;
pub mod limiter;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use limiter::{
    default_controller_rate_limiter, BucketRateLimiter, InvalidRateLimit,
    ItemExponentialFailureRateLimiter, ItemFastSlowRateLimiter, MaxOfRateLimiter,
    NoDelayRateLimiter,
};
pub use rate_limit::SyncRateLimitLayer;
pub use retry::{retry_layer, BackoffRetryPolicy, Jitter, Transient};
pub use timeout::is_timeout;
