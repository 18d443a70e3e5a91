//! Per-item exponential backoff: client-go's `ItemExponentialFailureRateLimiter`.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use autorefresh_core::RateLimiter;
use parking_lot::Mutex;

/// Delays each id by `base_delay * 2^failures`, capped at `max_delay`: client-go's
/// `ItemExponentialFailureRateLimiter`.
///
/// Every [`when`](RateLimiter::when) of an id returns the delay for the failures recorded so
/// far and then records one more, so an id's delays run `base`, `2 * base`, `4 * base`, ...
/// until they reach `max_delay`. As in client-go, a delay that would not fit in an `i64` of
/// nanoseconds is `max_delay`. [`forget`](RateLimiter::forget) drops the id's count entirely,
/// so the limiter only holds state for ids that failed and were not forgotten
/// ([`tracked_items`](Self::tracked_items)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
/// use autorefresh_tower::ItemExponentialFailureRateLimiter;
///
/// let limiter = ItemExponentialFailureRateLimiter::new(
///     Duration::from_millis(5),
///     Duration::from_millis(15),
/// );
/// assert_eq!(limiter.when(&"job-1"), Duration::from_millis(5));
/// assert_eq!(limiter.when(&"job-1"), Duration::from_millis(10));
/// assert_eq!(limiter.when(&"job-1"), Duration::from_millis(15)); // capped
/// assert_eq!(limiter.num_requeues(&"job-1"), 3);
///
/// limiter.forget(&"job-1");
/// assert_eq!(limiter.num_requeues(&"job-1"), 0);
/// assert_eq!(limiter.tracked_items(), 0);
/// assert_eq!(limiter.when(&"job-1"), Duration::from_millis(5));
/// ```
pub struct ItemExponentialFailureRateLimiter<K> {
    failures: Mutex<HashMap<K, u32>>,
    base_delay: Duration,
    max_delay: Duration,
}

impl<K> ItemExponentialFailureRateLimiter<K> {
    /// A limiter whose first delay for an id is `base_delay`, doubling with each further
    /// failure of that id, never more than `max_delay`.
    ///
    /// A zero `base_delay` never delays; a `max_delay` below `base_delay` makes every delay
    /// `max_delay` (both as in client-go).
    pub fn new(base_delay: Duration, max_delay: Duration) -> Self {
        Self { failures: Mutex::new(HashMap::new()), base_delay, max_delay }
    }

    /// The delay of an id's first failure.
    pub fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// The longest delay this limiter returns.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// How many ids the limiter holds a failure count for: those that failed at least once
    /// since they were last forgotten.
    pub fn tracked_items(&self) -> usize {
        self.failures.lock().len()
    }

    /// The delay after `failures` earlier failures, computed as client-go does:
    /// `base * 2^failures` in floating point, `max_delay` if that exceeds `i64::MAX`
    /// nanoseconds, else truncated to whole nanoseconds and capped at `max_delay`.
    fn delay_for(&self, failures: u32) -> Duration {
        if self.base_delay.is_zero() {
            // 0 * 2^n is 0, and 0 * inf (n huge) would be NaN in float.
            return Duration::ZERO.min(self.max_delay);
        }
        // `as_nanos` is a u128; the cast rounds to the nearest f64, as Go's float64(int64).
        let backoff = self.base_delay.as_nanos() as f64 * 2f64.powf(f64::from(failures));
        if backoff > i64::MAX as f64 {
            return self.max_delay;
        }
        // In range [0, i64::MAX]: the cast truncates, as Go's time.Duration(float64).
        let calculated = Duration::from_nanos(backoff as u64);
        calculated.min(self.max_delay)
    }
}

impl<K> Default for ItemExponentialFailureRateLimiter<K> {
    /// Base 5 ms, max 1000 s: the per-item half of client-go's `DefaultControllerRateLimiter`.
    ///
    /// (client-go's standalone `DefaultItemBasedRateLimiter` starts at 1 ms instead; use
    /// [`new`](Self::new) for that.)
    fn default() -> Self {
        Self::new(Duration::from_millis(5), Duration::from_secs(1000))
    }
}

impl<K> fmt::Debug for ItemExponentialFailureRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemExponentialFailureRateLimiter")
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .field("tracked_items", &self.tracked_items())
            .finish()
    }
}

impl<K> RateLimiter<K> for ItemExponentialFailureRateLimiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn when(&self, id: &K) -> Duration {
        let exp = {
            let mut failures = self.failures.lock();
            match failures.get_mut(id) {
                Some(count) => {
                    let exp = *count;
                    *count = count.saturating_add(1);
                    exp
                }
                None => {
                    failures.insert(id.clone(), 1);
                    0
                }
            }
        };
        self.delay_for(exp)
    }

    fn forget(&self, id: &K) {
        self.failures.lock().remove(id);
    }

    fn num_requeues(&self, id: &K) -> u32 {
        self.failures.lock().get(id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_for_matches_client_go_arithmetic() {
        let limiter =
            ItemExponentialFailureRateLimiter::<u8>::new(Duration::from_millis(5), Duration::MAX);
        assert_eq!(limiter.delay_for(0), Duration::from_millis(5));
        assert_eq!(limiter.delay_for(10), Duration::from_millis(5 * 1024));
        // 5e6 * 2^40 ns (~5.5e18) still fits in an i64 of nanoseconds.
        let fits = 5_000_000f64 * 2f64.powi(40);
        assert_eq!(limiter.delay_for(40), Duration::from_nanos(fits as u64));
        // 5e6 * 2^41 ~ 1.1e19 ns > i64::MAX: max_delay even though max_delay is larger.
        assert_eq!(limiter.delay_for(41), Duration::MAX);
        assert_eq!(limiter.delay_for(u32::MAX), Duration::MAX);
    }

    #[test]
    fn zero_base_never_delays() {
        let limiter =
            ItemExponentialFailureRateLimiter::<u8>::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(limiter.delay_for(0), Duration::ZERO);
        assert_eq!(limiter.delay_for(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn failure_count_saturates() {
        let limiter = ItemExponentialFailureRateLimiter::new(
            Duration::from_millis(1),
            Duration::from_secs(1),
        );
        limiter.failures.lock().insert(7u8, u32::MAX);
        assert_eq!(limiter.when(&7), Duration::from_secs(1));
        assert_eq!(limiter.num_requeues(&7), u32::MAX);
    }
}
