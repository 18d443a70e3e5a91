//! An overall token bucket: client-go's `BucketRateLimiter` over `golang.org/x/time/rate`.

use std::time::Duration;

use autorefresh_core::RateLimiter;
use parking_lot::Mutex;
use tokio::time::Instant;

/// The delay `golang.org/x/time/rate` calls `InfDuration`: `i64::MAX` nanoseconds.
const INF_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Why [`BucketRateLimiter::new`] refused its arguments; the message names the bad value.
///
/// # Examples
///
/// ```
/// use autorefresh_tower::{BucketRateLimiter, InvalidRateLimit};
///
/// let err = BucketRateLimiter::new(-5.0, 10).unwrap_err();
/// assert_eq!(err, InvalidRateLimit::Qps { qps: -5.0 });
/// assert_eq!(
///     err.to_string(),
///     "invalid rate limit: qps must be a finite number greater than zero, got -5",
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRateLimit {
    /// `qps` was zero, negative, NaN or infinite.
    #[error("invalid rate limit: qps must be a finite number greater than zero, got {qps}")]
    Qps {
        /// The rejected value.
        qps: f64,
    },
    /// `burst` was zero, so no token could ever be taken.
    #[error("invalid rate limit: burst must be at least 1, got {burst}")]
    Burst {
        /// The rejected value (always 0).
        burst: u32,
    },
}

/// A token bucket shared by all ids: client-go's `BucketRateLimiter`, with the semantics of
/// `rate.Limiter.Reserve().Delay()` from `golang.org/x/time/rate`.
///
/// The bucket holds up to `burst` tokens, starts full and refills at `qps` tokens per second.
/// Each [`when`](RateLimiter::when) takes one token, borrowing it from the future if the bucket
/// is empty, and returns how long until that token exists: `burst` calls in a row return
/// zero, then each further call waits `1 / qps` longer than the one before. It ignores the id:
/// [`forget`](RateLimiter::forget) does nothing and
/// [`num_requeues`](RateLimiter::num_requeues) is always 0.
///
/// Time comes from [`tokio::time::Instant`], so on a paused tokio runtime the bucket refills
/// only as the test advances time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::RateLimiter;
/// use autorefresh_tower::{BucketRateLimiter, InvalidRateLimit};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), InvalidRateLimit> {
/// // On paused time the bucket refills only when time is advanced.
/// let bucket = BucketRateLimiter::new(10.0, 2)?;
/// assert_eq!(bucket.when(&"a"), Duration::ZERO);
/// assert_eq!(bucket.when(&"b"), Duration::ZERO);
/// assert_eq!(bucket.when(&"c"), Duration::from_millis(100));
/// assert_eq!(bucket.when(&"d"), Duration::from_millis(200));
///
/// tokio::time::advance(Duration::from_secs(1)).await; // +10 tokens, capped at the burst of 2
/// assert_eq!(bucket.when(&"e"), Duration::ZERO);
///
/// assert!(matches!(BucketRateLimiter::new(0.0, 2), Err(InvalidRateLimit::Qps { .. })));
/// assert!(matches!(BucketRateLimiter::new(10.0, 0), Err(InvalidRateLimit::Burst { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BucketRateLimiter {
    qps: f64,
    burst: u32,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available at `last`; negative when tokens were reserved ahead.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl BucketRateLimiter {
    /// A full bucket of `burst` tokens refilling at `qps` tokens per second.
    ///
    /// # Errors
    ///
    /// [`InvalidRateLimit::Qps`] if `qps` is not a finite number above zero,
    /// [`InvalidRateLimit::Burst`] if `burst` is 0.
    pub fn new(qps: f64, burst: u32) -> Result<Self, InvalidRateLimit> {
        if !(qps.is_finite() && qps > 0.0) {
            return Err(InvalidRateLimit::Qps { qps });
        }
        if burst == 0 {
            return Err(InvalidRateLimit::Burst { burst });
        }
        Ok(Self::new_unchecked(qps, burst))
    }

    /// `new` for arguments known to be valid.
    pub(crate) fn new_unchecked(qps: f64, burst: u32) -> Self {
        Self {
            qps,
            burst,
            state: Mutex::new(Bucket { tokens: f64::from(burst), last: Instant::now() }),
        }
    }

    /// Tokens added per second.
    pub fn qps(&self) -> f64 {
        self.qps
    }

    /// The most tokens the bucket holds.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Reserves one token now and returns the wait until it is available
    /// (`rate.Limiter.Reserve().Delay()`).
    fn reserve(&self) -> Duration {
        let mut bucket = self.state.lock();
        // Read the clock under the lock so concurrent callers see time move forward only.
        let now = Instant::now();
        self.reserve_at(&mut bucket, now)
    }

    /// Reserves one token at `now` (`rate.Limiter.reserveN(now, 1, InfDuration)`) and
    /// returns the wait from `now` until the token is available.
    fn reserve_at(&self, bucket: &mut Bucket, now: Instant) -> Duration {
        // advance: refill for the time since `last`, up to `burst`. A `now` before `last`
        // counts as no time passed, as in x/time/rate (which cannot happen here: the clock
        // is monotonic and read under the lock).
        let elapsed = now.saturating_duration_since(bucket.last);
        let tokens = (bucket.tokens + elapsed.as_secs_f64() * self.qps).min(f64::from(self.burst));
        let tokens = tokens - 1.0;
        let wait = if tokens < 0.0 { self.duration_from_tokens(-tokens) } else { Duration::ZERO };
        bucket.last = bucket.last.max(now);
        bucket.tokens = tokens;
        wait
    }

    /// How long it takes to accumulate `tokens` (x/time/rate's `durationFromTokens`).
    fn duration_from_tokens(&self, tokens: f64) -> Duration {
        let nanos = tokens / self.qps * 1e9;
        if nanos > i64::MAX as f64 {
            return INF_DURATION;
        }
        // In range [0, i64::MAX]: the cast truncates, as Go's time.Duration(float64).
        Duration::from_nanos(nanos as u64)
    }
}

impl Default for BucketRateLimiter {
    /// 10 qps with a burst of 100: the bucket of client-go's `DefaultControllerRateLimiter`.
    fn default() -> Self {
        Self::new_unchecked(10.0, 100)
    }
}

impl<K> RateLimiter<K> for BucketRateLimiter {
    fn when(&self, _id: &K) -> Duration {
        self.reserve()
    }

    fn forget(&self, _id: &K) {}

    fn num_requeues(&self, _id: &K) -> u32 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_bad_value() {
        let err = BucketRateLimiter::new(-1.5, 1).unwrap_err();
        assert_eq!(err, InvalidRateLimit::Qps { qps: -1.5 });
        assert!(err.to_string().contains("-1.5"), "{err}");
        let err = BucketRateLimiter::new(1.0, 0).unwrap_err();
        assert!(err.to_string().contains("got 0"), "{err}");
        assert!(matches!(
            BucketRateLimiter::new(f64::NAN, 1),
            Err(InvalidRateLimit::Qps { qps }) if qps.is_nan()
        ));
        assert!(BucketRateLimiter::new(f64::INFINITY, 1).is_err());
        assert!(BucketRateLimiter::new(f64::NEG_INFINITY, 1).is_err());
    }

    #[test]
    fn earlier_instant_counts_as_no_time() {
        let bucket = BucketRateLimiter::new(1.0, 1).unwrap();
        let mut state = bucket.state.lock();
        let start = state.last;
        let later = start + Duration::from_secs(5);
        assert_eq!(bucket.reserve_at(&mut state, later), Duration::ZERO);
        // Going back in time neither refills nor rewinds `last`.
        assert_eq!(bucket.reserve_at(&mut state, start), Duration::from_secs(1));
        assert_eq!(state.last, later);
    }

    #[test]
    fn tiny_rate_caps_at_inf_duration() {
        let bucket = BucketRateLimiter::new(1e-300, 1).unwrap();
        let mut state = bucket.state.lock();
        let now = state.last;
        assert_eq!(bucket.reserve_at(&mut state, now), Duration::ZERO);
        assert_eq!(bucket.reserve_at(&mut state, now), INF_DURATION);
    }
}
