//! The errors of setting up the exporter.

use std::io;
use std::net::SocketAddr;

use metrics_exporter_prometheus::BuildError;

/// Why [`PrometheusMetrics::install`](crate::PrometheusMetrics::install) or
/// [`Exporter::serve`](crate::Exporter::serve) failed. Nothing is left running or installed
/// when they fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `/metrics` listener could not bind (or register) its address.
    #[error("cannot listen for /metrics on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// There is no Tokio runtime to serve `/metrics` on.
    #[error(
        "serving /metrics on {addr} needs a Tokio runtime: call it from within one (or after \
         `Runtime::enter`)"
    )]
    NoRuntime {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A global `metrics` recorder was installed before. Only one can be, once per process:
    /// register more caches with [`PrometheusMetrics::new`](crate::PrometheusMetrics::new) and
    /// [`Exporter::register`](crate::Exporter::register) instead.
    #[error(
        "a global metrics recorder is already installed: create more caches' metrics with \
         PrometheusMetrics::new and Exporter::register"
    )]
    RecorderAlreadyInstalled,
    /// The exporter rejected a histogram's buckets.
    #[error("invalid buckets for {metric}")]
    Buckets {
        /// The histogram's name.
        metric: &'static str,
        /// The exporter's reason.
        #[source]
        source: BuildError,
    },
}
