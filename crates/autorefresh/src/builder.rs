//! Building an [`AutoRefresh`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{
    Batch, Cluster, CreateBatchesFunc, Error, FixedSizeBatches, Item, ItemSyncResponse, Metrics,
    NoopMetrics, RateLimiter, SingleItemBatches, Store, SyncError, SyncFunc,
};
use autorefresh_papaya::PapayaStore;
use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy};
use autorefresh_tower::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::cache::{AutoRefresh, Parts};
use crate::config::AutoRefreshConfig;
use crate::removal::RemovalListener;
use crate::sync_service::{ApplyLayer, SyncPath, SyncService};

/// The default resync period: 30 s.
pub const DEFAULT_RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// The default number of workers: 10.
pub const DEFAULT_PARALLELISM: usize = 10;
/// The default capacity of the default store: 10 000 items.
pub const DEFAULT_CAPACITY: u64 = 10_000;
/// The default capacity of the [`AutoRefresh::updates`] broadcast: 1024 changes.
///
/// ```
/// assert_eq!(autorefresh::DEFAULT_UPDATES_CAPACITY, 1024);
/// ```
pub const DEFAULT_UPDATES_CAPACITY: usize = 1024;

/// Configures and builds an [`AutoRefresh`]; made by [`AutoRefresh::builder`].
///
/// Only [`sync`](Self::sync) is required. The defaults:
///
/// | setting | default |
/// |---|---|
/// | [`resync_period`](Self::resync_period) | 30 s ([`DEFAULT_RESYNC_PERIOD`]) |
/// | [`parallelism`](Self::parallelism) | 10 workers ([`DEFAULT_PARALLELISM`]) |
/// | [`capacity`](Self::capacity) | 10 000 items ([`DEFAULT_CAPACITY`]) |
/// | [`sync_on_create`](Self::sync_on_create) | on |
/// | [`create_batches`](Self::create_batches) | [`SingleItemBatches`] |
/// | [`rate_limiter`](Self::rate_limiter) | [`default_controller_rate_limiter`](crate::default_controller_rate_limiter) |
/// | [`store`](Self::store) | [`PapayaStore`] (approximate LRU, foldhash) of `capacity` items |
/// | [`metrics`](Self::metrics) | none recorded |
/// | [`updates_capacity`](Self::updates_capacity) | 1024 changes ([`DEFAULT_UPDATES_CAPACITY`]) |
/// | [`adaptive_refresh`](Self::adaptive_refresh) | off (every item every period) |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use autorefresh::{AutoRefresh, Batch, Error, Item};
///
/// #[derive(Clone)]
/// struct Payment { settled: bool }
/// impl Item for Payment {
///     fn is_terminal(&self) -> bool { self.settled }
/// }
///
/// let cache = AutoRefresh::<u64, Payment>::builder("payments")
///     .sync(|_batch: Batch<u64, Payment>| async { Ok(Vec::new()) })
///     .resync_period(Duration::from_secs(10))
///     .parallelism(4)
///     .capacity(1_000)
///     .build()
///     .unwrap();
/// assert!(cache.is_empty());
///
/// // Bad configuration is an error that names the field.
/// let err = AutoRefresh::<u64, Payment>::builder("payments")
///     .sync(|_batch: Batch<u64, Payment>| async { Ok(Vec::new()) })
///     .parallelism(0)
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, Error::InvalidConfig { field: "parallelism", .. }));
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct AutoRefreshBuilder<K, V> {
    name: String,
    sync: Option<Arc<dyn SyncFunc<K, V>>>,
    layers: Vec<ApplyLayer<K, V>>,
    batcher: Box<dyn CreateBatchesFunc<K, V>>,
    limiter: Option<Arc<dyn RateLimiter<K>>>,
    store: Option<Box<dyn Store<K, V>>>,
    metrics: Arc<dyn Metrics>,
    resync_period: Duration,
    parallelism: usize,
    capacity: Option<u64>,
    sync_on_create: bool,
    updates_capacity: usize,
    removal_listener: Option<RemovalListener<K, V>>,
    terminal_ttl: Option<Duration>,
    adaptive_max_interval: Option<Duration>,
    cluster: Option<Arc<dyn Cluster<K, V>>>,
    /// The first error found by `config`, reported by `build`.
    config_error: Option<Error>,
}

impl<K, V> fmt::Debug for AutoRefreshBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoRefreshBuilder")
            .field("name", &self.name)
            .field("sync", &self.sync.is_some())
            .field("custom_rate_limiter", &self.limiter.is_some())
            .field("custom_store", &self.store.is_some())
            .field("resync_period", &self.resync_period)
            .field("parallelism", &self.parallelism)
            .field("capacity", &self.capacity)
            .field("sync_on_create", &self.sync_on_create)
            .field("removal_listener", &self.removal_listener.is_some())
            .field("terminal_ttl", &self.terminal_ttl)
            .field("adaptive_max_interval", &self.adaptive_max_interval)
            .field("cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V> AutoRefreshBuilder<K, V>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    V: Item,
{
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            sync: None,
            layers: Vec::new(),
            batcher: Box::new(SingleItemBatches),
            limiter: None,
            store: None,
            metrics: Arc::new(NoopMetrics),
            resync_period: DEFAULT_RESYNC_PERIOD,
            parallelism: DEFAULT_PARALLELISM,
            capacity: None,
            sync_on_create: true,
            updates_capacity: DEFAULT_UPDATES_CAPACITY,
            removal_listener: None,
            terminal_ttl: None,
            adaptive_max_interval: None,
            cluster: None,
            config_error: None,
        }
    }

    /// The function that fetches the latest state of a batch of items. Required.
    pub fn sync(mut self, sync: impl SyncFunc<K, V>) -> Self {
        self.sync = Some(Arc::new(sync));
        self
    }

    /// Wraps the sync path in a tower [`Layer`], as `tower::ServiceBuilder::layer` does: the
    /// first layer given is the outermost. The layers are applied once, at `build`, and the
    /// resulting service is cloned into each worker, so state a layer shares between clones
    /// (a concurrency limit's semaphore, a rate limiter's bucket) is shared by all workers.
    ///
    /// `autorefresh-tower` (re-exported as [`crate::tower`]) has the layers this domain needs:
    /// timeout, retry, concurrency limit and rate limit. A batch that fails through a layer
    /// (a timeout, say) counts as a failed sync: its items are retried after their backoff.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh::{AutoRefresh, Batch, Item};
    /// use autorefresh::tower::timeout::TimeoutLayer;
    ///
    /// #[derive(Clone)]
    /// struct Job;
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { false }
    /// }
    ///
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .layer(TimeoutLayer::new(Duration::from_secs(30)))
    ///     .build()
    ///     .unwrap();
    /// # drop(cache);
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<SyncService<K, V>> + Send + 'static,
        L::Service: Service<Batch<K, V>, Response = Vec<ItemSyncResponse<K, V>>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Batch<K, V>>>::Error: Into<SyncError>,
        <L::Service as Service<Batch<K, V>>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner).map_err(Into::into))
        }));
        self
    }

    /// How due items are split into batches. Default: [`SingleItemBatches`].
    pub fn create_batches(mut self, batcher: impl CreateBatchesFunc<K, V>) -> Self {
        self.batcher = Box::new(batcher);
        self
    }

    /// The limiter asked how long an item waits before it is retried after a failed batch
    /// (see [`RateLimiter`]). Default:
    /// [`default_controller_rate_limiter`](crate::default_controller_rate_limiter).
    pub fn rate_limiter(mut self, limiter: impl RateLimiter<K>) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// How often every non-terminal item is queued for a sync. Default: 30 s. Must not be zero.
    pub fn resync_period(mut self, period: Duration) -> Self {
        self.resync_period = period;
        self
    }

    /// How many batches are synced at once (the number of workers). Default: 10. Must not be
    /// zero.
    pub fn parallelism(mut self, workers: usize) -> Self {
        self.parallelism = workers;
        self
    }

    /// How many items the default store holds before it evicts the least recently used.
    /// Default: 10 000. Must not be zero, and cannot be combined with [`store`](Self::store)
    /// (bound a custom store itself).
    pub fn capacity(mut self, items: u64) -> Self {
        self.capacity = Some(items);
        self
    }

    /// Whether a new item is queued for a sync at once rather than at the next sweep.
    /// Default: on.
    pub fn sync_on_create(mut self, enabled: bool) -> Self {
        self.sync_on_create = enabled;
        self
    }

    /// How many changes the [`AutoRefresh::updates`] broadcast holds for its slowest
    /// receiver before that receiver lags (misses the oldest). Default: 1024
    /// ([`DEFAULT_UPDATES_CAPACITY`]). Must be at least 1 and at most `usize::MAX / 2`.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh::{AutoRefresh, Batch, Error, Item};
    ///
    /// #[derive(Clone)]
    /// struct Job;
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { false }
    /// }
    ///
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .updates_capacity(16_384)
    ///     .build();
    /// assert!(cache.is_ok());
    ///
    /// let err = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .updates_capacity(0)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::InvalidConfig { field: "updates_capacity", .. }));
    /// ```
    pub fn updates_capacity(mut self, changes: usize) -> Self {
        self.updates_capacity = changes;
        self
    }

    /// Calls `listener` with every item that leaves the cache, its id, and why
    /// ([`RemovalCause`](crate::RemovalCause)): a caller's [`delete`](AutoRefresh::delete),
    /// the sweep after [`delete_delayed`](AutoRefresh::delete_delayed), an eviction for
    /// capacity, terminal expiry ([`terminal_ttl`](Self::terminal_ttl)), or a sync's
    /// [`SyncAction::Delete`](crate::SyncAction::Delete). Each removal is told exactly once,
    /// with the item as it was when removed. Default: none.
    ///
    /// The listener never runs under a store lock nor on the workers: removals are queued on
    /// an unbounded channel (sending never waits) and one task spawned by
    /// [`start`](AutoRefresh::start) calls the listener for each, in order. Keep it short (it
    /// runs on a runtime thread; hand slow work to another task); a listener that panics is
    /// logged and the next removal is still told.
    ///
    /// - **Before `start`**, removals are held and told once the cache starts (a cache that
    ///   is never started holds them until it is dropped).
    /// - **At shutdown**, the task waits for the dispatcher and workers to end, tells what
    ///   was queued until then, and ends; removals **after shutdown** (or after the token
    ///   given to `start` is cancelled and the task ended) are dropped, not told.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use autorefresh::{AutoRefresh, Batch, CancellationToken, Item, RemovalCause};
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Job { done: bool }
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { self.done }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), autorefresh::Error> {
    /// let removed = Arc::new(Mutex::new(Vec::new()));
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .removal_listener({
    ///         let removed = Arc::clone(&removed);
    ///         move |id, job, cause| removed.lock().unwrap().push((id, job, cause))
    ///     })
    ///     .build()?;
    /// let running = cache.start(CancellationToken::new())?;
    /// cache.get_or_create(1, Job { done: true })?;
    /// cache.delete(&1);
    /// running.shutdown().await; // tells what was queued, then ends
    /// assert_eq!(*removed.lock().unwrap(), vec![(1, Job { done: true }, RemovalCause::Deleted)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn removal_listener(
        mut self,
        listener: impl Fn(K, V, crate::RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.removal_listener = Some(Arc::new(listener));
        self
    }

    /// Removes an item `ttl` after it became terminal ([`Item::is_terminal`]), so the cache
    /// stays bounded without callers deleting what they have read. Default: off (terminal
    /// items stay until deleted or evicted). Must not be zero.
    ///
    /// The time an item became terminal is when the refresh that made it terminal was applied,
    /// when it was created terminal, or when a caller's [`update`](AutoRefresh::update) stored
    /// a terminal item (each such update restarts the clock). The sweeps remove it, so it
    /// leaves at the first sweep at least `ttl` later: between `ttl` and `ttl` plus the
    /// resync period after it became terminal. The
    /// [`removal_listener`](Self::removal_listener) is told
    /// [`RemovalCause::TerminalExpired`](crate::RemovalCause::TerminalExpired) and subscribers'
    /// channels close; a caller's update between the check and the removal wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh::{AutoRefresh, Batch, CancellationToken, Error, Item};
    ///
    /// #[derive(Clone, Debug)]
    /// struct Job { done: bool }
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { self.done }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Error> {
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .resync_period(Duration::from_secs(10))
    ///     .terminal_ttl(Duration::from_secs(60))
    ///     .build()?;
    /// let running = cache.start(CancellationToken::new())?;
    /// cache.get_or_create(1, Job { done: true })?;
    /// tokio::time::sleep(Duration::from_secs(55)).await;
    /// assert!(cache.get(&1).is_ok());
    /// tokio::time::sleep(Duration::from_secs(10)).await; // the sweep at 60 s removed it
    /// assert!(cache.get(&1).unwrap_err().is_not_found());
    /// running.shutdown().await;
    ///
    /// let err = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .terminal_ttl(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::InvalidConfig { field: "terminal_ttl", .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn terminal_ttl(mut self, ttl: Duration) -> Self {
        self.terminal_ttl = Some(ttl);
        self
    }

    /// Refreshes an item that keeps syncing unchanged less often, up to once per
    /// `max_interval`. Default: off (every non-terminal item is queued every resync period).
    /// `max_interval` must be at least the resync period.
    ///
    /// After `k` refreshes in a row that changed nothing (the sync answered
    /// [`SyncAction::Unchanged`](crate::SyncAction::Unchanged) or nothing for the item), the
    /// sweeps skip the item until `resync_period × 2^k` (at most `max_interval`) has passed
    /// since its last refresh, so its syncs come 2, 4, 8… periods apart. A refresh that
    /// changes it ([`SyncAction::Update`](crate::SyncAction::Update)) or a caller's
    /// [`update`](AutoRefresh::update) brings it back to every period. Sweeps run on the
    /// period's grid and a refresh lands a little after its sweep, so an item is due at the
    /// first sweep no earlier than half a period before its wait ends. Syncs on create and
    /// retries after a failed sync go through the queue as before, and a failed sync leaves
    /// the streak as it was.
    ///
    /// The cost: an item that starts changing after a quiet spell is seen up to
    /// `max_interval` late. The sweep still reads every entry once per period. The staleness
    /// metric counts only the items a sweep queues: the quiet ones it lets wait are stale by
    /// design and would otherwise keep a staleness alert firing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use autorefresh::{AutoRefresh, Batch, CancellationToken, Error, Item};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// #[derive(Clone)]
    /// struct Job;
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { false }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Error> {
    /// let syncs = Arc::new(AtomicUsize::new(0));
    /// let cache = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync({
    ///         let syncs = Arc::clone(&syncs);
    ///         move |_batch: Batch<u64, Job>| {
    ///             syncs.fetch_add(1, Ordering::SeqCst);
    ///             async { Ok(Vec::new()) } // nothing ever changes
    ///         }
    ///     })
    ///     .resync_period(Duration::from_secs(1))
    ///     .adaptive_refresh(Duration::from_secs(4))
    ///     .build()?;
    /// let running = cache.start(CancellationToken::new())?;
    /// cache.get_or_create(1, Job)?;
    /// tokio::time::sleep(Duration::from_millis(14_500)).await;
    /// // On create (0 s), then 2 s, 6 s, 10 s, 14 s apart by 2, 4, 4, 4: not 15 syncs.
    /// assert_eq!(syncs.load(Ordering::SeqCst), 5);
    /// running.shutdown().await;
    ///
    /// let err = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .resync_period(Duration::from_secs(10))
    ///     .adaptive_refresh(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::InvalidConfig { field: "adaptive_max_interval", .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn adaptive_refresh(mut self, max_interval: Duration) -> Self {
        self.adaptive_max_interval = Some(max_interval);
        self
    }

    /// Keeps the items in `store` instead of the default [`PapayaStore`].
    ///
    /// The default reads about ten times faster than [`MokaStore`](crate::MokaStore) (see
    /// `docs/performance.md`) and evicts the least recently used of a 32-entry window (exact
    /// LRU up to 32 items); `MokaStore` evicts in exact LRU order. Its hasher, foldhash, is
    /// randomly seeded per cache but not built to resist ids chosen to collide: for ids an
    /// adversary picks, give it `PapayaStore::new` (SipHash) or `MokaStore`.
    pub fn store(mut self, store: impl Store<K, V>) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Shares the items with the cache's other instances (replicas of one service) through
    /// `cluster`, such as `autorefresh_redis::RedisCluster` (the `redis` feature re-exports
    /// it as [`redis`](crate::redis)). Default: none; the cache is on its own.
    ///
    /// With a cluster, this instance syncs only the items
    /// [`Cluster::refreshes`](crate::Cluster::refreshes) gives it; creates, updates and
    /// deletes are sent to the cluster; the other instances' changes are applied to this
    /// instance's store while the cache runs; [`fetch`](AutoRefresh::fetch) looks up a local
    /// miss in the cluster. See `docs/scale-out.md`.
    pub fn cluster(mut self, cluster: impl Cluster<K, V>) -> Self {
        self.cluster = Some(Arc::new(cluster));
        self
    }

    /// Reports what the cache does to `metrics`. Default: nothing is recorded.
    pub fn metrics(mut self, metrics: impl Metrics) -> Self {
        self.metrics = Arc::new(metrics);
        self
    }

    /// Applies settings read from a configuration file: each field set there overrides what
    /// was set before, and later builder calls override it. `batch_size` sets a
    /// [`FixedSizeBatches`] batcher, `limiter` the rate limiter, and `retry_attempts` and
    /// `timeout` add a retry layer and, inside it, a timeout layer (each attempt has its own
    /// timeout). A bad value is reported by [`build`](Self::build), naming the field.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh::{AutoRefresh, AutoRefreshConfig, Batch, Error, Item};
    ///
    /// #[derive(Clone)]
    /// struct Job;
    /// impl Item for Job {
    ///     fn is_terminal(&self) -> bool { false }
    /// }
    ///
    /// let config: AutoRefreshConfig = toml::from_str("batch_size = 0").unwrap();
    /// let err = AutoRefresh::<u64, Job>::builder("jobs")
    ///     .sync(|_batch: Batch<u64, Job>| async { Ok(Vec::new()) })
    ///     .config(config)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::InvalidConfig { field: "batch_size", .. }));
    /// ```
    pub fn config(mut self, config: AutoRefreshConfig) -> Self {
        let checked = config
            .limiter
            .build::<K>()
            .and_then(|limiter| Ok((limiter, config.batch_size()?, config.timeout()?)));
        let (limiter, batch_size, timeout) = match checked {
            Ok(checked) => checked,
            Err(err) => {
                self.config_error.get_or_insert(err);
                return self;
            }
        };
        self = self
            .resync_period(config.resync_period)
            .parallelism(config.parallelism)
            .sync_on_create(config.sync_on_create)
            .rate_limiter(limiter);
        if let Some(capacity) = config.capacity {
            self = self.capacity(capacity);
        }
        if let Some(size) = batch_size {
            self = self.create_batches(FixedSizeBatches::new(size));
        }
        if let Some(ttl) = config.terminal_ttl {
            self = self.terminal_ttl(ttl);
        }
        if let Some(max_interval) = config.adaptive_max_interval {
            self = self.adaptive_refresh(max_interval);
        }
        if config.retry_attempts > 0 {
            self = self.layer(retry_layer(BackoffRetryPolicy::new(config.retry_attempts)));
        }
        if let Some(timeout) = timeout {
            self = self.layer(TimeoutLayer::new(timeout));
        }
        self
    }

    /// Checks the configuration and builds the cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], naming the field, when no sync function was given, or
    /// capacity, parallelism, the resync period, the updates capacity or the terminal TTL is
    /// zero, the adaptive refresh's maximum interval is shorter than the resync period, or a
    /// capacity was given with a custom store.
    pub fn build(self) -> Result<AutoRefresh<K, V>, Error> {
        let invalid =
            |field, reason: &str| Error::InvalidConfig { field, reason: reason.to_owned() };
        if let Some(err) = self.config_error {
            return Err(err);
        }
        let sync = self.sync.ok_or_else(|| invalid("sync", "is required: call `.sync(...)`"))?;
        if self.parallelism == 0 {
            return Err(invalid("parallelism", "must be at least 1, got 0"));
        }
        if self.resync_period.is_zero() {
            return Err(invalid("resync_period", "must be longer than zero, got 0s"));
        }
        if self.terminal_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(invalid("terminal_ttl", "must be longer than zero, got 0s"));
        }
        if let Some(max_interval) =
            self.adaptive_max_interval.filter(|max| *max < self.resync_period)
        {
            return Err(Error::InvalidConfig {
                field: "adaptive_max_interval",
                reason: format!(
                    "must be at least the resync period ({:?}), got {max_interval:?}",
                    self.resync_period
                ),
            });
        }
        if self.updates_capacity == 0 || self.updates_capacity > usize::MAX / 2 {
            return Err(Error::InvalidConfig {
                field: "updates_capacity",
                reason: format!(
                    "must be between 1 and usize::MAX / 2, got {}",
                    self.updates_capacity
                ),
            });
        }
        let store = match (self.store, self.capacity) {
            (Some(_), Some(capacity)) => {
                return Err(Error::InvalidConfig {
                    field: "capacity",
                    reason: format!(
                        "cannot be combined with a custom store, got {capacity}: bound the store itself"
                    ),
                })
            }
            (Some(store), None) => store,
            (None, capacity) => Box::new(PapayaStore::with_hasher(
                capacity.unwrap_or(DEFAULT_CAPACITY),
                foldhash::fast::RandomState::default(),
            )?),
        };
        let limiter = self
            .limiter
            .unwrap_or_else(|| Arc::new(autorefresh_tower::default_controller_rate_limiter()));
        Ok(AutoRefresh::from_parts(Parts {
            name: self.name,
            store,
            sync: SyncPath::new(sync, self.layers),
            batcher: self.batcher,
            limiter,
            metrics: self.metrics,
            resync_period: self.resync_period,
            parallelism: self.parallelism,
            sync_on_create: self.sync_on_create,
            updates_capacity: self.updates_capacity,
            removal_listener: self.removal_listener,
            terminal_ttl: self.terminal_ttl,
            adaptive_max_interval: self.adaptive_max_interval,
            cluster: self.cluster,
        }))
    }
}
