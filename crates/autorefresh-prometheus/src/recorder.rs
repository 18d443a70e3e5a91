//! [`PrometheusMetrics`]: the [`Metrics`] observer on the `metrics` crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{Metrics, SyncFailureKind};
use metrics::{Counter, Gauge, Histogram, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::names::{self, MetricType, CACHE_LABEL, KIND_LABEL, METRICS};
use crate::striped::ReadCounters;

/// The failure kinds registered up front, so each series exists (at 0) from the start.
const KINDS: [SyncFailureKind; 3] =
    [SyncFailureKind::Error, SyncFailureKind::Panic, SyncFailureKind::Timeout];

/// Implements [`autorefresh_core::Metrics`] with the `metrics` crate, so it reports to
/// whichever recorder is installed: `metrics-exporter-prometheus` (see
/// [`PrometheusMetrics::install`]), or any other.
///
/// Every metric carries the label `cache="<name>"`. The handles are registered once, in
/// [`new`](Self::new), with the recorder current at that moment (the global one, or the one set
/// by [`metrics::with_local_recorder`]); recording never looks a metric up by name.
///
/// Hits and misses, counted on every read, are buffered in per-thread slots and folded into
/// their counters by [`flush`](Self::flush). The engine's periodic reports
/// ([`size`](Metrics::size) after every sweep, [`unfinished_work`](Metrics::unfinished_work)
/// every second while the refresh runs) flush too, and so do [`render`](Self::render) and
/// every scrape of an [`Exporter`](crate::Exporter) the metrics are registered with. Other
/// metrics are recorded at once.
///
/// Cloning is cheap and shares the counts: keep a clone to flush or render while the cache
/// owns the other.
///
/// # Examples
///
/// ```
/// use autorefresh_core::Metrics;
/// use autorefresh_prometheus::{PrometheusBuilder, PrometheusMetrics};
///
/// let recorder = autorefresh_prometheus::set_buckets(PrometheusBuilder::new())
///     .unwrap()
///     .build_recorder();
/// let handle = recorder.handle();
/// let metrics = metrics::with_local_recorder(&recorder, || PrometheusMetrics::new("jobs"));
///
/// metrics.cache_hit();
/// metrics.cache_hit();
/// let text = metrics.render(&handle);
/// assert!(text.contains(r#"autorefresh_cache_hits_total{cache="jobs"} 2"#));
/// ```
#[derive(Clone)]
// Alone on its cache lines, so that wherever it is stored (say in the `Arc` a cache wraps it
// in), the pointer every hit reads never shares a line with data other threads write.
#[repr(align(128))]
pub struct PrometheusMetrics {
    pub(crate) inner: Arc<Inner>,
}

// Alone on its cache lines too: the hits and misses are read at a fixed offset from here.
#[repr(align(128))]
pub(crate) struct Inner {
    cache: String,
    reads: ReadCounters,
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    size: Gauge,
    sync_latency: Histogram,
    synced_items: Counter,
    /// Indexed like [`KINDS`].
    sync_errors: [Counter; 3],
    /// Indexed like [`KINDS`].
    failed_items: [Counter; 3],
    ignored: Counter,
    queue_adds: Counter,
    queue_depth: Gauge,
    queue_duration: Histogram,
    retries: Counter,
    unfinished_work: Gauge,
    longest_running: Gauge,
    staleness: Gauge,
    age_at_sync: Histogram,
    rate_limit_wait: Histogram,
}

impl Inner {
    pub(crate) fn flush(&self) {
        let (hits, misses) = self.reads.take();
        if hits > 0 {
            self.hits.increment(hits);
        }
        if misses > 0 {
            self.misses.increment(misses);
        }
    }
}

/// Describes every metric to the current recorder: the `# HELP` line, and the unit.
fn describe_all() {
    for metric in METRICS {
        let unit = if metric.name.ends_with("_seconds") { Unit::Seconds } else { Unit::Count };
        let help = SharedString::const_str(metric.help);
        match metric.kind {
            MetricType::Counter => metrics::describe_counter!(metric.name, unit, help),
            MetricType::Gauge => metrics::describe_gauge!(metric.name, unit, help),
            MetricType::Histogram => metrics::describe_histogram!(metric.name, unit, help),
        }
    }
}

impl PrometheusMetrics {
    /// Describes every metric and registers its handle, labelled `cache="<cache_name>"`, with
    /// the current recorder. Create it after installing the recorder (or inside
    /// [`metrics::with_local_recorder`]): handles registered before any recorder is installed
    /// record nothing.
    pub fn new(cache_name: &str) -> Self {
        describe_all();
        let cache = cache_name.to_owned();
        let counter = |name: &'static str| metrics::counter!(name, CACHE_LABEL => cache.clone());
        let gauge = |name: &'static str| metrics::gauge!(name, CACHE_LABEL => cache.clone());
        let histogram =
            |name: &'static str| metrics::histogram!(name, CACHE_LABEL => cache.clone());
        let by_kind = |name: &'static str| {
            KINDS.map(|kind| {
                metrics::counter!(name, CACHE_LABEL => cache.clone(), KIND_LABEL => kind.as_str())
            })
        };
        let inner = Inner {
            reads: ReadCounters::new(),
            hits: counter(names::CACHE_HITS),
            misses: counter(names::CACHE_MISSES),
            evictions: counter(names::LRU_EVICTIONS),
            size: gauge(names::SIZE),
            sync_latency: histogram(names::SYNC_LATENCY),
            synced_items: counter(names::SYNCED_ITEMS),
            sync_errors: by_kind(names::SYNC_ERRORS),
            failed_items: by_kind(names::SYNC_FAILED_ITEMS),
            ignored: counter(names::IGNORED_RESPONSES),
            queue_adds: counter(names::WORKQUEUE_ADDS),
            queue_depth: gauge(names::WORKQUEUE_DEPTH),
            queue_duration: histogram(names::WORKQUEUE_QUEUE_DURATION),
            retries: counter(names::WORKQUEUE_RETRIES),
            unfinished_work: gauge(names::WORKQUEUE_UNFINISHED_WORK),
            longest_running: gauge(names::WORKQUEUE_LONGEST_RUNNING),
            staleness: gauge(names::STALENESS),
            age_at_sync: histogram(names::AGE_AT_SYNC),
            rate_limit_wait: histogram(names::RATE_LIMIT_WAIT),
            cache,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The cache name every metric is labelled with.
    pub fn cache_name(&self) -> &str {
        &self.inner.cache
    }

    /// Folds the hits and misses buffered since the last flush into their counters. Cheap (it
    /// reads 65 cache lines), safe to call from any thread at any time; no count is lost or
    /// counted twice.
    pub fn flush(&self) {
        self.inner.flush();
    }

    /// Flushes, then renders `handle`'s recorder in the Prometheus text format. For
    /// applications that installed their own `metrics-exporter-prometheus` recorder (give its
    /// builder to [`set_buckets`](crate::set_buckets) first, or the histograms render as
    /// summaries) and serve it themselves.
    pub fn render(&self, handle: &PrometheusHandle) -> String {
        self.flush();
        handle.render()
    }

    fn kind_index(kind: SyncFailureKind) -> Option<usize> {
        KINDS.iter().position(|known| *known == kind)
    }
}

impl fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusMetrics")
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// `usize` to a gauge value; exact up to 2^53, far beyond any cache.
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: usize) -> f64 {
    n as f64
}

impl Metrics for PrometheusMetrics {
    #[inline]
    fn cache_hit(&self) {
        self.inner.reads.hit();
    }

    #[inline]
    fn cache_miss(&self) {
        self.inner.reads.miss();
    }

    fn eviction(&self) {
        self.inner.evictions.increment(1);
    }

    fn size(&self, items: usize) {
        self.inner.size.set(as_f64(items));
        self.inner.flush();
    }

    fn batch_synced(&self, items: usize, elapsed: Duration) {
        self.inner.sync_latency.record(elapsed);
        self.inner.synced_items.increment(items as u64);
    }

    fn sync_error(&self, kind: SyncFailureKind, items: usize) {
        if let Some(index) = Self::kind_index(kind) {
            self.inner.sync_errors[index].increment(1);
            self.inner.failed_items[index].increment(items as u64);
        } else {
            // A kind added to core after this crate: registered on first use, not up front.
            let cache = self.inner.cache.clone();
            let kind = kind.as_str();
            metrics::counter!(names::SYNC_ERRORS, CACHE_LABEL => cache.clone(), KIND_LABEL => kind)
                .increment(1);
            metrics::counter!(names::SYNC_FAILED_ITEMS, CACHE_LABEL => cache, KIND_LABEL => kind)
                .increment(items as u64);
        }
    }

    fn ignored_response(&self) {
        self.inner.ignored.increment(1);
    }

    fn queue_added(&self, items: usize) {
        self.inner.queue_adds.increment(items as u64);
    }

    fn queue_depth(&self, ready: usize) {
        self.inner.queue_depth.set(as_f64(ready));
    }

    fn queue_latency(&self, waited: Duration) {
        self.inner.queue_duration.record(waited);
    }

    fn retried(&self, items: usize) {
        self.inner.retries.increment(items as u64);
    }

    fn unfinished_work(&self, total: Duration, longest: Duration) {
        self.inner.unfinished_work.set(total);
        self.inner.longest_running.set(longest);
        self.inner.flush();
    }

    fn staleness(&self, oldest: Duration) {
        self.inner.staleness.set(oldest);
    }

    fn age_at_sync(&self, age: Duration) {
        self.inner.age_at_sync.record(age);
    }

    fn rate_limit_wait(&self, waited: Duration) {
        self.inner.rate_limit_wait.record(waited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_path_is_alone_on_its_cache_lines() {
        assert_eq!(std::mem::align_of::<PrometheusMetrics>(), 128);
        assert_eq!(std::mem::align_of::<Inner>(), 128);
    }
}
