//! The longest delay of several limiters: client-go's `MaxOfRateLimiter`.

use std::fmt;
use std::time::Duration;

use autorefresh_core::RateLimiter;

/// Asks every limiter it holds and keeps the longest delay: client-go's `MaxOfRateLimiter`.
///
/// [`when`](RateLimiter::when) calls `when` on every limiter (so each records the failure,
/// as in client-go) and returns the largest delay, or zero if it holds none.
/// [`forget`](RateLimiter::forget) forgets the id in all of them and
/// [`num_requeues`](RateLimiter::num_requeues) is the largest count any of them reports.
///
/// # Examples
///
/// A per-item backoff that never drops below an overall 10 qps:
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
/// use autorefresh_tower::{BucketRateLimiter, ItemExponentialFailureRateLimiter, MaxOfRateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), autorefresh_tower::InvalidRateLimit> {
/// // Time is paused so the bucket does not refill between the calls.
/// let limiter: MaxOfRateLimiter<&str> = MaxOfRateLimiter::new(vec![
///     Box::new(ItemExponentialFailureRateLimiter::new(
///         Duration::from_millis(50),
///         Duration::from_secs(60),
///     )),
///     Box::new(BucketRateLimiter::new(10.0, 1)?),
/// ]);
/// assert_eq!(limiter.when(&"a"), Duration::from_millis(50)); // backoff > bucket's 0
/// assert_eq!(limiter.when(&"b"), Duration::from_millis(100)); // bucket's 100 ms > 50 ms
/// assert_eq!(limiter.num_requeues(&"a"), 1);
/// # Ok(())
/// # }
/// ```
pub struct MaxOfRateLimiter<K> {
    limiters: Vec<Box<dyn RateLimiter<K>>>,
}

impl<K> MaxOfRateLimiter<K> {
    /// A limiter taking the maximum over `limiters`; an empty list never delays.
    pub fn new(limiters: Vec<Box<dyn RateLimiter<K>>>) -> Self {
        Self { limiters }
    }

    /// How many limiters it combines.
    pub fn len(&self) -> usize {
        self.limiters.len()
    }

    /// Whether it combines no limiter at all (and so never delays).
    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }
}

impl<K> fmt::Debug for MaxOfRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The limiters are trait objects without a Debug bound.
        f.debug_struct("MaxOfRateLimiter").field("limiters", &self.limiters.len()).finish()
    }
}

impl<K: 'static> RateLimiter<K> for MaxOfRateLimiter<K> {
    fn when(&self, id: &K) -> Duration {
        // Every limiter is asked, not just until one wins: each records the failure.
        self.limiters.iter().map(|limiter| limiter.when(id)).fold(Duration::ZERO, Duration::max)
    }

    fn forget(&self, id: &K) {
        for limiter in &self.limiters {
            limiter.forget(id);
        }
    }

    fn num_requeues(&self, id: &K) -> u32 {
        self.limiters.iter().map(|limiter| limiter.num_requeues(id)).max().unwrap_or(0)
    }
}
