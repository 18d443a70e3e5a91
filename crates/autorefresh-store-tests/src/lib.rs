//! A conformance suite for [`Store`]s: the rules every store keeps, which the autorefresh cache
//! relies on (see the [`Store`] docs), as one test per rule.
//!
//! [`store_conformance!`] expands, in a test file, to a `store_conformance` module with one
//! `#[test]` per rule, so a failure names the rule it broke. The suite works on a
//! `Store<String, u32>` made by the closure it is given from a capacity. The rules are also
//! plain functions in [`rules`], taking a [`Subject`], for harnesses of your own.
//!
//! - Every store: capacity exact after every insert, the entry just inserted never the one
//!   evicted, `get_or_insert` never replaces, `remove` and `remove_entry` (only the very same
//!   entry) return or report entries marked removed, every dropped entry marked removed, the
//!   eviction listener called once per eviction with the marked handle and free to call back
//!   into the store, `len` exact, `for_each_entry` visiting every entry, reads through
//!   `for_each_entry` not protecting entries from eviction (within a tolerance of 10%), and
//!   four threads of mixed operations keeping all of it, and readers never seeing more than
//!   the capacity while other threads insert.
//! - `exact_lru = true`: the eviction order is exactly least-recently-used (by `get` and
//!   `get_or_insert`, never by `for_each_entry`) at capacities up to 32.
//! - `capacity_exceeded_during_inserts = true`: the store makes a new entry readable before
//!   it evicts for it, so readers may see one entry over the capacity per insert in progress
//!   (see [`Subject::with_capacity_exceeded_during_inserts`]).
//! - Options for what a store may offer beyond the trait (see [`store_conformance!`]): a
//!   constructor refusing a capacity of 0, `Clone`, its capacity, its eviction counter.
//!
//! # Examples
//!
//! In the `tests/store.rs` of a crate with a store (here a minimal exact-LRU one):
//!
//! ```
//! # use std::sync::{Arc, Mutex};
//! # use autorefresh_core::{EntryHandle, EvictionListener, GetOrInsert, Store};
//! # type Slots<K, V> = Vec<(K, EntryHandle<V>)>;
//! # /// An exact-LRU store: the most recently used entry last.
//! # struct VecStore<K, V> {
//! #     capacity: usize,
//! #     entries: Mutex<Slots<K, V>>,
//! #     listener: Mutex<Option<EvictionListener<K, V>>>,
//! # }
//! # impl<K: PartialEq, V> VecStore<K, V> {
//! #     fn new(capacity: u64) -> Self {
//! #         let capacity = capacity as usize;
//! #         Self { capacity, entries: Mutex::default(), listener: Mutex::default() }
//! #     }
//! #     fn take(&self, entries: &mut Slots<K, V>, id: &K) -> Option<(K, EntryHandle<V>)> {
//! #         let at = entries.iter().position(|(k, _)| k == id)?;
//! #         Some(entries.remove(at))
//! #     }
//! # }
//! # impl<K, V> Store<K, V> for VecStore<K, V>
//! # where
//! #     K: PartialEq + Clone + Send + Sync + 'static,
//! #     V: Send + Sync + 'static,
//! # {
//! #     fn get(&self, id: &K) -> Option<EntryHandle<V>> {
//! #         let mut entries = self.entries.lock().unwrap();
//! #         let used = self.take(&mut entries, id)?;
//! #         entries.push(used.clone());
//! #         Some(used.1)
//! #     }
//! #     fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V> {
//! #         if let Some(existing) = self.get(&id) {
//! #             return GetOrInsert::Existing(existing);
//! #         }
//! #         let evicted = {
//! #             let mut entries = self.entries.lock().unwrap();
//! #             entries.push((id, entry.clone()));
//! #             let over = entries.len().saturating_sub(self.capacity);
//! #             entries.drain(..over).collect::<Vec<_>>()
//! #         };
//! #         let listener = self.listener.lock().unwrap().clone();
//! #         for (id, evicted) in &evicted {
//! #             evicted.mark_removed();
//! #             if let Some(listener) = &listener {
//! #                 listener(id, evicted);
//! #             }
//! #         }
//! #         GetOrInsert::Inserted(entry)
//! #     }
//! #     fn remove(&self, id: &K) -> Option<EntryHandle<V>> {
//! #         let (_, removed) = self.take(&mut self.entries.lock().unwrap(), id)?;
//! #         removed.mark_removed();
//! #         Some(removed)
//! #     }
//! #     fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool {
//! #         let mut entries = self.entries.lock().unwrap();
//! #         let Some(at) = entries.iter().position(|(k, e)| k == id && e.same_entry(entry))
//! #         else {
//! #             return false;
//! #         };
//! #         entries.remove(at);
//! #         entry.mark_removed();
//! #         true
//! #     }
//! #     fn len(&self) -> usize {
//! #         self.entries.lock().unwrap().len()
//! #     }
//! #     fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>)) {
//! #         let entries = self.entries.lock().unwrap().clone();
//! #         for (id, entry) in &entries {
//! #             visit(id, entry);
//! #         }
//! #     }
//! #     fn set_eviction_listener(&self, listener: EvictionListener<K, V>) {
//! #         *self.listener.lock().unwrap() = Some(listener);
//! #     }
//! # }
//! autorefresh_store_tests::store_conformance!(
//!     make_store = |capacity| VecStore::<String, u32>::new(capacity),
//!     exact_lru = true,
//! );
//! # fn main() {
//! #     use autorefresh_store_tests::{rules, Subject};
//! #     let subject = Subject::new(VecStore::new).with_exact_lru(true);
//! #     rules::capacity_is_exact_after_every_insert(&subject);
//! #     rules::up_to_32_the_order_is_lru_at_the_resolution_of_inserts(&subject);
//! # }
//! ```
//!
//! `cargo test` then runs `store_conformance::capacity_is_exact_after_every_insert` and the
//! rest, each test on a new store.
#![deny(missing_docs)]

use std::fmt;

use autorefresh_core::{Error, Store};

pub mod rules;

/// Makes a store of a capacity, or refuses to.
type TryMake<S> = Box<dyn Fn(u64) -> Result<S, Error>>;
/// Reads a number off a store: its capacity, its eviction count.
type Reading<S> = Box<dyn Fn(&S) -> u64>;

/// The store under test: how to make one of a given capacity, and what to expect of it.
///
/// Built by [`store_conformance!`]; build one yourself to call the [`rules`] directly.
pub struct Subject<S> {
    make: TryMake<S>,
    evictions: Option<Reading<S>>,
    capacity: Option<Reading<S>>,
    exact_lru: bool,
    capacity_exceeded_during_inserts: bool,
}

impl<S> fmt::Debug for Subject<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("evictions", &self.evictions.is_some())
            .field("capacity", &self.capacity.is_some())
            .field("exact_lru", &self.exact_lru)
            .field("capacity_exceeded_during_inserts", &self.capacity_exceeded_during_inserts)
            .finish_non_exhaustive()
    }
}

impl<S: Store<String, u32>> Subject<S> {
    /// A store made by `make` from a capacity (at least 1), evicting in some approximation of
    /// least-recently-used order, with no eviction counter of its own.
    pub fn new(make: impl Fn(u64) -> S + 'static) -> Self {
        Self::try_new(move |capacity| Ok(make(capacity)))
    }

    /// A store made by `make`, a constructor that refuses a capacity of 0 with
    /// [`Error::InvalidConfig`] (see [`rules::capacity_zero_is_a_config_error`]).
    pub fn try_new(make: impl Fn(u64) -> Result<S, Error> + 'static) -> Self {
        Self {
            make: Box::new(make),
            evictions: None,
            capacity: None,
            exact_lru: false,
            capacity_exceeded_during_inserts: false,
        }
    }

    /// Whether the store evicts in exactly least-recently-used order, at least at capacities
    /// up to 32: the rules then check the order, not only its approximation.
    pub fn with_exact_lru(mut self, exact_lru: bool) -> Self {
        self.exact_lru = exact_lru;
        self
    }

    /// Whether readers may see more than the capacity while inserts are in progress: at most
    /// one entry over it per `get_or_insert` in progress, and at most the capacity once every
    /// `get_or_insert` has returned. A store that makes a new entry readable before it
    /// evicts for it (as moka does) needs this;
    /// [`rules::concurrent_readers_never_see_more_than_the_capacity`] then allows it. By
    /// default (`false`) the capacity is exact as readers see it, at every instant.
    ///
    /// ```
    /// # use std::sync::Mutex;
    /// # use autorefresh_core::{EntryHandle, EvictionListener, GetOrInsert, Store};
    /// # /// A store that never evicts, for illustration.
    /// # #[derive(Default)]
    /// # struct Unbounded(Mutex<Vec<(String, EntryHandle<u32>)>>);
    /// # impl Store<String, u32> for Unbounded {
    /// #     fn get(&self, id: &String) -> Option<EntryHandle<u32>> {
    /// #         self.0.lock().unwrap().iter().find(|(k, _)| k == id).map(|(_, e)| e.clone())
    /// #     }
    /// #     fn get_or_insert(&self, id: String, entry: EntryHandle<u32>) -> GetOrInsert<u32> {
    /// #         self.0.lock().unwrap().push((id, entry.clone()));
    /// #         GetOrInsert::Inserted(entry)
    /// #     }
    /// #     fn remove(&self, _: &String) -> Option<EntryHandle<u32>> { None }
    /// #     fn remove_entry(&self, _: &String, _: &EntryHandle<u32>) -> bool { false }
    /// #     fn len(&self) -> usize { self.0.lock().unwrap().len() }
    /// #     fn for_each_entry(&self, _: &mut dyn FnMut(&String, &EntryHandle<u32>)) {}
    /// #     fn set_eviction_listener(&self, _: EvictionListener<String, u32>) {}
    /// # }
    /// use autorefresh_store_tests::Subject;
    ///
    /// let subject = Subject::new(|_capacity| Unbounded::default())
    ///     .with_capacity_exceeded_during_inserts(true);
    /// assert!(subject.capacity_exceeded_during_inserts());
    /// ```
    pub fn with_capacity_exceeded_during_inserts(mut self, exceeded: bool) -> Self {
        self.capacity_exceeded_during_inserts = exceeded;
        self
    }

    /// The store's own count of its evictions, which the rules then check against the
    /// listener's calls.
    pub fn with_evictions(mut self, evictions: impl Fn(&S) -> u64 + 'static) -> Self {
        self.evictions = Some(Box::new(evictions));
        self
    }

    /// The capacity the store reports (see [`rules::capacity_is_the_one_given`]).
    pub fn with_capacity(mut self, capacity: impl Fn(&S) -> u64 + 'static) -> Self {
        self.capacity = Some(Box::new(capacity));
        self
    }

    /// A new store of `capacity` (at least 1).
    pub fn make(&self, capacity: u64) -> S {
        self.try_make(capacity).unwrap_or_else(|err| panic!("capacity {capacity}: {err}"))
    }

    /// A new store of `capacity`, or the constructor's error.
    pub fn try_make(&self, capacity: u64) -> Result<S, Error> {
        (self.make)(capacity)
    }

    /// Whether the store evicts in exact LRU order (see [`with_exact_lru`](Self::with_exact_lru)).
    pub fn exact_lru(&self) -> bool {
        self.exact_lru
    }

    /// Whether readers may see more than the capacity while inserts are in progress (see
    /// [`with_capacity_exceeded_during_inserts`](Self::with_capacity_exceeded_during_inserts)).
    pub fn capacity_exceeded_during_inserts(&self) -> bool {
        self.capacity_exceeded_during_inserts
    }

    /// The capacity `store` reports, if the subject knows how to read it.
    pub fn capacity_of(&self, store: &S) -> Option<u64> {
        self.capacity.as_ref().map(|capacity| capacity(store))
    }

    /// Asserts that the store's eviction counter, if it has one, reads `expected`.
    pub fn assert_evictions(&self, store: &S, expected: u64) {
        if let Some(evictions) = &self.evictions {
            assert_eq!(evictions(store), expected, "the store's eviction counter");
        }
    }
}

/// Expands to a `store_conformance` module of `#[test]`s, one per rule every [`Store`] keeps,
/// each run on a new store.
///
/// The options, in this order (all but the first optional):
///
/// - `make_store = |capacity| ...`: a closure from a capacity (`u64`, at least 1) to a new
///   `Store<String, u32>`. Or `try_make_store = |capacity| ...`, to a
///   `Result<_, autorefresh_core::Error>`: adds [`rules::capacity_zero_is_a_config_error`].
///   The closure is expanded inside the module, which imports everything of the module the
///   macro is called in (`use super::*`).
/// - `exact_lru = true`: adds the rules of an exact LRU eviction order at capacities up to
///   32, and checks the exact order where other rules only check its approximation.
/// - `clone = true`: the store is `Clone`, and clones share everything (adds
///   [`rules::clones_share_entries_counters_and_listener`]).
/// - `capacity = |store| ...`: the capacity the store reports (adds
///   [`rules::capacity_is_the_one_given`]).
/// - `evictions = |store| ...`: the store's own eviction count, checked against the
///   listener's calls.
/// - `capacity_exceeded_during_inserts = true`: readers may see one entry over the capacity
///   per insert in progress (see [`Subject::with_capacity_exceeded_during_inserts`]).
///
/// ```text
/// autorefresh_store_tests::store_conformance!(
///     try_make_store = |capacity| MyStore::<String, u32>::new(capacity),
///     exact_lru = true,
///     clone = true,
///     capacity = |store| store.capacity(),
///     evictions = |store| store.evictions(),
///     capacity_exceeded_during_inserts = true,
/// );
/// ```
///
/// See the [crate docs](crate) for an example that compiles.
#[macro_export]
macro_rules! store_conformance {
    (@rules $subject:tt [$($rule:ident)*]) => {
        $(
            #[test]
            fn $rule() {
                let subject = $subject;
                $crate::rules::$rule(&subject);
            }
        )*
    };
    (@if true $subject:tt [$($rule:ident)*]) => {
        $crate::store_conformance!(@rules $subject [$($rule)*]);
    };
    (@if false $subject:tt [$($rule:ident)*]) => {};
    (@module $subject:tt [$($extra:ident)*] exact_lru = [$($exact:tt)?] clone = [$($clone:tt)?]
        capacity = [$($capacity:tt)?]) => {
        /// The rules every `Store` keeps (`autorefresh_store_tests`), one test each.
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::store_conformance!(@rules $subject [
                capacity_is_exact_after_every_insert
                a_new_item_is_admitted_over_popular_old_ones
                get_or_insert_returns_the_existing_entry_without_replacing_it
                remove_returns_the_entry_marked_removed
                remove_entry_removes_only_the_very_same_entry
                remove_entry_of_a_stale_handle_leaves_the_recreated_entry
                the_listener_sees_each_eviction_once_with_the_evicted_handle_marked
                evictions_without_a_listener_are_still_marked
                a_new_listener_replaces_the_old_one
                the_listener_may_call_back_into_the_store
                a_panicking_listener_does_not_stop_evictions_being_marked
                len_counts_exactly_the_readable_entries
                for_each_entry_visits_every_entry_with_its_handle
                walking_the_entries_does_not_protect_them_from_eviction
                usable_as_a_shared_trait_object
                concurrent_inserts_and_removes_keep_every_rule
                reads_during_inserts_never_see_more_than_the_capacity
                concurrent_readers_never_see_more_than_the_capacity
                $($extra)*
            ]);
            $($crate::store_conformance!(@if $exact $subject [
                newest_items_stay_and_oldest_unread_ones_go
                for_each_entry_does_not_count_as_use_but_get_does
                walking_the_entries_many_times_does_not_protect_them
                get_or_insert_of_an_existing_id_counts_as_use
                a_new_item_outlives_older_items_at_the_next_insert
                a_slot_freed_by_a_removal_is_reused_without_an_eviction
                up_to_32_the_order_is_lru_at_the_resolution_of_inserts
            ]);)?
            $($crate::store_conformance!(@if $clone $subject [
                clones_share_entries_counters_and_listener
            ]);)?
            $($crate::store_conformance!(@if true $subject [
                capacity_is_the_one_given
            ] $capacity);)?
        }
    };
    (@if true $subject:tt [$($rule:ident)*] $ignored:tt) => {
        $crate::store_conformance!(@rules $subject [$($rule)*]);
    };
    (@entry $new:ident $make:expr, [$($extra:ident)*] $(, exact_lru = $exact:tt)? $(, clone = $clone:tt)?
        $(, capacity = $capacity:expr)? $(, evictions = $evictions:expr)?
        $(, capacity_exceeded_during_inserts = $exceeded:expr)? $(,)?) => {
        $crate::store_conformance!(@module {
            $crate::Subject::$new($make)
                $(.with_exact_lru($exact))?
                $(.with_capacity($capacity))?
                $(.with_evictions($evictions))?
                $(.with_capacity_exceeded_during_inserts($exceeded))?
        } [$($extra)*] exact_lru = [$($exact)?] clone = [$($clone)?] capacity = [$(($capacity))?]);
    };
    (make_store = $make:expr $(, $($options:tt)*)?) => {
        $crate::store_conformance!(@entry new $make, [] $(, $($options)*)?);
    };
    (try_make_store = $make:expr $(, $($options:tt)*)?) => {
        $crate::store_conformance!(@entry try_new $make, [capacity_zero_is_a_config_error]
            $(, $($options)*)?);
    };
}
