//! `PapayaStore` against a model: random sequences of `get`, `get_or_insert`, `remove`,
//! `remove_entry` and `for_each_entry` on a small store.
//!
//! The model is a map of the ids that must be readable, each with the time of its last use,
//! where time is counted in inserts: insert number `k` happens at time `2k`, and every read
//! after it and before the next insert at time `2k + 1` (reads between two inserts tie). Up to
//! a capacity of 32 the store evicts the least recently used entry in that sense.
//!
//! Invariants checked after every operation: the readable ids and their entries are the
//! model's; the length is the model's and at most the capacity; an insert into a full store
//! evicts exactly one entry, never the one it inserts, and one whose last use is the oldest;
//! every eviction is reported once, with the evicted entry, already marked removed; every
//! entry that left the store is marked removed, and every entry in it is live; explicit
//! removals are not reported; `remove_entry` removes only the very entry it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Store};
use autorefresh_papaya::PapayaStore;
use proptest::prelude::*;

type Id = u8;

#[derive(Clone, Debug)]
enum Op {
    Get(Id),
    GetOrInsert(Id),
    Remove(Id),
    /// `remove_entry` with the id's current entry (`true`) or a stale or lookalike one.
    RemoveEntry(Id, bool),
    Walk,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..10_u8;
    prop_oneof![
        3 => id.clone().prop_map(Op::Get),
        4 => id.clone().prop_map(Op::GetOrInsert),
        1 => id.clone().prop_map(Op::Remove),
        1 => (id, any::<bool>()).prop_map(|(id, current)| Op::RemoveEntry(id, current)),
        1 => Just(Op::Walk),
    ]
}

type Log = Arc<Mutex<Vec<(Id, EntryHandle<u64>, EntryState)>>>;

struct Model {
    capacity: usize,
    /// The readable ids: entry and time of last use.
    present: BTreeMap<Id, (EntryHandle<u64>, u64)>,
    inserts: u64,
    /// Every entry ever inserted.
    inserted: Vec<EntryHandle<u64>>,
    /// Entries that left the store, by id, latest last.
    gone: BTreeMap<Id, Vec<EntryHandle<u64>>>,
    evictions: u64,
}

impl Model {
    fn read_time(&self) -> u64 {
        2 * self.inserts + 1
    }
}

fn check(store: &PapayaStore<Id, u64>, model: &Model, log: &Log) -> Result<(), TestCaseError> {
    let mut readable = BTreeSet::new();
    let mut result = Ok(());
    store.for_each_entry(&mut |id, entry| {
        let expected = model.present.get(id);
        if !expected.is_some_and(|(e, _)| e.same_entry(entry)) || !readable.insert(*id) {
            result = Err(TestCaseError::fail(format!("id {id} readable with a wrong entry")));
        }
    });
    result?;
    prop_assert_eq!(readable, model.present.keys().copied().collect::<BTreeSet<_>>());
    prop_assert_eq!(store.len(), model.present.len());
    prop_assert!(store.len() <= model.capacity);
    prop_assert_eq!(store.evictions(), model.evictions);
    prop_assert!(log.lock().unwrap().is_empty(), "an unexpected eviction was reported");
    for entry in &model.inserted {
        let live = model.present.values().any(|(e, _)| e.same_entry(entry));
        let expected = if live { EntryState::Live } else { EntryState::Removed };
        prop_assert_eq!(entry.state(), expected);
    }
    Ok(())
}

fn run(capacity: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store: PapayaStore<Id, u64> = PapayaStore::new(capacity as u64).unwrap();
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    store.set_eviction_listener(Arc::new(move |id: &Id, entry: &EntryHandle<u64>| {
        sink.lock().unwrap().push((*id, entry.clone(), entry.state()));
    }));
    let mut model = Model {
        capacity,
        present: BTreeMap::new(),
        inserts: 0,
        inserted: Vec::new(),
        gone: BTreeMap::new(),
        evictions: 0,
    };
    for (n, op) in ops.into_iter().enumerate() {
        let value = n as u64;
        match op {
            Op::Get(id) => {
                let got = store.get(&id);
                let now = model.read_time();
                match (got, model.present.get_mut(&id)) {
                    (Some(got), Some((entry, used))) => {
                        prop_assert!(got.same_entry(entry));
                        *used = now;
                    }
                    (None, None) => {}
                    (got, _) => prop_assert!(false, "get({}) = {:?}, model disagrees", id, got),
                }
            }
            Op::GetOrInsert(id) => {
                let fresh = EntryHandle::new(value);
                let outcome = store.get_or_insert(id, fresh.clone());
                let now = model.read_time();
                if let Some((entry, used)) = model.present.get_mut(&id) {
                    let GetOrInsert::Existing(existing) = outcome else {
                        return Err(TestCaseError::fail(format!("{id} inserted twice")));
                    };
                    prop_assert!(existing.same_entry(entry));
                    prop_assert_eq!(fresh.state(), EntryState::Live);
                    *used = now;
                } else {
                    let GetOrInsert::Inserted(inserted) = outcome else {
                        return Err(TestCaseError::fail(format!("{id} not inserted")));
                    };
                    prop_assert!(inserted.same_entry(&fresh));
                    let mut reported = std::mem::take(&mut *log.lock().unwrap());
                    if model.present.len() == capacity {
                        prop_assert_eq!(reported.len(), 1, "one eviction expected");
                        let (victim, entry, state) = reported.pop().unwrap();
                        prop_assert_ne!(victim, id, "the new entry was evicted");
                        prop_assert_eq!(state, EntryState::Removed, "reported before marked");
                        let oldest = model.present.values().map(|(_, used)| *used).min();
                        let (expected, used) = model.present.remove(&victim).expect("present");
                        prop_assert!(entry.same_entry(&expected));
                        prop_assert_eq!(
                            Some(used),
                            oldest,
                            "{} was not least recently used",
                            victim
                        );
                        model.gone.entry(victim).or_default().push(entry);
                        model.evictions += 1;
                    } else {
                        prop_assert!(reported.is_empty(), "evicted below capacity");
                    }
                    model.inserts += 1;
                    model.present.insert(id, (fresh.clone(), 2 * model.inserts));
                    model.inserted.push(fresh);
                }
            }
            Op::Remove(id) => {
                let removed = store.remove(&id);
                match (removed, model.present.remove(&id)) {
                    (Some(removed), Some((entry, _))) => {
                        prop_assert!(removed.same_entry(&entry));
                        prop_assert_eq!(removed.state(), EntryState::Removed);
                        model.gone.entry(id).or_default().push(entry);
                    }
                    (None, None) => {}
                    (removed, _) => {
                        prop_assert!(false, "remove({}) = {:?}, model disagrees", id, removed)
                    }
                }
            }
            Op::RemoveEntry(id, current) => {
                let current_entry = model.present.get(&id).map(|(e, _)| e.clone());
                let given = match (current, &current_entry) {
                    (true, Some(entry)) => entry.clone(),
                    // A stale entry of this id if there is one, else a lookalike.
                    _ => model
                        .gone
                        .get(&id)
                        .and_then(|gone| gone.last().cloned())
                        .unwrap_or_else(|| EntryHandle::new(value)),
                };
                let removed = store.remove_entry(&id, &given);
                let expected = current_entry.as_ref().is_some_and(|e| e.same_entry(&given));
                prop_assert_eq!(removed, expected);
                if removed {
                    prop_assert_eq!(given.state(), EntryState::Removed);
                    model.present.remove(&id);
                    model.gone.entry(id).or_default().push(given);
                } else if let Some(entry) = current_entry {
                    prop_assert_eq!(entry.state(), EntryState::Live);
                }
            }
            Op::Walk => {
                let mut visited = 0;
                store.for_each_entry(&mut |_, _| visited += 1);
                prop_assert_eq!(visited, model.present.len());
            }
        }
        check(&store, &model, &log)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_store_follows_the_model(capacity in 1..=6_usize, ops in prop::collection::vec(op(), 1..150)) {
        run(capacity, ops)?;
    }
}
