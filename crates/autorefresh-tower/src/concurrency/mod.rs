//! A bound on the sync calls in flight at once, across all the cache's workers: tower's
//! [`ConcurrencyLimitLayer`].
//!
//! For an external API that allows only `k` calls in flight whatever the worker count. The
//! cache applies its layers once, to one service, and hands each worker a clone of the
//! result. A [`ConcurrencyLimit`] and its clones share one semaphore, so the limit holds
//! across all workers: with 10 workers and `ConcurrencyLimitLayer::new(3)`, at most 3 calls
//! run at once and the other workers wait for a permit. (Each call of
//! [`Layer::layer`](tower::Layer::layer) on a [`ConcurrencyLimitLayer`] makes a new semaphore;
//! to share one limit between several caches, use [`GlobalConcurrencyLimitLayer`].)
//!
//! A worker takes its permit when it polls the service for readiness, before the call, and
//! gives it back when the call's future completes or is dropped (a timeout, a shutdown). Put
//! the limit inside a retry layer, so a batch waiting out its retry backoff holds no permit.
//! A rate limit layer inside or outside it waits for its token while holding the permit.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
//! use autorefresh_tower::concurrency::ConcurrencyLimitLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let in_flight = Arc::new(AtomicUsize::new(0));
//! let most = Arc::new(AtomicUsize::new(0));
//! let (now, peak) = (in_flight.clone(), most.clone());
//! let sync = service_fn(move |_batch: Batch<u64, u32>| {
//!     let (now, peak) = (now.clone(), peak.clone());
//!     async move {
//!         peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         now.fetch_sub(1, Ordering::SeqCst);
//!         Ok::<Vec<ItemSyncResponse<u64, u32>>, SyncError>(Vec::new())
//!     }
//! });
//! // Layered once, then cloned into each "worker", as the cache does.
//! let sync = ServiceBuilder::new().layer(ConcurrencyLimitLayer::new(2)).service(sync);
//! let workers: Vec<_> =
//!     (0..5).map(|_| tokio::spawn(sync.clone().oneshot(Vec::new()))).collect();
//! for worker in workers {
//!     worker.await.unwrap().unwrap();
//! }
//! assert_eq!(most.load(Ordering::SeqCst), 2);
//! # }
//! ```

pub use tower::limit::{ConcurrencyLimit, ConcurrencyLimitLayer, GlobalConcurrencyLimitLayer};
