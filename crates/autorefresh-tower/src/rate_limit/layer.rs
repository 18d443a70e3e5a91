//! The layer.

use std::fmt;
use std::sync::Arc;

use autorefresh_core::{Metrics, RateLimiter};
use tower::Layer;

use super::service::Pacer;
use super::SyncRateLimit;
use crate::{BucketRateLimiter, InvalidRateLimit};

/// Spaces sync calls by a shared [`RateLimiter`]: wraps a service in [`SyncRateLimit`].
///
/// All the services it makes, and their clones, share its limiter (and metrics): the budget
/// is global to the cache's workers.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use autorefresh_core::NoopMetrics;
/// use autorefresh_tower::rate_limit::SyncRateLimitLayer;
/// use autorefresh_tower::BucketRateLimiter;
///
/// // A bucket of 5, refilled at 10 calls per second.
/// let simple = SyncRateLimitLayer::per_second(10.0, 5)?;
///
/// // The same from a limiter shared with other code, reporting waits to a metrics observer.
/// let bucket = Arc::new(BucketRateLimiter::new(10.0, 5)?);
/// let observed = SyncRateLimitLayer::new(bucket.clone()).with_metrics(Arc::new(NoopMetrics));
/// # let _ = (simple, observed);
/// # Ok::<(), autorefresh_tower::InvalidRateLimit>(())
/// ```
#[derive(Clone)]
pub struct SyncRateLimitLayer {
    pacer: Pacer,
}

impl SyncRateLimitLayer {
    /// Before each call, waits [`limiter.when(&())`](RateLimiter::when).
    ///
    /// The limiter is asked once per call and never told to
    /// [`forget`](RateLimiter::forget): use one that paces calls, like a
    /// [`BucketRateLimiter`] (a per-item backoff limiter keyed by `()` would only grow).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use autorefresh_core::RateLimiter;
    /// use autorefresh_tower::rate_limit::SyncRateLimitLayer;
    /// use autorefresh_tower::BucketRateLimiter;
    ///
    /// let limiter: Arc<dyn RateLimiter<()>> = Arc::new(BucketRateLimiter::new(50.0, 10)?);
    /// let layer = SyncRateLimitLayer::new(limiter);
    /// # let _ = layer;
    /// # Ok::<(), autorefresh_tower::InvalidRateLimit>(())
    /// ```
    pub fn new(limiter: Arc<dyn RateLimiter<()>>) -> Self {
        Self { pacer: Pacer { limiter, metrics: None } }
    }

    /// At most `qps` calls per second on average, and `burst` at once: a fresh
    /// [`BucketRateLimiter`].
    ///
    /// # Errors
    ///
    /// [`InvalidRateLimit`] if `qps` is not a finite number above zero or `burst` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::rate_limit::SyncRateLimitLayer;
    /// use autorefresh_tower::InvalidRateLimit;
    ///
    /// assert!(SyncRateLimitLayer::per_second(10.0, 5).is_ok());
    /// assert_eq!(
    ///     SyncRateLimitLayer::per_second(0.0, 5).unwrap_err(),
    ///     InvalidRateLimit::Qps { qps: 0.0 },
    /// );
    /// ```
    pub fn per_second(qps: f64, burst: u32) -> Result<Self, InvalidRateLimit> {
        Ok(Self::new(Arc::new(BucketRateLimiter::new(qps, burst)?)))
    }

    /// Reports each call's wait (zero included) to
    /// [`Metrics::rate_limit_wait`], when the call is made.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use autorefresh_core::NoopMetrics;
    /// use autorefresh_tower::rate_limit::SyncRateLimitLayer;
    ///
    /// let layer = SyncRateLimitLayer::per_second(10.0, 5)?.with_metrics(Arc::new(NoopMetrics));
    /// # let _ = layer;
    /// # Ok::<(), autorefresh_tower::InvalidRateLimit>(())
    /// ```
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.pacer.metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for SyncRateLimitLayer {
    type Service = SyncRateLimit<S>;

    fn layer(&self, inner: S) -> SyncRateLimit<S> {
        SyncRateLimit::from_pacer(inner, self.pacer.clone())
    }
}

impl fmt::Debug for SyncRateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncRateLimitLayer").field("pacer", &self.pacer).finish()
    }
}
