//! Exact values of every `Metrics` method, captured with `DebuggingRecorder` (a local recorder
//! per test: no global state).

use std::collections::HashMap;
use std::time::Duration;

use autorefresh_core::{Metrics, SyncFailureKind};
use autorefresh_prometheus::{MetricType, PrometheusMetrics, METRICS};
use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

/// A series: its kind, name and sorted labels.
type Series = (MetricKind, String, Vec<(String, String)>);

/// One snapshot: series -> value. Taking it resets counters and
/// histograms, as `DebuggingRecorder` does.
#[derive(Debug)]
struct Seen {
    values: HashMap<Series, DebugValue>,
    descriptions: HashMap<String, (Option<Unit>, Option<SharedString>)>,
}

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Self {
        let mut values = HashMap::new();
        let mut descriptions = HashMap::new();
        for (key, unit, description, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<_> =
                key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            labels.sort();
            let name = key.name().to_owned();
            descriptions.insert(name.clone(), (unit, description));
            values.insert((kind, name, labels), value);
        }
        Self { values, descriptions }
    }

    fn get(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        let mut labels: Vec<_> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        labels.sort();
        let key = (kind, name.to_owned(), labels);
        self.values.get(&key).unwrap_or_else(|| panic!("no {key:?} in {:#?}", self.values))
    }

    fn counter(&self, name: &str, cache: &str) -> u64 {
        self.counter_with(name, &[("cache", cache)])
    }

    fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(MetricKind::Counter, name, labels) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name} is {other:?}"),
        }
    }

    fn gauge(&self, name: &str, cache: &str) -> f64 {
        match self.get(MetricKind::Gauge, name, &[("cache", cache)]) {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is {other:?}"),
        }
    }

    fn histogram(&self, name: &str, cache: &str) -> Vec<f64> {
        match self.get(MetricKind::Histogram, name, &[("cache", cache)]) {
            DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{name} is {other:?}"),
        }
    }
}

fn setup(cache: &str) -> (PrometheusMetrics, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = metrics::with_local_recorder(&recorder, || PrometheusMetrics::new(cache));
    (metrics, snapshotter)
}

#[test]
fn every_metric_is_registered_at_zero_with_its_cache_label_and_description() {
    let (metrics, snapshotter) = setup("jobs");
    assert_eq!(metrics.cache_name(), "jobs");
    let seen = Seen::take(&snapshotter);
    for metric in METRICS {
        let kinds: &[Option<&str>] = if metric.name.starts_with("autorefresh_sync_errors")
            || metric.name.starts_with("autorefresh_sync_failed_items")
        {
            &[Some("error"), Some("panic"), Some("timeout")]
        } else {
            &[None]
        };
        for kind in kinds {
            let mut labels = vec![("cache", "jobs")];
            labels.extend(kind.map(|kind| ("kind", kind)));
            let value = match metric.kind {
                MetricType::Counter => seen.get(MetricKind::Counter, metric.name, &labels),
                MetricType::Gauge => seen.get(MetricKind::Gauge, metric.name, &labels),
                MetricType::Histogram => seen.get(MetricKind::Histogram, metric.name, &labels),
                other => panic!("no check for metric type {other:?}"),
            };
            let zero = match metric.kind {
                MetricType::Counter => DebugValue::Counter(0),
                MetricType::Gauge => DebugValue::Gauge(0.0.into()),
                MetricType::Histogram => DebugValue::Histogram(Vec::new()),
                other => panic!("no check for metric type {other:?}"),
            };
            assert_eq!(value, &zero, "{}", metric.name);
        }
        let (unit, description) = &seen.descriptions[metric.name];
        assert_eq!(description.as_deref(), Some(metric.help), "{}", metric.name);
        let expected_unit =
            if metric.name.ends_with("_seconds") { Unit::Seconds } else { Unit::Count };
        assert_eq!(*unit, Some(expected_unit), "{}", metric.name);
    }
    // 18 metrics, two of them in 3 kinds each.
    assert_eq!(seen.values.len(), METRICS.len() + 2 * 2);
}

#[test]
fn hits_and_misses_are_counted_on_flush() {
    let (metrics, snapshotter) = setup("jobs");
    for _ in 0..5 {
        metrics.cache_hit();
    }
    metrics.cache_miss();
    metrics.cache_miss();
    // Buffered until a flush.
    let before = Seen::take(&snapshotter);
    assert_eq!(before.counter("autorefresh_cache_hits_total", "jobs"), 0);
    assert_eq!(before.counter("autorefresh_cache_misses_total", "jobs"), 0);

    metrics.flush();
    let after = Seen::take(&snapshotter);
    assert_eq!(after.counter("autorefresh_cache_hits_total", "jobs"), 5);
    assert_eq!(after.counter("autorefresh_cache_misses_total", "jobs"), 2);

    // A second flush adds nothing more.
    metrics.flush();
    let again = Seen::take(&snapshotter);
    assert_eq!(again.counter("autorefresh_cache_hits_total", "jobs"), 0);
}

#[test]
fn hits_from_many_threads_are_all_counted() {
    let (metrics, snapshotter) = setup("jobs");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..10_000 {
                    metrics.cache_hit();
                }
                metrics.cache_miss();
            });
        }
        // Flushing while threads count loses nothing.
        for _ in 0..100 {
            metrics.flush();
        }
    });
    metrics.flush();
    // Counters are reset by each snapshot, so flush everything into one snapshot.
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.counter("autorefresh_cache_hits_total", "jobs"), 80_000);
    assert_eq!(seen.counter("autorefresh_cache_misses_total", "jobs"), 8);
}

#[test]
fn size_sets_the_gauge_and_flushes() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.cache_hit();
    metrics.size(42);
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.gauge("autorefresh_size", "jobs"), 42.0);
    assert_eq!(seen.counter("autorefresh_cache_hits_total", "jobs"), 1);
}

#[test]
fn eviction_counts() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.eviction();
    metrics.eviction();
    metrics.eviction();
    assert_eq!(Seen::take(&snapshotter).counter("autorefresh_lru_evictions_total", "jobs"), 3);
}

#[test]
fn batch_synced_records_latency_and_items() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.batch_synced(10, Duration::from_millis(250));
    metrics.batch_synced(3, Duration::from_secs(2));
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.histogram("autorefresh_sync_latency_seconds", "jobs"), [0.25, 2.0]);
    assert_eq!(seen.counter("autorefresh_synced_items_total", "jobs"), 13);
}

#[test]
fn sync_error_counts_batches_and_items_by_kind() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.sync_error(SyncFailureKind::Error, 4);
    metrics.sync_error(SyncFailureKind::Error, 1);
    metrics.sync_error(SyncFailureKind::Panic, 2);
    metrics.sync_error(SyncFailureKind::Timeout, 7);
    let seen = Seen::take(&snapshotter);
    let by_kind =
        |name: &str, kind: &str| seen.counter_with(name, &[("cache", "jobs"), ("kind", kind)]);
    assert_eq!(by_kind("autorefresh_sync_errors_total", "error"), 2);
    assert_eq!(by_kind("autorefresh_sync_errors_total", "panic"), 1);
    assert_eq!(by_kind("autorefresh_sync_errors_total", "timeout"), 1);
    assert_eq!(by_kind("autorefresh_sync_failed_items_total", "error"), 5);
    assert_eq!(by_kind("autorefresh_sync_failed_items_total", "panic"), 2);
    assert_eq!(by_kind("autorefresh_sync_failed_items_total", "timeout"), 7);
}

#[test]
fn ignored_response_counts() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.ignored_response();
    metrics.ignored_response();
    assert_eq!(Seen::take(&snapshotter).counter("autorefresh_ignored_responses_total", "jobs"), 2);
}

#[test]
fn workqueue_adds_depth_latency_and_retries() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.queue_added(5);
    metrics.queue_added(1);
    metrics.queue_depth(9);
    metrics.queue_depth(4);
    metrics.queue_latency(Duration::from_millis(5));
    metrics.queue_latency(Duration::from_secs(31));
    metrics.retried(3);
    metrics.retried(2);
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.counter("autorefresh_workqueue_adds_total", "jobs"), 6);
    assert_eq!(seen.gauge("autorefresh_workqueue_depth", "jobs"), 4.0);
    assert_eq!(
        seen.histogram("autorefresh_workqueue_queue_duration_seconds", "jobs"),
        [0.005, 31.0]
    );
    assert_eq!(seen.counter("autorefresh_workqueue_retries_total", "jobs"), 5);
}

#[test]
fn unfinished_work_sets_both_gauges_and_flushes() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.cache_miss();
    metrics.unfinished_work(Duration::from_millis(4500), Duration::from_secs(3));
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.gauge("autorefresh_workqueue_unfinished_work_seconds", "jobs"), 4.5);
    assert_eq!(seen.gauge("autorefresh_workqueue_longest_running_processor_seconds", "jobs"), 3.0);
    assert_eq!(seen.counter("autorefresh_cache_misses_total", "jobs"), 1);
}

#[test]
fn staleness_age_at_sync_and_rate_limit_wait() {
    let (metrics, snapshotter) = setup("jobs");
    metrics.staleness(Duration::from_secs(90));
    metrics.staleness(Duration::from_secs(61));
    metrics.age_at_sync(Duration::from_secs(30));
    metrics.age_at_sync(Duration::from_millis(100));
    metrics.rate_limit_wait(Duration::ZERO);
    metrics.rate_limit_wait(Duration::from_millis(1500));
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.gauge("autorefresh_staleness_seconds", "jobs"), 61.0);
    assert_eq!(seen.histogram("autorefresh_age_at_sync_seconds", "jobs"), [30.0, 0.1]);
    assert_eq!(seen.histogram("autorefresh_rate_limit_wait_seconds", "jobs"), [0.0, 1.5]);
}

#[test]
fn two_caches_are_told_apart_by_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (jobs, builds) = metrics::with_local_recorder(&recorder, || {
        (PrometheusMetrics::new("jobs"), PrometheusMetrics::new("builds"))
    });
    jobs.cache_hit();
    builds.cache_hit();
    builds.cache_hit();
    jobs.eviction();
    jobs.flush();
    builds.flush();
    let seen = Seen::take(&snapshotter);
    assert_eq!(seen.counter("autorefresh_cache_hits_total", "jobs"), 1);
    assert_eq!(seen.counter("autorefresh_cache_hits_total", "builds"), 2);
    assert_eq!(seen.counter("autorefresh_lru_evictions_total", "jobs"), 1);
    assert_eq!(seen.counter("autorefresh_lru_evictions_total", "builds"), 0);
}

#[test]
fn clones_share_counts_and_debug_names_the_cache() {
    let (metrics, snapshotter) = setup("jobs");
    let clone = metrics.clone();
    clone.cache_hit();
    metrics.flush();
    assert_eq!(Seen::take(&snapshotter).counter("autorefresh_cache_hits_total", "jobs"), 1);
    assert_eq!(format!("{metrics:?}"), r#"PrometheusMetrics { cache: "jobs", .. }"#);
}

#[test]
fn works_behind_an_arc_dyn_metrics() {
    let (metrics, snapshotter) = setup("jobs");
    let shared: std::sync::Arc<dyn Metrics> = std::sync::Arc::new(metrics.clone());
    shared.cache_hit();
    shared.size(1);
    assert_eq!(Seen::take(&snapshotter).counter("autorefresh_cache_hits_total", "jobs"), 1);
}

#[test]
fn the_operations_doc_lists_every_metric_with_its_go_names() {
    let doc = include_str!("../../../docs/operations.md");
    for metric in METRICS {
        let row = doc
            .lines()
            .find(|line| line.starts_with('|') && line.contains(&format!("`{}`", metric.name)))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for {}", metric.name));
        for go in metric.go_names {
            assert!(row.contains(&format!("`{go}`")), "{}'s row lacks `{go}`: {row}", metric.name);
        }
    }
}
