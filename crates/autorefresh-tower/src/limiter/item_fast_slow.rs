//! A fixed fast delay for the first attempts, then a fixed slow one: client-go's
//! `ItemFastSlowRateLimiter`.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use autorefresh_core::RateLimiter;
use parking_lot::Mutex;

/// Delays an id by `fast_delay` for its first `max_fast_attempts` failures and by `slow_delay`
/// after that: client-go's `ItemFastSlowRateLimiter`.
///
/// Each [`when`](RateLimiter::when) records one more failure of the id first, then compares:
/// failures `1..=max_fast_attempts` get `fast_delay`, later ones `slow_delay`.
/// [`forget`](RateLimiter::forget) drops the id's count.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
/// use autorefresh_tower::ItemFastSlowRateLimiter;
///
/// let limiter = ItemFastSlowRateLimiter::new(Duration::from_secs(1), Duration::from_secs(60), 2);
/// assert_eq!(limiter.when(&"job-1"), Duration::from_secs(1));
/// assert_eq!(limiter.when(&"job-1"), Duration::from_secs(1));
/// assert_eq!(limiter.when(&"job-1"), Duration::from_secs(60));
/// assert_eq!(limiter.num_requeues(&"job-1"), 3);
/// limiter.forget(&"job-1");
/// assert_eq!(limiter.tracked_items(), 0);
/// ```
pub struct ItemFastSlowRateLimiter<K> {
    failures: Mutex<HashMap<K, u32>>,
    fast_delay: Duration,
    slow_delay: Duration,
    max_fast_attempts: u32,
}

impl<K> ItemFastSlowRateLimiter<K> {
    /// A limiter returning `fast_delay` for an id's first `max_fast_attempts` failures and
    /// `slow_delay` for the rest.
    pub fn new(fast_delay: Duration, slow_delay: Duration, max_fast_attempts: u32) -> Self {
        Self { failures: Mutex::new(HashMap::new()), fast_delay, slow_delay, max_fast_attempts }
    }

    /// How many ids the limiter holds a failure count for.
    pub fn tracked_items(&self) -> usize {
        self.failures.lock().len()
    }
}

impl<K> fmt::Debug for ItemFastSlowRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemFastSlowRateLimiter")
            .field("fast_delay", &self.fast_delay)
            .field("slow_delay", &self.slow_delay)
            .field("max_fast_attempts", &self.max_fast_attempts)
            .field("tracked_items", &self.tracked_items())
            .finish()
    }
}

impl<K> RateLimiter<K> for ItemFastSlowRateLimiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn when(&self, id: &K) -> Duration {
        let failures = {
            let mut map = self.failures.lock();
            match map.get_mut(id) {
                Some(count) => {
                    *count = count.saturating_add(1);
                    *count
                }
                None => {
                    map.insert(id.clone(), 1);
                    1
                }
            }
        };
        if failures <= self.max_fast_attempts {
            self.fast_delay
        } else {
            self.slow_delay
        }
    }

    fn forget(&self, id: &K) {
        self.failures.lock().remove(id);
    }

    fn num_requeues(&self, id: &K) -> u32 {
        self.failures.lock().get(id).copied().unwrap_or(0)
    }
}
