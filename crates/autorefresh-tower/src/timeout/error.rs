//! Recognising the timeout layer's error.

use std::error::Error;

use tower::timeout::error::Elapsed;

/// Whether `error`, or any error in its [`source`](Error::source) chain, is the timeout
/// layer's [`Elapsed`]: the sync call ran out of time.
///
/// The cache uses it to count such a failure as
/// [`SyncFailureKind::Timeout`](autorefresh_core::SyncFailureKind::Timeout) rather than as an
/// error.
///
/// # Examples
///
/// ```
/// use autorefresh_core::SyncError;
/// use autorefresh_tower::timeout::{is_timeout, Elapsed};
///
/// let timed_out: SyncError = Elapsed::new().into();
/// assert!(is_timeout(timed_out.as_ref()));
///
/// let failed: SyncError = "HTTP 500".into();
/// assert!(!is_timeout(failed.as_ref()));
/// ```
pub fn is_timeout(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<Elapsed>() {
            return true;
        }
        current = error.source();
    }
    false
}
