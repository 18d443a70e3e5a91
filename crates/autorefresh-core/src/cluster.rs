//! The seams for caches whose instances (replicas of one service) share their items.
//!
//! A cache with a [`Cluster`] keeps its own store as before, and the cluster carries the rest:
//! which items this instance refreshes, where its creates, updates and deletes go besides the
//! local store, where a local miss may look next, and the changes other instances made, which
//! it applies through a [`LocalReplica`]. A cache without one never calls any of this.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

/// Why a cluster operation failed (a connection refused, a timeout, a value that would not
/// decode).
pub type ClusterError = Box<dyn StdError + Send + Sync + 'static>;

/// Completes when the cache shuts down: [`Cluster::run`] then leaves the cluster gracefully.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a cache's items live besides its own store, shared with its other instances.
///
/// The cache calls the notification methods (`created`, `updated`, `refreshed`, `deleted`)
/// right after the local change (`deleted` right before it), from whatever thread made it,
/// and never waits on the cluster: they must not block (queue the write and send it from
/// [`run`](Self::run)). The cache never calls them while it holds a lock of its own, so a
/// cluster may call the [`LocalReplica`] while holding its locks. Changes applied through the
/// `LocalReplica` are never reported back.
///
/// # Examples
///
/// A cluster of one, which refreshes every item and shares nothing:
///
/// ```
/// use std::sync::Arc;
/// use autorefresh_core::{Cluster, ClusterError, LocalReplica, Shutdown};
///
/// struct Alone;
///
/// #[async_trait::async_trait]
/// impl Cluster<String, u32> for Alone {
///     fn refreshes(&self, _id: &String) -> bool { true }
///     fn created(&self, _id: &String, _item: &u32) {}
///     fn updated(&self, _id: &String, _item: &u32) {}
///     fn refreshed(&self, _id: &String, _item: &u32) {}
///     fn deleted(&self, _id: &String) {}
///     async fn fetch(&self, _id: &String) -> Result<Option<u32>, ClusterError> { Ok(None) }
///     async fn run(&self, _local: Arc<dyn LocalReplica<String, u32>>, shutdown: Shutdown) {
///         shutdown.await
///     }
/// }
///
/// let cluster: Arc<dyn Cluster<String, u32>> = Arc::new(Alone);
/// assert!(cluster.refreshes(&"job-1".to_owned()));
/// ```
#[async_trait]
pub trait Cluster<K, V>: Send + Sync + 'static {
    /// Whether this instance refreshes `id` now (another instance refreshes it otherwise).
    ///
    /// Asked by every sweep for every due item, and on create: it must be cheap (a lookup in
    /// memory) and never block.
    fn refreshes(&self, id: &K) -> bool;

    /// `get_or_create` inserted `item` under `id` in the local store.
    fn created(&self, id: &K, item: &V);

    /// A caller replaced the item under `id` with `item` (`update`).
    fn updated(&self, id: &K, item: &V);

    /// A sync of this instance replaced the item under `id` with `item`.
    fn refreshed(&self, id: &K, item: &V);

    /// The item under `id` was deleted here: `delete`, `delete_delayed` (when the sweep
    /// removes it), a sync's `Delete`, or terminal expiry. Evictions are not reported: they
    /// only make room in this instance's store.
    fn deleted(&self, id: &K);

    /// Looks up `id`, which the local store does not hold, in the cluster.
    ///
    /// # Errors
    ///
    /// When the cluster cannot be reached or answers something that does not decode.
    async fn fetch(&self, id: &K) -> Result<Option<V>, ClusterError>;

    /// The cluster's background work (membership, leases, sending this instance's changes,
    /// applying the other instances' through `local`), until `shutdown` completes; then
    /// leaves the cluster gracefully (hands over what this instance refreshed) and returns.
    async fn run(&self, local: Arc<dyn LocalReplica<K, V>>, shutdown: Shutdown);
}

/// What a [`Cluster`] may do to the local cache: apply the changes other instances made.
///
/// Nothing done through it is reported back to the cluster.
pub trait LocalReplica<K, V>: Send + Sync {
    /// Stores `item` under `id`, inserting or replacing, and tells the item's subscribers. An
    /// inserted item is queued for a sync as a created one would be, if this instance
    /// refreshes it.
    fn upsert(&self, id: K, item: V);

    /// Removes the item under `id`, if there is one (subscribers see it leave).
    fn remove(&self, id: &K);

    /// The item the local store holds under `id`, if any (not counted as a read).
    fn get(&self, id: &K) -> Option<V>;

    /// Visits every id the local store holds.
    fn for_each_id(&self, visit: &mut dyn FnMut(&K));
}
