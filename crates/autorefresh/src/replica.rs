//! The local cache as a cluster sees it: where the other instances' changes are applied.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use autorefresh_core::{GetOrInsert, Item, LocalReplica};

use crate::cache::Shared;

/// Applies a cluster's changes to the cache's store, as `update`, `get_or_create` and
/// `delete` would, but without sending them back to the cluster.
pub(crate) struct Replica<K, V> {
    shared: Arc<Shared<K, V>>,
}

impl<K, V> Replica<K, V> {
    pub(crate) fn new(shared: Arc<Shared<K, V>>) -> Self {
        Self { shared }
    }
}

impl<K, V> fmt::Debug for Replica<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica").field("cache", &self.shared.name).finish()
    }
}

impl<K, V> LocalReplica<K, V> for Replica<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    fn upsert(&self, id: K, item: V) {
        match self.shared.store.get(&id) {
            Some(entry) => {
                self.shared.replace(&id, &entry, item);
            }
            None => {
                match self.shared.insert(id.clone(), item.clone()) {
                    GetOrInsert::Inserted(entry) => self.shared.queue_created(&id, &entry),
                    // Created here between the lookup and the insert: the cluster's item wins.
                    GetOrInsert::Existing(entry) => {
                        self.shared.replace(&id, &entry, item);
                    }
                }
            }
        }
    }

    fn remove(&self, id: &K) {
        self.shared.remove(id);
    }

    fn get(&self, id: &K) -> Option<V> {
        self.shared.store.get(id).map(|entry| entry.load())
    }

    fn for_each_id(&self, visit: &mut dyn FnMut(&K)) {
        self.shared.store.for_each_entry(&mut |id, _| visit(id));
    }
}
