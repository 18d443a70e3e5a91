//! A limiter that never delays but still counts requeues.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use autorefresh_core::RateLimiter;
use parking_lot::Mutex;

/// Never delays a retry, but counts each id's requeues so
/// [`num_requeues`](RateLimiter::num_requeues) stays meaningful (for metrics or a retry
/// budget); [`forget`](RateLimiter::forget) drops the id's count.
///
/// Useful in tests, and where the sync function already paces itself. It has no client-go
/// counterpart.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
/// use autorefresh_tower::NoDelayRateLimiter;
///
/// let limiter = NoDelayRateLimiter::new();
/// assert_eq!(limiter.when(&"job-1"), Duration::ZERO);
/// assert_eq!(limiter.when(&"job-1"), Duration::ZERO);
/// assert_eq!(limiter.num_requeues(&"job-1"), 2);
/// limiter.forget(&"job-1");
/// assert_eq!(limiter.num_requeues(&"job-1"), 0);
/// assert_eq!(limiter.tracked_items(), 0);
/// ```
pub struct NoDelayRateLimiter<K> {
    requeues: Mutex<HashMap<K, u32>>,
}

impl<K> NoDelayRateLimiter<K> {
    /// A limiter that never delays and tracks no id yet.
    pub fn new() -> Self {
        Self { requeues: Mutex::new(HashMap::new()) }
    }

    /// How many ids the limiter holds a requeue count for.
    pub fn tracked_items(&self) -> usize {
        self.requeues.lock().len()
    }
}

impl<K> Default for NoDelayRateLimiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> fmt::Debug for NoDelayRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoDelayRateLimiter").field("tracked_items", &self.tracked_items()).finish()
    }
}

impl<K> RateLimiter<K> for NoDelayRateLimiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn when(&self, id: &K) -> Duration {
        let mut requeues = self.requeues.lock();
        match requeues.get_mut(id) {
            Some(count) => *count = count.saturating_add(1),
            None => {
                requeues.insert(id.clone(), 1);
            }
        }
        Duration::ZERO
    }

    fn forget(&self, id: &K) {
        self.requeues.lock().remove(id);
    }

    fn num_requeues(&self, id: &K) -> u32 {
        self.requeues.lock().get(id).copied().unwrap_or(0)
    }
}
