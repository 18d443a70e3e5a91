//! The future of a rate-limited call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

pin_project! {
    /// The [`Future`] of a [`SyncRateLimit`](super::SyncRateLimit) call: waits for the
    /// limiter's permission, then runs the inner service's call.
    ///
    /// Dropping it while it waits cancels the call before it reaches the inner service.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
    /// use autorefresh_tower::rate_limit::{future::ResponseFuture, SyncRateLimit};
    /// use autorefresh_tower::BucketRateLimiter;
    /// use tower::{service_fn, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), autorefresh_core::SyncError> {
    /// let inner = service_fn(|_batch: Batch<u64, u32>| async {
    ///     Ok::<Vec<ItemSyncResponse<u64, u32>>, SyncError>(Vec::new())
    /// });
    /// let mut sync = SyncRateLimit::new(inner, Arc::new(BucketRateLimiter::new(1.0, 1)?));
    /// let future: ResponseFuture<_, Batch<u64, u32>> = sync.ready().await?.call(Vec::new());
    /// assert!(future.await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        // Waiting for the limiter's permission, with the ready service and its request.
        Waiting {
            #[pin]
            sleep: Sleep,
            call: Option<(S, Req)>,
        },
        // Running the inner service's call.
        Called {
            #[pin]
            future: F,
        },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(super) fn called(future: S::Future) -> Self {
        Self { state: State::Called { future } }
    }

    pub(super) fn waiting(sleep: Sleep, service: S, request: Req) -> Self {
        Self { state: State::Waiting { sleep, call: Some((service, request)) } }
    }
}

impl<S: Service<Req>, Req> Future for ResponseFuture<S, Req> {
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { sleep, call } => {
                    ready!(sleep.poll(cx));
                    // Set once in `waiting` and taken only here, right before the state moves
                    // on to `Called`: a poll after that never sees `Waiting` again.
                    let Some((mut service, request)) = call.take() else {
                        unreachable!("a rate-limited call is made once");
                    };
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => return future.poll(cx),
            }
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { sleep, .. } => format!("waiting until {:?}", sleep.deadline()),
            State::Called { .. } => "called".to_owned(),
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}
