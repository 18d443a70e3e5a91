//! `PapayaStore` keeps every rule of `autorefresh_core::Store` (the `store_conformance` tests,
//! its LRU order exact up to a capacity of 32), and what is its own: `Debug`, the window
//! eviction of larger stores, and marking evicted entries outside its lock.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread;

use autorefresh_core::{EntryHandle, Store};
use autorefresh_papaya::PapayaStore;

autorefresh_store_tests::store_conformance!(
    try_make_store = PapayaStore::<String, u32>::new,
    exact_lru = true,
    clone = true,
    capacity = |store| store.capacity(),
    evictions = |store| store.evictions(),
    // The victim leaves the map before the new entry enters it.
    capacity_exceeded_during_inserts = false,
);

#[test]
fn debug_needs_no_debug_ids_or_items() {
    struct Opaque;
    let store = PapayaStore::<u64, Opaque>::new(5).unwrap();
    assert_eq!(format!("{store:?}"), "PapayaStore { capacity: 5, len: 0, evictions: 0, .. }");
    for id in 0..6 {
        store.get_or_insert(id, EntryHandle::new(Opaque));
    }
    assert_eq!(format!("{store:?}"), "PapayaStore { capacity: 5, len: 5, evictions: 1, .. }");
}

#[test]
fn a_large_store_evicts_unread_entries_before_read_ones() {
    const CAPACITY: u64 = 1_000;
    let store = PapayaStore::new(CAPACITY).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    store.set_eviction_listener(Arc::new(move |id: &u64, _: &EntryHandle<()>| {
        sink.lock().unwrap().push(*id);
    }));
    for id in 0..CAPACITY {
        store.get_or_insert(id, EntryHandle::new(()));
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
        store.get_or_insert(10_000 + id, EntryHandle::new(()));
    }
    let evicted: HashSet<u64> = seen.lock().unwrap().iter().copied().collect();
    let unread: HashSet<u64> = (0..CAPACITY).filter(|id| !read.contains(id)).collect();
    assert_eq!(evicted, unread);
    assert_eq!(store.len() as u64, CAPACITY);
}

#[test]
fn an_eviction_waits_for_a_reader_of_its_entry_without_holding_the_store() {
    // Thread A reads the entry (holding the entry's own lock) and, meanwhile, creates an id;
    // thread B's create evicts that entry. Marking it removed while holding the store's lock
    // would deadlock: B would wait for A's read, A for the store's lock.
    let store = PapayaStore::new(1).unwrap();
    let victim = EntryHandle::new(0_u64);
    store.get_or_insert(0_u64, victim.clone());
    let (reading_tx, reading_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (a_store, a_done) = (store.clone(), done_tx.clone());
    thread::spawn(move || {
        victim.with(|_| {
            reading_tx.send(()).unwrap();
            // Wait (without sleeping) until B's create has taken the victim out of the map:
            // B is then about to mark it removed, which waits for this read.
            let mut spins = 0_u64;
            while a_store.get(&0).is_some() {
                spins += 1;
                assert!(spins < 100_000_000, "B never evicted the victim");
                thread::yield_now();
            }
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
