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
    /// The sync call did not finish within the timeout layer's limit.
    Timeout,
}

impl SyncFailureKind {
    /// A short lowercase name, fit for a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
        }
    }
}

/// Observes what the cache does. Every method has a no-op default, so an implementation
/// overrides only what it records.
///
/// `cache_hit` and `cache_miss` are called on every read, from any thread: keep them cheap
/// (a contended shared atomic costs more than the read itself). The rest are called by the
/// refresh tasks, at most once per batch or per sweep, never per item on a hot path.
///
/// `autorefresh-prometheus` implements it with the `metrics` crate. The Go names each event
/// replaces are in `docs/operations.md`.
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
    /// A `get` or `get_or_create` found the id (Go: `cache_hit`).
    fn cache_hit(&self) {}
    /// A `get` did not find the id, or `get_or_create` created it (Go: `cache_miss`).
    fn cache_miss(&self) {}
    /// The store evicted an item to stay within its capacity (Go: `lru_evictions`).
    fn eviction(&self) {}
    /// How many items the cache holds, reported after each sweep (Go: `size`).
    fn size(&self, items: usize) {
        let _ = items;
    }
    /// A batch of `items` items was synced successfully; the call took `elapsed` (Go:
    /// `latency`, and the work queue's `work_duration`).
    fn batch_synced(&self, items: usize, elapsed: Duration) {
        let _ = (items, elapsed);
    }
    /// A batch of `items` items failed; its items are retried after their backoff (Go:
    /// `sync_errors`).
    fn sync_error(&self, kind: SyncFailureKind, items: usize) {
        let _ = (kind, items);
    }
    /// A sync response named an id that was not in its batch, and was ignored.
    fn ignored_response(&self) {}
    /// `items` ids became due for a sync (work queue: `adds`).
    fn queue_added(&self, items: usize) {
        let _ = items;
    }
    /// How many ids are due and not yet handed to a worker, reported as batches are formed
    /// and taken (work queue: `depth`).
    fn queue_depth(&self, ready: usize) {
        let _ = ready;
    }
    /// How long a batch's oldest id waited between becoming due and its dispatch (work
    /// queue: `queue_duration`).
    fn queue_latency(&self, waited: Duration) {
        let _ = waited;
    }
    /// `items` ids were queued for a retry after a failure (work queue: `retries`).
    fn retried(&self, items: usize) {
        let _ = items;
    }
    /// The batches in flight: their summed running time and the longest one's, reported
    /// every second while the refresh runs (work queue: `unfinished_work_seconds`,
    /// `longest_running_processor_seconds`).
    fn unfinished_work(&self, total: Duration, longest: Duration) {
        let _ = (total, longest);
    }
    /// The age, since its last successful sync (or its creation), of the stalest
    /// non-terminal item, reported after each sweep. Not in the Go original.
    fn staleness(&self, oldest: Duration) {
        let _ = oldest;
    }
    /// A synced batch's stalest item was this old (since its previous sync or creation)
    /// when the batch was dispatched. Not in the Go original.
    fn age_at_sync(&self, age: Duration) {
        let _ = age;
    }
    /// A sync call waited this long for the rate-limit layer's permission. Not in the Go
    /// original.
    fn rate_limit_wait(&self, waited: Duration) {
        let _ = waited;
    }
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
    fn size(&self, items: usize) {
        (**self).size(items)
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
    fn queue_added(&self, items: usize) {
        (**self).queue_added(items)
    }
    fn queue_depth(&self, ready: usize) {
        (**self).queue_depth(ready)
    }
    fn queue_latency(&self, waited: Duration) {
        (**self).queue_latency(waited)
    }
    fn retried(&self, items: usize) {
        (**self).retried(items)
    }
    fn unfinished_work(&self, total: Duration, longest: Duration) {
        (**self).unfinished_work(total, longest)
    }
    fn staleness(&self, oldest: Duration) {
        (**self).staleness(oldest)
    }
    fn age_at_sync(&self, age: Duration) {
        (**self).age_at_sync(age)
    }
    fn rate_limit_wait(&self, waited: Duration) {
        (**self).rate_limit_wait(waited)
    }
}
