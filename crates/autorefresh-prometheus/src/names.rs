//! The exported metric names, their histogram buckets, and the Go names they replace.

/// The label every metric carries: the cache's name, as given to [`PrometheusMetrics::new`].
///
/// [`PrometheusMetrics::new`]: crate::PrometheusMetrics::new
pub const CACHE_LABEL: &str = "cache";

/// The label that says why a batch failed on [`SYNC_ERRORS`] and [`SYNC_FAILED_ITEMS`]:
/// `error`, `panic` or `timeout` ([`autorefresh_core::SyncFailureKind::as_str`]).
pub const KIND_LABEL: &str = "kind";

/// Counter: reads that found the id (Go: `cache_hit`).
pub const CACHE_HITS: &str = "autorefresh_cache_hits_total";
/// Counter: reads that did not find the id, and `get_or_create` calls that created it (Go:
/// `cache_miss`).
pub const CACHE_MISSES: &str = "autorefresh_cache_misses_total";
/// Counter: items the store evicted to stay within its capacity (Go: `lru_evictions`).
pub const LRU_EVICTIONS: &str = "autorefresh_lru_evictions_total";
/// Gauge: how many items the cache holds, after the last sweep (Go: `size`).
pub const SIZE: &str = "autorefresh_size";
/// Histogram: how long each successful sync call took, per batch (Go: `latency`, and the
/// work queue's `work_duration`).
pub const SYNC_LATENCY: &str = "autorefresh_sync_latency_seconds";
/// Counter: items in batches that synced successfully. Not in the Go original.
pub const SYNCED_ITEMS: &str = "autorefresh_synced_items_total";
/// Counter, labelled [`KIND_LABEL`]: failed batches (Go: `sync_errors`).
pub const SYNC_ERRORS: &str = "autorefresh_sync_errors_total";
/// Counter, labelled [`KIND_LABEL`]: items in failed batches, each queued for a retry. Not in
/// the Go original.
pub const SYNC_FAILED_ITEMS: &str = "autorefresh_sync_failed_items_total";
/// Counter: sync responses naming an id that was not in their batch, ignored. Not in the Go
/// original.
pub const IGNORED_RESPONSES: &str = "autorefresh_ignored_responses_total";
/// Counter: ids that became due for a sync (work queue: `adds`).
pub const WORKQUEUE_ADDS: &str = "autorefresh_workqueue_adds_total";
/// Gauge: ids due and not yet handed to a worker (work queue: `depth`).
pub const WORKQUEUE_DEPTH: &str = "autorefresh_workqueue_depth";
/// Histogram: how long a batch's oldest id waited between becoming due and its dispatch (work
/// queue: `queue_latency`).
pub const WORKQUEUE_QUEUE_DURATION: &str = "autorefresh_workqueue_queue_duration_seconds";
/// Counter: ids queued for a retry after a failure (work queue: `retries`).
pub const WORKQUEUE_RETRIES: &str = "autorefresh_workqueue_retries_total";
/// Gauge: the summed running time of the batches in flight (work queue:
/// `unfinished_work_seconds`).
pub const WORKQUEUE_UNFINISHED_WORK: &str = "autorefresh_workqueue_unfinished_work_seconds";
/// Gauge: the running time of the longest-running batch in flight (work queue:
/// `longest_running_processor_seconds`).
pub const WORKQUEUE_LONGEST_RUNNING: &str =
    "autorefresh_workqueue_longest_running_processor_seconds";
/// Gauge: the age, since its last successful sync (or its creation), of the stalest
/// non-terminal item, after the last sweep. Not in the Go original.
pub const STALENESS: &str = "autorefresh_staleness_seconds";
/// Histogram: the age of each synced batch's stalest item when the batch was dispatched. Not
/// in the Go original.
pub const AGE_AT_SYNC: &str = "autorefresh_age_at_sync_seconds";
/// Histogram: how long each sync call waited for the rate-limit layer. Not in the Go original.
pub const RATE_LIMIT_WAIT: &str = "autorefresh_rate_limit_wait_seconds";

/// Buckets of [`SYNC_LATENCY`], in seconds: 1 ms to 5 minutes, the span from an in-memory sync
/// function to a slow external API behind a timeout.
pub const SYNC_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Buckets of [`WORKQUEUE_QUEUE_DURATION`], in seconds: 100 µs (a free worker took it at once)
/// to 10 minutes (workers saturated for several periods).
pub const QUEUE_DURATION_BUCKETS: &[f64] =
    &[0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Buckets of [`AGE_AT_SYNC`], in seconds: 100 ms (sync on create) to 1 hour. With a healthy
/// cache most observations land near the resync period.
pub const AGE_AT_SYNC_BUCKETS: &[f64] =
    &[0.1, 0.5, 1.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Buckets of [`RATE_LIMIT_WAIT`], in seconds: no wait at all (the first bucket) to 1 minute.
pub const RATE_LIMIT_WAIT_BUCKETS: &[f64] =
    &[0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// What kind of Prometheus metric a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricType {
    /// A monotonic counter (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A histogram with the buckets in [`MetricInfo::buckets`].
    Histogram,
}

/// One metric this crate exports.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricType,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The flytestdlib (or client-go workqueue) names it replaces; empty when Go has no
    /// equivalent.
    pub go_names: &'static [&'static str],
    /// The histogram's bucket bounds in seconds; empty for counters and gauges.
    pub buckets: &'static [f64],
}

const fn info(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    go_names: &'static [&'static str],
    buckets: &'static [f64],
) -> MetricInfo {
    MetricInfo { name, kind, help, go_names, buckets }
}

/// Every metric this crate exports, in the order of `docs/operations.md`.
///
/// # Examples
///
/// ```
/// use autorefresh_prometheus::{MetricType, METRICS};
///
/// let hits = METRICS.iter().find(|m| m.go_names.contains(&"cache_hit")).unwrap();
/// assert_eq!(hits.name, "autorefresh_cache_hits_total");
/// assert_eq!(hits.kind, MetricType::Counter);
/// ```
pub const METRICS: &[MetricInfo] = {
    use MetricType::{Counter, Gauge, Histogram};
    &[
        info(CACHE_HITS, Counter, "Reads that found the id.", &["cache_hit"], &[]),
        info(
            CACHE_MISSES,
            Counter,
            "Reads that did not find the id, and get_or_create calls that created it.",
            &["cache_miss"],
            &[],
        ),
        info(
            LRU_EVICTIONS,
            Counter,
            "Items evicted to stay within the capacity.",
            &["lru_evictions"],
            &[],
        ),
        info(SIZE, Gauge, "Items in the cache after the last sweep.", &["size"], &[]),
        info(
            SYNC_LATENCY,
            Histogram,
            "Duration of each successful sync call (one batch).",
            &["latency", "work_duration"],
            SYNC_LATENCY_BUCKETS,
        ),
        info(SYNCED_ITEMS, Counter, "Items in batches that synced successfully.", &[], &[]),
        info(SYNC_ERRORS, Counter, "Failed batches, by kind.", &["sync_errors"], &[]),
        info(
            SYNC_FAILED_ITEMS,
            Counter,
            "Items in failed batches, by kind; each is retried after its backoff.",
            &[],
            &[],
        ),
        info(
            IGNORED_RESPONSES,
            Counter,
            "Sync responses naming an id that was not in their batch.",
            &[],
            &[],
        ),
        info(WORKQUEUE_ADDS, Counter, "Ids that became due for a sync.", &["adds"], &[]),
        info(
            WORKQUEUE_DEPTH,
            Gauge,
            "Ids due for a sync and not yet handed to a worker.",
            &["depth"],
            &[],
        ),
        info(
            WORKQUEUE_QUEUE_DURATION,
            Histogram,
            "Wait of each batch's oldest id between becoming due and its dispatch.",
            &["queue_latency"],
            QUEUE_DURATION_BUCKETS,
        ),
        info(
            WORKQUEUE_RETRIES,
            Counter,
            "Ids queued for a retry after a failure.",
            &["retries"],
            &[],
        ),
        info(
            WORKQUEUE_UNFINISHED_WORK,
            Gauge,
            "Summed running time of the batches in flight.",
            &["unfinished_work_seconds"],
            &[],
        ),
        info(
            WORKQUEUE_LONGEST_RUNNING,
            Gauge,
            "Running time of the longest-running batch in flight.",
            &["longest_running_processor_seconds"],
            &[],
        ),
        info(
            STALENESS,
            Gauge,
            "Age since its last successful sync of the stalest non-terminal item.",
            &[],
            &[],
        ),
        info(
            AGE_AT_SYNC,
            Histogram,
            "Age of each synced batch's stalest item when the batch was dispatched.",
            &[],
            AGE_AT_SYNC_BUCKETS,
        ),
        info(
            RATE_LIMIT_WAIT,
            Histogram,
            "Wait of each sync call for the rate-limit layer.",
            &[],
            RATE_LIMIT_WAIT_BUCKETS,
        ),
    ]
};
