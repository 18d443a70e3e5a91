//! The user's sync function and what it returns.

use std::future::Future;

use async_trait::async_trait;

use crate::item::Batch;

/// The error a sync function or batcher returns: any error, boxed.
pub type SyncError = Box<dyn std::error::Error + Send + Sync>;

/// What the cache should do with the item a sync function returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncAction {
    /// The item did not change: the cache keeps what it has.
    #[default]
    Unchanged,
    /// The item changed: the cache stores the returned item, unless the entry was deleted,
    /// evicted or replaced by the caller since the batch was dispatched.
    Update,
    /// The remote object is gone: the cache removes the item, unless the entry was deleted,
    /// evicted or replaced by the caller since the batch was dispatched (then it is left as
    /// it is). The response's `item` is ignored. Subscribers to the item see their channel
    /// closed, as for a delete.
    ///
    /// ```
    /// use autorefresh_core::{ItemSyncResponse, SyncAction};
    ///
    /// // The external system no longer knows "job-7": stop tracking it.
    /// let gone = ItemSyncResponse { id: "job-7", item: 0_u32, action: SyncAction::Delete };
    /// assert_eq!(gone.action, SyncAction::Delete);
    /// ```
    Delete,
}

/// One item's result from a sync call.
///
/// Items of the batch that have no response are treated as [`SyncAction::Unchanged`], so a
/// sync function may return only the items that changed. Responses for ids that were not in
/// the batch are ignored (and counted).
///
/// # Examples
///
/// ```
/// use autorefresh_core::{ItemSyncResponse, SyncAction};
///
/// let response = ItemSyncResponse { id: "job-1", item: 2_u32, action: SyncAction::Update };
/// assert_eq!(response.action, SyncAction::Update);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemSyncResponse<K, V> {
    /// The id of the item, as it was in the batch.
    pub id: K,
    /// The item's new value; stored only when `action` is [`SyncAction::Update`].
    pub item: V,
    /// What the cache should do with `item`.
    pub action: SyncAction,
}

/// What a sync call returns: the responses for (some of) the batch's items, or an error that
/// fails the whole batch, whose items are then retried after their backoff.
pub type SyncResult<K, V> = Result<Vec<ItemSyncResponse<K, V>>, SyncError>;

/// Fetches the latest state of a batch of items from the external system.
///
/// Any `Fn(Batch<K, V>) -> impl Future<Output = SyncResult<K, V>>` closure implements it.
/// The future is dropped to cancel the call (on shutdown, or by a timeout layer), so it must
/// not rely on running to completion.
///
/// # Examples
///
/// A closure:
///
/// ```
/// use autorefresh_core::{Batch, ItemSyncResponse, SyncAction, SyncFunc};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sync = |batch: Batch<String, u32>| async move {
///     Ok(batch
///         .into_iter()
///         .map(|w| {
///             let (id, n) = w.into_parts();
///             ItemSyncResponse { id, item: n + 1, action: SyncAction::Update }
///         })
///         .collect())
/// };
/// let batch = vec![autorefresh_core::ItemWrapper::new("a".to_string(), 1)];
/// let responses = sync.sync(batch).await.unwrap();
/// assert_eq!(responses[0].item, 2);
/// # }
/// ```
///
/// A type with its own client:
///
/// ```
/// use async_trait::async_trait;
/// use autorefresh_core::{Batch, SyncFunc, SyncResult};
///
/// struct BatchApi { endpoint: String }
///
/// #[async_trait]
/// impl SyncFunc<String, u32> for BatchApi {
///     async fn sync(&self, batch: Batch<String, u32>) -> SyncResult<String, u32> {
///         let _ = (&self.endpoint, batch);
///         Ok(Vec::new()) // nothing changed
///     }
/// }
/// # let _ = BatchApi { endpoint: String::new() };
/// ```
#[async_trait]
pub trait SyncFunc<K, V>: Send + Sync + 'static {
    /// Syncs one batch. Items missing from the result are left unchanged.
    async fn sync(&self, batch: Batch<K, V>) -> SyncResult<K, V>;
}

#[async_trait]
impl<K, V, F, Fut> SyncFunc<K, V> for F
where
    K: Send + 'static,
    V: Send + 'static,
    F: Fn(Batch<K, V>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SyncResult<K, V>> + Send + 'static,
{
    async fn sync(&self, batch: Batch<K, V>) -> SyncResult<K, V> {
        self(batch).await
    }
}
