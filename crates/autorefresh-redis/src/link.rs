//! The connection to Redis shared by the lease loop and the item plane.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo};

use crate::config::RedisConfig;
use crate::error::RedisClusterError;
use crate::keys::Keys;

/// One replica's link to Redis: the client (for pub/sub connections), a multiplexed
/// connection that reconnects by itself, the key names, this member's id and the settings.
pub(crate) struct Link {
    pub(crate) client: Client,
    pub(crate) conn: ConnectionManager,
    pub(crate) keys: Keys,
    /// This replica's member id: random, new at every start.
    pub(crate) member: String,
    pub(crate) config: RedisConfig,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("member", &self.member)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Connects with `config` for the cache `name`.
    pub(crate) async fn connect(
        name: &str,
        config: RedisConfig,
    ) -> Result<Self, RedisClusterError> {
        config.validate()?;
        let namespace = config.namespace.clone().unwrap_or_else(|| name.to_owned());
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(RedisClusterError::InvalidConfig {
                field: "namespace",
                reason: format!(
                    "defaults to the cache's name, {name:?}, which is empty or has braces: set one"
                ),
            });
        }
        let mut info = config.url.as_str().into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &config.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &config.password {
            redis = redis.set_password(password);
        }
        info = info.set_redis_settings(redis);
        let client = Client::open(info)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.retry_max_backoff);
        let conn = tokio::time::timeout(
            config.connect_timeout,
            client.get_connection_manager_with_config(manager),
        )
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(&namespace),
            member: format!("{:016x}", fastrand::u64(..)),
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cache_name_with_braces_needs_a_namespace_before_any_connection() {
        // Port 1 on loopback: nothing listens, so only the check can answer this fast.
        let config = RedisConfig::new("redis://127.0.0.1:1");
        match Link::connect("jobs{eu}", config).await {
            Err(RedisClusterError::InvalidConfig { field, .. }) => assert_eq!(field, "namespace"),
            other => panic!("expected InvalidConfig for the namespace, got {other:?}"),
        }
    }
}
