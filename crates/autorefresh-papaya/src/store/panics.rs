//! A panic in an id's `Hash` or `Clone`, at any point of an insert, an eviction or a removal,
//! leaves the store consistent: its ring and its map agree, `len` is what the map holds, the
//! capacity holds, and every entry that left the map is marked removed, counted and reported
//! once if it was evicted. These tests need the ring, so they live next to it.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Store};

use super::PapayaStore;

/// Which method of an id a [`Trap`] makes panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Hash,
    Clone,
}

/// Armed on one id: the call of `call` on that id after `after` others panics, once.
struct Armed {
    name: String,
    call: Call,
    after: usize,
}

/// Shared by the ids of one test.
#[derive(Default)]
struct Trap(Mutex<Option<Armed>>);

impl Trap {
    fn arm(&self, name: &str, call: Call, after: usize) {
        *self.lock() = Some(Armed { name: name.to_string(), call, after });
    }

    /// Disarms the trap; whether it had gone off.
    fn disarm(&self) -> bool {
        self.lock().take().is_none()
    }

    /// Counts a call of `call` on `name`, and panics if it is the one the trap waits for.
    fn spring(&self, name: &str, call: Call) {
        let fire = {
            let mut armed = self.lock();
            match armed.as_mut() {
                Some(trap) if trap.name == name && trap.call == call && trap.after == 0 => {
                    *armed = None;
                    true
                }
                Some(trap) if trap.name == name && trap.call == call => {
                    trap.after -= 1;
                    false
                }
                _ => false,
            }
        };
        // Outside the trap's lock, so that the panic does not poison it.
        assert!(!fire, "{call:?} of {name} panics, as the test asked");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Armed>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An id whose `Hash` or `Clone` panics when its trap says so.
struct Id {
    name: String,
    trap: Arc<Trap>,
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.trap.spring(&self.name, Call::Hash);
        self.name.hash(state);
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Id {}

impl Clone for Id {
    fn clone(&self) -> Self {
        self.trap.spring(&self.name, Call::Clone);
        Self { name: self.name.clone(), trap: Arc::clone(&self.trap) }
    }
}

/// An entry given to the store, and how its insert ended.
struct Given {
    name: String,
    entry: EntryHandle<u32>,
    /// `get_or_insert` returned `Inserted` (not a panic).
    inserted: bool,
}

/// A store of trapped ids, every entry ever given to it, and what its listener saw.
struct Harness {
    store: PapayaStore<Id, u32>,
    trap: Arc<Trap>,
    given: Vec<Given>,
    removed: HashSet<String>,
    /// The ids the listener was told of, with the entry's state when it was.
    reported: Arc<Mutex<Vec<(String, EntryState)>>>,
}

impl Harness {
    /// A store of `capacity` holding the ids `names`.
    fn new(capacity: u64, names: &[&str]) -> Self {
        let store = PapayaStore::new(capacity).unwrap();
        let reported = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&reported);
        store.set_eviction_listener(Arc::new(move |id: &Id, entry: &EntryHandle<u32>| {
            sink.lock().unwrap().push((id.name.clone(), entry.state()));
        }));
        let mut harness = Self {
            store,
            trap: Arc::default(),
            given: Vec::new(),
            removed: HashSet::new(),
            reported,
        };
        for name in names {
            assert!(harness.insert(name).is_ok());
        }
        harness.check();
        harness
    }

    fn id(&self, name: &str) -> Id {
        Id { name: name.to_string(), trap: Arc::clone(&self.trap) }
    }

    fn entry(&self, name: &str) -> EntryHandle<u32> {
        let given = self.given.iter().rev().find(|given| given.name == name);
        given.expect("a given id").entry.clone()
    }

    /// Inserts a new id; `Err` if the insert panicked.
    fn insert(&mut self, name: &str) -> Result<(), ()> {
        let entry = EntryHandle::new(u32::try_from(self.given.len()).unwrap());
        let id = self.id(name);
        let store = &self.store;
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| store.get_or_insert(id, entry.clone())));
        let inserted = match &outcome {
            Ok(GetOrInsert::Inserted(inserted)) => inserted.same_entry(&entry),
            Ok(GetOrInsert::Existing(_)) => panic!("{name} was expected to be new"),
            Err(_) => false,
        };
        self.given.push(Given { name: name.to_string(), entry, inserted });
        outcome.map(drop).map_err(drop)
    }

    /// Calls `change` with the trap armed on `name`'s `call` after `after` calls; whether the
    /// trap went off, which it does if and only if `change` panicked.
    fn with_trap(
        &mut self,
        (name, call, after): (&str, Call, usize),
        change: impl FnOnce(&mut Self) -> Result<(), ()>,
    ) -> bool {
        self.trap.arm(name, call, after);
        let outcome = change(self);
        let fired = self.trap.disarm();
        assert_eq!(fired, outcome.is_err(), "a panic other than the trap's, or none");
        fired
    }

    /// Arms the trap on `name`'s `call` after 0, 1, 2... calls, each time running `change`
    /// on a new id, until `change` runs without the trap going off; checks the store after
    /// every panic. Returns how many panics there were.
    fn panic_at_every_call(
        &mut self,
        call: Call,
        trapped: impl Fn(usize) -> String,
        change: impl Fn(&mut Self, usize) -> Result<(), ()>,
    ) -> usize {
        for after in 0..20 {
            let name = trapped(after);
            if !self.with_trap((&name, call, after), |harness| change(harness, after)) {
                self.check();
                return after;
            }
            self.check();
        }
        panic!("the trap kept going off");
    }

    /// Checks every invariant of the store, from its ring and map to its entries' states.
    fn check(&self) {
        let inner = &*self.store.inner;
        let capacity = usize::try_from(inner.capacity).unwrap();
        let len = self.store.len();
        assert!(len <= capacity, "{len} entries, capacity {capacity}");
        {
            let ring = self.store.lock_ring();
            let map = inner.map.pin();
            assert_eq!(map.len(), len, "the map holds another count than `len`");
            assert!(ring.ids.len() <= capacity, "{} ring slots: one leaked", ring.ids.len());
            let free: HashSet<usize> = ring.free.iter().copied().collect();
            assert_eq!(free.len(), ring.free.len(), "a slot free twice");
            for (index, id) in ring.ids.iter().enumerate() {
                match id {
                    Some(id) => {
                        let slot =
                            map.get(id).unwrap_or_else(|| panic!("{} not in the map", id.name));
                        assert_eq!(slot.index, index, "{} in another slot", id.name);
                        assert!(!free.contains(&index), "{} in a free slot", id.name);
                    }
                    None => assert!(free.contains(&index), "slot {index} is neither used nor free"),
                }
            }
            for (id, slot) in &map {
                assert!(ring.ids[slot.index].as_ref().is_some_and(|named| named == id));
            }
        }

        let reported = self.reported.lock().unwrap().clone();
        let reported_names: HashSet<&str> =
            reported.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(reported_names.len(), reported.len(), "an eviction reported twice");
        assert!(reported.iter().all(|(_, state)| *state == EntryState::Removed), "{reported:?}");
        assert_eq!(self.store.evictions(), reported.len() as u64, "evictions counted, reported");

        let mut readable = 0;
        for given in &self.given {
            let name = given.name.as_str();
            let current = self.store.get(&self.id(name));
            if current.as_ref().is_some_and(|current| current.same_entry(&given.entry)) {
                readable += 1;
                assert_eq!(given.entry.state(), EntryState::Live, "{name} is readable");
                assert!(!reported_names.contains(name), "{name} reported and readable");
                continue;
            }
            let evicted = reported_names.contains(name);
            let removed = self.removed.contains(name);
            if given.inserted || evicted || removed {
                // It was in the map and left it: marked, and evicted or removed, not both.
                assert_eq!(given.entry.state(), EntryState::Removed, "{name} left the store");
                assert!(evicted != removed, "{name}: evicted {evicted}, removed {removed}");
            } else {
                // Its insert panicked before it entered the map.
                assert_eq!(given.entry.state(), EntryState::Live, "{name} never entered");
            }
        }
        assert_eq!(readable, len, "`len` is not the number of readable entries");
    }

    /// Fills and evicts ten times the capacity: the store keeps its capacity exactly, leaks
    /// no slot and reports every eviction.
    fn keeps_working(&mut self) {
        let capacity = usize::try_from(self.store.capacity()).unwrap();
        for i in 0..10 * capacity {
            assert!(self.insert(&format!("after-{i}")).is_ok());
            assert!(self.store.len() <= capacity);
        }
        assert_eq!(self.store.len(), capacity);
        self.check();
    }
}

#[test]
fn a_panic_hashing_the_new_id_of_an_insert_into_a_full_store() {
    let mut harness = Harness::new(2, &["a", "b"]);
    let panics = harness.panic_at_every_call(
        Call::Hash,
        |n| format!("new-{n}"),
        |harness, n| harness.insert(&format!("new-{n}")),
    );
    assert!(panics >= 3, "the new id is hashed by two reads and the insert");
    harness.keeps_working();
}

#[test]
fn a_panic_hashing_the_new_id_of_an_insert_into_a_store_with_room() {
    let mut harness = Harness::new(3, &["a"]);
    let panics = harness.panic_at_every_call(
        Call::Hash,
        |n| format!("new-{n}"),
        |harness, n| harness.insert(&format!("new-{n}")),
    );
    assert!(panics >= 3, "the new id is hashed by two reads and the insert");
    assert_eq!(harness.store.len(), 2);
    harness.keeps_working();
}

#[test]
fn a_panic_hashing_the_victim_changes_nothing() {
    let mut harness = Harness::new(2, &["a", "b"]);
    // "a" is the least recently used: each insert into the full store hashes it to evict it.
    let panics = harness.panic_at_every_call(
        Call::Hash,
        |_| "a".to_string(),
        |harness, n| harness.insert(&format!("new-{n}")),
    );
    assert_eq!(panics, 1);
    assert_eq!(harness.reported.lock().unwrap().len(), 1);
    harness.keeps_working();

    // Again and again, at a capacity of 1, where the victim is the one entry there.
    let mut harness = Harness::new(1, &["a"]);
    for round in 0..10 {
        let victim = if round == 0 { "a".to_string() } else { format!("y-{}", round - 1) };
        let trap = (victim.as_str(), Call::Hash, 0);
        assert!(harness.with_trap(trap, |harness| harness.insert(&format!("x-{round}"))));
        harness.check();
        assert_eq!(harness.entry(&victim).state(), EntryState::Live, "{victim} was evicted");
        assert!(harness.insert(&format!("y-{round}")).is_ok());
        harness.check();
        assert_eq!(harness.entry(&victim).state(), EntryState::Removed);
    }
    harness.keeps_working();
}

#[test]
fn a_panic_cloning_the_new_id_changes_nothing() {
    for names in [&["a", "b"][..], &["a"]] {
        let mut harness = Harness::new(2, names);
        assert!(harness.with_trap(("new", Call::Clone, 0), |harness| harness.insert("new")));
        harness.check();
        assert_eq!(harness.store.len(), names.len());
        assert_eq!(harness.store.evictions(), 0);
        assert!(names.iter().all(|name| harness.entry(name).state() == EntryState::Live));
        harness.keeps_working();
    }
}

#[test]
fn a_panic_hashing_the_id_of_a_removal_changes_nothing() {
    let mut harness = Harness::new(3, &["a", "b", "c"]);
    let panics = harness.panic_at_every_call(
        Call::Hash,
        |_| "a".to_string(),
        |harness, _| {
            let (store, id) = (&harness.store, harness.id("a"));
            let removed = panic::catch_unwind(AssertUnwindSafe(|| store.remove(&id)));
            if matches!(removed, Ok(Some(_))) {
                harness.removed.insert("a".to_string());
            }
            removed.map(|removed| assert!(removed.is_some())).map_err(drop)
        },
    );
    assert!(panics >= 2, "the id is hashed by a read and the removal");

    let panics = harness.panic_at_every_call(
        Call::Hash,
        |_| "b".to_string(),
        |harness, _| {
            let (store, id, entry) = (&harness.store, harness.id("b"), harness.entry("b"));
            let removed = panic::catch_unwind(AssertUnwindSafe(|| store.remove_entry(&id, &entry)));
            if matches!(removed, Ok(true)) {
                harness.removed.insert("b".to_string());
            }
            removed.map(|removed| assert!(removed)).map_err(drop)
        },
    );
    assert!(panics >= 2, "the id is hashed by a read and the removal");
    assert_eq!(harness.store.len(), 1);
    harness.keeps_working();
}

#[test]
fn a_listener_panicking_while_an_insert_unwinds_does_not_abort() {
    let mut harness = Harness::new(1, &["a"]);
    let sink = Arc::clone(&harness.reported);
    harness.store.set_eviction_listener(Arc::new(move |id: &Id, entry: &EntryHandle<u32>| {
        sink.lock().unwrap().push((id.name.clone(), entry.state()));
        panic!("the listener panics");
    }));
    // The third hash of the new id is its insert, after "a" was evicted for it.
    let trap = ("new", Call::Hash, 2);
    assert!(harness.with_trap(trap, |harness| harness.insert("new")));
    harness.check();
    assert_eq!(harness.entry("a").state(), EntryState::Removed);
    assert_eq!(harness.store.evictions(), 1);
    assert!(harness.store.is_empty());
}
