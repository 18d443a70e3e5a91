//! The service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use autorefresh_core::{Metrics, RateLimiter};
use tower::Service;

use super::future::ResponseFuture;

/// The shared limiter, and where its waits are reported.
#[derive(Clone)]
pub(super) struct Pacer {
    pub(super) limiter: Arc<dyn RateLimiter<()>>,
    pub(super) metrics: Option<Arc<dyn Metrics>>,
}

impl Pacer {
    /// Takes the next call's slot: how long it waits.
    fn reserve(&self) -> Duration {
        let wait = self.limiter.when(&());
        if let Some(metrics) = &self.metrics {
            metrics.rate_limit_wait(wait);
        }
        wait
    }
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("limiter", &"dyn RateLimiter<()>")
            .field("metrics", &self.metrics.as_ref().map(|_| "dyn Metrics"))
            .finish()
    }
}

/// Waits for a shared [`RateLimiter`]'s permission before each call of the inner service.
///
/// Made by [`SyncRateLimitLayer`](super::SyncRateLimitLayer). [`poll_ready`](Service::poll_ready)
/// is the inner service's; [`call`](Service::call) asks the limiter for a delay and returns a
/// future that waits it out, then calls the inner service (which it set aside ready; the
/// service keeps a fresh clone). Clones share the limiter.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
/// use autorefresh_tower::rate_limit::SyncRateLimit;
/// use autorefresh_tower::BucketRateLimiter;
/// use tower::{service_fn, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), autorefresh_core::SyncError> {
/// let inner = service_fn(|_batch: Batch<u64, u32>| async {
///     Ok::<Vec<ItemSyncResponse<u64, u32>>, SyncError>(Vec::new())
/// });
/// let sync = SyncRateLimit::new(inner, Arc::new(BucketRateLimiter::new(1.0, 1)?));
///
/// let start = tokio::time::Instant::now();
/// sync.clone().oneshot(Vec::new()).await?; // the burst: no wait
/// sync.clone().oneshot(Vec::new()).await?; // one second later
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SyncRateLimit<S> {
    inner: S,
    pacer: Pacer,
}

impl<S> SyncRateLimit<S> {
    /// Paces calls of `inner` by `limiter` (see
    /// [`SyncRateLimitLayer::new`](super::SyncRateLimitLayer::new)).
    pub fn new(inner: S, limiter: Arc<dyn RateLimiter<()>>) -> Self {
        Self::from_pacer(inner, Pacer { limiter, metrics: None })
    }

    pub(super) fn from_pacer(inner: S, pacer: Pacer) -> Self {
        Self { inner, pacer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for SyncRateLimit<S>
where
    S: Service<Req> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let wait = self.pacer.reserve();
        if wait.is_zero() {
            return ResponseFuture::called(self.inner.call(request));
        }
        // Move the service that was polled ready into the future, to call once the wait is
        // over, and keep a fresh clone that must be polled ready again.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture::waiting(tokio::time::sleep(wait), ready, request)
    }
}

impl<S: fmt::Debug> fmt::Debug for SyncRateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncRateLimit")
            .field("inner", &self.inner)
            .field("pacer", &self.pacer)
            .finish()
    }
}
