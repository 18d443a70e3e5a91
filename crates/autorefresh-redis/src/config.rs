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
    /// this crate's `tls` feature); `valkey://` and `valkeys://` are the same; a Unix socket
    /// is `unix:///path?db=0&user=..&pass=..` (or `redis+unix://`, `valkey+unix://`).
    /// Passwords are never printed, from any of these forms. Default:
    /// `redis://127.0.0.1:6379`.
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
    /// How long a graceful shutdown keeps sending the writes Redis has not taken yet (changes
    /// that already returned to their callers). Past it the rest is given up, counted
    /// ([`RedisCluster::unflushed_writes`](crate::RedisCluster::unflushed_writes)) and logged:
    /// the other replicas never see those changes. Longer keeps more through a Redis outage
    /// at shutdown; shorter bounds how long a shutdown can take. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_flush_timeout: Duration,
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
            shutdown_flush_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password, from the field or the URL.
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("namespace", &self.namespace)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retry_min_backoff", &self.retry_min_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .field("shutdown_flush_timeout", &self.shutdown_flush_timeout)
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
        let scheme = self.url.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|scheme| SCHEMES.contains(&scheme)) {
            return invalid(
                "url",
                format!(
                    "must start with one of {}, got {:?}",
                    SCHEMES.map(|scheme| format!("{scheme}://")).join(", "),
                    redacted(&self.url)
                ),
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
            ("shutdown_flush_timeout", self.shutdown_flush_timeout),
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

/// The URL schemes the `redis` crate connects to.
const SCHEMES: [&str; 7] =
    ["redis", "rediss", "valkey", "valkeys", "unix", "redis+unix", "valkey+unix"];

/// `url` with every secret the `redis` crate would read from it replaced by `***`: the
/// password of its user info, and the `pass` (or `password`) query parameter that Unix socket
/// URLs carry. What cannot be read as `scheme://...` is shown as its scheme alone.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        let scheme = url.split(':').next().unwrap_or_default();
        return format!("{scheme}:***");
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The user info ends at the last `@` of the authority (a password may hold `@`).
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut redacted = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key == "pass" || key == "password" => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
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
            (
                RedisConfig { shutdown_flush_timeout: Duration::ZERO, ..RedisConfig::default() },
                "shutdown_flush_timeout",
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
    fn no_form_of_url_prints_its_password() {
        let urls = [
            "redis://user:pw-1@db:6379/0",
            "redis://:pw-1@db",
            "rediss://user:pw-1@db:6380",
            "valkey://user:pw-1@db",
            "valkeys://user:p@w-1@db",
            "unix:///run/redis.sock?db=1&pass=pw-1",
            "redis+unix:///run/redis.sock?user=u&pass=pw-1&db=2",
            "valkey+unix:///run/valkey.sock?password=pw-1",
            // Rejected forms, whose error names the URL.
            "valkeys2://user:pw-1@db",
            "http://user:pw-1@db?pass=pw-1",
            "user:pw-1@db",
            "redis:user:pw-1@db",
        ];
        for url in urls {
            let config = RedisConfig::new(url);
            let debug = format!("{config:?}");
            assert!(!debug.contains("pw-1"), "{url}: Debug printed {debug}");
            if let Err(err) = config.validate() {
                let message = format!("{err} {err:?}");
                assert!(!message.contains("pw-1"), "{url}: the error printed {message}");
            }
        }
        assert_eq!(redacted("redis://user:pw@db:6379/0"), "redis://user:***@db:6379/0");
        assert_eq!(redacted("unix:///s.sock?db=1&pass=pw"), "unix:///s.sock?db=1&pass=***");
        assert_eq!(redacted("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn every_scheme_of_the_redis_crate_is_accepted() {
        for scheme in SCHEMES {
            let config = RedisConfig::new(format!("{scheme}://localhost"));
            assert!(config.validate().is_ok(), "{scheme}");
        }
        let err = RedisConfig::new("valkeys2://u:pw@db").validate().unwrap_err();
        assert!(err.to_string().contains("valkeys2://u:***@db"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_an_error() {
        assert!(serde_json::from_str::<RedisConfig>(r#"{"shard": 3}"#).is_err());
    }
}
