//! The shared cell a store keeps for each id.

use std::fmt;
use std::sync::{Arc, PoisonError};

// The work queue's model runs on loom's primitives (`--cfg autorefresh_loom`).
#[cfg(autorefresh_loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(autorefresh_loom)]
use loom::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(autorefresh_loom))]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(autorefresh_loom))]
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The version of an entry's value: bumped by every replacement.
///
/// A refresh applies its result only if the entry still has the version its batch was
/// dispatched with, so a caller's `update` (or a delete and re-create, which makes a new
/// entry) always wins over a refresh that started before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryVersion(u64);

/// Where an entry is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryState {
    /// In the store and refreshed.
    Live,
    /// `delete_delayed` was called: readable until the next sweep removes it, not refreshed.
    DeletePending,
    /// No longer in the store (deleted or evicted): nothing written to it is ever readable.
    Removed,
}

/// Where an entry is in the cache engine's work queue (see [`QueueState`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QueueSlot {
    /// Not queued: not due, nor in flight, nor waiting for a retry.
    #[default]
    Idle,
    /// Due: waiting in the queue for a worker.
    Queued,
    /// In a worker's batch in flight. `again` if it became due meanwhile: it is queued once
    /// more when that batch ends, unless it was `removed` from the store meanwhile.
    Running {
        /// Whether it became due while in flight.
        again: bool,
        /// Whether it left the store while in flight: it leaves the queue when its batch ends.
        removed: bool,
    },
    /// Waiting for a retry deadline. `ticket` names the engine's record of that deadline
    /// (below [`QueueState::TICKET_LIMIT`]).
    Delayed {
        /// The engine's name for the retry record.
        ticket: u64,
    },
}

/// The cache engine's queue bookkeeping for one entry, kept in the entry itself so that the
/// engine hands entries from the sweep to the workers without a map keyed by id.
///
/// It lives in one atomic word beside the entry's lock (as tokio keeps a task's state): read it
/// with [`EntryHandle::queue_state`] and change it with [`EntryHandle::update_queue_state`],
/// a compare-and-swap loop. Stores and readers never need it.
///
/// ```
/// use autorefresh_core::engine::{QueueSlot, QueueState};
/// use autorefresh_core::EntryHandle;
///
/// let entry = EntryHandle::new(1_u32);
/// assert_eq!(entry.queue_state(), QueueState::default()); // idle, no backoff
/// let claimed = entry.update_queue_state(|state| {
///     (state.slot == QueueSlot::Idle).then_some(QueueState { slot: QueueSlot::Queued, ..state })
/// });
/// assert!(claimed.is_ok(), "claimed once");
/// assert!(entry.update_queue_state(|s| (s.slot == QueueSlot::Idle).then_some(s)).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueueState {
    /// Where the entry is in the queue.
    pub slot: QueueSlot,
    /// Whether the rate limiter was asked for a backoff for this entry since it last forgot
    /// it (so a success has limiter state to drop).
    pub backed_off: bool,
}

impl QueueState {
    /// Tickets of [`QueueSlot::Delayed`] are kept modulo this (48 bits).
    pub const TICKET_LIMIT: u64 = 1 << 48;

    const TAG: u64 = 0b11;
    const QUEUED: u64 = 1;
    const RUNNING: u64 = 2;
    const DELAYED: u64 = 3;
    const AGAIN: u64 = 1 << 2;
    const BACKED_OFF: u64 = 1 << 3;
    const REMOVED: u64 = 1 << 4;
    const TICKET_SHIFT: u32 = 16;
    /// The bits of the word that are the queue state's; the rest are the entry's own.
    const MASK: u64 =
        Self::TAG | Self::AGAIN | Self::BACKED_OFF | Self::REMOVED | !0 << Self::TICKET_SHIFT;

    fn encode(self) -> u64 {
        let slot = match self.slot {
            QueueSlot::Idle => 0,
            QueueSlot::Queued => Self::QUEUED,
            QueueSlot::Running { again, removed } => {
                Self::RUNNING
                    | if again { Self::AGAIN } else { 0 }
                    | if removed { Self::REMOVED } else { 0 }
            }
            QueueSlot::Delayed { ticket } => {
                Self::DELAYED | (ticket % Self::TICKET_LIMIT) << Self::TICKET_SHIFT
            }
        };
        slot | if self.backed_off { Self::BACKED_OFF } else { 0 }
    }

    fn decode(word: u64) -> Self {
        let slot = match word & Self::TAG {
            0 => QueueSlot::Idle,
            Self::QUEUED => QueueSlot::Queued,
            Self::RUNNING => QueueSlot::Running {
                again: word & Self::AGAIN != 0,
                removed: word & Self::REMOVED != 0,
            },
            _ => QueueSlot::Delayed { ticket: word >> Self::TICKET_SHIFT },
        };
        Self { slot, backed_off: word & Self::BACKED_OFF != 0 }
    }
}

/// What the `Arc` of an [`EntryHandle`] holds.
struct Shared<V> {
    /// One word: the [`QueueState`] (its bits, [`QueueState::MASK`]), the [`EntryState`] and
    /// the unchanged streak. The last two change only under the write lock, so a reader
    /// holding the lock sees them stable; keeping them here rather than in the cell keeps the
    /// whole entry in the allocation size class it had before the queue state was added.
    word: AtomicU64,
    cell: RwLock<Cell<V>>,
}

/// Where the entry's [`EntryState`] and unchanged streak sit in its word.
const STATE_SHIFT: u32 = 5;
const STATE_BITS: u64 = 0b11 << STATE_SHIFT;
const STREAK_SHIFT: u32 = 8;
const STREAK_BITS: u64 = 0xff << STREAK_SHIFT;

fn state_of(word: u64) -> EntryState {
    match (word & STATE_BITS) >> STATE_SHIFT {
        0 => EntryState::Live,
        1 => EntryState::DeletePending,
        _ => EntryState::Removed,
    }
}

fn streak_of(word: u64) -> u8 {
    ((word & STREAK_BITS) >> STREAK_SHIFT) as u8
}

struct Cell<V> {
    item: V,
    version: u64,
    refreshed_at: u64,
}

/// What [`EntryHandle::snapshot`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntrySnapshot<V> {
    /// A clone of the value.
    pub item: V,
    /// Its version.
    pub version: EntryVersion,
    /// Where the entry is in its life.
    pub state: EntryState,
    /// When it was last refreshed (see [`EntryHandle::refreshed_at`]).
    pub refreshed_at: u64,
}

/// A handle to the value a store keeps for one id.
///
/// What a store needs of it is narrow: [`new`](Self::new) (tests and the cache create
/// entries), the reads ([`load`](Self::load), [`with`](Self::with), [`state`](Self::state)),
/// [`mark_removed`](Self::mark_removed) and [`same_entry`](Self::same_entry). The cache
/// engine keeps its own bookkeeping in the entry too (the `#[doc(hidden)]` methods): that is
/// not a public API.
///
/// Stores map each id to an `EntryHandle`; the cache reads and replaces the value through the
/// handle, so a background refresh never touches the store's recency order, and an entry
/// that left the store (marked [`EntryState::Removed`]) can never be brought back by a
/// refresh that was in flight. Cloning a handle is cheap (an `Arc`); clones share the value.
///
/// # Examples
///
/// ```
/// use autorefresh_core::{EntryHandle, EntryState};
///
/// let entry = EntryHandle::new(1_u32);
/// let (item, version) = entry.load_versioned();
/// assert_eq!(item, 1);
///
/// assert!(entry.replace(2));                        // a caller's update bumps the version
/// assert!(!entry.replace_if_version(version, 3));   // so a refresh from before it is dropped
/// assert_eq!(entry.load(), 2);
///
/// entry.mark_removed();
/// assert_eq!(entry.state(), EntryState::Removed);
/// assert!(!entry.replace(4));
/// ```
pub struct EntryHandle<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Clone for EntryHandle<V> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<V> fmt::Debug for EntryHandle<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = self.read();
        f.debug_struct("EntryHandle")
            .field("version", &cell.version)
            .field("state", &self.life())
            .field("queue", &self.queue_state())
            .finish_non_exhaustive()
    }
}

impl<V> EntryHandle<V> {
    /// A new live entry holding `item`.
    pub fn new(item: V) -> Self {
        let cell = Cell { item, version: 0, refreshed_at: 0 };
        Self { shared: Arc::new(Shared { word: AtomicU64::new(0), cell: RwLock::new(cell) }) }
    }

    /// The entry's state, from its word.
    fn life(&self) -> EntryState {
        state_of(self.shared.word.load(Ordering::Acquire))
    }

    /// The unchanged streak, from the entry's word.
    fn streak(&self) -> u8 {
        streak_of(self.shared.word.load(Ordering::Acquire))
    }

    /// Replaces the `bits` of the entry's own part of its word with `value`, leaving the
    /// queue state as it is. Called only under the write lock.
    fn set_bits(&self, bits: u64, value: u64) {
        let word = &self.shared.word;
        if word.load(Ordering::Relaxed) & bits == value {
            return;
        }
        let _ = word.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| Some(w & !bits | value));
    }

    fn set_life(&self, state: EntryState) {
        let value = match state {
            EntryState::Live => 0,
            EntryState::DeletePending => 1,
            EntryState::Removed => 2,
        };
        self.set_bits(STATE_BITS, value << STATE_SHIFT);
    }

    fn set_streak(&self, streak: u8) {
        self.set_bits(STREAK_BITS, u64::from(streak) << STREAK_SHIFT);
    }

    fn read(&self) -> RwLockReadGuard<'_, Cell<V>> {
        self.shared.cell.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cell<V>> {
        self.shared.cell.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry's [`QueueState`]: engine bookkeeping, read without the entry's lock.
    #[doc(hidden)]
    pub fn queue_state(&self) -> QueueState {
        QueueState::decode(self.shared.word.load(Ordering::Acquire))
    }

    /// Changes the entry's [`QueueState`] atomically: calls `f` with the current state until
    /// it either declines (`None`: returns `Err` with the state it saw) or its answer is stored
    /// before anyone else changed the state (returns `Ok` with the state it replaced). `f` may
    /// run more than once, and must not call back into this entry's queue state.
    #[doc(hidden)]
    pub fn update_queue_state(
        &self,
        mut f: impl FnMut(QueueState) -> Option<QueueState>,
    ) -> Result<QueueState, QueueState> {
        self.shared
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                f(QueueState::decode(word)).map(|state| word & !QueueState::MASK | state.encode())
            })
            .map(QueueState::decode)
            .map_err(QueueState::decode)
    }

    /// Runs `f` on the current value without cloning it. `f` must not call back into this
    /// entry (the entry is read-locked while it runs).
    pub fn with<R>(&self, f: impl FnOnce(&V) -> R) -> R {
        f(&self.read().item)
    }

    /// Runs `f` on the current value, its state and its refresh time, read at once without
    /// cloning the value. `f` must not call back into this entry.
    #[doc(hidden)]
    pub fn inspect<R>(&self, f: impl FnOnce(&V, EntryState, u64) -> R) -> R {
        let cell = self.read();
        f(&cell.item, self.life(), cell.refreshed_at)
    }

    /// As [`inspect`](Self::inspect), also passing the entry's unchanged streak (see
    /// [`unchanged_streak`](Self::unchanged_streak)), all read under one lock. `f` must not
    /// call back into this entry.
    ///
    /// ```
    /// use autorefresh_core::{EntryHandle, EntryState};
    ///
    /// let entry = EntryHandle::new("queued");
    /// let version = entry.snapshot().version;
    /// entry.apply_refresh(version, None, 5);
    /// let seen = entry.inspect_streak(|item, state, refreshed_at, streak| {
    ///     (item.len(), state, refreshed_at, streak)
    /// });
    /// assert_eq!(seen, (6, EntryState::Live, 5, 1));
    /// ```
    #[doc(hidden)]
    pub fn inspect_streak<R>(&self, f: impl FnOnce(&V, EntryState, u64, u8) -> R) -> R {
        let cell = self.read();
        let word = self.shared.word.load(Ordering::Acquire);
        f(&cell.item, state_of(word), cell.refreshed_at, streak_of(word))
    }

    /// How many refreshes in a row left the value unchanged (saturating at `u8::MAX`): engine
    /// bookkeeping for adaptive refresh. [`apply_refresh`](Self::apply_refresh) without an
    /// item adds one, with an item resets it, and so does any replacement (a caller's
    /// update, [`replace_if_version`](Self::replace_if_version)); 0 for a new entry.
    ///
    /// ```
    /// use autorefresh_core::EntryHandle;
    ///
    /// let entry = EntryHandle::new(1_u32);
    /// for tick in 1..=3 {
    ///     entry.apply_refresh(entry.snapshot().version, None, tick);
    /// }
    /// assert_eq!(entry.unchanged_streak(), 3);
    /// entry.replace(2); // a caller's update resets it
    /// assert_eq!(entry.unchanged_streak(), 0);
    /// entry.apply_refresh(entry.snapshot().version, None, 4);
    /// entry.apply_refresh(entry.snapshot().version, Some(3), 5); // so does a changed value
    /// assert_eq!(entry.unchanged_streak(), 0);
    /// ```
    #[doc(hidden)]
    pub fn unchanged_streak(&self) -> u8 {
        self.streak()
    }

    /// Where the entry is in its life (read without the entry's lock).
    pub fn state(&self) -> EntryState {
        self.life()
    }

    /// Replaces the value (a caller's update) unless the entry was removed; bumps the version.
    pub fn replace(&self, item: V) -> bool {
        let mut cell = self.write();
        if self.life() == EntryState::Removed {
            return false;
        }
        cell.item = item;
        cell.version += 1;
        self.set_streak(0);
        true
    }

    /// Replaces the value only if the entry is live (neither removed nor pending a delayed
    /// delete, whose item stays as it was) and still has `version` (a refresh's result);
    /// bumps the version.
    pub fn replace_if_version(&self, version: EntryVersion, item: V) -> bool {
        let mut cell = self.write();
        if self.life() != EntryState::Live || cell.version != version.0 {
            return false;
        }
        cell.item = item;
        cell.version += 1;
        self.set_streak(0);
        true
    }

    /// Records a successful refresh of the entry as it was at `version`, at `ticks`: stores
    /// `item` if given (bumping the version) and the refresh time, only if the entry is still
    /// live at that version (see [`replace_if_version`](Self::replace_if_version)). Returns
    /// whether it did. It also keeps the [`unchanged_streak`](Self::unchanged_streak): one
    /// more without an item, reset to 0 with one.
    #[doc(hidden)]
    pub fn apply_refresh(&self, version: EntryVersion, item: Option<V>, ticks: u64) -> bool {
        let mut cell = self.write();
        if self.life() != EntryState::Live || cell.version != version.0 {
            return false;
        }
        if let Some(item) = item {
            cell.item = item;
            cell.version += 1;
            self.set_streak(0);
        } else {
            self.set_streak(self.streak().saturating_add(1));
        }
        cell.refreshed_at = cell.refreshed_at.max(ticks);
        true
    }

    /// Marks a live entry pending a delayed delete; returns whether it was live (`false` if it
    /// was already pending or removed).
    #[doc(hidden)]
    pub fn mark_delete_pending(&self) -> bool {
        let _cell = self.write();
        if self.life() != EntryState::Live {
            return false;
        }
        self.set_life(EntryState::DeletePending);
        true
    }

    /// Marks the entry removed only if it is live at `version` (a refresh reporting the remote
    /// object gone): checked and marked at once, so a caller's update in between wins. The
    /// caller then removes it from its store. Returns whether it did.
    ///
    /// ```
    /// use autorefresh_core::{EntryHandle, EntryState};
    ///
    /// let entry = EntryHandle::new("running");
    /// let dispatched = entry.snapshot().version;
    /// entry.replace("cancelled by the caller");
    /// assert!(!entry.mark_removed_if_version(dispatched)); // the caller's update wins
    /// assert!(entry.mark_removed_if_version(entry.snapshot().version));
    /// assert_eq!(entry.state(), EntryState::Removed);
    /// ```
    #[doc(hidden)]
    pub fn mark_removed_if_version(&self, version: EntryVersion) -> bool {
        let cell = self.write();
        if self.life() != EntryState::Live || cell.version != version.0 {
            return false;
        }
        self.set_life(EntryState::Removed);
        true
    }

    /// Marks the entry removed from its store. Stores call this for every entry they drop.
    pub fn mark_removed(&self) {
        let _cell = self.write();
        self.set_life(EntryState::Removed);
    }

    /// When the entry was last refreshed (or created), in ticks of the caller's clock (the
    /// cache counts nanoseconds since it was built); 0 until set.
    #[doc(hidden)]
    pub fn refreshed_at(&self) -> u64 {
        self.read().refreshed_at
    }

    /// Records a refresh (or the creation) at `ticks`; an earlier time than the one recorded
    /// is ignored.
    #[doc(hidden)]
    pub fn set_refreshed_at(&self, ticks: u64) {
        let mut cell = self.write();
        cell.refreshed_at = cell.refreshed_at.max(ticks);
    }

    /// Reads the entry's state word and discards it: a hint, with no effect on the entry. A
    /// store visiting many entries (see [`Store::for_each_entry`](crate::Store::for_each_entry))
    /// calls it on a few entries ahead of the one it visits, so that their cache misses overlap
    /// instead of each waiting for the one before.
    pub fn prefetch(&self) {
        std::hint::black_box(self.shared.word.load(Ordering::Relaxed));
    }

    /// Whether both handles refer to the same entry (not merely equal values).
    pub fn same_entry(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<V: Clone> EntryHandle<V> {
    /// A clone of the current value.
    pub fn load(&self) -> V {
        self.with(V::clone)
    }

    /// A clone of the current value, with its version.
    pub fn load_versioned(&self) -> (V, EntryVersion) {
        let cell = self.read();
        (cell.item.clone(), EntryVersion(cell.version))
    }

    /// The value, its version, the entry's state and its refresh time, read at once.
    #[doc(hidden)]
    pub fn snapshot(&self) -> EntrySnapshot<V> {
        let cell = self.read();
        EntrySnapshot {
            item: cell.item.clone(),
            version: EntryVersion(cell.version),
            state: self.life(),
            refreshed_at: cell.refreshed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_state_survives_its_encoding() {
        let slots = [
            QueueSlot::Idle,
            QueueSlot::Queued,
            QueueSlot::Running { again: false, removed: false },
            QueueSlot::Running { again: true, removed: false },
            QueueSlot::Running { again: false, removed: true },
            QueueSlot::Running { again: true, removed: true },
            QueueSlot::Delayed { ticket: 0 },
            QueueSlot::Delayed { ticket: QueueState::TICKET_LIMIT - 1 },
        ];
        let entry = EntryHandle::new(());
        entry.apply_refresh(entry.snapshot().version, None, 1);
        entry.mark_delete_pending();
        for slot in slots {
            for backed_off in [false, true] {
                let state = QueueState { slot, backed_off };
                assert_eq!(QueueState::decode(state.encode()), state);
                // The entry's own bits are kept as they are.
                let _ = entry.update_queue_state(|_| Some(state));
                assert_eq!(entry.queue_state(), state);
                assert_eq!(entry.state(), EntryState::DeletePending);
                assert_eq!(entry.unchanged_streak(), 1);
            }
        }
        let wrapped = QueueState {
            slot: QueueSlot::Delayed { ticket: QueueState::TICKET_LIMIT + 5 },
            backed_off: false,
        };
        assert_eq!(QueueState::decode(wrapped.encode()).slot, QueueSlot::Delayed { ticket: 5 });
    }

    #[test]
    fn a_declined_update_leaves_the_queue_state() {
        let entry = EntryHandle::new(());
        let seen = entry.update_queue_state(|_| None);
        assert_eq!(seen, Err(QueueState::default()));
        let running = QueueState {
            slot: QueueSlot::Running { again: false, removed: false },
            backed_off: true,
        };
        assert_eq!(entry.update_queue_state(|_| Some(running)), Ok(QueueState::default()));
        assert_eq!(entry.queue_state(), running);
        assert!(format!("{entry:?}").contains("Running"));
    }
}
