//! A bounded [`Store`](autorefresh_core::Store) for the autorefresh cache, on
//! [moka](https://docs.rs/moka).
//!
//! [`MokaStore`] keeps the cache's items in a [`moka::sync::Cache`] with moka's LRU eviction
//! policy, and adds what the cache needs on top of moka:
//!
//! - an item just created is never the one evicted (moka's default TinyLFU admission could
//!   reject it; the LRU policy never does);
//! - the capacity holds once an insert returns (moka evicts lazily; inserts run its pending
//!   maintenance before they return), but while an insert runs its new entry and its victim
//!   are both readable: other threads can see one entry over the capacity (moka inserts
//!   before it evicts, and does not tell which entry it will evict);
//! - only callers' reads count as use, never the background refresh walking the entries;
//! - every entry the store drops is marked removed, and every eviction is counted and
//!   reported, exactly once, to the eviction listener.
//!
//! Most users get it through the `autorefresh` facade, whose default store it is. Used
//! alone, it needs `autorefresh-core` for the [`Store`](autorefresh_core::Store) trait:
//!
//! ```toml
//! [dependencies]
//! autorefresh-core = "0.1"
//! autorefresh-moka = "0.1"
//! ```
//!
//! # Examples
//!
//! ```
//! use autorefresh_core::{EntryHandle, EntryState, GetOrInsert, Store};
//! use autorefresh_moka::MokaStore;
//!
//! # fn main() -> Result<(), autorefresh_core::Error> {
//! let store: MokaStore<String, &str> = MokaStore::new(2)?;
//!
//! let job1 = EntryHandle::new("queued");
//! store.get_or_insert("job-1".to_string(), job1.clone());
//! store.get_or_insert("job-2".to_string(), EntryHandle::new("queued"));
//! store.get_or_insert("job-3".to_string(), EntryHandle::new("running"));
//!
//! // The capacity is 2: the least recently used job was evicted, and marked removed, so a
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

mod store;

pub use store::MokaStore;
