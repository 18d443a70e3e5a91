//! Change notifications: per-item watch channels and the broadcast of every update.
//!
//! Nothing here costs anything while nobody listens: the workers read one atomic counter
//! (watchers) per applied update and, once per batch that applies an update, one flag that
//! says whether `updates()` was ever called (only then is the broadcast channel asked for its
//! receiver count, which takes its lock).

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use autorefresh_core::{EntryHandle, EntryState, EntryVersion};
use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

/// One watched entry: the sender its subscribers listen to.
struct Watch<V> {
    /// The entry watched: an id deleted and created again is a new entry, with a new watch.
    entry: EntryHandle<V>,
    sender: watch::Sender<V>,
    /// The version of the value last sent.
    version: EntryVersion,
}

pub(crate) struct Notifier<K, V> {
    /// How many watches `watches` holds: read (without the lock) on every applied update.
    watching: AtomicUsize,
    watches: Mutex<HashMap<K, Watch<V>>>,
    updates: broadcast::Sender<(K, V)>,
    /// Whether `updates()` was ever called: until then, nobody can receive the broadcast.
    updates_asked: AtomicBool,
}

impl<K, V> Notifier<K, V> {
    /// How many ids are watched (for `Debug`).
    pub(crate) fn watched(&self) -> usize {
        self.watching.load(Ordering::Relaxed)
    }
}

impl<K, V> Notifier<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub(crate) fn new(updates_capacity: usize) -> Self {
        Self {
            watching: AtomicUsize::new(0),
            watches: Mutex::new(HashMap::default()),
            updates: broadcast::channel(updates_capacity).0,
            updates_asked: AtomicBool::new(false),
        }
    }

    /// Whether any id is watched. Called after an entry changed: a subscriber that registered
    /// before the change is seen here (it registers, then reads the entry under its lock).
    pub(crate) fn watching(&self) -> bool {
        self.watching.load(Ordering::SeqCst) > 0
    }

    /// A receiver of `entry`'s value, or `None` if the entry was removed meanwhile.
    pub(crate) fn subscribe(&self, id: &K, entry: EntryHandle<V>) -> Option<watch::Receiver<V>> {
        {
            let watches = self.watches.lock();
            if let Some(watch) = watches.get(id) {
                if watch.entry.same_entry(&entry) {
                    return Some(watch.sender.subscribe());
                }
            }
        }
        // The item and the id are cloned (user code) outside the lock. The watch is counted
        // before the entry is read, so an update applied after this read sees it (see
        // `watching`) or is caught up on below.
        self.watching.fetch_add(1, Ordering::SeqCst);
        let snapshot = entry.snapshot();
        if snapshot.state == EntryState::Removed {
            self.watching.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let key = id.clone();
        let (sender, receiver) = watch::channel(snapshot.item);
        let watch = Watch { entry: entry.clone(), sender, version: snapshot.version };
        let mut watches = self.watches.lock();
        if let Some(existing) = watches.get(id).filter(|watch| watch.entry.same_entry(&entry)) {
            // Another subscriber registered this entry meanwhile: join it.
            let receiver = existing.sender.subscribe();
            drop(watches);
            self.watching.fetch_sub(1, Ordering::SeqCst);
            return Some(receiver);
        }
        // A watch of an older entry under this id (removed meanwhile) is dropped: closed.
        if watches.insert(key, watch).is_some() {
            self.watching.fetch_sub(1, Ordering::SeqCst);
        }
        drop(watches);
        // An update applied between the read above and the registration found no watch.
        self.changed(id, &entry);
        Some(receiver)
    }

    /// `entry` changed: sends its current value to its subscribers, or drops its watch if
    /// they are all gone. Call only when [`watching`](Self::watching).
    pub(crate) fn changed(&self, id: &K, entry: &EntryHandle<V>) {
        {
            let mut watches = self.watches.lock();
            let Some(watch) = watches.get_mut(id) else { return };
            if !watch.entry.same_entry(entry) {
                return;
            }
            if watch.sender.receiver_count() == 0 {
                watches.remove(id);
                self.watching.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
        // The current value, not the one this caller stored, cloned outside the lock; of two
        // racing changes, the later version is what subscribers keep.
        let (item, version) = entry.load_versioned();
        let mut watches = self.watches.lock();
        let Some(watch) = watches.get_mut(id).filter(|watch| watch.entry.same_entry(entry)) else {
            return;
        };
        if version > watch.version {
            watch.version = version;
            watch.sender.send_replace(item);
        }
    }

    /// `entry` left the store: its subscribers see the channel closed.
    pub(crate) fn removed(&self, id: &K, entry: &EntryHandle<V>) {
        if !self.watching() {
            return;
        }
        let mut watches = self.watches.lock();
        if watches.get(id).is_some_and(|watch| watch.entry.same_entry(entry)) {
            watches.remove(id);
            self.watching.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Drops the watch of `id` if no receiver is left (a waiter that is done).
    pub(crate) fn release(&self, id: &K) {
        let mut watches = self.watches.lock();
        if watches.get(id).is_some_and(|watch| watch.sender.receiver_count() == 0) {
            watches.remove(id);
            self.watching.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Drops every watch whose receivers are all gone. Call only when
    /// [`watching`](Self::watching).
    pub(crate) fn prune(&self) {
        let mut watches = self.watches.lock();
        let before = watches.len();
        watches.retain(|_, watch| watch.sender.receiver_count() > 0);
        self.watching.fetch_sub(before - watches.len(), Ordering::SeqCst);
    }

    /// Whether anyone receives the broadcast of updates.
    pub(crate) fn broadcasting(&self) -> bool {
        self.updates_asked.load(Ordering::Relaxed) && self.updates.receiver_count() > 0
    }

    /// Broadcasts an applied update; never waits (a slow receiver lags instead).
    pub(crate) fn broadcast(&self, id: K, item: V) {
        // An error only means the last receiver left meanwhile.
        let _ = self.updates.send((id, item));
    }

    pub(crate) fn updates(&self) -> broadcast::Receiver<(K, V)> {
        // A change applied while this call runs may or may not reach the new receiver, as
        // with any broadcast subscription.
        self.updates_asked.store(true, Ordering::Relaxed);
        self.updates.subscribe()
    }
}
