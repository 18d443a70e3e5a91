//! The crate's errors.

/// Why a Redis cluster could not be set up or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisClusterError {
    /// A setting is out of range; `field` names it.
    #[error("invalid Redis configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The setting's field in [`RedisConfig`](crate::RedisConfig).
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// Redis refused, timed out or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A key or an item would not encode or decode with the cluster's codec.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}

/// A value that would not encode, or bytes that would not decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl CodecError {
    /// Wraps the codec's own error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}
