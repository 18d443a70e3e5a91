//! The sync path as a tower service, so any tower layer can wrap the user's sync function.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use autorefresh_core::{Batch, ItemSyncResponse, SyncError, SyncFunc, SyncResult};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// The sync path once layered: a type-erased, cloneable tower service from a batch to its
/// responses. Layers given to [`AutoRefreshBuilder::layer`](crate::AutoRefreshBuilder::layer)
/// wrap a service of this type.
pub type SyncService<K, V> =
    BoxCloneSyncService<Batch<K, V>, Vec<ItemSyncResponse<K, V>>, SyncError>;

/// Wraps a sync path in one more layer (kept by the builder until `build`).
pub(crate) type ApplyLayer<K, V> = Box<dyn FnOnce(SyncService<K, V>) -> SyncService<K, V> + Send>;

/// How a worker calls the user's sync function: directly when no layer was given (one
/// allocation per batch, the sync function's own), through the layered service otherwise.
pub(crate) enum SyncPath<K, V> {
    Direct(Arc<dyn SyncFunc<K, V>>),
    Layered(SyncService<K, V>),
}

impl<K, V> Clone for SyncPath<K, V> {
    fn clone(&self) -> Self {
        match self {
            Self::Direct(sync) => Self::Direct(Arc::clone(sync)),
            Self::Layered(service) => Self::Layered(service.clone()),
        }
    }
}

impl<K: Send + 'static, V: Send + 'static> SyncPath<K, V> {
    /// The path for `sync` wrapped in `layers`, the first given outermost (as tower's
    /// `ServiceBuilder` orders them).
    pub(crate) fn new(sync: Arc<dyn SyncFunc<K, V>>, layers: Vec<ApplyLayer<K, V>>) -> Self {
        if layers.is_empty() {
            return Self::Direct(sync);
        }
        let innermost = BoxCloneSyncService::new(SyncFuncService { sync });
        Self::Layered(layers.into_iter().rev().fold(innermost, |service, layer| layer(service)))
    }

    /// Syncs one batch: waits until the path can take it, then calls it. A panic anywhere in
    /// the sync function, even before it returns its future, surfaces when this is polled.
    pub(crate) async fn call(&mut self, batch: Batch<K, V>) -> SyncResult<K, V> {
        match self {
            Self::Direct(sync) => sync.sync(batch).await,
            Self::Layered(service) => service.ready().await?.call(batch).await,
        }
    }
}

/// The user's sync function as the innermost service of a layered path.
struct SyncFuncService<K, V> {
    sync: Arc<dyn SyncFunc<K, V>>,
}

impl<K, V> Clone for SyncFuncService<K, V> {
    fn clone(&self) -> Self {
        Self { sync: Arc::clone(&self.sync) }
    }
}

impl<K: Send + 'static, V: Send + 'static> Service<Batch<K, V>> for SyncFuncService<K, V> {
    type Response = Vec<ItemSyncResponse<K, V>>;
    type Error = SyncError;
    type Future = Pin<Box<dyn Future<Output = SyncResult<K, V>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), SyncError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch<K, V>) -> Self::Future {
        let sync = Arc::clone(&self.sync);
        Box::pin(async move { sync.sync(batch).await })
    }
}
