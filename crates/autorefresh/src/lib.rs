//! A cache that keeps the latest state of the items it tracks fresh in the background.
//!
//! A caller creates the items it wants tracked (a job submitted to Kubernetes, AWS Batch or
//! Databricks, a payment, a build); the cache calls the caller's sync function on batches of
//! them every resync period, with bounded parallelism and per-item retry backoff, until each
//! item reaches a terminal state. Readers get the latest known state at once and never wait
//! on the external system.
//!
//! This is the Rust successor to flytestdlib's Go `cache.AutoRefresh`: the same API names and
//! semantics, without its defects (an item is never in two batches at once nor lost from
//! refresh, a panicking sync fails only its batch, failed batches are retried with backoff,
//! shutdown is awaitable, bad configuration is an error).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use autorefresh::{AutoRefresh, Batch, Item, ItemSyncResponse, SyncAction};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Clone, Debug, PartialEq)]
//! enum Status { Submitted, Running, Done }
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct Job { status: Status }
//!
//! impl Item for Job {
//!     fn is_terminal(&self) -> bool { self.status == Status::Done }
//! }
//!
//! // Stands in for a call to the external system, advancing each job one state.
//! async fn describe_jobs(batch: Batch<String, Job>) -> Result<Vec<ItemSyncResponse<String, Job>>, autorefresh::SyncError> {
//!     Ok(batch
//!         .into_iter()
//!         .map(|w| {
//!             let (id, job) = w.into_parts();
//!             let status = if job.status == Status::Submitted { Status::Running } else { Status::Done };
//!             ItemSyncResponse { id, item: Job { status }, action: SyncAction::Update }
//!         })
//!         .collect())
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), autorefresh::Error> {
//! let cache: AutoRefresh<String, Job> = AutoRefresh::builder("jobs")
//!     .sync(describe_jobs)
//!     .resync_period(Duration::from_secs(30))
//!     .parallelism(10)
//!     .capacity(10_000)
//!     .build()?;
//! let running = cache.start(CancellationToken::new())?;
//!
//! cache.get_or_create("job-1".to_string(), Job { status: Status::Submitted })?;
//! tokio::time::sleep(Duration::from_secs(31)).await; // synced on create, then by a sweep
//! assert_eq!(cache.get(&"job-1".to_string())?.status, Status::Done);
//!
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How retries use the rate limiter
//!
//! Sweeps and sync-on-create queue items at once. When a batch fails (the sync function
//! returns an error or panics), each of its items is queued again after
//! [`RateLimiter::when`] of its id (one call per item per failure); when an item's batch
//! succeeds, or the item leaves the cache or becomes terminal, [`RateLimiter::forget`] drops
//! its state. A sweep that comes before an item's retry deadline makes it due at once: the
//! earlier deadline wins.
//!
//! # The crates
//!
//! This facade composes `autorefresh-core` (the traits), `autorefresh-papaya` (the default
//! store), `autorefresh-moka` (a store on moka, exact LRU), `autorefresh-tower` (the rate
//! limiters and the sync-path middleware) and, with the `prometheus` feature,
//! `autorefresh-prometheus`; each is usable alone.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod builder;
mod cache;
mod config;
mod engine;
mod notify;
mod queue;
mod removal;
mod replica;
mod sync;
mod sync_service;

// `Shutdown` is in `Cluster::run`'s signature: without it, implementing `Cluster` through the
// facade would need a direct dependency on `autorefresh-core` just to name the type.
pub use autorefresh_core::{
    Batch, Cluster, ClusterError, CreateBatchesFunc, EntryHandle, EntryState, EntryVersion, Error,
    EvictionListener, FixedSizeBatches, GetOrInsert, Item, ItemSyncResponse, ItemWrapper,
    LocalReplica, Metrics, NoopMetrics, RateLimiter, RetryAfter, Shutdown, SingleItemBatches,
    Store, SyncAction, SyncError, SyncFailureKind, SyncFunc, SyncResult,
};
pub use autorefresh_moka::MokaStore;
pub use autorefresh_papaya::PapayaStore;
/// Prometheus metrics: the `autorefresh-prometheus` crate (feature `prometheus`).
#[cfg(feature = "prometheus")]
pub use autorefresh_prometheus as prometheus;
/// Replicas sharing items and the refresh through Redis: the `autorefresh-redis` crate
/// (feature `redis`).
#[cfg(feature = "redis")]
pub use autorefresh_redis as redis;
/// The sync-path middleware and rate limiters (the `autorefresh-tower` crate).
pub use autorefresh_tower as tower;
pub use autorefresh_tower::{
    default_controller_rate_limiter, BucketRateLimiter, InvalidRateLimit,
    ItemExponentialFailureRateLimiter, ItemFastSlowRateLimiter, MaxOfRateLimiter,
    NoDelayRateLimiter,
};
pub use builder::{
    AutoRefreshBuilder, DEFAULT_CAPACITY, DEFAULT_PARALLELISM, DEFAULT_RESYNC_PERIOD,
    DEFAULT_UPDATES_CAPACITY,
};
pub use cache::{AutoRefresh, Running};
pub use config::{AutoRefreshConfig, LimiterConfig};
pub use removal::RemovalCause;
pub use sync_service::SyncService;
pub use tokio_util::sync::CancellationToken;
