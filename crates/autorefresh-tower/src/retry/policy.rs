//! The retry policy: which errors, how many times, how long between.

use std::error::Error;
use std::time::Duration;

use autorefresh_core::{RetryAfter, SyncError};
use tower::retry::Policy;

use super::future::Backoff;
use super::Transient;
use crate::timeout::is_timeout;

/// How the backoff before a retry is randomised, so failed calls that failed together do not
/// all retry together.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_tower::retry::Jitter;
///
/// let delay = Duration::from_millis(400);
/// assert_eq!(Jitter::None.apply(delay), delay);
/// assert!(Jitter::Full.apply(delay) <= delay);
/// let equal = Jitter::Equal.apply(delay);
/// assert!(equal >= delay / 2 && equal <= delay);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: wait exactly the exponential delay.
    None,
    /// "Full jitter": a uniformly random wait between zero and the exponential delay. Spreads
    /// retries best; the default.
    #[default]
    Full,
    /// "Equal jitter": half the exponential delay, plus a uniformly random wait up to the
    /// other half. Never retries sooner than half the delay.
    Equal,
}

impl Jitter {
    /// The wait for an exponential `delay` under this jitter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::Jitter;
    ///
    /// assert_eq!(Jitter::Full.apply(Duration::ZERO), Duration::ZERO);
    /// ```
    pub fn apply(self, delay: Duration) -> Duration {
        match self {
            Self::None => delay,
            Self::Full => random_up_to(delay),
            Self::Equal => {
                let half = delay / 2;
                half + random_up_to(delay - half)
            }
        }
    }
}

/// A uniformly random duration in `[0, max]`, at nanosecond resolution.
fn random_up_to(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// A [`tower::retry::Policy`] for the sync path: retries a call that failed with a
/// [`Transient`] error, up to `max_retries` times, after an exponential backoff with jitter.
///
/// The `n`-th retry (counting from 0) waits `min(base * 2^n, max)` under the policy's
/// [`Jitter`] (full by default). A success, a permanent error, a
/// [`RetryAfter`] error (anywhere in the source chain, even beside a `Transient`: the queue
/// honours its delay instead) or the last allowed attempt's error ends the call; see
/// [`should_retry`](Self::should_retry). The default backoff is 100 ms doubling up to 10 s.
///
/// The policy holds the attempt count of one request. Tower's [`Retry`](tower::retry::Retry)
/// clones the policy for every request and never changes the one it keeps, so counts never
/// leak from one batch to another, and one policy serves all the cache's workers. With
/// `max_retries` 0 it never clones a batch.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
/// use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy, Jitter};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let policy = BackoffRetryPolicy::new(4)
///     .with_backoff(Duration::from_millis(200), Duration::from_secs(1))
///     .with_jitter(Jitter::Equal);
/// assert_eq!(policy.max_retries(), 4);
/// // Before jitter: 200 ms, 400 ms, 800 ms, then capped at 1 s.
/// let delays: Vec<_> = (0..4).map(|n| policy.delay_for(n).as_millis()).collect();
/// assert_eq!(delays, [200, 400, 800, 1000]);
///
/// let sync = ServiceBuilder::new()
///     .layer(retry_layer(policy))
///     .service(service_fn(|_batch: Batch<u64, u32>| async {
///         // A permanent error: not retried in place.
///         Err::<Vec<ItemSyncResponse<u64, u32>>, SyncError>("HTTP 404".into())
///     }));
/// assert_eq!(sync.oneshot(Vec::new()).await.unwrap_err().to_string(), "HTTP 404");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffRetryPolicy {
    max_retries: u32,
    base: Duration,
    max: Duration,
    jitter: Jitter,
    retry_timeouts: bool,
    /// Retries made so far for the current request (the policy is cloned per request).
    retries: u32,
}

impl BackoffRetryPolicy {
    /// The default first backoff: 100 ms.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(100);
    /// The default longest backoff: 10 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

    /// Retries a transiently failing call up to `max_retries` times (so at most
    /// `max_retries + 1` attempts), with the default backoff and full jitter. 0 disables
    /// in-place retries.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::{BackoffRetryPolicy, Jitter};
    ///
    /// let policy = BackoffRetryPolicy::new(3);
    /// assert_eq!(policy.base_delay(), Duration::from_millis(100));
    /// assert_eq!(policy.max_delay(), Duration::from_secs(10));
    /// assert_eq!(policy.jitter(), Jitter::Full);
    /// assert!(!policy.retries_timeouts());
    /// ```
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            base: Self::DEFAULT_BASE_DELAY,
            max: Self::DEFAULT_MAX_DELAY,
            jitter: Jitter::Full,
            retry_timeouts: false,
            retries: 0,
        }
    }

    /// Backs off `base` before the first retry, doubling each time, never more than `max`.
    /// With `max` below `base`, every backoff is `max`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    ///
    /// let policy = BackoffRetryPolicy::new(3).with_backoff(Duration::from_secs(1), Duration::from_secs(3));
    /// assert_eq!(policy.delay_for(0), Duration::from_secs(1));
    /// assert_eq!(policy.delay_for(2), Duration::from_secs(3));
    /// ```
    #[must_use]
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base = base;
        self.max = max;
        self
    }

    /// Randomises each backoff with `jitter`.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::{BackoffRetryPolicy, Jitter};
    ///
    /// assert_eq!(BackoffRetryPolicy::new(3).with_jitter(Jitter::None).jitter(), Jitter::None);
    /// ```
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Also retries a call whose error is the timeout layer's
    /// [`Elapsed`](crate::timeout::Elapsed) (off by default). Useful with a timeout layer
    /// inside the retry layer, bounding each attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_core::SyncError;
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    /// use autorefresh_tower::timeout::Elapsed;
    ///
    /// let timed_out: SyncError = Elapsed::new().into();
    /// assert!(!BackoffRetryPolicy::new(3).should_retry(timed_out.as_ref()));
    /// assert!(BackoffRetryPolicy::new(3).with_retry_timeouts(true).should_retry(timed_out.as_ref()));
    /// ```
    #[must_use]
    pub fn with_retry_timeouts(mut self, retry: bool) -> Self {
        self.retry_timeouts = retry;
        self
    }

    /// The most retries of one call.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    ///
    /// assert_eq!(BackoffRetryPolicy::new(5).max_retries(), 5);
    /// ```
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff before the first retry, before jitter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    ///
    /// assert_eq!(BackoffRetryPolicy::new(1).base_delay(), Duration::from_millis(100));
    /// ```
    pub fn base_delay(&self) -> Duration {
        self.base
    }

    /// The longest backoff, before jitter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    ///
    /// assert_eq!(BackoffRetryPolicy::new(1).max_delay(), Duration::from_secs(10));
    /// ```
    pub fn max_delay(&self) -> Duration {
        self.max
    }

    /// How backoffs are randomised.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::{BackoffRetryPolicy, Jitter};
    ///
    /// assert_eq!(BackoffRetryPolicy::new(1).jitter(), Jitter::Full);
    /// ```
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Whether timed-out calls are retried (see
    /// [`with_retry_timeouts`](Self::with_retry_timeouts)).
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    ///
    /// assert!(!BackoffRetryPolicy::new(1).retries_timeouts());
    /// ```
    pub fn retries_timeouts(&self) -> bool {
        self.retry_timeouts
    }

    /// The backoff before retry number `retry` (0 for the first), before jitter:
    /// `min(base * 2^retry, max)`, saturating.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::BackoffRetryPolicy;
    ///
    /// let policy = BackoffRetryPolicy::new(3);
    /// assert_eq!(policy.delay_for(0), Duration::from_millis(100));
    /// assert_eq!(policy.delay_for(1), Duration::from_millis(200));
    /// assert_eq!(policy.delay_for(1_000), Duration::from_secs(10));
    /// ```
    pub fn delay_for(&self, retry: u32) -> Duration {
        let exponential = 1_u32.checked_shl(retry).and_then(|factor| self.base.checked_mul(factor));
        exponential.map_or(self.max, |delay| delay.min(self.max))
    }

    /// Whether this policy retries a call that failed with `error`: it or one of its sources
    /// is a [`Transient`] (or, with [`with_retry_timeouts`](Self::with_retry_timeouts), the
    /// timeout layer's [`Elapsed`](crate::timeout::Elapsed)), and none is a [`RetryAfter`].
    /// The attempt budget is not considered.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_core::{RetryAfter, SyncError};
    /// use autorefresh_tower::retry::{BackoffRetryPolicy, Transient};
    ///
    /// let policy = BackoffRetryPolicy::new(3);
    /// let transient: SyncError = Transient::new("HTTP 503").into();
    /// let permanent: SyncError = "HTTP 400".into();
    /// let throttled: SyncError =
    ///     RetryAfter::new(Duration::from_secs(30)).with_source(Transient::new("HTTP 429")).into();
    /// assert!(policy.should_retry(transient.as_ref()));
    /// assert!(!policy.should_retry(permanent.as_ref()));
    /// assert!(!policy.should_retry(throttled.as_ref()));
    /// ```
    pub fn should_retry(&self, error: &(dyn Error + 'static)) -> bool {
        if RetryAfter::find(error).is_some() {
            return false;
        }
        Transient::find(error).is_some() || (self.retry_timeouts && is_timeout(error))
    }
}

impl Default for BackoffRetryPolicy {
    /// Three retries, backing off from 100 ms up to 10 s with full jitter.
    fn default() -> Self {
        Self::new(3)
    }
}

impl<Req: Clone, Res> Policy<Req, Res, SyncError> for BackoffRetryPolicy {
    type Future = Backoff;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, SyncError>) -> Option<Backoff> {
        let error = result.as_ref().err()?;
        if self.retries >= self.max_retries || !self.should_retry(error.as_ref()) {
            return None;
        }
        let delay = self.jitter.apply(self.delay_for(self.retries));
        self.retries += 1;
        Some(Backoff::new(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // Tower calls this before each attempt; once no retry is left, the batch is not copied.
        (self.retries < self.max_retries).then(|| req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_saturates_instead_of_overflowing() {
        let policy =
            BackoffRetryPolicy::new(1).with_backoff(Duration::MAX / 2, Duration::from_secs(7));
        assert_eq!(policy.delay_for(0), Duration::from_secs(7));
        assert_eq!(policy.delay_for(31), Duration::from_secs(7));
        assert_eq!(policy.delay_for(32), Duration::from_secs(7));
        assert_eq!(policy.delay_for(u32::MAX), Duration::from_secs(7));
    }

    #[test]
    fn max_below_base_caps_every_delay() {
        let policy =
            BackoffRetryPolicy::new(1).with_backoff(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(policy.delay_for(0), Duration::from_secs(1));
        assert_eq!(policy.delay_for(3), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_range() {
        let delay = Duration::from_millis(1_000);
        for _ in 0..1_000 {
            assert!(Jitter::Full.apply(delay) <= delay);
            let equal = Jitter::Equal.apply(delay);
            assert!(equal >= delay / 2 && equal <= delay, "{equal:?}");
        }
        // An odd number of nanoseconds: the halves still add up to at most the delay.
        let odd = Duration::from_nanos(3);
        for _ in 0..100 {
            let equal = Jitter::Equal.apply(odd);
            assert!(equal >= Duration::from_nanos(1) && equal <= odd, "{equal:?}");
        }
        // The largest delay neither overflows nor panics.
        assert!(Jitter::Equal.apply(Duration::MAX) >= Duration::MAX / 2);
        let _ = Jitter::Full.apply(Duration::MAX);
    }

    #[test]
    fn full_jitter_spreads() {
        let delay = Duration::from_secs(1);
        let samples: Vec<_> = (0..200).map(|_| Jitter::Full.apply(delay)).collect();
        assert!(samples.iter().any(|d| *d < delay / 4));
        assert!(samples.iter().any(|d| *d > delay * 3 / 4));
    }

    #[test]
    fn no_clone_without_retries_left() {
        let mut policy = BackoffRetryPolicy::new(0);
        assert_eq!(Policy::<Vec<u8>, (), SyncError>::clone_request(&mut policy, &vec![1]), None);
        let mut policy = BackoffRetryPolicy::new(1);
        assert_eq!(
            Policy::<Vec<u8>, (), SyncError>::clone_request(&mut policy, &vec![1]),
            Some(vec![1])
        );
    }

    #[test]
    fn success_is_not_retried() {
        let mut policy = BackoffRetryPolicy::new(3);
        let mut ok: Result<(), SyncError> = Ok(());
        assert!(policy.retry(&mut (), &mut ok).is_none());
        assert_eq!(policy.retries, 0);
    }
}
