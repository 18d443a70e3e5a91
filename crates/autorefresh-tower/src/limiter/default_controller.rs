//! client-go's `DefaultControllerRateLimiter`.

use std::hash::Hash;
use std::time::Duration;

use super::{BucketRateLimiter, ItemExponentialFailureRateLimiter, MaxOfRateLimiter};

/// The rate limiter Kubernetes controllers use by default: client-go's
/// `DefaultControllerRateLimiter`, and the cache's default.
///
/// It is the [`MaxOfRateLimiter`] of
/// - a per-item [`ItemExponentialFailureRateLimiter`] from 5 ms up to 1000 s, and
/// - an overall [`BucketRateLimiter`] of 10 qps with a burst of 100,
///
/// so one id backs off on its own while retries of all ids together stay below 10 per second
/// once the burst is spent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
/// use autorefresh_tower::default_controller_rate_limiter;
///
/// let limiter = default_controller_rate_limiter::<String>();
/// let id = "job-1".to_string();
/// assert_eq!(limiter.when(&id), Duration::from_millis(5));
/// assert_eq!(limiter.when(&id), Duration::from_millis(10));
/// assert_eq!(limiter.num_requeues(&id), 2);
/// limiter.forget(&id);
/// assert_eq!(limiter.num_requeues(&id), 0);
/// ```
pub fn default_controller_rate_limiter<K>() -> MaxOfRateLimiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    MaxOfRateLimiter::new(vec![
        Box::new(ItemExponentialFailureRateLimiter::<K>::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
        )),
        Box::new(BucketRateLimiter::new_unchecked(10.0, 100)),
    ])
}
