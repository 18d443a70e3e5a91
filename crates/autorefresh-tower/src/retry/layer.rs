//! Building the retry layer.

use tower::retry::RetryLayer;

use super::BackoffRetryPolicy;

/// Tower's [`RetryLayer`] with a [`BackoffRetryPolicy`]: the layer to add to the sync path.
///
/// # Examples
///
/// ```
/// use autorefresh_core::{Batch, ItemSyncResponse, SyncError};
/// use autorefresh_tower::retry::{retry_layer, BackoffRetryPolicy};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let sync = ServiceBuilder::new()
///     .layer(retry_layer(BackoffRetryPolicy::new(3)))
///     .service(service_fn(|_batch: Batch<u64, u32>| async {
///         Ok::<Vec<ItemSyncResponse<u64, u32>>, SyncError>(Vec::new())
///     }));
/// assert!(sync.oneshot(Vec::new()).await.unwrap().is_empty());
/// # }
/// ```
pub fn retry_layer(policy: BackoffRetryPolicy) -> RetryLayer<BackoffRetryPolicy> {
    RetryLayer::new(policy)
}
