//! Connection and coordination settings, as data for configuration files.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RedisClusterError;

/// How a replica reaches Redis and shares the refresh with the others (serde).
///
/// Every field has a default, so a file names only what it changes; durations are
/// human-readable (`"10s"`, `"500ms"`); an unknown field is an error.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_redis::RedisConfig;
///
/// let config: RedisConfig = serde_json::from_str(r#"{
///     "url": "redis://redis.internal:6379/2",
///     "password": "s3cret",
///     "lease_ttl": "15s"
/// }"#).unwrap();
/// assert_eq!(config.lease_ttl, Duration::from_secs(15));
/// assert_eq!(config.shards, 64); // the default
/// config.validate().unwrap();
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// The server: `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS (with
    /// this crate's `tls` feature). Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// The ACL user, overriding the URL's. Default: none.
    pub username: Option<String>,
    /// The password, overriding the URL's. Default: none.
    pub password: Option<String>,
    /// The prefix of every key and channel; absent: the cache's name. Caches that share a
    /// namespace share their items: give every replica of one cache the same one.
    pub namespace: Option<String>,
    /// How many shards the ids are split into; each replica leases its share of them.
    /// Default: 64. Every replica of a cache must use the same number.
    pub shards: u16,
    /// How long a shard's lease lasts without renewal: a replica that dies without
    /// releasing its shards loses them after this long, and another takes them over within
    /// a third of it more. Keep it at most the cache's resync period for a takeover within
    /// two periods. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long connecting may take. Default: 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one command may wait for its answer. Default: 2 s.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// The first wait before a failed write is tried again; it doubles up to
    /// `retry_max_backoff`. Default: 100 ms.
    #[serde(with = "humantime_serde")]
    pub retry_min_backoff: Duration,
    /// The longest wait between tries of a failed write. Default: 5 s.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            username: None,
            password: None,
            namespace: None,
            shards: 64,
            lease_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(2),
            retry_min_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password, from the field or the URL.
        let url = match self.url.rsplit_once('@') {
            Some((_, host)) => {
                format!("{}://***@{host}", self.url.split("://").next().unwrap_or("redis"))
            }
            None => self.url.clone(),
        };
        f.debug_struct("RedisConfig")
            .field("url", &url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("namespace", &self.namespace)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retry_min_backoff", &self.retry_min_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .finish()
    }
}

impl RedisConfig {
    /// The settings with `url` as the server, every other field its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`RedisClusterError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), RedisClusterError> {
        let invalid =
            |field, reason: String| Err(RedisClusterError::InvalidConfig { field, reason });
        if !(self.url.starts_with("redis://")
            || self.url.starts_with("rediss://")
            || self.url.starts_with("unix://"))
        {
            return invalid(
                "url",
                format!("must start with redis://, rediss:// or unix://, got {:?}", self.url),
            );
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return invalid("shards", format!("must be 1 to {MAX_SHARDS}, got {}", self.shards));
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return invalid(
                "lease_ttl",
                format!("must be at least {MIN_LEASE_TTL:?}, got {:?}", self.lease_ttl),
            );
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("retry_min_backoff", self.retry_min_backoff),
        ] {
            if value.is_zero() {
                return invalid(field, "must be greater than zero".to_owned());
            }
        }
        if self.retry_max_backoff < self.retry_min_backoff {
            return invalid(
                "retry_max_backoff",
                format!(
                    "must be at least retry_min_backoff ({:?}), got {:?}",
                    self.retry_min_backoff, self.retry_max_backoff
                ),
            );
        }
        if let Some(namespace) = &self.namespace {
            // The namespace becomes a `{hash tag}`: a brace would end it early.
            if namespace.is_empty() || namespace.contains(['{', '}']) {
                return invalid(
                    "namespace",
                    format!("must be non-empty and without braces, got {namespace:?}"),
                );
            }
        }
        Ok(())
    }
}

/// The most shards a cache may have: the owned set is a bitset of this many bits.
pub const MAX_SHARDS: u16 = 4096;

/// The shortest lease: renewals go out three times per lease.
const MIN_LEASE_TTL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (RedisConfig { url: "http://x".into(), ..RedisConfig::default() }, "url"),
            (RedisConfig { shards: 0, ..RedisConfig::default() }, "shards"),
            (RedisConfig { shards: MAX_SHARDS + 1, ..RedisConfig::default() }, "shards"),
            (
                RedisConfig { lease_ttl: Duration::from_millis(5), ..RedisConfig::default() },
                "lease_ttl",
            ),
            (
                RedisConfig { response_timeout: Duration::ZERO, ..RedisConfig::default() },
                "response_timeout",
            ),
            (
                RedisConfig {
                    retry_max_backoff: Duration::from_millis(1),
                    ..RedisConfig::default()
                },
                "retry_max_backoff",
            ),
            (RedisConfig { namespace: Some(String::new()), ..RedisConfig::default() }, "namespace"),
            (RedisConfig { namespace: Some("}x".into()), ..RedisConfig::default() }, "namespace"),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(RedisClusterError::InvalidConfig { field: named, .. }) => {
                    assert_eq!(named, field)
                }
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
        RedisConfig::default().validate().unwrap();
    }

    #[test]
    fn debug_hides_passwords() {
        let config = RedisConfig {
            url: "redis://user:hunter2@db:6379".into(),
            password: Some("hunter3".into()),
            ..RedisConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("hunter3"), "{printed}");
        assert!(printed.contains("db:6379"));
    }

    #[test]
    fn an_unknown_field_is_an_error() {
        assert!(serde_json::from_str::<RedisConfig>(r#"{"shard": 3}"#).is_err());
    }
}
