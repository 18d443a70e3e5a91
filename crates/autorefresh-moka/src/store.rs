//! [`MokaStore`]: the [`Store`] on a moka cache.

use std::fmt;
use std::hash::Hash;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use autorefresh_core::{EntryHandle, Error, EvictionListener, GetOrInsert, Store};
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// How many times an insert reruns moka's maintenance while the cache is still over capacity.
///
/// One run is enough unless moka cut it short (its maintenance stops after 100 ms when an
/// eviction listener is set, or after a batch of evictions); the bound only guards against a
/// loop that would never end.
const MAX_MAINTENANCE_ROUNDS: usize = 8;

/// A bounded [`Store`] on [`moka::sync::Cache`], evicting the least recently used entry.
///
/// It keeps the rules of [`Store`]:
///
/// - **LRU, and a new entry always stays.** The cache uses moka's LRU policy
///   ([`EvictionPolicy::lru`]), not its default TinyLFU, whose admission filter can turn a
///   brand-new id away in favour of older, more popular ones. The entry an insert just made
///   is the most recently used one, so the eviction it causes takes the least recently used.
/// - **Capacity exact once inserts return, not while they run.** moka inserts before it
///   evicts: a new entry is readable at once, and its victim leaves only when moka's
///   maintenance runs, which [`get_or_insert`](Store::get_or_insert) runs before it returns.
///   moka does not tell which entry its LRU order would evict, so the store cannot remove the
///   victim first; meanwhile other threads can read the capacity plus one (inserts of new ids
///   take turns on a lock, moka's maintenance being serial anyway, so at most one is in
///   progress). Once every `get_or_insert`
///   has returned, at most `capacity` entries are readable. This is weaker than the
///   [`Store`] rule as `autorefresh-papaya` keeps it (never more than the capacity, at any
///   instant); the conformance suite runs this store with
///   `capacity_exceeded_during_inserts = true`. Reads take no lock and never run the
///   maintenance themselves.
/// - **Recency is the callers'.** [`get`](Store::get) and `get_or_insert` count as use
///   (moka's read log); [`for_each_entry`](Store::for_each_entry) walks moka's
///   [`iter`](moka::sync::Cache::iter), which reads the map without logging a read, so a
///   background sweep never changes what gets evicted.
/// - **Removed means removed.** Every entry that leaves the store, by
///   [`remove`](Store::remove), [`remove_entry`](Store::remove_entry) or eviction, is marked
///   with [`EntryHandle::mark_removed`] before the call returns and before any listener sees
///   it. `remove_entry` is atomic: it removes the id only while it still maps to that very
///   entry (moka's per-key `and_compute_with`, which also serializes it with the inserts).
///
/// Evictions are counted ([`evictions`](MokaStore::evictions)) and reported to the listener
/// set with [`set_eviction_listener`](Store::set_eviction_listener), exactly once per evicted
/// entry. Explicit removals are not evictions and are not reported. The listener is called on
/// the thread whose call caused the eviction, after the store and moka released every lock,
/// before that call returns (or, under contention, by another call that delivers the pending
/// evictions first), so it may even call back into the store. A panic in the listener does not
/// stop the other pending evictions from being delivered; it then resumes in the calling
/// thread.
///
/// Cloning is cheap and the clones share the same entries, counters and listener.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Store};
/// use autorefresh_moka::MokaStore;
///
/// # fn main() -> Result<(), autorefresh_core::Error> {
/// let store: MokaStore<&str, u32> = MokaStore::new(2)?;
/// let evicted = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&evicted);
/// store.set_eviction_listener(Arc::new(move |id: &&str, _entry: &EntryHandle<u32>| {
///     sink.lock().unwrap().push(*id);
/// }));
///
/// let a = EntryHandle::new(1);
/// store.get_or_insert("a", a.clone());
/// store.get_or_insert("b", EntryHandle::new(2));
/// store.get(&"a");                                   // "a" is now more recent than "b"
/// store.get_or_insert("c", EntryHandle::new(3));     // evicts "b", the least recently used
///
/// assert_eq!(*evicted.lock().unwrap(), ["b"]);
/// assert_eq!(store.len(), 2);
/// assert_eq!(store.evictions(), 1);
///
/// // An id is created once: a second create returns the entry already there.
/// let again = store.get_or_insert("a", EntryHandle::new(10));
/// assert!(matches!(again, GetOrInsert::Existing(ref e) if e.same_entry(&a)));
///
/// assert!(store.remove_entry(&"a", &a));
/// assert_eq!(a.state(), EntryState::Removed);
/// # Ok(())
/// # }
/// ```
pub struct MokaStore<K, V> {
    cache: Cache<K, EntryHandle<V>>,
    shared: Arc<Shared<K, V>>,
}

/// What the store's clones and moka's eviction closure share.
struct Shared<K, V> {
    capacity: u64,
    /// Serializes inserts of new ids with the maintenance that brings the cache back to
    /// its capacity.
    insert_lock: Mutex<()>,
    listener: RwLock<Option<EvictionListener<K, V>>>,
    /// Evictions recorded by moka's closure, not yet delivered to the listener.
    pending: Mutex<Vec<(Arc<K>, EntryHandle<V>)>>,
    /// Whether `pending` may be non-empty: a lock-free hint for the read path.
    has_pending: AtomicBool,
    evictions: AtomicU64,
}

impl<K, V> Shared<K, V> {
    /// Called by moka for every entry it drops. Must never panic: moka stops calling a
    /// listener that panicked once, and entries would then leave the store unmarked.
    fn on_moka_removal(&self, id: Arc<K>, entry: EntryHandle<V>, cause: RemovalCause) {
        // `Explicit` comes from our own `remove`/`remove_entry`, which mark the entry
        // themselves; `Replaced` never happens (an id is inserted once, never overwritten).
        if !cause.was_evicted() {
            return;
        }
        entry.mark_removed();
        self.evictions.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.push((id, entry));
        self.has_pending.store(true, Ordering::Release);
    }
}

impl<K, V> MokaStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A store holding at most `capacity` entries.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_moka::MokaStore;
    ///
    /// let store = MokaStore::<String, u32>::new(1_000).unwrap();
    /// assert_eq!(store.capacity(), 1_000);
    ///
    /// let err = MokaStore::<String, u32>::new(0).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid cache configuration: `capacity` must be at least 1, got 0");
    /// ```
    pub fn new(capacity: u64) -> Result<Self, Error> {
        if capacity == 0 {
            return Err(Error::InvalidConfig {
                field: "capacity",
                reason: format!("must be at least 1, got {capacity}"),
            });
        }
        let shared = Arc::new(Shared {
            capacity,
            insert_lock: Mutex::new(()),
            listener: RwLock::new(None),
            pending: Mutex::new(Vec::new()),
            has_pending: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
        });
        let sink = Arc::clone(&shared);
        let cache = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |id, entry, cause| sink.on_moka_removal(id, entry, cause))
            .build();
        Ok(Self { cache, shared })
    }
}

impl<K, V> MokaStore<K, V> {
    /// The most entries the store holds.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = autorefresh_moka::MokaStore::<u64, String>::new(10).unwrap();
    /// assert_eq!(store.capacity(), 10);
    /// ```
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// How many entries the store has evicted to stay within its capacity, since it was
    /// built (explicit removals not included).
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_core::{EntryHandle, Store};
    /// use autorefresh_moka::MokaStore;
    ///
    /// let store = MokaStore::new(1).unwrap();
    /// store.get_or_insert(1_u64, EntryHandle::new("one"));
    /// store.get_or_insert(2_u64, EntryHandle::new("two"));
    /// store.remove(&2);
    /// assert_eq!(store.evictions(), 1);
    /// ```
    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }

    /// Delivers the evictions moka recorded to the listener, outside every lock.
    fn deliver_evictions(&self) {
        if !self.shared.has_pending.load(Ordering::Acquire) {
            return;
        }
        let evicted = {
            let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            self.shared.has_pending.store(false, Ordering::Release);
            mem::take(&mut *pending)
        };
        let listener = self.shared.listener.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(listener) = listener else {
            return;
        };
        let mut first_panic = None;
        for (id, entry) in &evicted {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| listener(id, entry))) {
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            panic::resume_unwind(payload);
        }
    }
}

impl<K, V> MokaStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Runs moka's pending maintenance until the cache is back within its capacity.
    fn enforce_capacity(&self) {
        for _ in 0..MAX_MAINTENANCE_ROUNDS {
            self.cache.run_pending_tasks();
            if self.cache.entry_count() <= self.shared.capacity {
                break;
            }
        }
    }
}

impl<K, V> Store<K, V> for MokaStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn get(&self, id: &K) -> Option<EntryHandle<V>> {
        let found = self.cache.get(id);
        self.deliver_evictions();
        found
    }

    fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V> {
        // The common case, an id already there, takes no lock. moka logs the read: it counts
        // as use.
        if let Some(existing) = self.cache.get(&id) {
            self.deliver_evictions();
            return GetOrInsert::Existing(existing);
        }
        let outcome = {
            let _inserting = self.shared.insert_lock.lock().unwrap_or_else(PoisonError::into_inner);
            // Per key, moka runs `and_compute_with` calls one at a time, so this check and
            // insert is atomic with `remove_entry`'s. Reading the current entry logs a read.
            let result = self.cache.entry(id).and_compute_with(|current| match current {
                Some(_) => Op::Nop,
                None => Op::Put(entry.clone()),
            });
            if let CompResult::Unchanged(existing) = result {
                GetOrInsert::Existing(existing.into_value())
            } else {
                // `Put` on an absent id: `Inserted`. Evict now, not lazily, so that no more
                // than the capacity is readable once we return. Under LRU the new entry is
                // the most recently used, never the one evicted.
                self.enforce_capacity();
                GetOrInsert::Inserted(entry)
            }
        };
        self.deliver_evictions();
        outcome
    }

    fn remove(&self, id: &K) -> Option<EntryHandle<V>> {
        let removed = self.cache.remove(id);
        if let Some(entry) = &removed {
            entry.mark_removed();
        }
        self.deliver_evictions();
        removed
    }

    fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool {
        // When the id maps to another entry, moka's read of it counts as use of that entry:
        // harmless, as a newer entry for the same id was just created or read.
        let result = self.cache.entry(id.clone()).and_compute_with(|current| match current {
            Some(current) if current.value().same_entry(entry) => Op::Remove,
            _ => Op::Nop,
        });
        let removed = match result {
            CompResult::Removed(removed) => {
                let removed = removed.into_value();
                removed.mark_removed();
                removed.same_entry(entry)
            }
            _ => false,
        };
        self.deliver_evictions();
        removed
    }

    fn len(&self) -> usize {
        // moka's count is updated by its maintenance: apply what is pending first.
        self.cache.run_pending_tasks();
        self.deliver_evictions();
        usize::try_from(self.cache.entry_count()).unwrap_or(usize::MAX)
    }

    fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>)) {
        // moka's iterator reads the map without logging reads: the recency order is untouched.
        // It holds no lock while `visit` runs.
        for (id, entry) in self.cache.iter() {
            visit(&id, &entry);
        }
    }

    fn set_eviction_listener(&self, listener: EvictionListener<K, V>) {
        *self.shared.listener.write().unwrap_or_else(PoisonError::into_inner) = Some(listener);
    }
}

impl<K, V> Clone for MokaStore<K, V> {
    fn clone(&self) -> Self {
        Self { cache: self.cache.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<K, V> fmt::Debug for MokaStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaStore")
            .field("capacity", &self.shared.capacity)
            .field("entry_count", &self.cache.entry_count())
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}
