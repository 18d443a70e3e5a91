//! [`RedisCluster`]: the [`Cluster`] a cache's replicas share through Redis.

use std::cell::RefCell;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use autorefresh_core::{Cluster, ClusterError, LocalReplica, Shutdown};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::codec::{Codec, Postcard};
use crate::config::RedisConfig;
use crate::error::RedisClusterError;
use crate::items::Items;
use crate::lease::Leases;
use crate::link::Link;
use crate::shard::{shard_of, OwnedShards};

/// What an id must be to be shared: encoded by the codec, and a map key.
pub trait ClusterKey:
    Serialize + DeserializeOwned + Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static
{
}
impl<T: Serialize + DeserializeOwned + Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static>
    ClusterKey for T
{
}

/// What an item must be to be shared: encoded by the codec.
pub trait ClusterItem: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> ClusterItem for T {}

/// The [`Cluster`] of a cache's replicas, coordinated through one Redis server.
///
/// Give one to each replica's builder (`AutoRefresh::builder(..).cluster(cluster)`): items
/// are shared (created once cluster-wide, readable everywhere, updates and deletes reach
/// every replica), the ids are split into shards whose leases the live replicas divide
/// fairly (each item is synced by one replica per period), and a replica that dies loses
/// its leases after [`RedisConfig::lease_ttl`]. Cloning it is cheap: the clones are one
/// member of the cluster.
///
/// See `docs/scale-out.md` for the data model and the guarantees.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use autorefresh_core::Cluster;
/// use autorefresh_redis::{RedisCluster, RedisConfig};
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Job { done: bool }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), autorefresh_redis::RedisClusterError> {
/// // The same settings on every replica of the "jobs" cache.
/// let config = RedisConfig {
///     lease_ttl: Duration::from_secs(30), // at most the cache's resync period
///     ..RedisConfig::new("redis://redis.internal:6379")
/// };
/// let cluster: RedisCluster<String, Job> = RedisCluster::connect("jobs", config).await?;
/// // Give `cluster.clone()` to the cache: AutoRefresh::builder("jobs").cluster(...).
/// // Once the cache runs, this replica holds its share of the shards:
/// println!("member {} holds shards {:?}", cluster.member_id(), cluster.owned_shards());
/// let mine = cluster.refreshes(&"job-7".to_owned());
/// # let _ = mine;
/// # Ok(())
/// # }
/// ```
pub struct RedisCluster<K, V, C = Postcard> {
    inner: Arc<Inner<K, V, C>>,
}

struct Inner<K, V, C> {
    link: Arc<Link>,
    codec: Arc<C>,
    owned: Arc<OwnedShards>,
    leases: Leases,
    items: Items<K, V, C>,
}

impl<K, V, C> Clone for RedisCluster<K, V, C> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V, C> fmt::Debug for RedisCluster<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("member", &self.inner.link.member)
            .field("owned_shards", &self.inner.owned.len())
            .finish_non_exhaustive()
    }
}

impl<K: ClusterKey, V: ClusterItem> RedisCluster<K, V, Postcard> {
    /// Connects to Redis for the cache `name` (the key namespace, unless
    /// [`RedisConfig::namespace`] sets one), with the [`Postcard`] codec.
    ///
    /// # Errors
    ///
    /// [`RedisClusterError::InvalidConfig`] for a bad setting; [`RedisClusterError::Redis`]
    /// when the server cannot be reached within [`RedisConfig::connect_timeout`].
    pub async fn connect(name: &str, config: RedisConfig) -> Result<Self, RedisClusterError> {
        Self::connect_with_codec(name, config, Postcard).await
    }
}

impl<K: ClusterKey, V: ClusterItem, C: Codec> RedisCluster<K, V, C> {
    /// [`connect`](RedisCluster::connect) with another codec.
    ///
    /// # Errors
    ///
    /// As [`connect`](RedisCluster::connect).
    pub async fn connect_with_codec(
        name: &str,
        config: RedisConfig,
        codec: C,
    ) -> Result<Self, RedisClusterError> {
        let link = Arc::new(Link::connect(name, config).await?);
        let codec = Arc::new(codec);
        let owned = Arc::new(OwnedShards::new(link.config.shards));
        let leases = Leases::new(Arc::clone(&link), Arc::clone(&owned));
        let items = Items::new(Arc::clone(&link), Arc::clone(&codec));
        Ok(Self { inner: Arc::new(Inner { link, codec, owned, leases, items }) })
    }

    /// This replica's member id (random, new at every connect).
    pub fn member_id(&self) -> &str {
        &self.inner.link.member
    }

    /// The shards whose lease this replica holds now.
    pub fn owned_shards(&self) -> Vec<u16> {
        self.inner.owned.to_vec()
    }

    /// How many ids have a write of this replica waiting for Redis or on its way: near zero
    /// while Redis keeps up; it grows while Redis is down or slower than the changes (one
    /// pending write per id at most: a newer change replaces an unsent one). Worth exporting
    /// as a gauge.
    pub fn pending_writes(&self) -> usize {
        self.inner.items.pending_writes()
    }

    /// How many writes the last shutdown gave up because Redis did not take them within
    /// [`RedisConfig::shutdown_flush_timeout`](crate::RedisConfig::shutdown_flush_timeout)
    /// (changes that had returned to their callers, which the other replicas never see): 0
    /// after a clean shutdown. Also logged as a warning.
    pub fn unflushed_writes(&self) -> u64 {
        self.inner.items.unflushed_count()
    }

    /// How many ids and items this replica read from Redis that would not decode with its
    /// codec, since it started: skipped (the local cache keeps what it had) and logged. Non-zero
    /// means another writer shares the namespace with a different codec or item type, or a
    /// corrupt write: worth exporting as a counter and alerting on.
    pub fn undecodable(&self) -> u64 {
        self.inner.items.undecodable_count()
    }

    /// The shard `id` belongs to, or `None` if it does not encode.
    pub fn shard_of(&self, id: &K) -> Option<u16> {
        KEY_BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            self.inner.codec.encode_into(id, buffer).ok()?;
            Some(shard_of(buffer, self.inner.link.config.shards))
        })
    }
}

thread_local! {
    /// The sweep asks for every id's shard: encode into one buffer per thread, not a new one.
    static KEY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[async_trait::async_trait]
impl<K: ClusterKey, V: ClusterItem, C: Codec> Cluster<K, V> for RedisCluster<K, V, C> {
    fn refreshes(&self, id: &K) -> bool {
        // An id that does not encode cannot be shared: this replica keeps it to itself.
        self.shard_of(id).is_none_or(|shard| self.inner.owned.contains(shard))
    }

    fn created(&self, id: &K, item: &V) {
        self.inner.items.created(id, item);
    }

    fn updated(&self, id: &K, item: &V) {
        self.inner.items.updated(id, item);
    }

    fn refreshed(&self, id: &K, item: &V) {
        self.inner.items.refreshed(id, item);
    }

    fn deleted(&self, id: &K) {
        self.inner.items.deleted(id);
    }

    async fn fetch(&self, id: &K) -> Result<Option<V>, ClusterError> {
        Ok(self.inner.items.fetch(id).await?)
    }

    async fn run(&self, local: Arc<dyn LocalReplica<K, V>>, shutdown: Shutdown) {
        let shutdown = shutdown.shared();
        let (acquired_tx, acquired_rx) = mpsc::unbounded_channel();
        tokio::join!(
            self.inner.leases.run(shutdown.clone().boxed(), acquired_tx),
            self.inner.items.run(local, shutdown.boxed(), acquired_rx),
        );
    }
}
