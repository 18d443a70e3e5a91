//! The events the cache reports, for any metrics backend.

use std::sync::Arc;
use std::time::Duration;

/// Why a batch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncFailureKind {
    /// The sync function (or the batcher) returned an error.
    Error,
    /// The sync function (or the batcher) panicked.
    Panic,
}

impl SyncFailureKind {
    /// A short lowercase name, fit for a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Panic => "panic",
        }
    }
}

/// Observes what the cache does. Every method has a no-op default, so an implementation
/// overrides only what it records. Methods are called on the read path and from the
/// workers: keep them cheap and non-blocking.
///
/// `autorefresh-prometheus` implements it with the `metrics` crate.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use autorefresh_core::Metrics;
///
/// #[derive(Default, Debug)]
/// struct Hits(AtomicU64);
///
/// impl Metrics for Hits {
///     fn cache_hit(&self) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let hits = Hits::default();
/// hits.cache_hit();
/// hits.cache_miss(); // the default: nothing
/// assert_eq!(hits.0.load(Ordering::Relaxed), 1);
/// ```
pub trait Metrics: Send + Sync + 'static {
    /// A `get` or `get_or_create` found the id.
    fn cache_hit(&self) {}
    /// A `get` did not find the id, or `get_or_create` created it.
    fn cache_miss(&self) {}
    /// The store evicted an item to stay within its capacity.
    fn eviction(&self) {}
    /// A batch of `items` items was synced successfully in `elapsed`.
    fn batch_synced(&self, items: usize, elapsed: Duration) {
        let _ = (items, elapsed);
    }
    /// A batch of `items` items failed; its items are retried after their backoff.
    fn sync_error(&self, kind: SyncFailureKind, items: usize) {
        let _ = (kind, items);
    }
    /// A sync response named an id that was not in its batch, and was ignored.
    fn ignored_response(&self) {}
}

/// Records nothing: the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMetrics;

impl Metrics for NoopMetrics {}

impl<M: Metrics + ?Sized> Metrics for Arc<M> {
    fn cache_hit(&self) {
        (**self).cache_hit()
    }
    fn cache_miss(&self) {
        (**self).cache_miss()
    }
    fn eviction(&self) {
        (**self).eviction()
    }
    fn batch_synced(&self, items: usize, elapsed: Duration) {
        (**self).batch_synced(items, elapsed)
    }
    fn sync_error(&self, kind: SyncFailureKind, items: usize) {
        (**self).sync_error(kind, items)
    }
    fn ignored_response(&self) {
        (**self).ignored_response()
    }
}
