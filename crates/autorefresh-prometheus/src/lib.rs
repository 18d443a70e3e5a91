//! Prometheus metrics for the [autorefresh] cache.
//!
//! [`PrometheusMetrics`] implements [`autorefresh_core::Metrics`] with the [`metrics`] crate,
//! so it reports to any installed recorder; every metric carries the label
//! `cache="<name>"`. [`PrometheusMetrics::install`] is the one-call setup: it installs a
//! `metrics-exporter-prometheus` recorder globally and serves `/metrics` over HTTP from a
//! Tokio task ([`Exporter`]). Applications with their own recorder use [`set_buckets`] on
//! their builder and [`PrometheusMetrics::render`] (or [`Exporter::serve`]).
//!
//! The names, with the flytestdlib or client-go workqueue name each one replaces, are in
//! [`METRICS`] and in `docs/operations.md`.
//!
//! # The read path
//!
//! `cache_hit` and `cache_miss` run on every read. Instead of one counter shared by every
//! core, each thread counts into a cache-line-padded slot of its own (up to 64 threads at
//! once; more share an overflow slot) with a plain load and store, and
//! [`PrometheusMetrics::flush`] folds the slots into the counters. Flushes happen on every scrape and render, after
//! every sweep ([`size`](autorefresh_core::Metrics::size)) and every second while batches
//! run ([`unfinished_work`](autorefresh_core::Metrics::unfinished_work)), so a scrape never
//! misses a hit that happened before it.
//!
//! # Examples
//!
//! Serve `/metrics` on an ephemeral loopback port and read it back:
//!
//! ```
//! use autorefresh_core::Metrics;
//! use autorefresh_prometheus::PrometheusMetrics;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), autorefresh_prometheus::Error> {
//! let addr = "127.0.0.1:0".parse().expect("a socket address");
//! let (metrics, exporter) = PrometheusMetrics::install("jobs", addr)?;
//! println!("scrape {}", exporter.url());
//!
//! // Give `metrics.clone()` to the cache: AutoRefresh::builder("jobs").metrics(...).
//! metrics.cache_hit();
//! metrics.size(1);
//!
//! let text = exporter.render(); // what a scrape returns
//! assert!(text.contains(r#"autorefresh_cache_hits_total{cache="jobs"} 1"#));
//! assert!(text.contains(r#"autorefresh_size{cache="jobs"} 1"#));
//! exporter.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Cargo.toml:
//!
//! ```toml
//! [dependencies]
//! autorefresh-prometheus = "0.1"
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! [autorefresh]: https://docs.rs/autorefresh
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]

mod error;
mod exporter;
mod names;
mod recorder;
mod striped;

pub use error::Error;
pub use exporter::{set_buckets, Exporter};
pub use names::*;
pub use recorder::PrometheusMetrics;

/// The `metrics-exporter-prometheus` types this crate's API takes, re-exported so that the
/// versions match.
pub use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
