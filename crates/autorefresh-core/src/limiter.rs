//! The per-item rate limiter consulted when items are retried.

use std::sync::Arc;
use std::time::Duration;

/// Decides how long an item waits before it is retried: client-go's
/// `workqueue.RateLimiter`.
///
/// The cache calls [`when`](RateLimiter::when) once each time an item is re-queued after its
/// batch failed (an error, a panic or a timeout) and waits that long before syncing it again,
/// and calls [`forget`](RateLimiter::forget) when the item's sync succeeds or the item leaves
/// the cache (deleted, evicted, terminal), so a limiter never keeps state for ids the cache no
/// longer has. Sweeps and sync-on-create queue items without asking it.
///
/// Implementations live in `autorefresh-tower`; `Arc<L>` and `Box<L>` of a limiter are
/// limiters too.
///
/// # Examples
///
/// A fixed retry delay:
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
///
/// #[derive(Debug)]
/// struct FixedDelay(Duration);
///
/// impl<K> RateLimiter<K> for FixedDelay {
///     fn when(&self, _id: &K) -> Duration { self.0 }
///     fn forget(&self, _id: &K) {}
///     fn num_requeues(&self, _id: &K) -> u32 { 0 }
/// }
///
/// let limiter = FixedDelay(Duration::from_secs(1));
/// assert_eq!(limiter.when(&"job-1"), Duration::from_secs(1));
/// ```
pub trait RateLimiter<K>: Send + Sync + 'static {
    /// How long `id` should wait before its next attempt; records one more failure of `id`.
    fn when(&self, id: &K) -> Duration;
    /// Drops what the limiter tracks for `id`: it succeeded or left the cache.
    fn forget(&self, id: &K);
    /// How many times `id` was re-queued since it was last forgotten.
    fn num_requeues(&self, id: &K) -> u32;
}

impl<K, L: RateLimiter<K> + ?Sized> RateLimiter<K> for Arc<L> {
    fn when(&self, id: &K) -> Duration {
        (**self).when(id)
    }
    fn forget(&self, id: &K) {
        (**self).forget(id)
    }
    fn num_requeues(&self, id: &K) -> u32 {
        (**self).num_requeues(id)
    }
}

impl<K, L: RateLimiter<K> + ?Sized> RateLimiter<K> for Box<L> {
    fn when(&self, id: &K) -> Duration {
        (**self).when(id)
    }
    fn forget(&self, id: &K) {
        (**self).forget(id)
    }
    fn num_requeues(&self, id: &K) -> u32 {
        (**self).num_requeues(id)
    }
}
