//! `PapayaStore` keeps every rule of `autorefresh_core::Store`.
//!
//! Ported from `autorefresh-moka`'s tests (the same rules; up to a capacity of 32 the
//! eviction order is LRU too), plus the window eviction of larger stores and concurrency.

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread;

use autorefresh_core::{EntryHandle, EntryState, Error, EvictionListener, GetOrInsert, Store};
use autorefresh_papaya::PapayaStore;

/// What an eviction listener saw: the id, the handle, and the handle's state when called.
type Seen<K, V> = Arc<Mutex<Vec<(K, EntryHandle<V>, EntryState)>>>;

fn record_evictions<K, V>(store: &PapayaStore<K, V>) -> Seen<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let seen: Seen<K, V> = Arc::default();
    let sink = Arc::clone(&seen);
    store.set_eviction_listener(Arc::new(move |id: &K, entry: &EntryHandle<V>| {
        sink.lock().unwrap().push((id.clone(), entry.clone(), entry.state()));
    }));
    seen
}

/// The ids readable now, read without counting as use.
fn readable<K, V>(store: &PapayaStore<K, V>) -> HashSet<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut ids = HashSet::new();
    store.for_each_entry(&mut |id, _| {
        assert!(ids.insert(id.clone()), "an id visited twice");
    });
    ids
}

fn insert<K, V>(store: &PapayaStore<K, V>, id: K, item: V) -> EntryHandle<V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let entry = EntryHandle::new(item);
    match store.get_or_insert(id, entry.clone()) {
        GetOrInsert::Inserted(inserted) => assert!(inserted.same_entry(&entry)),
        GetOrInsert::Existing(_) => panic!("the id was expected to be new"),
    }
    entry
}

fn ids(range: std::ops::Range<u64>) -> HashSet<u64> {
    range.collect()
}

#[test]
fn capacity_zero_is_a_config_error() {
    let err = PapayaStore::<u64, u64>::new(0).unwrap_err();
    match &err {
        Error::InvalidConfig { field, reason } => {
            assert_eq!(*field, "capacity");
            assert_eq!(reason, "must be at least 1, got 0");
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn capacity_is_the_one_given() {
    assert_eq!(PapayaStore::<u64, u64>::new(1).unwrap().capacity(), 1);
    assert_eq!(PapayaStore::<u64, u64>::new(u64::MAX).unwrap().capacity(), u64::MAX);
}

#[test]
fn newest_items_stay_and_oldest_unread_ones_go() {
    let (capacity, extra) = (8, 5);
    let store = PapayaStore::new(capacity).unwrap();
    let mut entries = Vec::new();
    for id in 0..capacity + extra {
        entries.push(insert(&store, id, id));
        assert!(readable(&store).contains(&id), "item {id} evicted by its own insert");
    }
    assert_eq!(readable(&store), ids(extra..capacity + extra));
    for (id, entry) in entries.iter().enumerate() {
        let id = id as u64;
        let expected = if id < extra { EntryState::Removed } else { EntryState::Live };
        assert_eq!(entry.state(), expected, "item {id}");
        assert_eq!(store.get(&id).is_some(), id >= extra, "item {id}");
    }
    assert_eq!(store.evictions(), extra);
}

#[test]
fn a_new_item_is_admitted_over_popular_old_ones() {
    // An admission filter (TinyLFU, S3-FIFO's small queue) would turn a never-seen id away in
    // favour of these often-read ones, or evict it first.
    let store = PapayaStore::new(4).unwrap();
    for id in 0..4_u64 {
        insert(&store, id, id);
    }
    for _ in 0..50 {
        for id in 0..4_u64 {
            assert!(store.get(&id).is_some());
        }
    }
    for id in 100..110_u64 {
        let entry = insert(&store, id, id);
        assert_eq!(store.get(&id).map(|e| e.load()), Some(id), "new item {id} was rejected");
        assert_eq!(entry.state(), EntryState::Live);
    }
    assert_eq!(readable(&store), ids(106..110));
}

#[test]
fn capacity_is_exact_after_every_insert() {
    let capacity = 7;
    let store = PapayaStore::new(capacity).unwrap();
    for id in 0..10 * capacity {
        insert(&store, id, ());
        let visible = readable(&store);
        assert_eq!(visible.len() as u64, (id + 1).min(capacity), "after inserting {id}");
        assert!(visible.contains(&id));
        assert_eq!(store.len(), visible.len());
    }
    assert_eq!(store.evictions(), 9 * capacity);
}

#[test]
fn for_each_entry_does_not_count_as_use_but_get_does() {
    let store = PapayaStore::new(3).unwrap();
    let seen = record_evictions(&store);
    for id in ["a", "b", "c"] {
        insert(&store, id, id);
    }
    assert!(store.get(&"a").is_some());
    let mut visited = 0;
    store.for_each_entry(&mut |_, _| visited += 1);
    assert_eq!(visited, 3);
    insert(&store, "d", "d");

    let evicted: Vec<_> = seen.lock().unwrap().iter().map(|(id, _, _)| *id).collect();
    assert_eq!(evicted, ["b"]);
    assert_eq!(readable(&store), HashSet::from(["a", "c", "d"]));
}

#[test]
fn walking_the_entries_many_times_does_not_protect_them() {
    let store = PapayaStore::new(2).unwrap();
    insert(&store, 1_u64, ());
    insert(&store, 2_u64, ());
    for _ in 0..100 {
        store.for_each_entry(&mut |_, _| {});
    }
    insert(&store, 3_u64, ());
    assert_eq!(readable(&store), HashSet::from([2, 3]));
}

#[test]
fn get_or_insert_of_an_existing_id_counts_as_use() {
    let store = PapayaStore::new(3).unwrap();
    for id in ["a", "b", "c"] {
        insert(&store, id, id);
    }
    assert!(matches!(store.get_or_insert("a", EntryHandle::new("x")), GetOrInsert::Existing(_)));
    insert(&store, "d", "d");
    assert_eq!(readable(&store), HashSet::from(["a", "c", "d"]));
}

#[test]
fn get_or_insert_returns_the_existing_entry_without_replacing_it() {
    let store = PapayaStore::new(10).unwrap();
    let first = insert(&store, "job", 1);
    let second = EntryHandle::new(2);
    match store.get_or_insert("job", second.clone()) {
        GetOrInsert::Existing(existing) => assert!(existing.same_entry(&first)),
        GetOrInsert::Inserted(_) => panic!("an existing id was inserted again"),
    }
    let stored = store.get(&"job").unwrap();
    assert!(stored.same_entry(&first));
    assert!(!stored.same_entry(&second));
    assert_eq!(stored.load(), 1);
    assert_eq!(first.state(), EntryState::Live);
    assert_eq!(store.len(), 1);
}

#[test]
fn remove_returns_the_entry_marked_removed() {
    let store = PapayaStore::new(10).unwrap();
    let seen = record_evictions(&store);
    let entry = insert(&store, "job", 1);
    let removed = store.remove(&"job").expect("the id was present");
    assert!(removed.same_entry(&entry));
    assert_eq!(entry.state(), EntryState::Removed);
    assert!(!entry.replace(2), "a removed entry takes no update");
    assert!(store.get(&"job").is_none());
    assert!(store.remove(&"job").is_none());
    assert!(store.is_empty());
    assert!(seen.lock().unwrap().is_empty(), "an explicit removal is not an eviction");
    assert_eq!(store.evictions(), 0);
}

#[test]
fn remove_entry_removes_only_the_very_same_entry() {
    let store = PapayaStore::new(10).unwrap();
    let seen = record_evictions(&store);
    let entry = insert(&store, "job", 1);

    let lookalike = EntryHandle::new(1);
    assert!(!store.remove_entry(&"job", &lookalike));
    assert_eq!(entry.state(), EntryState::Live);
    assert_eq!(lookalike.state(), EntryState::Live);
    assert!(store.get(&"job").unwrap().same_entry(&entry));

    assert!(store.remove_entry(&"job", &entry));
    assert_eq!(entry.state(), EntryState::Removed);
    assert!(store.get(&"job").is_none());
    assert!(!store.remove_entry(&"job", &entry), "already gone");
    assert!(!store.remove_entry(&"other", &entry));
    assert!(store.is_empty());
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn remove_entry_of_a_stale_handle_leaves_the_recreated_entry() {
    let store = PapayaStore::new(10).unwrap();
    let old = insert(&store, "job", 1);
    store.remove(&"job");
    let new = insert(&store, "job", 2);
    assert!(!store.remove_entry(&"job", &old));
    assert_eq!(new.state(), EntryState::Live);
    assert_eq!(store.get(&"job").map(|e| e.load()), Some(2));
}

#[test]
fn the_listener_sees_each_eviction_once_with_the_evicted_handle_marked() {
    let store = PapayaStore::new(3).unwrap();
    let seen = record_evictions(&store);
    let entries: Vec<_> = (0..10_u64).map(|id| insert(&store, id, id)).collect();
    store.remove(&9);
    assert!(store.remove_entry(&8, &entries[8]));

    let seen = seen.lock().unwrap();
    let evicted: Vec<u64> = seen.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(evicted, (0..7).collect::<Vec<_>>());
    for (id, handle, state_when_called) in seen.iter() {
        assert!(handle.same_entry(&entries[*id as usize]), "item {id}: another handle");
        assert_eq!(*state_when_called, EntryState::Removed, "item {id}: not marked in time");
    }
    assert_eq!(store.evictions(), 7);
    for (id, entry) in entries.iter().enumerate() {
        let expected = if id == 7 { EntryState::Live } else { EntryState::Removed };
        assert_eq!(entry.state(), expected, "item {id}");
    }
}

#[test]
fn evictions_are_counted_without_a_listener() {
    let store = PapayaStore::new(2).unwrap();
    let entries: Vec<_> = (0..5_u64).map(|id| insert(&store, id, ())).collect();
    assert_eq!(store.evictions(), 3);
    assert!(entries[..3].iter().all(|e| e.state() == EntryState::Removed));
    assert!(entries[3..].iter().all(|e| e.state() == EntryState::Live));
}

#[test]
fn a_new_listener_replaces_the_old_one() {
    let store = PapayaStore::new(1).unwrap();
    let first = record_evictions(&store);
    insert(&store, 1_u64, ());
    insert(&store, 2_u64, ());
    let second = record_evictions(&store);
    insert(&store, 3_u64, ());
    let ids = |seen: &Seen<u64, ()>| -> Vec<u64> {
        seen.lock().unwrap().iter().map(|(id, _, _)| *id).collect()
    };
    assert_eq!(ids(&first), [1]);
    assert_eq!(ids(&second), [2]);
}

#[test]
fn the_listener_may_call_back_into_the_store() {
    let store = PapayaStore::new(2).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, inner) = (Arc::clone(&seen), store.clone());
    store.set_eviction_listener(Arc::new(move |id: &u64, _: &EntryHandle<u64>| {
        // Each of these would deadlock if called while the store held its lock.
        let present = inner.get(id).is_some();
        let len = inner.len();
        sink.lock().unwrap().push((*id, present, len));
        if *id == 0 {
            // Evicts 1, whose eviction is reported from within this call.
            inner.get_or_insert(1_000, EntryHandle::new(0));
        }
    }));
    for id in 0..3_u64 {
        insert(&store, id, id);
    }
    assert_eq!(*seen.lock().unwrap(), [(0, false, 2), (1, false, 2)]);
    assert_eq!(readable(&store), HashSet::from([2, 1_000]));
    // Break the store -> listener -> store cycle.
    store.set_eviction_listener(Arc::new(|_: &u64, _: &EntryHandle<u64>| {}));
}

#[test]
fn a_panicking_listener_does_not_stop_evictions_being_marked() {
    let store = PapayaStore::new(1).unwrap();
    let calls = Arc::new(Mutex::new(0));
    let sink = Arc::clone(&calls);
    store.set_eviction_listener(Arc::new(move |_: &u64, _: &EntryHandle<()>| {
        *sink.lock().unwrap() += 1;
        panic!("listener bug");
    }));
    let first = insert(&store, 1_u64, ());
    let panicked =
        panic::catch_unwind(AssertUnwindSafe(|| store.get_or_insert(2, EntryHandle::new(()))));
    assert!(panicked.is_err(), "the listener's panic reaches the caller");
    assert_eq!(first.state(), EntryState::Removed);
    assert!(store.get(&2).is_some(), "the insert itself completed");

    // A listener that panicked once is still called: eviction still marks entries and is
    // still reported.
    let second = store.get(&2).unwrap();
    let _ = panic::catch_unwind(AssertUnwindSafe(|| store.get_or_insert(3, EntryHandle::new(()))));
    assert_eq!(second.state(), EntryState::Removed);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(store.evictions(), 2);
    assert_eq!(store.len(), 1);
}

#[test]
fn len_counts_exactly_the_readable_entries() {
    let store = PapayaStore::new(100).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.len(), 0);
    let entries: Vec<_> = (0..50_u64).map(|id| insert(&store, id, id)).collect();
    assert_eq!(store.len(), 50);
    for id in (0..50_u64).step_by(2) {
        store.remove(&id);
    }
    assert_eq!(store.len(), 25);
    assert!(store.remove_entry(&1, &entries[1]));
    assert_eq!(store.len(), 24);
    assert_eq!(store.len(), readable(&store).len());
    for id in 0..50_u64 {
        store.remove(&id);
    }
    assert!(store.is_empty());
}

#[test]
fn for_each_entry_visits_every_entry_with_its_handle() {
    let store = PapayaStore::new(100).unwrap();
    let entries: HashMap<u64, EntryHandle<u64>> =
        (0..20_u64).map(|id| (id, insert(&store, id, id * 10))).collect();
    let mut visited = 0;
    store.for_each_entry(&mut |id, entry| {
        assert!(entry.same_entry(&entries[id]));
        assert_eq!(entry.load(), id * 10);
        visited += 1;
    });
    assert_eq!(visited, 20);
}

#[test]
fn clones_share_entries_counters_and_listener() {
    let store = PapayaStore::new(1).unwrap();
    let clone = store.clone();
    let seen = record_evictions(&clone);
    insert(&store, 1_u64, ());
    assert!(clone.get(&1).is_some());
    insert(&clone, 2_u64, ());
    assert_eq!(store.evictions(), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(store.len(), 1);
}

#[test]
fn debug_needs_no_debug_ids_or_items() {
    struct Opaque;
    let store = PapayaStore::<u64, Opaque>::new(5).unwrap();
    let shown = format!("{store:?}");
    assert!(shown.starts_with("PapayaStore {"), "{shown}");
    assert!(shown.contains("capacity: 5"), "{shown}");
}

#[test]
fn usable_as_a_shared_trait_object() {
    let store: Arc<dyn Store<String, u32>> = Arc::new(PapayaStore::new(2).unwrap());
    let listener: EvictionListener<String, u32> = Arc::new(|_, _| {});
    store.set_eviction_listener(listener);
    for id in ["a", "b", "c"] {
        store.get_or_insert(id.to_string(), EntryHandle::new(0));
    }
    assert_eq!(store.len(), 2);
    assert!(store.get(&"a".to_string()).is_none());
}

#[test]
fn concurrent_inserts_and_removes_keep_every_rule() {
    const THREADS: u64 = 4;
    const OPS: u64 = 10_000;
    const CAPACITY: u64 = 1_000;
    const SHARED_IDS: u64 = 3_000;

    let store: PapayaStore<u64, (u64, u64)> = PapayaStore::new(CAPACITY).unwrap();
    let seen = record_evictions(&store);

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let (mut inserted, mut removed) = (Vec::new(), Vec::new());
                for i in 0..OPS {
                    // Half the ids are this thread's own, half are shared by all threads.
                    let id = if i % 2 == 0 { (t + 1) * 1_000_000 + i } else { i % SHARED_IDS };
                    let entry = EntryHandle::new((t, i));
                    match store.get_or_insert(id, entry.clone()) {
                        GetOrInsert::Inserted(e) => {
                            assert!(e.same_entry(&entry));
                            assert!(
                                store.get(&id).is_some() || entry.state() == EntryState::Removed
                            );
                            inserted.push(entry.clone());
                        }
                        GetOrInsert::Existing(e) => assert!(!e.same_entry(&entry)),
                    }
                    // Reads of ids that may be live, evicted or removed meanwhile.
                    let other =
                        if i % 2 == 0 { i % SHARED_IDS } else { (t + 1) * 1_000_000 + i - 1 };
                    if let Some(e) = store.get(&other) {
                        assert!(!e.same_entry(&entry));
                    }
                    if let Some(e) = store.get(&id) {
                        assert!(e.state() != EntryState::DeletePending);
                    }
                    assert!(store.len() as u64 <= CAPACITY);
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

    let (mut inserted, mut removed) = (Vec::new(), HashSet::new());
    for worker in workers {
        let (i, r) = worker.join().expect("a worker panicked");
        inserted.extend(i);
        for item in r {
            assert!(removed.insert(item), "{item:?} removed twice");
        }
    }

    let len = store.len();
    assert!(len as u64 <= CAPACITY, "{len} entries readable, capacity {CAPACITY}");

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
        assert!(evicted.insert(entry.load()), "{:?} reported twice", entry.load());
    }
    assert_eq!(store.evictions(), evicted.len() as u64);

    // Every entry ever inserted is in exactly one place: live, evicted or removed.
    assert_eq!(inserted.len(), live.len() + evicted.len() + removed.len());
    for entry in &inserted {
        let item = entry.load();
        let places = [live.contains(&item), evicted.contains(&item), removed.contains(&item)];
        assert_eq!(places.iter().filter(|p| **p).count(), 1, "{item:?} in {places:?}");
        let expected = if live.contains(&item) { EntryState::Live } else { EntryState::Removed };
        assert_eq!(entry.state(), expected, "{item:?}");
    }
}

#[test]
fn a_new_item_outlives_older_items_at_the_next_insert() {
    // A one-bit CLOCK would evict "d" here: it was inserted after "b" and "c" were last read,
    // but not read since, while their bits were still set.
    let store = PapayaStore::new(3).unwrap();
    for id in ["a", "b", "c"] {
        insert(&store, id, ());
    }
    assert!(store.get(&"b").is_some());
    assert!(store.get(&"c").is_some());
    insert(&store, "d", ());
    assert_eq!(readable(&store), HashSet::from(["b", "c", "d"]));
    insert(&store, "e", ());
    assert!(readable(&store).contains("d"), "{:?}", readable(&store));
    assert_eq!(readable(&store), HashSet::from(["c", "d", "e"]));
}

#[test]
fn a_slot_freed_by_a_removal_is_reused_without_an_eviction() {
    let store = PapayaStore::new(3).unwrap();
    let seen = record_evictions(&store);
    for id in ["a", "b", "c"] {
        insert(&store, id, ());
    }
    store.remove(&"b");
    insert(&store, "d", ());
    assert_eq!(store.evictions(), 0);
    assert_eq!(store.len(), 3);
    // The entry in the reused slot is the newest: "a" goes first, then "c".
    insert(&store, "e", ());
    insert(&store, "f", ());
    let evicted: Vec<_> = seen.lock().unwrap().iter().map(|(id, _, _)| *id).collect();
    assert_eq!(evicted, ["a", "c"]);
    assert_eq!(readable(&store), HashSet::from(["d", "e", "f"]));
}

#[test]
fn up_to_32_the_order_is_lru_at_the_resolution_of_inserts() {
    const CAPACITY: u64 = 32;
    let store = PapayaStore::new(CAPACITY).unwrap();
    let seen = record_evictions(&store);
    for id in 0..CAPACITY - 1 {
        insert(&store, id, ());
    }
    // Use the ids in a scrambled order. Time is counted in inserts: between two uses, insert
    // and remove a throwaway id (in the one free slot, evicting nothing), so that each use is
    // later than the one before.
    let order: Vec<u64> = (0..CAPACITY - 1).map(|i| (i * 13 + 5) % (CAPACITY - 1)).collect();
    for &id in &order {
        assert!(store.get(&id).is_some(), "{id} evicted too early");
        insert(&store, 1_000, ());
        assert!(store.remove(&1_000).is_some());
    }
    assert_eq!(store.evictions(), 0);
    // New ids evict the old ones in the order of their last use, never each other.
    for id in 2_000..2_000 + CAPACITY {
        insert(&store, id, ());
    }
    let evicted: Vec<u64> = seen.lock().unwrap().iter().map(|(id, _, _)| *id).collect();
    assert_eq!(evicted, order);
    assert_eq!(readable(&store), (2_000..2_000 + CAPACITY).collect::<HashSet<_>>());
}

#[test]
fn a_large_store_evicts_unread_entries_before_read_ones() {
    const CAPACITY: u64 = 1_000;
    let store = PapayaStore::new(CAPACITY).unwrap();
    let seen = record_evictions(&store);
    for id in 0..CAPACITY {
        insert(&store, id, ());
    }
    // Read a scattered half of the ids.
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let mut read = HashSet::new();
    while read.len() < 500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        read.insert(x % CAPACITY);
    }
    for id in &read {
        assert!(store.get(id).is_some());
    }
    for id in 0..500 {
        insert(&store, 10_000 + id, ());
    }
    let evicted: HashSet<u64> = seen.lock().unwrap().iter().map(|(id, _, _)| *id).collect();
    let unread: HashSet<u64> = (0..CAPACITY).filter(|id| !read.contains(id)).collect();
    assert_eq!(evicted, unread);
    assert_eq!(store.len() as u64, CAPACITY);
}

#[test]
fn reads_during_inserts_never_see_more_than_the_capacity() {
    const CAPACITY: u64 = 64;
    let store: PapayaStore<u64, u64> = PapayaStore::new(CAPACITY).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut reads = 0_u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(store.len() as u64 <= CAPACITY);
                    // The newest ids are hot: the readers keep them used.
                    let newest = store.evictions() + CAPACITY;
                    for id in newest.saturating_sub(8)..newest {
                        if let Some(e) = store.get(&id) {
                            reads += u64::from(e.load() == id);
                        }
                    }
                }
                reads
            });
        }
        for id in 0..20_000_u64 {
            let entry = insert(&store, id, id);
            assert!(store.len() as u64 <= CAPACITY);
            assert!(
                store.get(&id).is_some_and(|e| e.same_entry(&entry)),
                "{id} was evicted by its own insert"
            );
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(store.len() as u64, CAPACITY);
    assert_eq!(store.evictions(), 20_000 - CAPACITY);
}

#[test]
#[allow(clippy::disallowed_methods)] // a real thread must wait for another: no tokio here
fn an_eviction_waits_for_a_reader_of_its_entry_without_holding_the_store() {
    // Thread A reads the entry (holding the entry's own lock) and, meanwhile, creates an id;
    // thread B's create evicts that entry. Marking it removed while holding the store's lock
    // would deadlock: B would wait for A's read, A for the store's lock.
    let store = PapayaStore::new(1).unwrap();
    let victim = insert(&store, 0_u64, 0_u64);
    let (reading_tx, reading_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (a_store, a_done) = (store.clone(), done_tx.clone());
    thread::spawn(move || {
        victim.with(|_| {
            reading_tx.send(()).unwrap();
            thread::sleep(std::time::Duration::from_millis(100));
            a_store.get_or_insert(2, EntryHandle::new(2));
        });
        a_done.send("a").unwrap();
    });
    let b_store = store.clone();
    thread::spawn(move || {
        reading_rx.recv().unwrap();
        b_store.get_or_insert(1, EntryHandle::new(1));
        done_tx.send("b").unwrap();
    });
    let timeout = std::time::Duration::from_secs(10);
    let mut done: Vec<_> =
        (0..2).map(|_| done_rx.recv_timeout(timeout).expect("deadlocked")).collect();
    done.sort_unstable();
    assert_eq!(done, ["a", "b"]);
    assert_eq!(store.len(), 1);
    assert_eq!(store.evictions(), 2);
}
