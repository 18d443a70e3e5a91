//! `MokaStore` keeps every rule of `autorefresh_core::Store` (the `store_conformance` tests,
//! its LRU order exact, its capacity exceeded while an insert runs), and shows what it holds
//! without needing `Debug` ids or items.

use autorefresh_core::{EntryHandle, Store};
use autorefresh_moka::MokaStore;

autorefresh_store_tests::store_conformance!(
    try_make_store = MokaStore::<String, u32>::new,
    exact_lru = true,
    clone = true,
    capacity = |store| store.capacity(),
    evictions = |store| store.evictions(),
    // moka makes a new entry readable before its maintenance evicts for it.
    capacity_exceeded_during_inserts = true,
);

#[test]
fn debug_needs_no_debug_ids_or_items() {
    struct Opaque;
    let store = MokaStore::<u64, Opaque>::new(5).unwrap();
    assert_eq!(format!("{store:?}"), "MokaStore { capacity: 5, entry_count: 0, evictions: 0, .. }");
    for id in 0..6 {
        store.get_or_insert(id, EntryHandle::new(Opaque));
    }
    let shown = format!("{store:?}");
    assert_eq!(shown, "MokaStore { capacity: 5, entry_count: 5, evictions: 1, .. }");
}
