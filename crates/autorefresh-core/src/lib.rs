//! Traits and plain types of the autorefresh cache.
//!
//! `autorefresh-core` is what every other `autorefresh-*` crate builds on, and all a crate
//! needs to plug a piece into the cache: the [`Item`] it stores, the [`SyncFunc`] that
//! refreshes batches of items, the [`CreateBatchesFunc`] that forms the batches, the
//! [`RateLimiter`] that spaces retries, the [`Store`] that holds the items and the
//! [`Metrics`] observer. It depends on nothing but `async-trait` and `thiserror`.
//!
//! Most users depend on the `autorefresh` facade, which re-exports all of this.
//!
//! # Examples
//!
//! ```
//! use autorefresh_core::{Batch, CreateBatchesFunc, Item, ItemSyncResponse, SingleItemBatches, SyncAction, SyncFunc};
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct Build { done: bool }
//!
//! impl Item for Build {
//!     fn is_terminal(&self) -> bool { self.done }
//! }
//!
//! async fn check(batch: Batch<u64, Build>) -> Result<Vec<ItemSyncResponse<u64, Build>>, autorefresh_core::SyncError> {
//!     Ok(batch
//!         .into_iter()
//!         .map(|w| ItemSyncResponse { id: *w.id(), item: Build { done: true }, action: SyncAction::Update })
//!         .collect())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let items = vec![autorefresh_core::ItemWrapper::new(1, Build { done: false })];
//! let batches = SingleItemBatches.create_batches(items).unwrap();
//! let responses = check.sync(batches.into_iter().next().unwrap()).await.unwrap();
//! assert!(responses[0].item.is_terminal());
//! # }
//! ```
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod batches;
mod cluster;
mod entry;
mod error;
mod item;
mod limiter;
mod metrics;
mod retry_after;
mod store;
mod sync;

pub use batches::{CreateBatchesFunc, FixedSizeBatches, SingleItemBatches};
pub use cluster::{Cluster, ClusterError, LocalReplica, Shutdown};
pub use entry::{EntryHandle, EntryState, EntryVersion};

/// The cache engine's bookkeeping in each entry: **not a public API**. It is reachable from
/// here only because the engine lives in another crate (`autorefresh`); it may change in any
/// release, and a store, listener or cluster must never use it (nor the `#[doc(hidden)]`
/// methods of [`EntryHandle`] that take or return these types). Stores need only
/// [`EntryHandle::new`], its reads, [`EntryHandle::mark_removed`] and
/// [`EntryHandle::same_entry`].
#[doc(hidden)]
pub mod engine {
    pub use crate::entry::{EntrySnapshot, QueueSlot, QueueState};
}
pub use error::Error;
pub use item::{Batch, Item, ItemWrapper};
pub use limiter::RateLimiter;
pub use metrics::{Metrics, NoopMetrics, SyncFailureKind};
pub use retry_after::RetryAfter;
pub use store::{EvictionListener, GetOrInsert, Store};
pub use sync::{ItemSyncResponse, SyncAction, SyncError, SyncFunc, SyncResult};
