//! [`PapayaStore`]: the [`Store`] on a papaya map, evicting the least recently used of a
//! 32-slot window.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread;

use autorefresh_core::{EntryHandle, Error, EvictionListener, GetOrInsert, Store};

use crate::stamps::Stamps;

/// How many entries the map and the ring make room for up front, at most.
const INITIAL_ROOM: u64 = 1 << 12;

/// How many slots of the ring an eviction compares, from the hand on.
const WINDOW: usize = 32;

/// A bounded [`Store`] on [`papaya::HashMap`], evicting the least recently used entry of a
/// window of the ring (exact LRU for capacities up to 32, approximate above).
///
/// Reads are lock-free and cost what a papaya lookup costs, plus a use stamp and the clone of
/// the [`EntryHandle`]; writes that change the set of ids (a new id, a removal, an eviction)
/// are serialized by one lock, which reads never take.
///
/// It keeps the rules of [`Store`]:
///
/// - **Recency is the callers'.** Time is counted in inserts: each insert of a new id
///   advances a clock and stamps its entry, later than every use before it and earlier
///   than every use after it; [`get`](Store::get) and
///   [`get_or_insert`](Store::get_or_insert) of a present id stamp it with the current time
///   (a load, then a store only if the stamp is not already current, so a hot entry's stamp
///   is only read). [`for_each_entry`](Store::for_each_entry) walks the map and never
///   touches a stamp. Each entry has a slot in a ring; to evict, a hand looks at the next
///   32 slots (all of them, in a store of capacity up to 32) and evicts the entry with the
///   oldest stamp, the first one on a tie; the hand then stops just past the victim.
///   So up to a capacity of 32 this is exact LRU, at the resolution of inserts (only
///   entries last read between the same two inserts tie); above it, the victim is the least
///   recently used of 32 neighbours in the ring, which a continuous sweep makes old.
/// - **Capacity is exact as readers see it.** An insert into a full store removes its victim
///   from the map before it adds the new entry, under the lock, so at no time are more than
///   `capacity` entries readable. The victim is chosen among the entries already there:
///   the entry being inserted is never the one evicted for it.
/// - **Removed means removed.** Every entry that leaves the store, by
///   [`remove`](Store::remove), [`remove_entry`](Store::remove_entry) or eviction, is marked
///   with [`EntryHandle::mark_removed`] before the call returns and before the listener sees
///   it; it is marked once the store's lock is released, as marking takes the entry's own
///   lock, which a caller may hold while it calls the store. `remove_entry` removes the id
///   only while it still maps to that very entry ([`EntryHandle::same_entry`]), atomically
///   with every insert and removal (the lock).
/// - **A panicking id leaves it consistent.** A panic in an id's `Hash`, `Eq` or `Clone`
///   reaches the caller with the store as if the call had not been made, but for one case:
///   when inserting the new entry panics after its victim left the map, the victim is
///   evicted (marked, counted and reported) and the store holds one entry less.
///
/// Evictions are counted ([`evictions`](PapayaStore::evictions)) and reported to the
/// listener set with [`set_eviction_listener`](Store::set_eviction_listener), exactly once
/// per evicted entry, by the call that evicted it, after it released the lock and before it
/// returns; the listener may call back into the store. Explicit removals are not evictions
/// and are not reported. A panic in the listener reaches that call's caller, with the store
/// consistent: the entry was already removed, marked and counted (unless the call is already
/// unwinding from a panic of an id: the listener's panic is then dropped, as a second panic
/// would abort).
///
/// Cloning is cheap and the clones share the same entries, counters and listener.
///
/// The hasher is `S`: by default std's [`RandomState`] (SipHash, resistant to ids chosen to
/// collide); [`with_hasher`](PapayaStore::with_hasher) takes a faster one for trusted ids.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Store};
/// use autorefresh_papaya::PapayaStore;
///
/// # fn main() -> Result<(), autorefresh_core::Error> {
/// let store: PapayaStore<&str, u32> = PapayaStore::new(2)?;
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
pub struct PapayaStore<K, V, S = RandomState> {
    inner: Arc<Inner<K, V, S>>,
}

/// What the map holds for an id: the entry and its slot in the ring.
struct Slot<V> {
    entry: EntryHandle<V>,
    index: usize,
}

/// What the clones share.
struct Inner<K, V, S> {
    map: papaya::HashMap<K, Slot<V>, S>,
    /// When each slot's entry was last used, by ring slot.
    stamps: Stamps,
    /// The ring; its lock serializes every change to the set of ids.
    ring: Mutex<Ring<K>>,
    capacity: u64,
    listener: RwLock<Option<EvictionListener<K, V>>>,
    counters: Counters,
}

/// How many entries [`Store::for_each_entry`] touches ahead of visiting them.
const VISIT_CHUNK: usize = 16;

/// The counters written by inserts and removals, on a cache line of their own so that
/// writing them does not evict from readers' caches the map's fields they read.
#[repr(align(64))]
struct Counters {
    /// The clock, the time that uses stamp: twice the number of ids inserted (wrapping). An
    /// insert stamps its entry with the odd time between the uses before and after it.
    now: AtomicU32,
    /// Entries in the map, changed under the ring lock.
    len: AtomicUsize,
    evictions: AtomicU64,
}

/// An entry evicted under the ring lock. Dropped once the lock is released, also when the
/// insert that evicted it panics after evicting it: it marks the entry removed, then reports
/// it to the listener.
struct Evicted<'a, K, V, S> {
    store: &'a PapayaStore<K, V, S>,
    id: K,
    entry: EntryHandle<V>,
}

impl<K, V, S> Drop for Evicted<'_, K, V, S> {
    fn drop(&mut self) {
        // Marking takes the entry's own lock, which a caller may hold while it calls the store.
        self.entry.mark_removed();
        if thread::panicking() {
            // A panic of the listener now would abort the process: the panic already
            // unwinding wins.
            let report = AssertUnwindSafe(|| self.store.report(&self.id, &self.entry));
            let _ = panic::catch_unwind(report);
        } else {
            self.store.report(&self.id, &self.entry);
        }
    }
}

/// The ring: which id holds each slot, the free slots, and the hand.
///
/// Every slot is either free (on `free`, holding `None`) or holds the id that the map maps to
/// that slot.
struct Ring<K> {
    ids: Vec<Option<K>>,
    free: Vec<usize>,
    hand: usize,
}

impl<K, V> PapayaStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A store holding at most `capacity` entries, hashing ids with std's [`RandomState`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_papaya::PapayaStore;
    ///
    /// let store = PapayaStore::<String, u32>::new(1_000).unwrap();
    /// assert_eq!(store.capacity(), 1_000);
    ///
    /// let err = PapayaStore::<String, u32>::new(0).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid cache configuration: `capacity` must be at least 1, got 0");
    /// ```
    pub fn new(capacity: u64) -> Result<Self, Error> {
        Self::with_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S> PapayaStore<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A store holding at most `capacity` entries, hashing ids with `hasher`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// use autorefresh_papaya::PapayaStore;
    ///
    /// let hasher = BuildHasherDefault::<DefaultHasher>::default();
    /// let store = PapayaStore::<u64, u32, _>::with_hasher(10, hasher).unwrap();
    /// assert_eq!(store.capacity(), 10);
    /// ```
    pub fn with_hasher(capacity: u64, hasher: S) -> Result<Self, Error> {
        if capacity == 0 {
            return Err(Error::InvalidConfig {
                field: "capacity",
                reason: format!("must be at least 1, got {capacity}"),
            });
        }
        let room = usize::try_from(capacity.min(INITIAL_ROOM)).unwrap_or(0);
        let map = papaya::HashMap::builder().hasher(hasher).capacity(room).build();
        let ring = Ring { ids: Vec::with_capacity(room), free: Vec::new(), hand: 0 };
        Ok(Self {
            inner: Arc::new(Inner {
                map,
                stamps: Stamps::new(),
                ring: Mutex::new(ring),
                capacity,
                listener: RwLock::new(None),
                counters: Counters {
                    now: AtomicU32::new(0),
                    len: AtomicUsize::new(0),
                    evictions: AtomicU64::new(0),
                },
            }),
        })
    }
}

impl<K, V, S> Inner<K, V, S> {
    /// Records a use of the entry in slot `index`.
    #[inline]
    fn touch(&self, index: usize) {
        self.stamps.touch(index, self.counters.now.load(Ordering::Relaxed));
    }
}

impl<K, V, S> PapayaStore<K, V, S> {
    /// The most entries the store holds.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = autorefresh_papaya::PapayaStore::<u64, String>::new(10).unwrap();
    /// assert_eq!(store.capacity(), 10);
    /// ```
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// How many entries the store has evicted to stay within its capacity, since it was
    /// built (explicit removals not included).
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_core::{EntryHandle, Store};
    /// use autorefresh_papaya::PapayaStore;
    ///
    /// let store = PapayaStore::new(1).unwrap();
    /// store.get_or_insert(1_u64, EntryHandle::new("one"));
    /// store.get_or_insert(2_u64, EntryHandle::new("two"));
    /// store.remove(&2);
    /// assert_eq!(store.evictions(), 1);
    /// ```
    pub fn evictions(&self) -> u64 {
        self.inner.counters.evictions.load(Ordering::Relaxed)
    }

    fn lock_ring(&self) -> MutexGuard<'_, Ring<K>> {
        // A panic under the lock (in an id's `Hash`, `Eq` or `Clone`) leaves the ring and the
        // map consistent (see `insert_locked`): there is nothing to poison.
        self.inner.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the listener, if any, of an eviction. Called with no lock held.
    fn report(&self, id: &K, entry: &EntryHandle<V>) {
        let listener = self.inner.listener.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(listener) = listener {
            listener(id, entry);
        }
    }
}

impl<K, V, S> PapayaStore<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Under the ring lock: inserts `id` unless present, putting the entry evicted to make
    /// room, if any, in `evicted`.
    ///
    /// The id's `Hash`, `Eq` and `Clone` may panic. Each step that runs them (a read, the
    /// clone, the victim's removal from the map, the new entry's insert) changes the store
    /// only once it has run them, and leaves it consistent: a panic after the victim left the
    /// map leaves the store one entry short, with the victim evicted and `evicted` set.
    fn insert_locked<'a>(
        &'a self,
        ring: &mut Ring<K>,
        id: K,
        entry: EntryHandle<V>,
        evicted: &mut Option<Evicted<'a, K, V, S>>,
    ) -> GetOrInsert<V> {
        let inner = &*self.inner;
        let map = inner.map.pin();
        if let Some(slot) = map.get(&id) {
            inner.touch(slot.index);
            return GetOrInsert::Existing(slot.entry.clone());
        }
        let ring_id = id.clone();
        let counters = &inner.counters;
        if counters.len.load(Ordering::Relaxed) as u64 >= inner.capacity {
            *evicted = self.evict_locked(ring, &map);
        }
        let index = self.reserve_slot(ring);
        // The new entry is stamped between the uses before it and the uses after it.
        let stamp = counters.now.load(Ordering::Relaxed).wrapping_add(1);
        counters.now.store(stamp.wrapping_add(1), Ordering::Relaxed);
        inner.stamps.touch(index, stamp);
        map.insert(id, Slot { entry: entry.clone(), index });
        // The slot is taken only once the id is in the map: a panic in the insert leaves it
        // free.
        ring.free.pop();
        ring.ids[index] = Some(ring_id);
        counters.len.fetch_add(1, Ordering::Relaxed);
        GetOrInsert::Inserted(entry)
    }

    /// A free slot for a new entry, left on the free list: one freed by a removal or an
    /// eviction (so the ring never outgrows the most entries held at once), else a new one.
    fn reserve_slot(&self, ring: &mut Ring<K>) -> usize {
        if let Some(&index) = ring.free.last() {
            return index;
        }
        let index = ring.ids.len();
        self.inner.stamps.ensure(index);
        ring.ids.push(None);
        ring.free.push(index);
        index
    }

    /// Under the ring lock, in a full store: removes the least recently used entry of the
    /// window at the hand from the map and frees its slot. Returns it to be marked removed
    /// and reported once the lock is released.
    fn evict_locked(
        &self,
        ring: &mut Ring<K>,
        map: &papaya::HashMapRef<'_, K, Slot<V>, S, papaya::LocalGuard<'_>>,
    ) -> Option<Evicted<'_, K, V, S>> {
        let inner = &*self.inner;
        let now = inner.counters.now.load(Ordering::Relaxed);
        let slots = ring.ids.len();
        let mut victim: Option<(usize, u32)> = None;
        for step in 0..WINDOW.min(slots) {
            let index = (ring.hand + step) % slots;
            if ring.ids[index].is_none() {
                continue;
            }
            // Time wraps: ages are differences. An entry unused for 2^32 inserts would look
            // young, but a sweep of the ring evicts it long before.
            let age = now.wrapping_sub(inner.stamps.get(index));
            if victim.is_none_or(|(_, oldest)| age > oldest) {
                victim = Some((index, age));
            }
        }
        let (victim, _) = victim?;
        // The removal hashes the victim's id: nothing changes before it succeeded. (It misses
        // only if the id's `Hash` or `Eq` broke their contract.)
        let slot = map.remove(ring.ids[victim].as_ref()?)?;
        debug_assert_eq!(slot.index, victim);
        let id = ring.ids[victim].take()?;
        ring.free.push(victim);
        ring.hand = (victim + 1) % slots;
        inner.counters.len.fetch_sub(1, Ordering::Relaxed);
        inner.counters.evictions.fetch_add(1, Ordering::Relaxed);
        Some(Evicted { store: self, id, entry: slot.entry.clone() })
    }

    /// Takes the ring lock and removes `id` if `should_remove` says so of its entry, freeing
    /// its slot; marks the entry removed once the lock is released.
    fn remove_locked(
        &self,
        id: &K,
        should_remove: impl FnOnce(&EntryHandle<V>) -> bool,
    ) -> Option<EntryHandle<V>> {
        let entry = {
            let mut ring = self.lock_ring();
            let map = self.inner.map.pin();
            if !should_remove(&map.get(id)?.entry) {
                return None;
            }
            let slot = map.remove(id)?;
            ring.ids[slot.index] = None;
            ring.free.push(slot.index);
            self.inner.counters.len.fetch_sub(1, Ordering::Relaxed);
            slot.entry.clone()
        };
        // Outside the lock: marking takes the entry's own lock, which a caller may hold while
        // it calls the store.
        entry.mark_removed();
        Some(entry)
    }
}

impl<K, V, S> Store<K, V> for PapayaStore<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    #[inline]
    fn get(&self, id: &K) -> Option<EntryHandle<V>> {
        let map = self.inner.map.pin();
        let slot = map.get(id)?;
        self.inner.touch(slot.index);
        Some(slot.entry.clone())
    }

    fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V> {
        // The common case, an id already there, takes no lock.
        if let Some(existing) = self.get(&id) {
            return GetOrInsert::Existing(existing);
        }
        // Declared before the lock is taken, so dropped after it is released, also when the
        // insert unwinds.
        let mut evicted = None;
        let outcome = self.insert_locked(&mut self.lock_ring(), id, entry, &mut evicted);
        // Marks the victim removed and reports it, outside the lock as in `remove_locked`.
        drop(evicted);
        outcome
    }

    fn remove(&self, id: &K) -> Option<EntryHandle<V>> {
        // An absent id needs no lock.
        self.inner.map.pin().get(id)?;
        self.remove_locked(id, |_| true)
    }

    fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool {
        if !self.inner.map.pin().get(id).is_some_and(|slot| slot.entry.same_entry(entry)) {
            return false;
        }
        self.remove_locked(id, |current| current.same_entry(entry)).is_some()
    }

    fn len(&self) -> usize {
        self.inner.counters.len.load(Ordering::Relaxed)
    }

    fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>)) {
        // Reads the map only: no flag is touched, and no lock is held while `visit` runs (the
        // papaya guard only delays freeing the memory of entries removed meanwhile).
        let map = self.inner.map.pin();
        let mut entries = map.iter();
        // A few entries at a time: touched first, so that their cache misses overlap, then
        // visited. With millions of entries the sweep is mostly waiting on memory.
        let mut chunk = Vec::with_capacity(VISIT_CHUNK);
        loop {
            chunk.extend(entries.by_ref().take(VISIT_CHUNK).map(|(id, slot)| (id, &slot.entry)));
            if chunk.is_empty() {
                return;
            }
            for (_, entry) in &chunk {
                entry.prefetch();
            }
            for (id, entry) in chunk.drain(..) {
                visit(id, entry);
            }
        }
    }

    fn set_eviction_listener(&self, listener: EvictionListener<K, V>) {
        *self.inner.listener.write().unwrap_or_else(PoisonError::into_inner) = Some(listener);
    }
}

impl<K, V, S> Clone for PapayaStore<K, V, S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V, S> fmt::Debug for PapayaStore<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PapayaStore")
            .field("capacity", &self.inner.capacity)
            .field("len", &self.inner.counters.len.load(Ordering::Relaxed))
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod panics;
