//! Swapping the store that holds the cache's items: `MokaStore` (exact LRU on moka) instead of
//! the default `PapayaStore`, then a hand-written `Store` on a `Mutex<HashMap>`.
//!
//! Run it with `cargo run --example custom_store`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, EntryHandle, EntryState, EvictionListener, GetOrInsert,
    Item, ItemSyncResponse, MokaStore, Store, SyncAction, SyncError,
};

#[derive(Clone, Debug)]
struct Build {
    polls: u32,
}

impl Item for Build {
    fn is_terminal(&self) -> bool {
        self.polls >= 3
    }
}

/// The sync function: counts one more poll of each build, after `latency`.
async fn poll_builds(
    latency: Duration,
    batch: Batch<String, Build>,
) -> Result<Vec<ItemSyncResponse<String, Build>>, SyncError> {
    tokio::time::sleep(latency).await;
    Ok(batch
        .into_iter()
        .map(|w| {
            let (id, build) = w.into_parts();
            ItemSyncResponse {
                id,
                item: Build { polls: build.polls + 1 },
                action: SyncAction::Update,
            }
        })
        .collect())
}

/// An unbounded store on a mutex-guarded `HashMap` that counts the reads it serves: all a
/// store needs is the `Store` trait. It keeps the trait's rules: only callers' reads go
/// through `get`/`get_or_insert` (the sweep uses `for_each_entry`), and every entry it drops is
/// marked removed, so a refresh in flight for it is discarded instead of landing on a ghost.
/// It never evicts, so it has no use for the eviction listener.
struct MapStore<K, V> {
    map: Mutex<HashMap<K, EntryHandle<V>>>,
    reads: AtomicU64,
}

impl<K, V> MapStore<K, V> {
    fn new() -> Self {
        Self { map: Mutex::new(HashMap::new()), reads: AtomicU64::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, EntryHandle<V>>> {
        // A panic elsewhere while holding the lock leaves the map consistent: keep going.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V> Store<K, V> for MapStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn get(&self, id: &K) -> Option<EntryHandle<V>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.lock().get(id).cloned()
    }

    fn get_or_insert(&self, id: K, entry: EntryHandle<V>) -> GetOrInsert<V> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        match map.get(&id) {
            Some(existing) => GetOrInsert::Existing(existing.clone()),
            None => {
                map.insert(id, entry.clone());
                GetOrInsert::Inserted(entry)
            }
        }
    }

    fn remove(&self, id: &K) -> Option<EntryHandle<V>> {
        let removed = self.lock().remove(id);
        if let Some(entry) = &removed {
            entry.mark_removed();
        }
        removed
    }

    fn remove_entry(&self, id: &K, entry: &EntryHandle<V>) -> bool {
        let mut map = self.lock();
        // Only if the id still maps to this very entry, not to one created since.
        if map.get(id).is_some_and(|current| current.same_entry(entry)) {
            map.remove(id);
            entry.mark_removed();
            return true;
        }
        false
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn for_each_entry(&self, visit: &mut dyn FnMut(&K, &EntryHandle<V>)) {
        // Copy the handles out so `visit` runs without the lock held.
        let entries: Vec<(K, EntryHandle<V>)> =
            self.lock().iter().map(|(id, entry)| (id.clone(), entry.clone())).collect();
        for (id, entry) in &entries {
            visit(id, entry);
        }
    }

    fn set_eviction_listener(&self, _listener: EvictionListener<K, V>) {}
}

/// `MokaStore` of 3 builds: which one goes when a fourth arrives.
async fn moka_exact_lru() -> Result<(), Box<dyn std::error::Error>> {
    // The store is bounded itself (`capacity` is the default store's setting). A clone shares
    // the entries and counters, so we keep one to read the eviction count.
    let store = MokaStore::new(3)?;
    let cache: AutoRefresh<String, Build> = AutoRefresh::builder("builds-moka")
        .sync(|batch: Batch<String, Build>| poll_builds(Duration::from_millis(1), batch))
        .store(store.clone())
        .resync_period(Duration::from_millis(20))
        .build()?;
    let running = cache.start(CancellationToken::new())?;

    for id in ["a", "b", "c"] {
        cache.get_or_create(id.to_owned(), Build { polls: 0 })?;
    }
    cache.get(&"a".to_owned())?; // "a" is now more recently used than "b"
    cache.get_or_create("d".to_owned(), Build { polls: 0 })?; // evicts one: exactly "b"
    tokio::time::sleep(Duration::from_millis(200)).await; // the kept builds finish polling
    running.shutdown().await;

    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for id in ["a", "b", "c", "d"] {
        match cache.get(&id.to_owned()) {
            Ok(build) => kept.push(format!("{id} ({} polls)", build.polls)),
            Err(err) if err.is_not_found() => gone.push(id),
            Err(err) => return Err(err.into()),
        }
    }
    println!(
        "MokaStore, capacity 3: created a b c, read a, created d -> evicted {}, the least \
         recently used ({} eviction); kept {}",
        gone.join(", "),
        store.evictions(),
        kept.join(", "),
    );
    if gone != ["b"] {
        return Err(format!("expected exactly b to be evicted, got {gone:?}").into());
    }
    Ok(())
}

/// The hand-written store, with a build deleted while its refresh is in flight.
async fn hand_written_store() -> Result<(), Box<dyn std::error::Error>> {
    // `Arc<S>` is a store too: the cache gets one handle, we keep another to look inside.
    let store = Arc::new(MapStore::new());
    let cache: AutoRefresh<String, Build> = AutoRefresh::builder("builds-map")
        // A slow external system: a poll takes 100 ms.
        .sync(|batch: Batch<String, Build>| poll_builds(Duration::from_millis(100), batch))
        .store(Arc::clone(&store))
        .resync_period(Duration::from_secs(60)) // only sync-on-create polls in this demo
        .build()?;
    let running = cache.start(CancellationToken::new())?;

    cache.get_or_create("build-1".to_owned(), Build { polls: 0 })?;
    cache.get_or_create("build-2".to_owned(), Build { polls: 0 })?;
    let doomed = store.get(&"build-2".to_owned()).ok_or("build-2 was not stored")?;
    tokio::time::sleep(Duration::from_millis(30)).await; // both builds are being polled now
    cache.delete(&"build-2".to_owned());
    tokio::time::sleep(Duration::from_millis(150)).await; // both polls have returned
    running.shutdown().await;

    let build1 = cache.get(&"build-1".to_owned())?;
    let build2_gone = cache.get(&"build-2".to_owned()).is_err_and(|err| err.is_not_found());
    println!(
        "MapStore (hand-written, unbounded): build-1 refreshed to {} poll; build-2, deleted \
         mid-refresh, stayed deleted: {build2_gone} (entry {:?}, the late result dropped); \
         {} item left, {} reads served",
        build1.polls,
        doomed.state(),
        cache.len(),
        store.reads.load(Ordering::Relaxed),
    );
    if build1.polls != 1 || !build2_gone || doomed.state() != EntryState::Removed {
        return Err("the hand-written store did not behave as expected".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    moka_exact_lru().await?;
    hand_written_store().await?;
    Ok(())
}
