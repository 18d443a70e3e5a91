//! [`RateLimiter`](autorefresh_core::RateLimiter) implementations with the behaviour and
//! defaults of client-go's `k8s.io/client-go/util/workqueue` rate limiters.
//!
//! | Limiter | client-go |
//! |---|---|
//! | [`ItemExponentialFailureRateLimiter`] | `ItemExponentialFailureRateLimiter` |
//! | [`ItemFastSlowRateLimiter`] | `ItemFastSlowRateLimiter` |
//! | [`BucketRateLimiter`] | `BucketRateLimiter` (`golang.org/x/time/rate`) |
//! | [`MaxOfRateLimiter`] | `MaxOfRateLimiter` |
//! | [`default_controller_rate_limiter`] | `DefaultControllerRateLimiter` |
//! | [`NoDelayRateLimiter`] | none: zero delay, counted requeues |

mod bucket;
mod default_controller;
mod item_exponential_failure;
mod item_fast_slow;
mod max_of;
mod no_delay;

pub use bucket::{BucketRateLimiter, InvalidRateLimit};
pub use default_controller::default_controller_rate_limiter;
pub use item_exponential_failure::ItemExponentialFailureRateLimiter;
pub use item_fast_slow::ItemFastSlowRateLimiter;
pub use max_of::MaxOfRateLimiter;
pub use no_delay::NoDelayRateLimiter;
