//! The cache's settings as data, for configuration files.

use std::num::NonZeroUsize;
use std::time::Duration;

use autorefresh_core::{Error, RateLimiter};
use autorefresh_tower::{BucketRateLimiter, ItemExponentialFailureRateLimiter, MaxOfRateLimiter};
use serde::{Deserialize, Serialize};

use crate::builder::{DEFAULT_PARALLELISM, DEFAULT_RESYNC_PERIOD};

/// The cache's settings, as read from a configuration file (serde).
///
/// Every field has the builder's default, so a file names only what it changes; durations
/// are human-readable (`"30s"`, `"500ms"`, `"1m 30s"`); an unknown field is an error. Apply
/// it with [`AutoRefreshBuilder::config`](crate::AutoRefreshBuilder::config); a bad value is
/// reported by `build()` as [`Error::InvalidConfig`] naming the field and the value.
///
/// # Examples
///
/// ```
/// use autorefresh::AutoRefreshConfig;
///
/// let config: AutoRefreshConfig = toml::from_str(r#"
///     resync_period = "10s"
///     parallelism = 20
///     batch_size = 100
///     timeout = "30s"
///     retry_attempts = 2
///
///     [limiter]
///     qps = 50.0
/// "#).unwrap();
/// assert_eq!(config.resync_period, std::time::Duration::from_secs(10));
/// assert_eq!(config.limiter.burst, 100); // the default
/// assert!(toml::from_str::<AutoRefreshConfig>("parralelism = 3").is_err()); // a typo
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AutoRefreshConfig {
    /// How often every non-terminal item is queued for a sync. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub resync_period: Duration,
    /// How many batches are synced at once. Default: 10.
    pub parallelism: usize,
    /// How many items the default store holds; absent: 10 000. Leave it out when the cache
    /// is given a custom store.
    pub capacity: Option<u64>,
    /// Whether a new item is synced at once. Default: true.
    pub sync_on_create: bool,
    /// The most items in one batch; absent: one item per batch.
    pub batch_size: Option<usize>,
    /// The retry limiter: the larger of a per-item exponential backoff and a token bucket,
    /// as client-go's default controller limiter.
    pub limiter: LimiterConfig,
    /// How long one sync call may take before it is dropped and its items retried; absent:
    /// no limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// How many times a sync call failing with a transient error is retried in place before
    /// its items go back to the queue. Default: 0.
    pub retry_attempts: u32,
    /// How long an item stays once terminal (see
    /// [`AutoRefreshBuilder::terminal_ttl`](crate::AutoRefreshBuilder::terminal_ttl)); absent:
    /// terminal items stay until deleted or evicted.
    #[serde(with = "humantime_serde")]
    pub terminal_ttl: Option<Duration>,
    /// The longest wait of an item that keeps syncing unchanged (see
    /// [`AutoRefreshBuilder::adaptive_refresh`](crate::AutoRefreshBuilder::adaptive_refresh));
    /// absent: every item is refreshed every period. Must be at least `resync_period`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh::AutoRefreshConfig;
    ///
    /// let config: AutoRefreshConfig = toml::from_str(r#"
    ///     resync_period = "30s"
    ///     adaptive_max_interval = "8m"
    /// "#).unwrap();
    /// assert_eq!(config.adaptive_max_interval, Some(Duration::from_secs(480)));
    /// assert_eq!(AutoRefreshConfig::default().adaptive_max_interval, None);
    /// ```
    #[serde(with = "humantime_serde")]
    pub adaptive_max_interval: Option<Duration>,
}

/// The retry limiter's settings (see [`AutoRefreshConfig::limiter`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LimiterConfig {
    /// The first retry's backoff, doubled at each failure. Default: 5 ms.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// The longest backoff. Default: 1000 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Retries per second over all items. Default: 10.
    pub qps: f64,
    /// Retries allowed at once over all items. Default: 100.
    pub burst: u32,
}

impl Default for AutoRefreshConfig {
    fn default() -> Self {
        Self {
            resync_period: DEFAULT_RESYNC_PERIOD,
            parallelism: DEFAULT_PARALLELISM,
            capacity: None,
            sync_on_create: true,
            batch_size: None,
            limiter: LimiterConfig::default(),
            timeout: None,
            retry_attempts: 0,
            terminal_ttl: None,
            adaptive_max_interval: None,
        }
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100,
        }
    }
}

impl AutoRefreshConfig {
    /// The batch size, checked.
    pub(crate) fn batch_size(&self) -> Result<Option<NonZeroUsize>, Error> {
        self.batch_size
            .map(|size| {
                NonZeroUsize::new(size).ok_or_else(|| Error::InvalidConfig {
                    field: "batch_size",
                    reason: "must be at least 1, got 0".to_owned(),
                })
            })
            .transpose()
    }

    /// The timeout, checked.
    pub(crate) fn timeout(&self) -> Result<Option<Duration>, Error> {
        match self.timeout {
            Some(timeout) if timeout.is_zero() => Err(Error::InvalidConfig {
                field: "timeout",
                reason: "must be longer than zero, got 0s (leave it out for no timeout)".to_owned(),
            }),
            timeout => Ok(timeout),
        }
    }
}

impl LimiterConfig {
    /// The limiter these settings describe.
    pub(crate) fn build<K>(&self) -> Result<MaxOfRateLimiter<K>, Error>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        if self.base_delay > self.max_delay {
            return Err(Error::InvalidConfig {
                field: "limiter.base_delay",
                reason: format!(
                    "must not exceed limiter.max_delay ({:?}), got {:?}",
                    self.max_delay, self.base_delay
                ),
            });
        }
        let bucket = BucketRateLimiter::new(self.qps, self.burst).map_err(|err| {
            let field = if self.burst == 0 { "limiter.burst" } else { "limiter.qps" };
            Error::InvalidConfig { field, reason: err.to_string() }
        })?;
        let limiters: Vec<Box<dyn RateLimiter<K>>> = vec![
            Box::new(ItemExponentialFailureRateLimiter::new(self.base_delay, self.max_delay)),
            Box::new(bucket),
        ];
        Ok(MaxOfRateLimiter::new(limiters))
    }
}
