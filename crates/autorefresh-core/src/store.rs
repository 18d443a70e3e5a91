//! What the cache needs of a store.

use std::sync::Arc;

use crate::entry::EntryHandle;

/// Told of every entry a store evicts to stay within its capacity.
pub type EvictionListener<K, V> = Arc<dyn Fn(&K, &EntryHandle<V>) + Send + Sync>;

/// The outcome of [`Store::get_or_insert`].
#[derive(Debug)]
pub enum GetOrInsert<V> {
    /// The id was present: its entry, unchanged.
    Existing(EntryHandle<V>),
    /// The id was absent: the entry that was inserted.
    Inserted(EntryHandle<V>),
}

/// A bounded concurrent map from ids to [`EntryHandle`]s: where the cache keeps its items.
///
/// The rules every store keeps, which the cache relies on:
/// - **Recency is the callers'.** [`get`](Store::get) and [`get_or_insert`](Store::get_or_insert)
///   count as use for the eviction order; [`for_each_entry`](Store::for_each_entry) does not
///   (the background refresh works through handles and never touches the order).
/// - **Capacity is exact as readers see it**: once `get_or_insert` returns, at most the
///   capacity is readable, and the entry it just inserted is never the one evicted for it. A
///   store that inserts before it evicts (`MokaStore`) may show one more entry per insert in
///   progress to other threads, for that instant, and says so (the conformance suite's
///   `capacity_exceeded_during_inserts`).
/// - **Removed means removed**: every entry the store drops (by `remove`, `remove_entry` or
///   eviction) is marked with [`EntryHandle::mark_removed`] before the call returns or the
///   listener runs; evictions are reported to the [`EvictionListener`], which must not be
///   called while the store holds a lock the listener could need.
///
/// `autorefresh-papaya` (the facade's default: lock-free reads, approximate LRU) and
/// `autorefresh-moka` (exact LRU) implement it.
///
/// # Examples
///
/// An unbounded store on a mutex-guarded `HashMap` (for illustration; it never evicts):
///
/// ```
/// use std::collections::HashMap;
/// use std::hash::Hash;
/// use std::sync::Mutex;
/// use autorefresh_core::{EntryHandle, EvictionListener, GetOrInsert, Store};
///
/// struct MapStore<K, V>(Mutex<HashMap<K, EntryHandle<V>>>);
///
/// impl<K, V> Store<K, V> for MapStore<K, V>
/// where
///     K: Hash + Eq + Clone + Send + Sync + 'static,
///     V: Send + Sync + 'static,
/// {
///     fn get(&self, id: &K) -> Option<EntryHandle<V>> {
///         self.0.lock().unwrap().get(id).cloned()
///     }
///     fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V> {
///         let mut map = self.0.lock().unwrap();
///         match map.get(&id) {
///             Some(existing) => GetOrInsert::Existing(existing.clone()),
///             None => {
///                 map.insert(id, entry.clone());
///                 GetOrInsert::Inserted(entry)
///             }
///         }
///     }
///     fn remove(&self, id: &K) -> Option<EntryHandle<V>> {
///         let removed = self.0.lock().unwrap().remove(id);
///         if let Some(entry) = &removed {
///             entry.mark_removed();
///         }
///         removed
///     }
///     fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool {
///         let mut map = self.0.lock().unwrap();
///         if map.get(id).is_some_and(|e| e.same_entry(entry)) {
///             map.remove(id);
///             entry.mark_removed();
///             return true;
///         }
///         false
///     }
///     fn len(&self) -> usize {
///         self.0.lock().unwrap().len()
///     }
///     fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>)) {
///         let entries: Vec<_> =
///             self.0.lock().unwrap().iter().map(|(k, e)| (k.clone(), e.clone())).collect();
///         for (id, entry) in &entries {
///             visit(id, entry);
///         }
///     }
///     fn set_eviction_listener(&self, _listener: EvictionListener<K, V>) {}
/// }
///
/// let store = MapStore(Mutex::new(HashMap::new()));
/// assert!(matches!(store.get_or_insert("a", EntryHandle::new(1)), GetOrInsert::Inserted(_)));
/// assert_eq!(store.get(&"a").map(|e| e.load()), Some(1));
/// ```
pub trait Store<K, V>: Send + Sync + 'static {
    /// The entry for `id`, counted as use.
    fn get(&self, id: &K) -> Option<EntryHandle<V>>;

    /// Atomically: the existing entry for `id`, or `entry` inserted. Counted as use.
    fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V>;

    /// Removes `id`, returning its entry (marked removed).
    fn remove(&self, id: &K) -> Option<EntryHandle<V>>;

    /// Removes `id` only if it still maps to `entry`; returns whether it did.
    fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool;

    /// How many entries are readable.
    fn len(&self) -> usize;

    /// Whether no entry is readable.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `visit` on every entry, without counting it as use. Entries inserted or removed
    /// meanwhile may or may not be visited.
    fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>));

    /// Sets the listener told of every eviction, replacing any earlier one.
    fn set_eviction_listener(&self, listener: EvictionListener<K, V>);
}

impl<K, V, S: Store<K, V> + ?Sized> Store<K, V> for Arc<S> {
    fn get(&self, id: &K) -> Option<EntryHandle<V>> {
        (**self).get(id)
    }
    fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V> {
        (**self).get_or_insert(id, entry)
    }
    fn remove(&self, id: &K) -> Option<EntryHandle<V>> {
        (**self).remove(id)
    }
    fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool {
        (**self).remove_entry(id, entry)
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>)) {
        (**self).for_each_entry(visit)
    }
    fn set_eviction_listener(&self, listener: EvictionListener<K, V>) {
        (**self).set_eviction_listener(listener)
    }
}
