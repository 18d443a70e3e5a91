//! A budget of sync calls per second, shared by all the cache's workers: [`SyncRateLimitLayer`].
//!
//! Before each call, the [`SyncRateLimit`] service asks a shared
//! [`RateLimiter`](autorefresh_core::RateLimiter) (a [`BucketRateLimiter`](crate::BucketRateLimiter)
//! token bucket, usually) how long to wait, waits that long on [`tokio::time`], then calls the
//! inner service. Every call costs one token, whatever its batch size. The limiter lives
//! behind an `Arc`: the layer, its services and all their clones share it, so the budget holds
//! across all workers, and a limiter can be shared with other code.
//!
//! The wait happens in the call's future, after the inner service is ready: a worker spends
//! on it only the wait itself, and the inner call starts exactly when its token is due, so
//! the inner service never sees more than the bucket allows. A call cancelled while it waits
//! (by a timeout layer, or shutdown) never reaches the inner service; its token is spent.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
//! use autorefresh_tower::rate_limit::SyncRateLimitLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), autorefresh_core::SyncError> {
//! // 2 calls per second, with a burst of 2.
//! let sync = ServiceBuilder::new()
//!     .layer(SyncRateLimitLayer::per_second(2.0, 2)?)
//!     .service(service_fn(|_batch: Batch<u64, u32>| async {
//!         Ok::<Vec<ItemSyncResponse<u64, u32>>, SyncError>(Vec::new())
//!     }));
//!
//! let start = tokio::time::Instant::now();
//! for _ in 0..4 {
//!     sync.clone().oneshot(Vec::new()).await?;
//! }
//! // The burst went at once, then one call every 500 ms.
//! assert_eq!(start.elapsed(), Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```

pub mod future;
mod layer;
mod service;

pub use layer::SyncRateLimitLayer;
pub use service::SyncRateLimit;
