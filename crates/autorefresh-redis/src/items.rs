//! The item plane: shared items in Redis, the outbox of local changes, and the changes of
//! other replicas applied locally.

use std::marker::PhantomData;
use std::sync::Arc;

use autorefresh_core::{LocalReplica, Shutdown};
use tokio::sync::mpsc;

use crate::cluster::{ClusterItem, ClusterKey};
use crate::codec::Codec;
use crate::error::RedisClusterError;
use crate::link::Link;
use crate::shard::OwnedShards;

/// One replica's item plane.
pub(crate) struct Items<K, V, C> {
    link: Arc<Link>,
    codec: Arc<C>,
    owned: Arc<OwnedShards>,
    _items: PhantomData<fn(K, V)>,
}

impl<K: ClusterKey, V: ClusterItem, C: Codec> Items<K, V, C> {
    pub(crate) fn new(link: Arc<Link>, codec: Arc<C>, owned: Arc<OwnedShards>) -> Self {
        Self { link, codec, owned, _items: PhantomData }
    }

    pub(crate) fn created(&self, _id: &K, _item: &V) {}

    pub(crate) fn updated(&self, _id: &K, _item: &V) {}

    pub(crate) fn refreshed(&self, _id: &K, _item: &V) {}

    pub(crate) fn deleted(&self, _id: &K) {}

    pub(crate) async fn fetch(&self, _id: &K) -> Result<Option<V>, RedisClusterError> {
        let _ = (&self.link, &self.codec, &self.owned);
        Ok(None)
    }

    pub(crate) async fn run(
        &self,
        _local: Arc<dyn LocalReplica<K, V>>,
        shutdown: Shutdown,
        _acquired: mpsc::UnboundedReceiver<Vec<u16>>,
    ) {
        shutdown.await;
    }
}
