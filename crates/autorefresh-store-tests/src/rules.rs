//! The rules, one function each: each makes its own stores from the [`Subject`] and panics if
//! a store breaks the rule.
//!
//! The rules marked *exact LRU* hold for stores with [`Subject::with_exact_lru`] only;
//! [`store_conformance!`](crate::store_conformance) runs them only for those.

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;

use autorefresh_core::{EntryHandle, EntryState, Error, EvictionListener, GetOrInsert, Store};

use crate::Subject;

/// What an eviction listener saw: the id, the handle, and the handle's state when called.
type Seen = Arc<Mutex<Vec<(String, EntryHandle<u32>, EntryState)>>>;

fn record_evictions(store: &impl Store<String, u32>) -> Seen {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    store.set_eviction_listener(Arc::new(move |id: &String, entry: &EntryHandle<u32>| {
        sink.lock().unwrap().push((id.clone(), entry.clone(), entry.state()));
    }));
    seen
}

/// The ids the listener was told of, in order.
fn evicted_ids(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap().iter().map(|(id, _, _)| id.clone()).collect()
}

/// The ids readable now, read without counting as use.
fn readable(store: &impl Store<String, u32>) -> HashSet<String> {
    let mut ids = HashSet::new();
    store.for_each_entry(&mut |id, _| {
        assert!(ids.insert(id.clone()), "an id visited twice");
    });
    ids
}

fn insert(store: &impl Store<String, u32>, id: impl ToString, item: u32) -> EntryHandle<u32> {
    let entry = EntryHandle::new(item);
    match store.get_or_insert(id.to_string(), entry.clone()) {
        GetOrInsert::Inserted(inserted) => assert!(inserted.same_entry(&entry)),
        GetOrInsert::Existing(_) => panic!("the id was expected to be new"),
    }
    entry
}

fn get(store: &impl Store<String, u32>, id: impl ToString) -> Option<EntryHandle<u32>> {
    store.get(&id.to_string())
}

fn ids<T: ToString>(ids: impl IntoIterator<Item = T>) -> HashSet<String> {
    ids.into_iter().map(|id| id.to_string()).collect()
}

/// Capacity is exact after every insert, and the entry just inserted is readable.
pub fn capacity_is_exact_after_every_insert<S: Store<String, u32>>(subject: &Subject<S>) {
    let capacity = 7;
    let store = subject.make(capacity);
    let seen = record_evictions(&store);
    for id in 0..10 * capacity {
        insert(&store, id, 0);
        let visible = readable(&store);
        assert_eq!(visible.len() as u64, (id + 1).min(capacity), "after inserting {id}");
        assert!(visible.contains(&id.to_string()), "item {id} evicted by its own insert");
        assert_eq!(store.len(), visible.len());
    }
    assert_eq!(seen.lock().unwrap().len() as u64, 9 * capacity);
    subject.assert_evictions(&store, 9 * capacity);
}

/// With no reads, the newest items stay and the oldest go (exact LRU).
pub fn newest_items_stay_and_oldest_unread_ones_go<S: Store<String, u32>>(subject: &Subject<S>) {
    let (capacity, extra) = (8, 5);
    let store = subject.make(capacity);
    let mut entries = Vec::new();
    for id in 0..capacity + extra {
        entries.push(insert(&store, id, id as u32));
        assert!(readable(&store).contains(&id.to_string()), "item {id} evicted by its own insert");
    }
    assert_eq!(readable(&store), ids(extra..capacity + extra));
    for (id, entry) in entries.iter().enumerate() {
        let id = id as u64;
        let expected = if id < extra { EntryState::Removed } else { EntryState::Live };
        assert_eq!(entry.state(), expected, "item {id}");
        assert_eq!(get(&store, id).is_some(), id >= extra, "item {id}");
    }
    subject.assert_evictions(&store, extra);
}

/// A new id is never turned away in favour of often-read old ones (as an admission filter
/// such as TinyLFU would), and with exact LRU the newest ones are what is left.
pub fn a_new_item_is_admitted_over_popular_old_ones<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(4);
    for id in 0..4_u32 {
        insert(&store, id, id);
    }
    for _ in 0..50 {
        for id in 0..4_u32 {
            assert!(get(&store, id).is_some());
        }
    }
    for id in 100..110_u32 {
        let entry = insert(&store, id, id);
        assert_eq!(get(&store, id).map(|e| e.load()), Some(id), "new item {id} was rejected");
        assert_eq!(entry.state(), EntryState::Live);
    }
    assert_eq!(store.len(), 4);
    if subject.exact_lru() {
        assert_eq!(readable(&store), ids(106..110));
    }
}

/// `for_each_entry` does not count as use, `get` does (exact LRU).
pub fn for_each_entry_does_not_count_as_use_but_get_does<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(3);
    let seen = record_evictions(&store);
    for id in ["a", "b", "c"] {
        insert(&store, id, 0);
    }
    assert!(get(&store, "a").is_some());
    let mut visited = 0;
    store.for_each_entry(&mut |_, _| visited += 1);
    assert_eq!(visited, 3);
    insert(&store, "d", 0);

    assert_eq!(evicted_ids(&seen), ["b"]);
    assert_eq!(readable(&store), ids(["a", "c", "d"]));
}

/// Walking the entries many times does not protect them from eviction (exact LRU).
pub fn walking_the_entries_many_times_does_not_protect_them<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(2);
    insert(&store, 1, 0);
    insert(&store, 2, 0);
    for _ in 0..100 {
        store.for_each_entry(&mut |_, _| {});
    }
    insert(&store, 3, 0);
    assert_eq!(readable(&store), ids([2, 3]));
}

/// In a large store, entries read with `get` outlive entries only walked by
/// `for_each_entry`: at least 90% of the evictions are of unread entries.
pub fn walking_the_entries_does_not_protect_them_from_eviction<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    const CAPACITY: u32 = 1_000;
    let store = subject.make(CAPACITY.into());
    let seen = record_evictions(&store);
    for id in 0..CAPACITY {
        insert(&store, id, id);
    }
    // Read a scattered half of the ids; walk all of them, more often.
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let mut read = HashSet::new();
    while read.len() < 500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        read.insert((x % u64::from(CAPACITY)) as u32);
    }
    for id in &read {
        assert!(get(&store, id).is_some());
        store.for_each_entry(&mut |_, _| {});
    }
    for id in 0..500 {
        insert(&store, 10_000 + id, id);
    }
    let evicted: HashSet<u32> =
        seen.lock().unwrap().iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(evicted.len(), 500, "one eviction per insert over the capacity");
    let read_evicted = evicted.iter().filter(|id| read.contains(id)).count();
    assert!(read_evicted <= 50, "{read_evicted} of 500 evictions were of read entries");
    assert_eq!(store.len() as u32, CAPACITY);
    subject.assert_evictions(&store, 500);
}

/// `get_or_insert` of an id already present counts as use (exact LRU).
pub fn get_or_insert_of_an_existing_id_counts_as_use<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(3);
    for id in ["a", "b", "c"] {
        insert(&store, id, 0);
    }
    let existing = store.get_or_insert("a".to_string(), EntryHandle::new(1));
    assert!(matches!(existing, GetOrInsert::Existing(_)));
    insert(&store, "d", 0);
    assert_eq!(readable(&store), ids(["a", "c", "d"]));
}

/// `get_or_insert` of an id already present returns its entry and never replaces it.
pub fn get_or_insert_returns_the_existing_entry_without_replacing_it<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(10);
    let first = insert(&store, "job", 1);
    let second = EntryHandle::new(2);
    match store.get_or_insert("job".to_string(), second.clone()) {
        GetOrInsert::Existing(existing) => assert!(existing.same_entry(&first)),
        GetOrInsert::Inserted(_) => panic!("an existing id was inserted again"),
    }
    let stored = get(&store, "job").unwrap();
    assert!(stored.same_entry(&first));
    assert!(!stored.same_entry(&second));
    assert_eq!(stored.load(), 1);
    assert_eq!(first.state(), EntryState::Live);
    assert_eq!(store.len(), 1);
}

/// `remove` returns the entry, marked removed, and is not an eviction.
pub fn remove_returns_the_entry_marked_removed<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(10);
    let seen = record_evictions(&store);
    let entry = insert(&store, "job", 1);
    let removed = store.remove(&"job".to_string()).expect("the id was present");
    assert!(removed.same_entry(&entry));
    assert_eq!(entry.state(), EntryState::Removed);
    assert!(!entry.replace(2), "a removed entry takes no update");
    assert!(get(&store, "job").is_none());
    assert!(store.remove(&"job".to_string()).is_none());
    assert!(store.is_empty());
    assert!(seen.lock().unwrap().is_empty(), "an explicit removal is not an eviction");
    subject.assert_evictions(&store, 0);
}

/// `remove_entry` removes only the very same entry (by `same_entry`, not by value).
pub fn remove_entry_removes_only_the_very_same_entry<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(10);
    let seen = record_evictions(&store);
    let entry = insert(&store, "job", 1);
    let job = "job".to_string();

    let lookalike = EntryHandle::new(1);
    assert!(!store.remove_entry(&job, &lookalike));
    assert_eq!(entry.state(), EntryState::Live);
    assert_eq!(lookalike.state(), EntryState::Live);
    assert!(store.get(&job).unwrap().same_entry(&entry));

    assert!(store.remove_entry(&job, &entry));
    assert_eq!(entry.state(), EntryState::Removed);
    assert!(store.get(&job).is_none());
    assert!(!store.remove_entry(&job, &entry), "already gone");
    assert!(!store.remove_entry(&"other".to_string(), &entry));
    assert!(store.is_empty());
    assert!(seen.lock().unwrap().is_empty());
}

/// `remove_entry` of a handle whose id was removed and created again leaves the new entry.
pub fn remove_entry_of_a_stale_handle_leaves_the_recreated_entry<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(10);
    let old = insert(&store, "job", 1);
    store.remove(&"job".to_string());
    let new = insert(&store, "job", 2);
    assert!(!store.remove_entry(&"job".to_string(), &old));
    assert_eq!(new.state(), EntryState::Live);
    assert_eq!(get(&store, "job").map(|e| e.load()), Some(2));
}

/// The listener is told of each eviction once, with the evicted handle already marked
/// removed; with exact LRU, in insertion order when nothing is read.
pub fn the_listener_sees_each_eviction_once_with_the_evicted_handle_marked<
    S: Store<String, u32>,
>(
    subject: &Subject<S>,
) {
    let store = subject.make(3);
    let seen = record_evictions(&store);
    let entries: Vec<_> = (0..10_u32).map(|id| insert(&store, id, id)).collect();
    assert!(store.remove(&"9".to_string()).is_some(), "the newest entry was evicted");
    let removed_8 = store.remove_entry(&"8".to_string(), &entries[8]);

    let seen = seen.lock().unwrap();
    let evicted: Vec<usize> = seen.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(evicted.len(), 7);
    assert_eq!(evicted.iter().collect::<HashSet<_>>().len(), 7, "{evicted:?}: one reported twice");
    for (id, handle, state_when_called) in seen.iter() {
        let id: usize = id.parse().unwrap();
        assert!(handle.same_entry(&entries[id]), "item {id}: another handle");
        assert_eq!(*state_when_called, EntryState::Removed, "item {id}: not marked in time");
    }
    subject.assert_evictions(&store, 7);
    let removed = |id: usize| evicted.contains(&id) || id == 9 || (id == 8 && removed_8);
    for (id, entry) in entries.iter().enumerate() {
        let expected = if removed(id) { EntryState::Removed } else { EntryState::Live };
        assert_eq!(entry.state(), expected, "item {id}");
    }
    if subject.exact_lru() {
        assert!(removed_8);
        assert_eq!(evicted, (0..7).collect::<Vec<_>>());
        assert_eq!(readable(&store), ids([7]));
    }
}

/// Entries evicted with no listener set are marked removed all the same.
pub fn evictions_without_a_listener_are_still_marked<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(2);
    let entries: Vec<_> = (0..5_u32).map(|id| insert(&store, id, 0)).collect();
    subject.assert_evictions(&store, 3);
    let live: HashSet<String> = (0..5)
        .filter(|&id| entries[id].state() == EntryState::Live)
        .map(|id| id.to_string())
        .collect();
    assert_eq!(live.len(), 2);
    assert_eq!(live, readable(&store));
    assert!(entries.iter().all(|e| matches!(e.state(), EntryState::Live | EntryState::Removed)));
    if subject.exact_lru() {
        assert!(entries[..3].iter().all(|e| e.state() == EntryState::Removed));
        assert!(entries[3..].iter().all(|e| e.state() == EntryState::Live));
    }
}

/// Setting a listener replaces the one set before.
pub fn a_new_listener_replaces_the_old_one<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(1);
    let first = record_evictions(&store);
    insert(&store, 1, 0);
    insert(&store, 2, 0);
    let second = record_evictions(&store);
    insert(&store, 3, 0);
    assert_eq!(evicted_ids(&first), ["1"]);
    assert_eq!(evicted_ids(&second), ["2"]);
}

/// The listener runs outside the store's locks: it may read, and insert into, the store; an
/// eviction its insert causes is reported too.
pub fn the_listener_may_call_back_into_the_store<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = Arc::new(subject.make(2));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, inner) = (Arc::clone(&seen), Arc::downgrade(&store));
    store.set_eviction_listener(Arc::new(move |id: &String, _: &EntryHandle<u32>| {
        let inner: Arc<S> = Weak::upgrade(&inner).expect("the store is alive");
        // Each of these would deadlock if called while the store held a lock.
        let present = inner.get(id).is_some();
        let len = inner.len();
        let first = {
            let mut seen = sink.lock().unwrap();
            seen.push((id.clone(), present, len));
            seen.len() == 1
        };
        if first {
            // Evicts another entry, whose eviction is reported from within this call.
            inner.get_or_insert("1000".to_string(), EntryHandle::new(0));
        }
    }));
    for id in 0..3_u32 {
        insert(&*store, id, id);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(_, present, len)| !present && *len == 2), "{seen:?}");
    assert!(readable(&*store).contains("1000"));
    assert_eq!(store.len(), 2);
    if subject.exact_lru() {
        let expected = [("0".to_string(), false, 2), ("1".to_string(), false, 2)];
        assert_eq!(seen, expected);
        assert_eq!(readable(&*store), ids([2, 1_000]));
    }
}

/// A listener that panics still sees every eviction, and the evicted entries are still
/// marked removed; the panic reaches the caller whose insert evicted.
pub fn a_panicking_listener_does_not_stop_evictions_being_marked<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(1);
    let calls = Arc::new(Mutex::new(0));
    let sink = Arc::clone(&calls);
    store.set_eviction_listener(Arc::new(move |_: &String, _: &EntryHandle<u32>| {
        *sink.lock().unwrap() += 1;
        panic!("listener bug");
    }));
    let first = insert(&store, 1, 0);
    let panicked = panic::catch_unwind(AssertUnwindSafe(|| {
        store.get_or_insert("2".to_string(), EntryHandle::new(0))
    }));
    assert!(panicked.is_err(), "the listener's panic reaches the caller");
    assert_eq!(first.state(), EntryState::Removed);
    assert!(get(&store, 2).is_some(), "the insert itself completed");

    // A listener that panicked once is still called (moka, for one, would stop calling it):
    // eviction still marks entries and is still reported.
    let second = get(&store, 2).unwrap();
    let _ = panic::catch_unwind(AssertUnwindSafe(|| {
        store.get_or_insert("3".to_string(), EntryHandle::new(0))
    }));
    assert_eq!(second.state(), EntryState::Removed);
    assert_eq!(*calls.lock().unwrap(), 2);
    subject.assert_evictions(&store, 2);
    assert_eq!(store.len(), 1);
}

/// `len` counts exactly the readable entries, through inserts, removes and conditional
/// removes.
pub fn len_counts_exactly_the_readable_entries<S: Store<String, u32>>(subject: &Subject<S>) {
    let store = subject.make(100);
    assert!(store.is_empty());
    assert_eq!(store.len(), 0);
    let entries: Vec<_> = (0..50_u32).map(|id| insert(&store, id, id)).collect();
    assert_eq!(store.len(), 50);
    for id in (0..50_u32).step_by(2) {
        store.remove(&id.to_string());
    }
    assert_eq!(store.len(), 25);
    assert!(store.remove_entry(&"1".to_string(), &entries[1]));
    assert_eq!(store.len(), 24);
    assert_eq!(store.len(), readable(&store).len());
    for id in 0..50_u32 {
        store.remove(&id.to_string());
    }
    assert!(store.is_empty());
}

/// `for_each_entry` visits every entry once, with its own handle.
pub fn for_each_entry_visits_every_entry_with_its_handle<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(100);
    let entries: HashMap<String, EntryHandle<u32>> =
        (0..20_u32).map(|id| (id.to_string(), insert(&store, id, id * 10))).collect();
    let mut visited = 0;
    store.for_each_entry(&mut |id, entry| {
        assert!(entry.same_entry(&entries[id]));
        assert_eq!(entry.load(), id.parse::<u32>().unwrap() * 10);
        visited += 1;
    });
    assert_eq!(visited, 20);
}

/// The store works as an `Arc<dyn Store>`, the way the cache holds it.
pub fn usable_as_a_shared_trait_object<S: Store<String, u32>>(subject: &Subject<S>) {
    let store: Arc<dyn Store<String, u32>> = Arc::new(subject.make(2));
    let listener: EvictionListener<String, u32> = Arc::new(|_, _| {});
    store.set_eviction_listener(listener);
    for id in ["a", "b", "c"] {
        store.get_or_insert(id.to_string(), EntryHandle::new(0));
    }
    assert_eq!(store.len(), 2);
    assert!(store.get(&"c".to_string()).is_some());
    if subject.exact_lru() {
        assert!(store.get(&"a".to_string()).is_none());
    }
}

/// A slot freed by a removal is used by the next insert without an eviction, and the entry
/// in it is the newest (exact LRU).
pub fn a_slot_freed_by_a_removal_is_reused_without_an_eviction<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    let store = subject.make(3);
    let seen = record_evictions(&store);
    for id in ["a", "b", "c"] {
        insert(&store, id, 0);
    }
    store.remove(&"b".to_string());
    insert(&store, "d", 0);
    assert!(seen.lock().unwrap().is_empty());
    subject.assert_evictions(&store, 0);
    assert_eq!(store.len(), 3);
    // "a" goes first, then "c".
    insert(&store, "e", 0);
    insert(&store, "f", 0);
    assert_eq!(evicted_ids(&seen), ["a", "c"]);
    assert_eq!(readable(&store), ids(["d", "e", "f"]));
}

/// A new item outlives items read before it was inserted (exact LRU; a one-bit CLOCK would
/// evict it).
pub fn a_new_item_outlives_older_items_at_the_next_insert<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    // A one-bit CLOCK would evict "d" here: it was inserted after "b" and "c" were last read,
    // but not read since, while their bits were still set.
    let store = subject.make(3);
    for id in ["a", "b", "c"] {
        insert(&store, id, 0);
    }
    assert!(get(&store, "b").is_some());
    assert!(get(&store, "c").is_some());
    insert(&store, "d", 0);
    assert_eq!(readable(&store), ids(["b", "c", "d"]));
    insert(&store, "e", 0);
    assert!(readable(&store).contains("d"), "{:?}", readable(&store));
    assert_eq!(readable(&store), ids(["c", "d", "e"]));
}

/// Up to a capacity of 32, entries are evicted in the order of their last use (exact LRU).
pub fn up_to_32_the_order_is_lru_at_the_resolution_of_inserts<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    const CAPACITY: u32 = 32;
    let store = subject.make(CAPACITY.into());
    let seen = record_evictions(&store);
    for id in 0..CAPACITY - 1 {
        insert(&store, id, id);
    }
    // Use the ids in a scrambled order. Time is counted in inserts: between two uses, insert
    // and remove a throwaway id (in the one free slot, evicting nothing), so that each use is
    // later than the one before.
    let order: Vec<String> =
        (0..CAPACITY - 1).map(|i| ((i * 13 + 5) % (CAPACITY - 1)).to_string()).collect();
    for id in &order {
        assert!(store.get(id).is_some(), "{id} evicted too early");
        insert(&store, 1_000, 0);
        assert!(store.remove(&"1000".to_string()).is_some());
    }
    assert!(seen.lock().unwrap().is_empty());
    subject.assert_evictions(&store, 0);
    // New ids evict the old ones in the order of their last use, never each other.
    for id in 2_000..2_000 + CAPACITY {
        insert(&store, id, id);
    }
    assert_eq!(evicted_ids(&seen), order);
    assert_eq!(readable(&store), ids(2_000..2_000 + CAPACITY));
}

/// Four threads of 10,000 mixed operations each, at a capacity of 1,000: `len` never over the
/// capacity, every entry ever inserted exactly one of live, evicted or removed, each
/// eviction reported once.
pub fn concurrent_inserts_and_removes_keep_every_rule<S: Store<String, u32>>(subject: &Subject<S>) {
    const THREADS: u32 = 4;
    const OPS: u32 = 10_000;
    const CAPACITY: u32 = 1_000;
    const SHARED_IDS: u32 = 3_000;

    let store = subject.make(CAPACITY.into());
    let seen = record_evictions(&store);
    let own = |t: u32, i: u32| format!("{t}-{i}");

    let results: Vec<_> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    let (mut inserted, mut removed) = (Vec::new(), Vec::new());
                    for i in 0..OPS {
                        // Half the ids are this thread's own, half are shared by all threads.
                        let id = if i % 2 == 0 { own(t, i) } else { (i % SHARED_IDS).to_string() };
                        let entry = EntryHandle::new(t * OPS + i);
                        match store.get_or_insert(id.clone(), entry.clone()) {
                            GetOrInsert::Inserted(e) => {
                                assert!(e.same_entry(&entry));
                                assert!(
                                    store.get(&id).is_some()
                                        || entry.state() == EntryState::Removed
                                );
                                inserted.push(entry.clone());
                            }
                            GetOrInsert::Existing(e) => assert!(!e.same_entry(&entry)),
                        }
                        // Reads of ids that may be live, evicted or removed meanwhile.
                        let other =
                            if i % 2 == 0 { (i % SHARED_IDS).to_string() } else { own(t, i - 1) };
                        if let Some(e) = store.get(&other) {
                            assert!(!e.same_entry(&entry));
                        }
                        if let Some(e) = store.get(&id) {
                            assert!(e.state() != EntryState::DeletePending);
                        }
                        assert!(store.len() as u32 <= CAPACITY);
                        if i % 10 == 4 && store.remove_entry(&id, &entry) {
                            assert_eq!(entry.state(), EntryState::Removed);
                            removed.push(entry.load());
                        }
                        if i % 10 == 9 {
                            if let Some(e) = store.remove(&id) {
                                assert_eq!(e.state(), EntryState::Removed);
                                removed.push(e.load());
                            }
                        }
                    }
                    (inserted, removed)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a worker panicked")).collect()
    });

    let (mut inserted, mut removed) = (Vec::new(), HashSet::new());
    for (i, r) in results {
        inserted.extend(i);
        for item in r {
            assert!(removed.insert(item), "{item} removed twice");
        }
    }

    let len = store.len();
    assert!(len as u32 <= CAPACITY, "{len} entries readable, capacity {CAPACITY}");

    let mut live = HashSet::new();
    store.for_each_entry(&mut |_, entry| {
        assert_eq!(entry.state(), EntryState::Live);
        assert!(live.insert(entry.load()));
    });
    assert_eq!(live.len(), len);

    let seen = seen.lock().unwrap();
    let mut evicted = HashSet::new();
    for (_, entry, state_when_called) in seen.iter() {
        assert_eq!(*state_when_called, EntryState::Removed);
        assert_eq!(entry.state(), EntryState::Removed);
        assert!(evicted.insert(entry.load()), "{} reported twice", entry.load());
    }
    subject.assert_evictions(&store, evicted.len() as u64);

    // Every entry ever inserted is in exactly one place: live, evicted or removed.
    assert_eq!(inserted.len(), live.len() + evicted.len() + removed.len());
    for entry in &inserted {
        let item = entry.load();
        let places = [live.contains(&item), evicted.contains(&item), removed.contains(&item)];
        assert_eq!(places.iter().filter(|p| **p).count(), 1, "{item} in {places:?}");
        let expected = if live.contains(&item) { EntryState::Live } else { EntryState::Removed };
        assert_eq!(entry.state(), expected, "{item}");
    }
}

/// While one thread inserts 20,000 ids and two others read the newest ones, `len` is never
/// over the capacity and no insert evicts its own entry.
pub fn reads_during_inserts_never_see_more_than_the_capacity<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    const CAPACITY: u32 = 64;
    const INSERTS: u32 = 20_000;
    let store = subject.make(CAPACITY.into());
    let (done, next) = (AtomicBool::new(false), AtomicU64::new(0));
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut reads = 0_u64;
                while !done.load(Ordering::Relaxed) {
                    assert!(store.len() as u32 <= CAPACITY);
                    // The newest ids are hot: the readers keep them used.
                    let newest = next.load(Ordering::Relaxed);
                    for id in newest.saturating_sub(8)..newest {
                        if let Some(e) = get(&store, id) {
                            reads += u64::from(u64::from(e.load()) == id);
                        }
                    }
                }
                reads
            });
        }
        for id in 0..INSERTS {
            let entry = insert(&store, id, id);
            next.store(id.into(), Ordering::Relaxed);
            assert!(store.len() as u32 <= CAPACITY);
            assert!(
                get(&store, id).is_some_and(|e| e.same_entry(&entry)),
                "{id} was evicted by its own insert"
            );
        }
        done.store(true, Ordering::Relaxed);
    });
    assert_eq!(store.len() as u32, CAPACITY);
    subject.assert_evictions(&store, (INSERTS - CAPACITY).into());
}

/// While three threads insert new ids into a full store, a reader never finds more than the
/// capacity readable at once; for a store
/// [`with_capacity_exceeded_during_inserts`](Subject::with_capacity_exceeded_during_inserts),
/// never more than the capacity plus one per inserting thread.
///
/// The reader walks the entries twice, back to back. No id is inserted twice nor removed, so
/// an id found by both walks was readable all the time between them: the ids found by both
/// were readable together at the instant the first walk ended. (One walk alone could count
/// an evicted entry and the entry that replaced it, which were never readable together.)
pub fn concurrent_readers_never_see_more_than_the_capacity<S: Store<String, u32>>(
    subject: &Subject<S>,
) {
    const CAPACITY: u32 = 8;
    const INSERTERS: u32 = 3;
    const INSERTS: u32 = 2_000;
    const MAX_WALKS: u32 = 1_000_000;
    let allowed =
        if subject.capacity_exceeded_during_inserts() { CAPACITY + INSERTERS } else { CAPACITY };
    let store = subject.make(CAPACITY.into());
    for id in 0..CAPACITY {
        insert(&store, format!("first-{id}"), id);
    }
    let inserting = AtomicU64::new(INSERTERS.into());
    let most_seen = thread::scope(|s| {
        for t in 0..INSERTERS {
            let (store, inserting) = (&store, &inserting);
            s.spawn(move || {
                for i in 0..INSERTS {
                    insert(store, format!("{t}-{i}"), i);
                }
                inserting.fetch_sub(1, Ordering::Release);
            });
        }
        let reader = s.spawn(|| {
            let mut most_seen = 0;
            for _ in 0..MAX_WALKS {
                if inserting.load(Ordering::Acquire) == 0 {
                    break;
                }
                let first = readable(&store);
                let mut both = 0;
                store.for_each_entry(&mut |id, _| both += usize::from(first.contains(id)));
                assert!(
                    both <= allowed as usize,
                    "{both} entries readable at once, capacity {CAPACITY}, {INSERTERS} inserting"
                );
                most_seen = most_seen.max(both);
            }
            most_seen
        });
        reader.join().expect("the reader panicked")
    });
    assert!(most_seen <= allowed as usize);
    assert_eq!(store.len() as u32, CAPACITY);
    assert_eq!(readable(&store).len() as u32, CAPACITY);
    subject.assert_evictions(&store, (INSERTERS * INSERTS).into());
}

/// A capacity of 0 is refused with [`Error::InvalidConfig`] naming the field `capacity`.
pub fn capacity_zero_is_a_config_error<S: Store<String, u32>>(subject: &Subject<S>) {
    match subject.try_make(0) {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "capacity");
            assert_eq!(reason, "must be at least 1, got 0");
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("a store of capacity 0 was made"),
    }
}

/// The store reports the capacity it was made with, from 1 to `u64::MAX`.
pub fn capacity_is_the_one_given<S: Store<String, u32>>(subject: &Subject<S>) {
    for capacity in [1, u64::MAX] {
        let store = subject.make(capacity);
        assert_eq!(subject.capacity_of(&store), Some(capacity));
    }
}

/// Clones of a store share its entries, its eviction counter and its listener.
pub fn clones_share_entries_counters_and_listener<S: Store<String, u32> + Clone>(
    subject: &Subject<S>,
) {
    let store = subject.make(1);
    let clone = store.clone();
    let seen = record_evictions(&clone);
    insert(&store, 1, 0);
    assert!(get(&clone, 1).is_some());
    insert(&clone, 2, 0);
    subject.assert_evictions(&store, 1);
    assert_eq!(evicted_ids(&seen), ["1"]);
    assert_eq!(store.len(), 1);
}
