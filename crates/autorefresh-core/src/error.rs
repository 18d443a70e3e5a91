//! The cache's errors.

use std::fmt;

/// What can go wrong when building, starting or reading the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No item with this id is in the cache (Go: `ErrNotFound`).
    #[error("item {id} not found in the cache")]
    NotFound {
        /// The id, as its `Debug` form.
        id: String,
    },
    /// A configuration value is out of range or missing; names the field and the value.
    #[error("invalid cache configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The builder method or config field at fault.
        field: &'static str,
        /// What is wrong with it, with the bad value.
        reason: String,
    },
    /// `start` was called outside a tokio runtime.
    #[error("cache `{name}` must be started from within a tokio runtime")]
    NoRuntime {
        /// The cache's name.
        name: String,
    },
    /// `start` was called on a cache that was already started.
    #[error("cache `{name}` was already started (a cache starts once)")]
    AlreadyStarted {
        /// The cache's name.
        name: String,
    },
    /// The cache's [`Cluster`](crate::Cluster) could not answer (a lookup of a local miss).
    #[error("cache `{name}`: the cluster did not answer: {reason}")]
    Cluster {
        /// The cache's name.
        name: String,
        /// What the cluster reported.
        reason: String,
    },
}

impl Error {
    /// A [`Error::NotFound`] for `id`.
    ///
    /// ```
    /// let err = autorefresh_core::Error::not_found(&"job-1");
    /// assert!(err.is_not_found());
    /// assert_eq!(err.to_string(), "item \"job-1\" not found in the cache");
    /// ```
    pub fn not_found(id: &impl fmt::Debug) -> Self {
        Self::NotFound { id: format!("{id:?}") }
    }

    /// Whether this is [`Error::NotFound`] (Go: `IsCausedBy(err, ErrNotFound)`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}
