//! A bounded [`Store`](autorefresh_core::Store) for the autorefresh cache, on
//! [papaya](https://docs.rs/papaya)'s lock-free hash map, for read-heavy use.
//!
//! [`PapayaStore`] serves `get` at close to the speed of a bare papaya lookup (no lock, no
//! write to a shared cache line for an entry already marked used), and evicts the least
//! recently used entry of a 32-slot window of its ring (exact LRU up to 32 entries; reads
//! between the same two inserts tie), an approximation of least-recently-used:
//!
//! - an item just created is never the one evicted for it;
//! - the capacity is exact as readers see it: an insert into a full store removes its victim
//!   before the new entry becomes readable;
//! - only callers' reads count as use, never the background refresh walking the entries;
//! - every entry the store drops is marked removed, and every eviction is counted and
//!   reported, exactly once, to the eviction listener, outside the store's lock.
//!
//! `autorefresh-moka`'s `MokaStore` keeps the same rules with an exact LRU order, at about a
//! tenth of the read speed; see the README for the measured trade-off.
//!
//! ```toml
//! [dependencies]
//! autorefresh-core = "0.1"
//! autorefresh-papaya = "0.1"
//! ```
//!
//! # Examples
//!
//! ```
//! use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Store};
//! use autorefresh_papaya::PapayaStore;
//!
//! # fn main() -> Result<(), autorefresh_core::Error> {
//! let store: PapayaStore<String, &str> = PapayaStore::new(2)?;
//!
//! let job1 = EntryHandle::new("queued");
//! store.get_or_insert("job-1".to_string(), job1.clone());
//! store.get_or_insert("job-2".to_string(), EntryHandle::new("queued"));
//! store.get_or_insert("job-3".to_string(), EntryHandle::new("running"));
//!
//! // The capacity is 2: the job used least recently was evicted, and marked removed, so a
//! // refresh still holding its handle can never bring it back.
//! assert_eq!(store.len(), 2);
//! assert!(store.get(&"job-1".to_string()).is_none());
//! assert_eq!(job1.state(), EntryState::Removed);
//! assert_eq!(store.evictions(), 1);
//!
//! // The newest job is there, and a second create of it returns the existing entry.
//! let created_again = store.get_or_insert("job-3".to_string(), EntryHandle::new("new"));
//! assert!(matches!(created_again, GetOrInsert::Existing(e) if e.load() == "running"));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod stamps;
mod store;

pub use store::PapayaStore;
