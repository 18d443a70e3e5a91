//! Prometheus metrics for the autorefresh cache.
//!
//! **Status: skeleton.** The adapter that implements [`autorefresh_core::Metrics`] with the
//! `metrics` crate and serves `/metrics` through `metrics-exporter-prometheus` lands with the
//! metrics issue. Until then this crate only names the metrics it will export, with the Go
//! name each one replaces, so dashboards can be planned against them.
//!
//! # Examples
//!
//! ```
//! use autorefresh_prometheus::METRIC_NAMES;
//!
//! let (rust, go) = METRIC_NAMES[0];
//! assert_eq!((rust, go), ("autorefresh_sync_errors_total", "sync_errors"));
//! ```
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

/// The metric names this crate will export, each with the flytestdlib name it replaces.
pub const METRIC_NAMES: &[(&str, &str)] = &[
    ("autorefresh_sync_errors_total", "sync_errors"),
    ("autorefresh_lru_evictions_total", "lru_evictions"),
    ("autorefresh_sync_latency_seconds", "latency"),
    ("autorefresh_cache_hits_total", "cache_hit"),
    ("autorefresh_cache_misses_total", "cache_miss"),
    ("autorefresh_size", "size"),
];
