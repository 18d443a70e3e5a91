//! The outbox: this replica's changes waiting to be written to Redis, at most one pending
//! write per id (later changes merge into it), and at most one in flight.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// What a write asks of the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Create if absent (`get_or_create`): one winner cluster-wide.
    Create,
    /// Write back an item after Redis lost its data: create if absent and not deleted since.
    Reseed,
    /// A change this replica made while Redis lost its data: write unless deleted since
    /// (it is newer than the copies other replicas write back).
    Restore,
    /// A caller's update: only if the id still exists.
    Update,
    /// A refresh: only if the version is still the base (`None`: the version this replica
    /// knows when it is sent, after the write before it).
    Refresh(Option<u64>),
    /// Unconditional: the id was deleted and created again here.
    Put,
    /// Remove.
    Delete,
}

impl Kind {
    /// The script's letter for it.
    pub(super) fn letter(self) -> &'static str {
        match self {
            Self::Create => "c",
            Self::Reseed => "s",
            Self::Restore => "o",
            Self::Update => "u",
            Self::Refresh(_) => "r",
            Self::Put => "p",
            Self::Delete => "d",
        }
    }
}

/// One write: the id and item already encoded, so the writer never fails on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Op {
    pub(super) kind: Kind,
    pub(super) id: Vec<u8>,
    pub(super) shard: u16,
    pub(super) item: Vec<u8>,
}

impl Op {
    /// `newer` happened after `self` to the same id: the one write that has the effect of
    /// both.
    pub(super) fn merge(self, newer: Op) -> Op {
        use Kind::*;
        let kind = match (self.kind, newer.kind) {
            (_, Delete) => Delete,
            // A late update of an id deleted here changes nothing.
            (Delete, Update | Refresh(_) | Reseed | Restore) => return self,
            (Delete, Create | Put) | (Put, _) | (_, Put) => Put,
            // Refreshes keep the oldest base: the chain of items derives from it.
            (Refresh(base), Refresh(_)) => Refresh(base),
            (Create, _) | (_, Create) => Create,
            // A caller's change made here across the data loss outranks the copies written
            // back.
            (Restore, _) | (_, Restore) | (Reseed, Update) | (Update, Reseed) => Restore,
            // A refresh's result is not the caller's: after a data loss it is only written
            // back where absent (another replica's caller update wins; the next sync
            // brings the external state again).
            (Reseed, Refresh(_) | Reseed) | (Refresh(_), Reseed) => Reseed,
            (Update | Refresh(_), Update | Refresh(_)) => Update,
        };
        Op { kind, ..newer }
    }

    /// After Redis lost its data, a caller's update becomes a restore (it outranks the
    /// copies other replicas write back), and a refresh a write-back (it does not: a
    /// refresh made from a copy older than another replica's update must not undo it).
    pub(super) fn reseeded(self) -> Op {
        match self.kind {
            Kind::Update => Op { kind: Kind::Restore, ..self },
            Kind::Refresh(_) => Op { kind: Kind::Reseed, ..self },
            _ => self,
        }
    }
}

/// The newest change another replica made to an id while this one had a write for it
/// pending: applied if it is still the newest once the write is settled.
#[derive(Debug)]
pub(super) struct Newer<V> {
    pub(super) version: u64,
    /// `None`: a delete.
    pub(super) item: Option<V>,
}

#[derive(Debug)]
pub(super) struct Entry<V> {
    pub(super) pending: Option<Op>,
    pub(super) inflight: bool,
    queued: bool,
    pub(super) newer: Option<Newer<V>>,
}

/// The pending writes by id, and the order they are sent in.
#[derive(Debug)]
pub(super) struct Outbox<K, V> {
    entries: HashMap<K, Entry<V>, foldhash::fast::RandomState>,
    ready: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V> Default for Outbox<K, V> {
    fn default() -> Self {
        Self { entries: HashMap::default(), ready: VecDeque::new() }
    }
}

impl<K: Hash + Eq + Clone, V> Outbox<K, V> {
    /// Whether a write for `id` is pending or in flight.
    pub(super) fn contains(&self, id: &K) -> bool {
        self.entries.contains_key(id)
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn entry_mut(&mut self, id: &K) -> Option<&mut Entry<V>> {
        self.entries.get_mut(id)
    }

    /// Queues `op`, merged into the write pending for `id` if there is one.
    pub(super) fn push(&mut self, id: K, op: Op) {
        match self.entries.get_mut(&id) {
            Some(entry) => {
                entry.pending = Some(match entry.pending.take() {
                    Some(older) => older.merge(op),
                    None => op,
                });
                if !entry.inflight && !entry.queued {
                    entry.queued = true;
                    self.ready.push_back(id);
                }
            }
            None => {
                let entry = Entry { pending: Some(op), inflight: false, queued: true, newer: None };
                self.entries.insert(id.clone(), entry);
                self.ready.push_back(id);
            }
        }
    }

    /// Takes up to `max` pending writes, in the order they became ready, and marks them in
    /// flight (no other write of theirs is taken until they are settled).
    pub(super) fn take(&mut self, max: usize) -> Vec<(K, Op)> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(id) = self.ready.pop_front() else { break };
            let Some(entry) = self.entries.get_mut(&id) else { continue };
            entry.queued = false;
            if entry.inflight {
                continue;
            }
            if let Some(op) = entry.pending.take() {
                entry.inflight = true;
                taken.push((id, op));
            }
        }
        taken
    }

    /// The write in flight for `id` is done: the next one is queued, or the entry goes.
    pub(super) fn settle(&mut self, id: &K) {
        let Some(entry) = self.entries.get_mut(id) else { return };
        entry.inflight = false;
        if entry.pending.is_some() {
            if !entry.queued {
                entry.queued = true;
                self.ready.push_back(id.clone());
            }
        } else {
            self.entries.remove(id);
        }
    }

    /// The write in flight for `id` was not applied: it goes back, before anything pending
    /// for the id since.
    pub(super) fn requeue(&mut self, id: K, op: Op) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.inflight = false;
        entry.pending = Some(match entry.pending.take() {
            Some(newer) => op.merge(newer),
            None => op,
        });
        if !entry.queued {
            entry.queued = true;
            self.ready.push_front(id);
        }
    }

    /// Redis lost its data: every pending write that needs the id to exist becomes a
    /// write-back.
    pub(super) fn reseed(&mut self) {
        for entry in self.entries.values_mut() {
            if let Some(op) = entry.pending.take() {
                entry.pending = Some(op.reseeded());
            }
            entry.newer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, item: &str) -> Op {
        Op { kind, id: b"id".to_vec(), shard: 0, item: item.as_bytes().to_vec() }
    }

    fn merged(older: Kind, newer: Kind) -> Op {
        op(older, "old").merge(op(newer, "new"))
    }

    #[test]
    fn merges_keep_the_effect_of_both() {
        use Kind::*;
        assert_eq!(merged(Create, Update), op(Create, "new"));
        assert_eq!(merged(Create, Refresh(None)), op(Create, "new"));
        assert_eq!(merged(Update, Delete), op(Delete, "new"));
        assert_eq!(merged(Delete, Create), op(Put, "new"));
        assert_eq!(merged(Delete, Refresh(Some(1))), op(Delete, "old"));
        assert_eq!(merged(Update, Refresh(Some(4))), op(Update, "new"));
        assert_eq!(merged(Refresh(Some(4)), Update), op(Update, "new"));
        assert_eq!(merged(Refresh(Some(4)), Refresh(Some(9))), op(Refresh(Some(4)), "new"));
        assert_eq!(merged(Put, Refresh(None)), op(Put, "new"));
        assert_eq!(merged(Reseed, Refresh(None)), op(Reseed, "new"));
        assert_eq!(merged(Reseed, Update), op(Restore, "new"));
        assert_eq!(merged(Restore, Update), op(Restore, "new"));
        assert_eq!(merged(Reseed, Delete), op(Delete, "new"));
    }

    #[test]
    fn one_write_per_id_in_flight_in_order() {
        let mut outbox = Outbox::<&str, ()>::default();
        outbox.push("a", op(Kind::Create, "1"));
        outbox.push("b", op(Kind::Create, "1"));
        outbox.push("a", op(Kind::Update, "2"));
        let taken = outbox.take(10);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0], ("a", op(Kind::Create, "2")));
        // While "a" is in flight, its next write waits.
        outbox.push("a", op(Kind::Update, "3"));
        assert!(outbox.take(10).is_empty());
        outbox.settle(&"a");
        outbox.settle(&"b");
        assert_eq!(outbox.take(10), [("a", op(Kind::Update, "3"))]);
        outbox.settle(&"a");
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_requeued_write_merges_under_the_newer() {
        let mut outbox = Outbox::<&str, ()>::default();
        outbox.push("a", op(Kind::Create, "1"));
        let taken = outbox.take(1);
        outbox.push("a", op(Kind::Update, "2"));
        let (id, first) = taken.into_iter().next().unwrap();
        outbox.requeue(id, first);
        assert_eq!(outbox.take(10), [("a", op(Kind::Create, "2"))]);
        outbox.settle(&"a");
        outbox.push("a", op(Kind::Refresh(Some(3)), "3"));
        outbox.push("b", op(Kind::Update, "4"));
        outbox.reseed();
        assert_eq!(
            outbox.take(10),
            [("a", op(Kind::Reseed, "3")), ("b", op(Kind::Restore, "4"))],
            "a refresh is written back only where absent; a caller's update is restored"
        );
    }
}
