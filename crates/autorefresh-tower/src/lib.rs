//! Rate limiters for the autorefresh cache, with the behaviour and defaults of client-go's
//! `k8s.io/client-go/util/workqueue`.
//!
//! The cache asks its [`RateLimiter`](autorefresh_core::RateLimiter) how long an item waits
//! before a retry after its batch failed, and tells it to forget the item once it succeeds or
//! leaves the cache. This crate provides the limiters Kubernetes controllers use:
//!
//! - [`ItemExponentialFailureRateLimiter`]: per-item `base * 2^failures`, capped.
//! - [`ItemFastSlowRateLimiter`]: per-item fast delay for the first attempts, then a slow one.
//! - [`BucketRateLimiter`]: one token bucket over all items (`golang.org/x/time/rate`).
//! - [`MaxOfRateLimiter`]: the longest delay of several limiters.
//! - [`default_controller_rate_limiter`]: client-go's `DefaultControllerRateLimiter`, the
//!   cache's default.
//! - [`NoDelayRateLimiter`]: never waits, still counts requeues.
//!
//! All time is read from [`tokio::time::Instant`], so code using these limiters can be tested
//! on a paused tokio clock. Nothing here panics on user input: a bad token bucket is an
//! [`InvalidRateLimit`] error.
//!
//! # Examples
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
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod limiter;

pub use limiter::{
    default_controller_rate_limiter, BucketRateLimiter, InvalidRateLimit,
    ItemExponentialFailureRateLimiter, ItemFastSlowRateLimiter, MaxOfRateLimiter,
    NoDelayRateLimiter,
};
