//! `autorefresh-core` and `autorefresh-moka` on their own, without the `autorefresh` facade:
//! a `MokaStore` driven through the `Store` trait, with a hand-rolled refresh pass that
//! follows the same rules as the facade's engine.
//!
//! Run it with `cargo run -p autorefresh-moka --example standalone`. Its only dependencies
//! are the two crates:
//!
//! ```toml
//! [dependencies]
//! autorefresh-core = "0.1"
//! autorefresh-moka = "0.1"
//! ```

use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};

use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Item, Store};
use autorefresh_moka::MokaStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
    Done,
}

#[derive(Clone, Debug)]
struct Build {
    phase: Phase,
}

impl Item for Build {
    fn is_terminal(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// Stands in for asking the external system: each look moves a build one phase on.
fn poll(build: &Build) -> Build {
    let phase = match build.phase {
        Phase::Queued => Phase::Running,
        Phase::Running | Phase::Done => Phase::Done,
    };
    Build { phase }
}

fn main() -> Result<(), Box<dyn Error>> {
    let store: MokaStore<String, Build> = MokaStore::new(3)?;
    let evicted = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&evicted);
    store.set_eviction_listener(Arc::new(move |id: &String, entry: &EntryHandle<Build>| {
        // The entry is already marked removed when the listener hears of it.
        sink.lock().unwrap_or_else(PoisonError::into_inner).push((id.clone(), entry.state()));
    }));

    // get_or_insert creates an id once; a second create hands back the entry already there.
    for id in ["build-1", "build-2", "build-3"] {
        store.get_or_insert(id.to_owned(), EntryHandle::new(Build { phase: Phase::Queued }));
    }
    let again =
        store.get_or_insert("build-1".to_owned(), EntryHandle::new(Build { phase: Phase::Done }));
    let GetOrInsert::Existing(build1) = again else {
        return Err("a second create of build-1 replaced it".into());
    };
    println!(
        "get_or_insert: 3 builds created; creating build-1 again returned the existing entry \
         ({:?})",
        build1.load().phase
    );

    // A refresh pass, as the facade's engine does it: walk the entries without counting it as
    // use (for_each_entry), remember each non-terminal item's version, ask the external
    // system, then store each answer only if the entry still has that version.
    let mut due = Vec::new();
    store.for_each_entry(&mut |id, entry| {
        let (build, version) = entry.load_versioned();
        if !build.is_terminal() {
            due.push((id.clone(), entry.clone(), version, build));
        }
    });
    due.sort_by(|a, b| a.0.cmp(&b.0));
    // Meanwhile a caller marks build-2 done by hand (say, it was cancelled): its update wins.
    let build2 = store.get(&"build-2".to_owned()).ok_or("build-2 is missing")?;
    build2.replace(Build { phase: Phase::Done });
    let (mut applied, mut dropped) = (Vec::new(), Vec::new());
    for (id, entry, version, build) in &due {
        if entry.replace_if_version(*version, poll(build)) {
            applied.push(id.as_str());
        } else {
            dropped.push(id.as_str());
        }
    }
    println!(
        "refresh pass: stored for {applied:?}; dropped for {dropped:?}, updated by a caller \
         since the pass read it (it stays {:?})",
        build2.load().phase
    );

    // Recency is the callers': creating build-1 again and reading build-2 counted as use, the
    // refresh pass did not. So a fourth build evicts build-3, the least recently used.
    // (The refresh pass's handle to build-3 is kept: reading it through the store would
    // count as use.)
    let build3 = due
        .iter()
        .find(|(id, ..)| id == "build-3")
        .map(|(_, entry, ..)| entry.clone())
        .ok_or("build-3 was not due")?;
    store.get_or_insert("build-4".to_owned(), EntryHandle::new(Build { phase: Phase::Queued }));
    let evicted = evicted.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // A refresh that still held the evicted entry's handle can never bring it back.
    let late_refresh = build3.replace_if_version(build3.load_versioned().1, poll(&build3.load()));
    println!(
        "eviction: the listener heard of {evicted:?}; {} builds left, {} eviction; a late \
         refresh of build-3 was stored: {late_refresh}",
        store.len(),
        store.evictions(),
    );

    if applied != ["build-1", "build-3"]
        || dropped != ["build-2"]
        || evicted != [("build-3".to_owned(), EntryState::Removed)]
        || late_refresh
    {
        return Err("the store did not behave as the Store trait promises".into());
    }
    Ok(())
}
