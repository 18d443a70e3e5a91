//! The marker for errors worth retrying in place.

use std::error::Error;
use std::fmt;

use autorefresh_core::SyncError;

/// Marks a sync error as transient: a retry of the same call soon may well succeed (a
/// connection reset, an HTTP 502 or 503, a throttled request without a `Retry-After`).
///
/// The [`BackoffRetryPolicy`](super::BackoffRetryPolicy) retries a call in place when its
/// error is a `Transient`, or has one anywhere in its [`source`](Error::source) chain. Errors
/// without it are permanent for that policy: they go back to the cache, whose rate limiter
/// spaces the items' next attempts.
///
/// It displays as `transient error: ` followed by the wrapped error, which is also its
/// [`source`](Error::source).
///
/// # Examples
///
/// ```
/// use autorefresh_core::SyncError;
/// use autorefresh_tower::retry::Transient;
///
/// let err: SyncError = Transient::new("HTTP 503").into();
/// assert!(Transient::find(err.as_ref()).is_some());
/// assert_eq!(err.to_string(), "transient error: HTTP 503");
///
/// let permanent: SyncError = "HTTP 404".into();
/// assert!(Transient::find(permanent.as_ref()).is_none());
/// ```
#[derive(Debug)]
pub struct Transient {
    source: SyncError,
}

impl Transient {
    /// Marks `error` as transient.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::Transient;
    ///
    /// let err = Transient::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    /// assert!(err.get_ref().is::<std::io::Error>());
    /// ```
    pub fn new(error: impl Into<SyncError>) -> Self {
        Self { source: error.into() }
    }

    /// The first `Transient` in `error` or its sources, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::fmt;
    /// use autorefresh_tower::retry::Transient;
    ///
    /// // A user error that keeps a transient cause as its source.
    /// #[derive(Debug)]
    /// struct Upstream(Transient);
    /// impl fmt::Display for Upstream {
    ///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str("upstream failed") }
    /// }
    /// impl std::error::Error for Upstream {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
    /// }
    ///
    /// let err = Upstream(Transient::new("timeout talking to the API"));
    /// let found = Transient::find(&err).unwrap();
    /// assert_eq!(found.get_ref().to_string(), "timeout talking to the API");
    /// ```
    pub fn find<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Self> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(transient) = error.downcast_ref::<Self>() {
                return Some(transient);
            }
            current = error.source();
        }
        None
    }

    /// The wrapped error.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::Transient;
    ///
    /// assert_eq!(Transient::new("HTTP 502").get_ref().to_string(), "HTTP 502");
    /// ```
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.source.as_ref()
    }

    /// Unwraps the wrapped error.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_tower::retry::Transient;
    ///
    /// assert_eq!(Transient::new("HTTP 502").into_inner().to_string(), "HTTP 502");
    /// ```
    pub fn into_inner(self) -> SyncError {
        self.source
    }
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transient error: {}", self.source)
    }
}

impl Error for Transient {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}
