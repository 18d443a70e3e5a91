//! The error a sync function returns to say when to try again.

use std::fmt;
use std::time::Duration;

use crate::sync::SyncError;

/// A sync error that says "try again after `delay`", as an HTTP 429 with `Retry-After` does.
///
/// When a batch fails with it (directly, or anywhere in the error's `source()` chain), each
/// item of the batch waits at least `delay` before its retry, or its rate limiter's backoff if
/// that is longer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_core::{RetryAfter, SyncError};
///
/// let err: SyncError = RetryAfter::new(Duration::from_secs(30)).with_source("HTTP 429").into();
/// assert_eq!(RetryAfter::find(err.as_ref()), Some(Duration::from_secs(30)));
/// assert_eq!(err.to_string(), "retry after 30s: HTTP 429");
/// assert_eq!(RetryAfter::find(&std::fmt::Error), None);
/// ```
#[derive(Debug)]
pub struct RetryAfter {
    delay: Duration,
    source: Option<SyncError>,
}

impl RetryAfter {
    /// Retry no sooner than `delay` from now.
    pub fn new(delay: Duration) -> Self {
        Self { delay, source: None }
    }

    /// Keeps the error that caused it (the HTTP response, say) as its source.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<SyncError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// How long to wait before the retry.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The delay asked for by the first `RetryAfter` in `error` or its sources, if any.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(retry_after) = error.downcast_ref::<Self>() {
                return Some(retry_after.delay);
            }
            current = error.source();
        }
        None
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry after {:?}", self.delay)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RetryAfter {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
