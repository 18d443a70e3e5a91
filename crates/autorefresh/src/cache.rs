//! The cache handle callers use.

use std::fmt;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{
    Cluster, CreateBatchesFunc, EntryHandle, Error, GetOrInsert, Item, Metrics, RateLimiter, Store,
};
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::AutoRefreshBuilder;
use crate::engine;
use crate::notify::Notifier;
use crate::queue::WorkQueue;
use crate::removal::{RemovalCause, RemovalListener, Removals};
use crate::replica::Replica;
use crate::sync_service::SyncPath;

/// A cache that keeps the latest state of the items it tracks fresh in the background.
///
/// Callers create items with [`get_or_create`](Self::get_or_create) and read them with
/// [`get`](Self::get); once [`start`](Self::start)ed, the cache calls the sync function on
/// batches of its non-terminal items every resync period (and at once for a new item), with
/// bounded parallelism, and retries failed batches after a per-item backoff. Reads never wait
/// on the sync function.
///
/// `AutoRefresh` is a cheap [`Clone`] handle (an `Arc` inside); every method but
/// [`start`](Self::start) is synchronous and callable from any thread, inside a runtime or
/// not, before or after `start`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh::{AutoRefresh, Batch, Item, ItemSyncResponse, SyncAction};
/// use tokio_util::sync::CancellationToken;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Job { polls: u32 }
///
/// impl Item for Job {
///     fn is_terminal(&self) -> bool { self.polls >= 3 }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), autorefresh::Error> {
/// let cache: AutoRefresh<String, Job> = AutoRefresh::builder("jobs")
///     .sync(|batch: Batch<String, Job>| async move {
///         Ok(batch
///             .into_iter()
///             .map(|w| {
///                 let (id, job) = w.into_parts();
///                 ItemSyncResponse { id, item: Job { polls: job.polls + 1 }, action: SyncAction::Update }
///             })
///             .collect())
///     })
///     .resync_period(Duration::from_secs(1))
///     .build()?;
///
/// let running = cache.start(CancellationToken::new())?;
/// cache.get_or_create("job-1".to_string(), Job { polls: 0 })?;
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// assert_eq!(cache.get(&"job-1".to_string())?, Job { polls: 3 });
/// running.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct AutoRefresh<K, V> {
    shared: Arc<Shared<K, V>>,
}

impl<K, V> Clone for AutoRefresh<K, V> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<K: 'static, V: 'static> fmt::Debug for AutoRefresh<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoRefresh")
            .field("name", &self.shared.name)
            .field("len", &self.shared.store.len())
            .field("resync_period", &self.shared.resync_period)
            .field("parallelism", &self.shared.parallelism)
            .field("watched", &self.shared.notifier.watched())
            .field("queue", &self.shared.queue)
            .finish_non_exhaustive()
    }
}

/// What the cache handle, the dispatcher and the workers share.
pub(crate) struct Shared<K, V> {
    pub(crate) name: String,
    pub(crate) store: Box<dyn Store<K, V>>,
    pub(crate) queue: Arc<WorkQueue<K, V>>,
    pub(crate) sync: SyncPath<K, V>,
    pub(crate) batcher: Box<dyn CreateBatchesFunc<K, V>>,
    pub(crate) limiter: Arc<dyn RateLimiter<K>>,
    pub(crate) metrics: Arc<dyn Metrics>,
    /// Subscribers to items and to the broadcast of updates.
    pub(crate) notifier: Arc<Notifier<K, V>>,
    /// Per worker: when its batch in flight started (ticks + 1), or 0 when idle.
    pub(crate) in_flight: Box<[AtomicU64]>,
    /// The origin of the cache's ticks (see [`Shared::ticks`]).
    epoch: Instant,
    /// The removal listener's channel, if one was set.
    pub(crate) removals: Option<Arc<Removals<K, V>>>,
    /// How long a terminal item stays, in ticks, if terminal expiry is on.
    pub(crate) terminal_ttl: Option<u64>,
    /// Adaptive refresh, if on: the resync period and the longest wait, in ticks.
    pub(crate) adaptive: Option<Adaptive>,
    /// Entries marked by `delete_delayed`, removed by the next sweep.
    pub(crate) pending_deletes: Mutex<Vec<(K, EntryHandle<V>)>>,
    /// The instances this cache shares its items with, if any.
    pub(crate) cluster: Option<Arc<dyn Cluster<K, V>>>,
    pub(crate) resync_period: Duration,
    pub(crate) parallelism: usize,
    pub(crate) sync_on_create: bool,
    started: AtomicBool,
    /// The cluster's task panicked: this instance refreshes nothing any more (its leases lapse
    /// and the other instances take its shards over).
    pub(crate) cluster_failed: AtomicBool,
}

/// The parts [`AutoRefreshBuilder::build`] assembles.
pub(crate) struct Parts<K, V> {
    pub(crate) name: String,
    pub(crate) store: Box<dyn Store<K, V>>,
    pub(crate) sync: SyncPath<K, V>,
    pub(crate) batcher: Box<dyn CreateBatchesFunc<K, V>>,
    pub(crate) limiter: Arc<dyn RateLimiter<K>>,
    pub(crate) metrics: Arc<dyn Metrics>,
    pub(crate) resync_period: Duration,
    pub(crate) parallelism: usize,
    pub(crate) sync_on_create: bool,
    pub(crate) updates_capacity: usize,
    pub(crate) removal_listener: Option<RemovalListener<K, V>>,
    pub(crate) terminal_ttl: Option<Duration>,
    pub(crate) adaptive_max_interval: Option<Duration>,
    pub(crate) cluster: Option<Arc<dyn Cluster<K, V>>>,
}

/// Adaptive refresh's settings, in ticks (see `AutoRefreshBuilder::adaptive_refresh`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Adaptive {
    /// The resync period.
    pub(crate) period: u64,
    /// The longest wait.
    pub(crate) max: u64,
}

impl Adaptive {
    /// Whether a sweep at `now` skips an entry refreshed at `refreshed_at` after `streak`
    /// unchanged refreshes in a row: its wait, `period × 2^streak` capped at `max`, ends more
    /// than half a period after `now` (a refresh lands a little after its sweep). An entry
    /// with no streak is never skipped.
    pub(crate) fn skips(self, now: u64, refreshed_at: u64, streak: u8) -> bool {
        if streak == 0 {
            return false;
        }
        let wait = if u32::from(streak) >= u64::BITS || self.period > self.max >> streak {
            self.max
        } else {
            self.period << streak
        };
        refreshed_at.saturating_add(wait) > now.saturating_add(self.period / 2)
    }
}

impl<K, V> Shared<K, V> {
    /// Nanoseconds of tokio time since the cache was built: the unit of entries' refresh
    /// times.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks_at(Instant::now())
    }

    /// [`ticks`](Self::ticks) at `instant`, for a caller that read the clock already.
    pub(crate) fn ticks_at(&self, instant: Instant) -> u64 {
        let elapsed = instant.saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl<K, V> Shared<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    /// Whether this instance syncs `id`: always, unless a cluster gives it to another.
    pub(crate) fn refreshes(&self, id: &K) -> bool {
        self.cluster.as_ref().is_none_or(|cluster| {
            !self.cluster_failed.load(Ordering::Relaxed) && cluster.refreshes(id)
        })
    }

    /// Inserts `item` under `id` unless the store holds one; a new entry starts its refresh
    /// clock.
    pub(crate) fn insert(&self, id: K, item: V) -> GetOrInsert<V> {
        let inserted = self.store.get_or_insert(id, EntryHandle::new(item));
        if let GetOrInsert::Inserted(entry) = &inserted {
            entry.set_refreshed_at(self.ticks());
        }
        inserted
    }

    /// Queues a new entry for its first sync, when sync-on-create is on, it is not terminal
    /// and this instance syncs it.
    pub(crate) fn queue_created(&self, id: &K, entry: &EntryHandle<V>) {
        if self.sync_on_create
            && !entry.with(V::is_terminal)
            && self.refreshes(id)
            && self.queue.add(id.clone(), entry.clone())
        {
            self.metrics.queue_added(1);
        }
    }

    /// Replaces the item of `entry` (stored under `id`) and tells subscribers; returns
    /// whether it did (not if the entry was removed meanwhile).
    pub(crate) fn replace(&self, id: &K, entry: &EntryHandle<V>, item: V) -> bool {
        let broadcast = self.notifier.broadcasting().then(|| item.clone());
        if self.terminal_ttl.is_some() && item.is_terminal() {
            // Its terminal clock starts now; set before the item, so a sweep never sees the
            // terminal item with an older time.
            entry.set_refreshed_at(self.ticks());
        }
        if !entry.replace(item) {
            return false;
        }
        if self.notifier.watching() {
            self.notifier.changed(id, entry);
        }
        if let Some(item) = broadcast {
            self.notifier.broadcast(id.clone(), item);
        }
        true
    }

    /// Removes the item under `id` now, if there is one; returns whether there was.
    pub(crate) fn remove(&self, id: &K) -> bool {
        let Some(entry) = self.store.remove(id) else { return false };
        self.forget(id, &entry, RemovalCause::Deleted);
        true
    }

    /// Drops what the queue, the limiter and the subscribers hold for an entry that left the
    /// store, and tells the removal listener, if any.
    pub(crate) fn forget(&self, id: &K, entry: &EntryHandle<V>, cause: RemovalCause) {
        forget_removed(
            &self.queue,
            &*self.limiter,
            &self.notifier,
            self.removals.as_deref(),
            id,
            entry,
            cause,
        );
    }
}

/// Drops what the engine keeps for an entry that left the store: its place in the queue
/// first (no user code), then the limiter's state, the watch and the removal notice. Each of
/// those is user code that may panic; each runs all the same, and the first panic then reaches
/// the caller, with nothing of the entry left behind.
fn forget_removed<K, V>(
    queue: &WorkQueue<K, V>,
    limiter: &dyn RateLimiter<K>,
    notifier: &Notifier<K, V>,
    removals: Option<&Removals<K, V>>,
    id: &K,
    entry: &EntryHandle<V>,
    cause: RemovalCause,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Item,
{
    queue.remove(entry);
    let steps: [&dyn Fn(); 3] = [
        &|| limiter.forget(id),
        &|| notifier.removed(id, entry),
        // A removed entry changes no more: this is the item as it was at removal.
        &|| {
            if let Some(removals) = removals {
                removals.send(id.clone(), entry.load(), cause);
            }
        },
    ];
    engine::for_each_all(steps, |step| step());
}

impl<K, V> AutoRefresh<K, V>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    V: Item,
{
    /// A builder for a cache called `name` (the name labels its metrics and errors).
    pub fn builder(name: &str) -> AutoRefreshBuilder<K, V> {
        AutoRefreshBuilder::new(name)
    }

    pub(crate) fn from_parts(parts: Parts<K, V>) -> Self {
        let queue = Arc::new(WorkQueue::new());
        let notifier = Arc::new(Notifier::new(parts.updates_capacity));
        let removals = parts.removal_listener.map(|listener| Arc::new(Removals::new(listener)));
        let on_evict = {
            let queue = Arc::clone(&queue);
            let limiter = Arc::clone(&parts.limiter);
            let metrics = Arc::clone(&parts.metrics);
            let notifier = Arc::clone(&notifier);
            let removals = removals.clone();
            move |id: &K, entry: &EntryHandle<V>| {
                let cause = RemovalCause::Evicted;
                let counted = std::panic::catch_unwind(AssertUnwindSafe(|| metrics.eviction()));
                forget_removed(&queue, &*limiter, &notifier, removals.as_deref(), id, entry, cause);
                if let Err(panic) = counted {
                    std::panic::resume_unwind(panic);
                }
            }
        };
        parts.store.set_eviction_listener(Arc::new(on_evict));
        Self {
            shared: Arc::new(Shared {
                name: parts.name,
                store: parts.store,
                queue,
                sync: parts.sync,
                batcher: parts.batcher,
                limiter: parts.limiter,
                metrics: parts.metrics,
                notifier,
                in_flight: (0..parts.parallelism).map(|_| AtomicU64::new(0)).collect(),
                epoch: Instant::now(),
                removals,
                terminal_ttl: parts
                    .terminal_ttl
                    .map(|ttl| u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)),
                adaptive: parts.adaptive_max_interval.map(|max| Adaptive {
                    period: u64::try_from(parts.resync_period.as_nanos()).unwrap_or(u64::MAX),
                    max: u64::try_from(max.as_nanos()).unwrap_or(u64::MAX),
                }),
                pending_deletes: Mutex::new(Vec::new()),
                cluster: parts.cluster,
                resync_period: parts.resync_period,
                parallelism: parts.parallelism,
                sync_on_create: parts.sync_on_create,
                started: AtomicBool::new(false),
                cluster_failed: AtomicBool::new(false),
            }),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Starts the background refresh: a dispatcher (sweeps every resync period, the first at
    /// once) and `parallelism` workers, spawned on the current tokio runtime.
    ///
    /// Cancelling `token`, or [`Running::shutdown`], stops them. Items created before `start`
    /// are synced once it runs.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`] if the cache was started before (a cache starts once, even
    /// after a shutdown); [`Error::NoRuntime`] outside a tokio runtime.
    pub fn start(&self, token: CancellationToken) -> Result<Running, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime { name: self.shared.name.clone() })?;
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyStarted { name: self.shared.name.clone() });
        }
        let cancel = token.child_token();
        let tracker = TaskTracker::new();
        // The dispatcher and workers, also tracked alone: the removal listener's task waits
        // for them at shutdown, to deliver what they removed.
        let engine = TaskTracker::new();
        let dispatcher = engine::run_dispatcher(Arc::clone(&self.shared), cancel.clone());
        tracker.spawn_on(engine.track_future(dispatcher), &runtime);
        for index in 0..self.shared.parallelism {
            let worker = engine::run_worker(Arc::clone(&self.shared), index, cancel.clone());
            tracker.spawn_on(engine.track_future(worker), &runtime);
        }
        engine.close();
        if let Some(cluster) = &self.shared.cluster {
            let local = Arc::new(Replica::new(Arc::clone(&self.shared)));
            let cluster = Arc::clone(cluster);
            let shutdown = Box::pin(cancel.clone().cancelled_owned());
            let shared = Arc::clone(&self.shared);
            let run = async move {
                let run = std::panic::AssertUnwindSafe(cluster.run(local, shutdown));
                if run.catch_unwind().await.is_err() {
                    // Its ownership of shards is no longer renewed: going on refreshing them
                    // would sync items another instance is about to take over.
                    shared.cluster_failed.store(true, Ordering::Relaxed);
                    tracing::error!(
                        cache = %shared.name,
                        "the cluster's task panicked: this instance refreshes nothing any more \
                         (its shards go to the other instances) and its changes are no longer \
                         shared; reads and local writes go on"
                    );
                }
            };
            tracker.spawn_on(run, &runtime);
        }
        if let Some(removals) = &self.shared.removals {
            removals.spawn(&self.shared.name, &tracker, engine, cancel.clone(), &runtime);
        }
        tracker.close();
        Ok(Running { cancel, tracker })
    }

    /// The item stored under `id`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the cache has no item under `id`.
    pub fn get(&self, id: &K) -> Result<V, Error> {
        match self.shared.store.get(id) {
            Some(entry) => {
                self.shared.metrics.cache_hit();
                Ok(entry.load())
            }
            None => {
                self.shared.metrics.cache_miss();
                Err(Error::not_found(id))
            }
        }
    }

    /// The item stored under `id`, looked up in the [cluster](AutoRefreshBuilder::cluster)
    /// when this instance's store does not hold it (an item another instance created that
    /// has not reached this one yet, or one this store evicted). An item found there is
    /// stored here. Without a cluster, the same as [`get`](Self::get).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if neither holds an item under `id`; [`Error::Cluster`] if the
    /// cluster could not answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh::{AutoRefresh, Batch, Item};
    ///
    /// #[derive(Clone, Debug)]
    /// struct Job;
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { false }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .build()
    ///     .unwrap();
    /// assert!(cache.fetch(&7).await.unwrap_err().is_not_found());
    /// # }
    /// ```
    pub async fn fetch(&self, id: &K) -> Result<V, Error> {
        let local = self.get(id);
        let Some(cluster) = self.shared.cluster.as_ref().filter(|_| local.is_err()) else {
            return local;
        };
        let found = cluster.fetch(id).await.map_err(|err| Error::Cluster {
            name: self.shared.name.clone(),
            reason: err.to_string(),
        })?;
        match found {
            Some(item) => match self.shared.insert(id.clone(), item) {
                GetOrInsert::Existing(entry) => Ok(entry.load()),
                GetOrInsert::Inserted(entry) => {
                    self.shared.queue_created(id, &entry);
                    Ok(entry.load())
                }
            },
            None => local,
        }
    }

    /// The item stored under `id` if there is one, else `item`, inserted.
    ///
    /// It never replaces an existing item. A new non-terminal item is queued for a sync at
    /// once when sync-on-create is on (the default). On a full cache, the least recently
    /// used item is evicted to make room, never the new one.
    ///
    /// # Errors
    ///
    /// None today; the `Result` is the Go contract's and leaves room for stores that can fail.
    pub fn get_or_create(&self, id: K, item: V) -> Result<V, Error> {
        if let Some(entry) = self.shared.store.get(&id) {
            self.shared.metrics.cache_hit();
            return Ok(entry.load());
        }
        match self.shared.insert(id.clone(), item) {
            GetOrInsert::Existing(entry) => {
                self.shared.metrics.cache_hit();
                Ok(entry.load())
            }
            GetOrInsert::Inserted(entry) => {
                self.shared.metrics.cache_miss();
                let item = entry.load();
                // Told before the item is queued: once queued, a worker on another thread may
                // sync it and report it `refreshed` at once, and the cluster must not see that
                // refresh before the item exists there (then the creation of the older item).
                if let Some(cluster) = &self.shared.cluster {
                    cluster.created(&id, &item);
                }
                self.shared.queue_created(&id, &entry);
                Ok(item)
            }
        }
    }

    /// Replaces the item under `id` if there is one; returns whether it did.
    ///
    /// A refresh that was in flight when `update` ran does not overwrite the new item. With
    /// a [`terminal_ttl`](AutoRefreshBuilder::terminal_ttl), storing a terminal item starts
    /// its clock.
    /// Receivers from [`subscribe`](Self::subscribe) for `id` and from
    /// [`updates`](Self::updates) are sent the new item.
    pub fn update(&self, id: &K, item: V) -> bool {
        let Some(entry) = self.shared.store.get(id) else { return false };
        let Some(cluster) = &self.shared.cluster else {
            return self.shared.replace(id, &entry, item);
        };
        // Told after the entry's lock is released: a cluster applies other instances' changes
        // under its own lock and then takes entries' locks, so it must never be called under
        // one (the two orders would deadlock).
        let shared = item.clone();
        let replaced = self.shared.replace(id, &entry, item);
        if replaced {
            cluster.updated(id, &shared);
        }
        replaced
    }

    /// A receiver of the item under `id`: it holds the current item, and is sent every new one
    /// (a sync's [`SyncAction::Update`](crate::SyncAction::Update) that is applied, or a
    /// caller's [`update`](Self::update)). When the item leaves the cache (deleted, removed by
    /// a sweep after [`delete_delayed`](Self::delete_delayed), evicted, or a sync's
    /// [`SyncAction::Delete`](crate::SyncAction::Delete)), the channel closes:
    /// [`changed`](watch::Receiver::changed) returns an error.
    ///
    /// A receiver sees the latest item, not every intermediate one (it is a
    /// [`tokio::sync::watch`] channel); use [`updates`](Self::updates) for every change.
    /// The cache keeps one sender per watched id, and drops it when the item leaves, at the
    /// first change or the next sweep after every receiver was dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the cache has no item under `id`.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh::{AutoRefresh, Batch, Item};
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Job { done: bool }
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { self.done }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), autorefresh::Error> {
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .build()?;
    /// cache.get_or_create(1, Job { done: false })?;
    ///
    /// let mut job = cache.subscribe(&1)?;
    /// cache.update(&1, Job { done: true });
    /// job.changed().await.unwrap();
    /// assert_eq!(*job.borrow_and_update(), Job { done: true });
    ///
    /// cache.delete(&1);
    /// assert!(job.changed().await.is_err()); // the item left the cache
    /// assert!(cache.subscribe(&1).unwrap_err().is_not_found());
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self, id: &K) -> Result<watch::Receiver<V>, Error> {
        let entry = self.shared.store.get(id).ok_or_else(|| Error::not_found(id))?;
        self.shared.notifier.subscribe(id, entry).ok_or_else(|| Error::not_found(id))
    }

    /// Waits until the item under `id` is terminal ([`Item::is_terminal`]) and returns it; at
    /// once if it already is.
    ///
    /// Dropping the future stops the wait. It needs the cache to be
    /// [`start`](Self::start)ed, or callers to [`update`](Self::update) the item.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the cache has no item under `id`, or if the item leaves the
    /// cache before it is terminal (deleted, removed after `delete_delayed`, evicted, or a
    /// sync's [`SyncAction::Delete`](crate::SyncAction::Delete)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh::{AutoRefresh, Batch, Item, ItemSyncResponse, SyncAction};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Job { polls: u32 }
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { self.polls >= 3 }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), autorefresh::Error> {
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|batch: Batch<u64, Job>| async move {
    ///         Ok(batch
    ///             .into_iter()
    ///             .map(|w| {
    ///                 let (id, job) = w.into_parts();
    ///                 ItemSyncResponse { id, item: Job { polls: job.polls + 1 }, action: SyncAction::Update }
    ///             })
    ///             .collect())
    ///     })
    ///     .resync_period(Duration::from_secs(1))
    ///     .build()?;
    /// let running = cache.start(CancellationToken::new())?;
    /// cache.get_or_create(7, Job { polls: 0 })?;
    ///
    /// assert_eq!(cache.wait_terminal(&7).await?, Job { polls: 3 });
    /// assert!(cache.wait_terminal(&8).await.unwrap_err().is_not_found());
    /// running.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_terminal(&self, id: &K) -> Result<V, Error> {
        let mut receiver = self.subscribe(id)?;
        let item = loop {
            {
                let item = receiver.borrow_and_update();
                if item.is_terminal() {
                    break item.clone();
                }
            }
            if receiver.changed().await.is_err() {
                return Err(Error::not_found(id));
            }
        };
        // A terminal item changes no more: drop its sender now if this was the last receiver.
        drop(receiver);
        self.shared.notifier.release(id);
        Ok(item)
    }

    /// A receiver of every change applied from now on, as `(id, new item)`: each sync
    /// [`SyncAction::Update`](crate::SyncAction::Update) that is stored, and each caller's
    /// [`update`](Self::update). Items created, deleted or evicted are not sent.
    ///
    /// It is a [`tokio::sync::broadcast`] channel of the capacity set by
    /// [`AutoRefreshBuilder::updates_capacity`] (default
    /// [`DEFAULT_UPDATES_CAPACITY`](crate::DEFAULT_UPDATES_CAPACITY)). Sending never waits: a
    /// receiver more than that many changes behind **lags**: its next
    /// [`recv`](broadcast::Receiver::recv) returns
    /// [`RecvError::Lagged(n)`](broadcast::error::RecvError::Lagged), it has missed the `n`
    /// oldest changes, and it goes on from the oldest one still held (read the cache with
    /// [`get`](Self::get) to catch up). The workers are never slowed by a receiver. While no
    /// receiver exists, nothing is cloned or sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh::{AutoRefresh, Batch, Item};
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Job { step: u32 }
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { false }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), autorefresh::Error> {
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .build()?;
    /// cache.get_or_create(1, Job { step: 0 })?;
    ///
    /// let mut updates = cache.updates();
    /// cache.update(&1, Job { step: 1 });
    /// assert_eq!(updates.recv().await.unwrap(), (1, Job { step: 1 }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn updates(&self) -> broadcast::Receiver<(K, V)> {
        self.shared.notifier.updates()
    }

    /// Removes the item under `id` now, if there is one. A refresh in flight for it is
    /// discarded when it returns.
    ///
    /// With a [cluster](AutoRefreshBuilder::cluster), the delete reaches every instance, also
    /// when this one's store no longer held the item.
    pub fn delete(&self, id: &K) {
        // Told first: a change of another instance arriving between the two is then held
        // back by the cluster behind this delete, instead of bringing the item back here.
        if let Some(cluster) = &self.shared.cluster {
            cluster.deleted(id);
        }
        self.shared.remove(id);
    }

    /// Queues the item under `id` for deletion at the next sweep (Go: `DeleteDelayed`).
    ///
    /// Until then [`get`](Self::get) and [`get_or_create`](Self::get_or_create) keep returning
    /// it, and it is no longer synced. An absent id is a no-op.
    ///
    /// # Errors
    ///
    /// None today; the `Result` is the Go contract's.
    pub fn delete_delayed(&self, id: &K) -> Result<(), Error> {
        if let Some(entry) = self.shared.store.get(id) {
            if entry.mark_delete_pending() {
                self.shared.pending_deletes.lock().push((id.clone(), entry));
            }
        }
        Ok(())
    }

    /// How many items the cache holds.
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether the cache holds no item.
    pub fn is_empty(&self) -> bool {
        self.shared.store.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn queue_stats(&self) -> crate::queue::QueueStats {
        self.shared.queue.stats()
    }
}

/// The running background refresh of a started cache, returned by [`AutoRefresh::start`].
///
/// Dropping it does not stop the refresh: cancel the token given to `start`, or call
/// [`shutdown`](Self::shutdown) to stop and wait.
#[must_use = "dropping `Running` leaves the refresh running; call `shutdown().await` to stop it"]
pub struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("cancelled", &self.cancel.is_cancelled())
            .field("tasks", &self.tracker.len())
            .finish()
    }
}

impl Running {
    /// Stops the refresh and waits until every task it spawned has ended. A batch in flight is
    /// dropped (its future is cancelled); reads and writes keep working afterwards.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }

    /// Whether the refresh was told to stop (by `shutdown` or the token given to `start`).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Waits until the refresh has stopped, however it was told to: use it when the token
    /// given to `start` is cancelled elsewhere.
    pub async fn stopped(&self) {
        self.cancel.cancelled().await;
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use autorefresh_core::{Batch, ItemSyncResponse, SyncAction};

    use super::*;
    use crate::queue::QueueStats;

    #[derive(Clone, Debug)]
    struct Step(u32);

    impl Item for Step {
        fn is_terminal(&self) -> bool {
            self.0 >= 3
        }
    }

    /// Per-item state outside the store (queue slots) is dropped once items are terminal,
    /// deleted or evicted, even after failures.
    #[tokio::test(start_paused = true)]
    async fn the_queue_empties_once_every_item_is_terminal_or_gone() {
        let failing = Arc::new(AtomicBool::new(true));
        let sync = {
            let failing = Arc::clone(&failing);
            move |batch: Batch<u32, Step>| {
                let failing = failing.load(Ordering::SeqCst);
                async move {
                    if failing {
                        return Err("down".into());
                    }
                    Ok(batch
                        .into_iter()
                        .map(|w| ItemSyncResponse {
                            id: *w.id(),
                            item: Step(w.item().0 + 1),
                            action: SyncAction::Update,
                        })
                        .collect())
                }
            }
        };
        let cache: AutoRefresh<u32, Step> = AutoRefresh::builder("queue")
            .sync(sync)
            .capacity(40)
            .resync_period(Duration::from_millis(100))
            .build()
            .unwrap();
        let running = cache.start(CancellationToken::new()).unwrap();
        for i in 0..50 {
            cache.get_or_create(i, Step(0)).unwrap(); // the first 10 are evicted
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(cache.queue_stats().tracked > 0);
        for i in 10..20 {
            cache.delete(&i);
        }
        for i in 20..30 {
            cache.delete_delayed(&i).unwrap();
        }
        failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(cache.queue_stats(), QueueStats::default());
        assert_eq!(cache.len(), 20);
        assert!((30..50).all(|i| cache.get(&i).unwrap().0 == 3));
        running.shutdown().await;
    }
}
