//! Splitting the items due for a sync into batches.

use std::num::NonZeroUsize;

use crate::item::{Batch, ItemWrapper};
use crate::sync::SyncError;

/// Splits the items due for a sync into the batches handed to the sync function.
///
/// The cache calls it with every item that became due together (a sweep's non-terminal items,
/// or the items created or retried since the last call) and queues the batches it returns.
/// An id it leaves out is not synced until the next sweep; an id it repeats or invents is
/// ignored. An error fails the call: its items are retried after their backoff.
///
/// Any `Fn(Vec<ItemWrapper<K, V>>) -> Result<Vec<Batch<K, V>>, SyncError>` closure
/// implements it. [`SingleItemBatches`] (the default) and [`FixedSizeBatches`] are provided.
///
/// # Examples
///
/// Grouping by region, at most 100 ids per request:
///
/// ```
/// use autorefresh_core::{Batch, CreateBatchesFunc, ItemWrapper, SyncError};
///
/// #[derive(Clone)]
/// struct Job { region: &'static str }
///
/// let by_region = |mut items: Vec<ItemWrapper<String, Job>>| -> Result<Vec<Batch<String, Job>>, SyncError> {
///     items.sort_by_key(|w| w.item().region);
///     let mut batches: Vec<Batch<String, Job>> = Vec::new();
///     for w in items {
///         match batches.last_mut() {
///             Some(b) if b.len() < 100 && b[0].item().region == w.item().region => b.push(w),
///             _ => batches.push(vec![w]),
///         }
///     }
///     Ok(batches)
/// };
/// let items = vec![
///     ItemWrapper::new("a".to_string(), Job { region: "eu" }),
///     ItemWrapper::new("b".to_string(), Job { region: "us" }),
///     ItemWrapper::new("c".to_string(), Job { region: "eu" }),
/// ];
/// let batches = by_region.create_batches(items).unwrap();
/// assert_eq!(batches.len(), 2);
/// assert_eq!(batches[0].len(), 2);
/// ```
pub trait CreateBatchesFunc<K, V>: Send + Sync + 'static {
    /// Splits `items` into batches.
    fn create_batches(&self, items: Vec<ItemWrapper<K, V>>) -> Result<Vec<Batch<K, V>>, SyncError>;

    /// `Some(n)` if this batcher only cuts the items, in order, into runs of at most `n`
    /// without looking at them (as [`SingleItemBatches`] and [`FixedSizeBatches`] do): the
    /// cache then forms those batches itself, without cloning the items to call
    /// [`create_batches`](Self::create_batches). The default, `None`, always calls it.
    fn fixed_size(&self) -> Option<NonZeroUsize> {
        None
    }
}

impl<K, V, F> CreateBatchesFunc<K, V> for F
where
    F: Fn(Vec<ItemWrapper<K, V>>) -> Result<Vec<Batch<K, V>>, SyncError> + Send + Sync + 'static,
{
    fn create_batches(&self, items: Vec<ItemWrapper<K, V>>) -> Result<Vec<Batch<K, V>>, SyncError> {
        self(items)
    }
}

/// One batch per item: the default, as Go's `SingleItemBatches`.
///
/// # Examples
///
/// ```
/// use autorefresh_core::{CreateBatchesFunc, ItemWrapper, SingleItemBatches};
///
/// let items = vec![ItemWrapper::new(1, "a"), ItemWrapper::new(2, "b")];
/// let batches = SingleItemBatches.create_batches(items).unwrap();
/// assert_eq!(batches.len(), 2);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleItemBatches;

impl<K: 'static, V: 'static> CreateBatchesFunc<K, V> for SingleItemBatches {
    fn create_batches(&self, items: Vec<ItemWrapper<K, V>>) -> Result<Vec<Batch<K, V>>, SyncError> {
        Ok(items.into_iter().map(|item| vec![item]).collect())
    }

    fn fixed_size(&self) -> Option<NonZeroUsize> {
        Some(NonZeroUsize::MIN)
    }
}

/// Batches of at most `size` items, in the order the items came.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use autorefresh_core::{CreateBatchesFunc, FixedSizeBatches, ItemWrapper};
///
/// let batcher = FixedSizeBatches::new(NonZeroUsize::new(2).unwrap());
/// let items = (0..5).map(|i| ItemWrapper::new(i, ())).collect();
/// let sizes: Vec<usize> = batcher.create_batches(items).unwrap().iter().map(Vec::len).collect();
/// assert_eq!(sizes, [2, 2, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedSizeBatches {
    size: NonZeroUsize,
}

impl FixedSizeBatches {
    /// Batches of at most `size` items.
    pub const fn new(size: NonZeroUsize) -> Self {
        Self { size }
    }

    /// The largest batch this batcher makes.
    pub const fn size(&self) -> NonZeroUsize {
        self.size
    }
}

impl<K: 'static, V: 'static> CreateBatchesFunc<K, V> for FixedSizeBatches {
    fn create_batches(&self, items: Vec<ItemWrapper<K, V>>) -> Result<Vec<Batch<K, V>>, SyncError> {
        let size = self.size.get();
        let mut batches = Vec::with_capacity(items.len().div_ceil(size));
        let mut items = items.into_iter();
        loop {
            let batch: Batch<K, V> = items.by_ref().take(size).collect();
            if batch.is_empty() {
                return Ok(batches);
            }
            batches.push(batch);
        }
    }

    fn fixed_size(&self) -> Option<NonZeroUsize> {
        Some(self.size)
    }
}
