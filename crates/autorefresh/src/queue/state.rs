//! The queue's state machine: how one entry's [`QueueState`] changes, in one function.
//!
//! Every change the queue makes to an entry's state word goes through [`transition`], inside
//! the entry's compare-and-swap loop ([`step`]). The caller reads what to do from the slot
//! before and after: an entry that became `Queued` must be placed (in the pool or a batch),
//! one that left `Delayed` has its retry record dropped, one that became `Delayed` gets one.
//!
//! ```text
//!            Claim                     Start                 Finish(Done)
//!   Idle ───────────────▶ Queued ─────────────▶ Running ─────────────────▶ Idle
//!    ▲  ◀── Remove, Leave,  │ ▲                 │  │ Claim: again         (Queued if again)
//!    │      Abandon, Close  │ │ Promote         │  │ Remove: removed      (Idle if removed)
//!    │                      │ │                 │  │ Finish(RetryNow) ──▶ Queued
//!    │         Delay        ▼ │                 │  └ Finish(RetryLater) ─▶ Delayed
//!    └── Remove, Close ── Delayed ◀─────────────┘   (Queued if again; Idle if removed)
//!                  Claim (locked) ──▶ Queued
//! ```
//!
//! Invariants the rest of the queue relies on (each checked by `debug_assert!` in [`step`] or by
//! the loom model in `queue::model`):
//! - An entry is `Queued` only while exactly one place holds it to hand it on: the pool, a
//!   batch, the batcher's or a sweep's hands, or the parked list of an id in flight. Whoever
//!   holds a `Queued` entry must either place it, start it, or let it go (`Leave`, `Abandon`):
//!   dropping it silently would strand it, as nothing claims a `Queued` entry again.
//! - An entry is `Running` only while one worker holds it, and only after that worker
//!   reserved its id (see `WorkQueue::pop_batch`): so one id is never in two
//!   sync calls at once, whichever entries carry it.
//! - An entry is `Delayed { ticket }` exactly while the queue's retry record `ticket` holds it,
//!   so every change into or out of `Delayed` is made under the queue's lock (`locked`).

use autorefresh_core::engine::{QueueSlot, QueueState};
use autorefresh_core::EntryHandle;

/// Something that happens to an entry, as the queue sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A sweep or a create makes it due. `locked`: the caller holds the queue's lock, so a
    /// delayed entry's record can be dropped with the change.
    Claim { locked: bool },
    /// A worker takes it for a sync call (its id registered as in flight).
    Start,
    /// It left the store. `locked` as for `Claim`.
    Remove { locked: bool },
    /// Its sync attempt ended.
    Finish(Ended),
    /// Whoever held it due lets it go and no retry is owed (the batcher left it out): idle,
    /// its limiter state forgotten; the next sweep claims it again.
    Leave,
    /// Whoever held it due lets it go because it panicked: idle and marked backed off, as
    /// the panicking code may have asked the limiter about it (its next success or its
    /// removal forgets it); the next sweep claims it again.
    Abandon,
    /// The batcher failed on it: retried after its backoff, under retry record `ticket`.
    Delay { ticket: u64 },
    /// Its retry record `ticket` came due.
    Promote { ticket: u64 },
    /// The queue shut down: nothing is queued or delayed any more. Under the lock.
    Close,
}

/// How an attempt ended, for [`Event::Finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Synced, or needed no sync (removed, terminal, pending delete).
    Done,
    /// Failed, to be retried at once (no backoff).
    RetryNow,
    /// Failed, to be retried after a backoff, under retry record `ticket`: `None` if the
    /// caller does not hold the queue's lock (a delay then needs a second, locked, try).
    RetryLater { ticket: Option<u64> },
    /// Given up by a worker that panicked outside the sync call, or was cancelled: marked
    /// backed off, as the limiter may have been asked about it before the panic (its next
    /// success or its removal forgets it).
    Abandoned,
}

impl Ended {
    fn retried(self) -> bool {
        matches!(self, Ended::RetryNow | Ended::RetryLater { .. })
    }
}

/// What a transition leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// The entry's new state.
    pub(crate) next: QueueState,
    /// Whether the limiter holds state for the entry that nothing else will drop: the caller
    /// must `forget` its id (once it no longer holds anything of the queue's).
    pub(crate) forget: bool,
}

/// The queue's state machine: the state `event` moves an entry in `state` to, or `None` if the
/// event does not apply there (the entry is not where the caller thought, or, without the
/// lock, a change into or out of `Delayed` is needed).
#[inline]
pub(crate) fn transition(state: QueueState, event: Event) -> Option<Step> {
    use QueueSlot::{Delayed, Idle, Queued, Running};
    let QueueState { slot, backed_off } = state;
    let running = Running { again: false, removed: false };
    let (slot, backed_off, forget) = match (event, slot) {
        (Event::Claim { .. }, Idle) | (Event::Claim { locked: true }, Delayed { .. }) => {
            (Queued, backed_off, false)
        }
        // In flight: it runs once more when that call ends.
        (Event::Claim { .. }, Running { again: false, removed: false }) => {
            (Running { again: true, removed: false }, backed_off, false)
        }
        (Event::Start, Queued) => (running, backed_off, false),
        (Event::Remove { .. }, Queued) | (Event::Remove { locked: true }, Delayed { .. }) => {
            (Idle, backed_off, false)
        }
        // In flight: it leaves the queue when its call ends.
        (Event::Remove { .. }, Running { removed: false, .. }) => {
            (Running { again: false, removed: true }, backed_off, false)
        }
        // Removed while in flight: the removal forgot its limiter state, but a retry asked
        // the limiter again since.
        (Event::Finish(ended), Running { removed: true, .. }) => (Idle, false, ended.retried()),
        // The caller forgot the limiter state of a success before it finished.
        (Event::Finish(Ended::Done), Running { again, .. }) => {
            (if again { Queued } else { Idle }, false, false)
        }
        (Event::Finish(Ended::Abandoned), Running { again, .. }) => {
            (if again { Queued } else { Idle }, true, false)
        }
        (Event::Finish(Ended::RetryNow), Running { .. })
        | (Event::Finish(Ended::RetryLater { .. }), Running { again: true, .. }) => {
            (Queued, true, false)
        }
        (Event::Finish(Ended::RetryLater { ticket: Some(ticket) }), Running { .. }) => {
            (Delayed { ticket }, true, false)
        }
        (Event::Leave, Queued) | (Event::Close, Queued | Delayed { .. }) => {
            (Idle, false, backed_off)
        }
        (Event::Abandon, Queued) => (Idle, true, false),
        (Event::Delay { ticket }, Queued) => (Delayed { ticket }, true, false),
        (Event::Promote { ticket }, Delayed { ticket: held }) if held == ticket => {
            (Queued, backed_off, false)
        }
        _ => return None,
    };
    Some(Step { next: QueueState { slot, backed_off }, forget })
}

/// What [`step`] did: the state it replaced and the transition it made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stepped {
    pub(crate) previous: QueueState,
    pub(crate) step: Step,
}

impl Stepped {
    /// Whether the entry just became `Queued`: its holder must place it.
    pub(crate) fn enqueued(&self) -> bool {
        self.step.next.slot == QueueSlot::Queued && self.previous.slot != QueueSlot::Queued
    }

    /// The retry record the entry just left, to be dropped by the caller (under the lock).
    pub(crate) fn left_record(&self) -> Option<u64> {
        match (self.previous.slot, self.step.next.slot) {
            (QueueSlot::Delayed { ticket }, next) if next != self.previous.slot => Some(ticket),
            _ => None,
        }
    }
}

/// Applies `event` to `entry` atomically: `Ok` with what changed, or `Err` with the state in
/// which the event did not apply.
#[inline]
pub(crate) fn step<V>(entry: &EntryHandle<V>, event: Event) -> Result<Stepped, QueueState> {
    let mut taken = None;
    let previous = entry.update_queue_state(|state| {
        let step = transition(state, event)?;
        taken = Some(step);
        Some(step.next)
    })?;
    // The closure's last run is the one whose answer was stored.
    debug_assert!(taken.is_some_and(|step| transition(previous, event) == Some(step)));
    let step = taken.unwrap_or(Step { next: previous, forget: false });
    debug_assert!(
        !matches!(step.next.slot, QueueSlot::Delayed { .. })
            || matches!(
                event,
                Event::Delay { .. } | Event::Finish(Ended::RetryLater { ticket: Some(_) })
            ),
        "only a locked delay makes an entry Delayed"
    );
    Ok(Stepped { previous, step })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOTS: [QueueSlot; 7] = [
        QueueSlot::Idle,
        QueueSlot::Queued,
        QueueSlot::Running { again: false, removed: false },
        QueueSlot::Running { again: true, removed: false },
        QueueSlot::Running { again: false, removed: true },
        QueueSlot::Delayed { ticket: 7 },
        QueueSlot::Delayed { ticket: 8 },
    ];

    fn events() -> Vec<Event> {
        let mut events = vec![Event::Start, Event::Leave, Event::Abandon, Event::Close];
        for locked in [false, true] {
            events.push(Event::Claim { locked });
            events.push(Event::Remove { locked });
        }
        for ended in [
            Ended::Done,
            Ended::RetryNow,
            Ended::RetryLater { ticket: None },
            Ended::RetryLater { ticket: Some(9) },
            Ended::Abandoned,
        ] {
            events.push(Event::Finish(ended));
        }
        events.extend([Event::Delay { ticket: 9 }, Event::Promote { ticket: 7 }]);
        events
    }

    #[test]
    fn every_change_into_or_out_of_delayed_is_locked() {
        for slot in SLOTS {
            for backed_off in [false, true] {
                for event in events() {
                    let Some(step) = transition(QueueState { slot, backed_off }, event) else {
                        continue;
                    };
                    let delayed = |s: QueueSlot| matches!(s, QueueSlot::Delayed { .. });
                    if delayed(slot) != delayed(step.next.slot) {
                        let locked = matches!(
                            event,
                            Event::Claim { locked: true }
                                | Event::Remove { locked: true }
                                | Event::Delay { .. }
                                | Event::Promote { .. }
                                | Event::Close
                                | Event::Finish(Ended::RetryLater { ticket: Some(_) })
                        );
                        assert!(locked, "{event:?} moved {slot:?} to {:?} unlocked", step.next);
                    }
                }
            }
        }
    }

    #[test]
    fn only_a_worker_starts_an_entry_and_only_a_queued_one() {
        for slot in SLOTS {
            for event in events() {
                let Some(step) = transition(QueueState { slot, backed_off: false }, event) else {
                    continue;
                };
                let is_running = |s: QueueSlot| matches!(s, QueueSlot::Running { .. });
                if !is_running(slot) && is_running(step.next.slot) {
                    assert_eq!((event, slot), (Event::Start, QueueSlot::Queued));
                }
            }
        }
    }

    #[test]
    fn a_removed_entry_in_flight_is_never_queued_again() {
        let removed = QueueState {
            slot: QueueSlot::Running { again: false, removed: true },
            backed_off: true,
        };
        assert_eq!(transition(removed, Event::Claim { locked: true }), None);
        for ended in [Ended::Done, Ended::RetryNow, Ended::RetryLater { ticket: Some(1) }] {
            let step = transition(removed, Event::Finish(ended)).unwrap();
            assert_eq!(step.next, QueueState::default());
            assert_eq!(step.forget, ended != Ended::Done, "a retry asked the limiter again");
        }
    }

    #[test]
    fn a_success_clears_the_backoff_a_panic_keeps_it() {
        let running = QueueState {
            slot: QueueSlot::Running { again: false, removed: false },
            backed_off: true,
        };
        let done = transition(running, Event::Finish(Ended::Done)).unwrap();
        assert!(!done.forget, "the worker forgot it before finishing");
        assert!(!done.next.backed_off);
        let abandoned = transition(running, Event::Finish(Ended::Abandoned)).unwrap();
        assert_eq!(abandoned.next, QueueState { slot: QueueSlot::Idle, backed_off: true });
        let queued = QueueState { slot: QueueSlot::Queued, backed_off: true };
        let abandoned = transition(queued, Event::Abandon).unwrap();
        assert!(!abandoned.forget);
        assert!(abandoned.next.backed_off, "kept for its next success or removal");
        let left = transition(queued, Event::Leave).unwrap();
        assert!(left.forget && !left.next.backed_off, "left out: forgotten");
    }
}
