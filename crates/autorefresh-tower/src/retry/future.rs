//! The future a [`BackoffRetryPolicy`](super::BackoffRetryPolicy) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Waits out the backoff before a retry, on [`tokio::time`]; ready at once for a zero
/// backoff.
///
/// Returned by [`BackoffRetryPolicy`](super::BackoffRetryPolicy)'s
/// [`Policy::retry`](tower::retry::Policy::retry); the retry layer polls it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh_tower::retry::future::Backoff;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = tokio::time::Instant::now();
/// Backoff::new(Duration::from_millis(250)).await;
/// assert_eq!(start.elapsed(), Duration::from_millis(250));
/// # }
/// ```
pub struct Backoff {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Backoff {
    /// Waits `delay` from now. Must be called within a tokio runtime unless `delay` is zero.
    pub fn new(delay: Duration) -> Self {
        let sleep = (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay)));
        Self { sleep }
    }

    /// When the wait ends; `None` for a zero backoff.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh_tower::retry::future::Backoff;
    ///
    /// assert_eq!(Backoff::new(Duration::ZERO).deadline(), None);
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.sleep.as_ref().map(|sleep| sleep.deadline())
    }
}

impl Future for Backoff {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff").field("deadline", &self.deadline()).finish()
    }
}
