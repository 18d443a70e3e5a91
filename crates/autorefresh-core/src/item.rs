//! The cached item and its wrapper.

/// A value the cache tracks and keeps fresh.
///
/// The only required method says whether the external system is done with the item: a
/// terminal item is never handed to the sync function again, though it stays readable until
/// it is deleted or evicted.
///
/// # Examples
///
/// ```
/// use autorefresh_core::Item;
///
/// #[derive(Clone, Debug, PartialEq)]
/// enum JobStatus { Running, Succeeded, Failed }
///
/// #[derive(Clone, Debug)]
/// struct Job { status: JobStatus }
///
/// impl Item for Job {
///     fn is_terminal(&self) -> bool {
///         matches!(self.status, JobStatus::Succeeded | JobStatus::Failed)
///     }
/// }
///
/// assert!(!Job { status: JobStatus::Running }.is_terminal());
/// assert!(Job { status: JobStatus::Failed }.is_terminal());
/// assert!(Job { status: JobStatus::Succeeded }.is_terminal());
/// ```
pub trait Item: Clone + Send + Sync + 'static {
    /// Whether the item has reached a state it will never leave, so refreshing it is pointless.
    fn is_terminal(&self) -> bool;
}

/// An item together with its id, as handed to the batcher and the sync function.
///
/// # Examples
///
/// ```
/// use autorefresh_core::ItemWrapper;
///
/// let wrapper = ItemWrapper::new("job-1".to_string(), 7_u32);
/// assert_eq!(wrapper.id(), "job-1");
/// assert_eq!(*wrapper.item(), 7);
/// let (id, item) = wrapper.into_parts();
/// assert_eq!((id.as_str(), item), ("job-1", 7));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemWrapper<K, V> {
    id: K,
    item: V,
}

impl<K, V> ItemWrapper<K, V> {
    /// Wraps `item` under `id`.
    pub fn new(id: K, item: V) -> Self {
        Self { id, item }
    }

    /// The item's id (Go: `GetID`).
    pub fn id(&self) -> &K {
        &self.id
    }

    /// The item as it was when the batch was dispatched (Go: `GetItem`).
    pub fn item(&self) -> &V {
        &self.item
    }

    /// Takes the wrapper apart into its id and item.
    pub fn into_parts(self) -> (K, V) {
        (self.id, self.item)
    }
}

/// A batch of items handed to one call of the sync function.
pub type Batch<K, V> = Vec<ItemWrapper<K, V>>;
