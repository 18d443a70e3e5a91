//! The removal listener: told of every item that leaves the cache, with why.
//!
//! Removals are sent on an unbounded channel (never waiting, never under a store lock) and the
//! listener is called by one task spawned at `start`, so a slow listener never slows the
//! workers. With no listener set, nothing here exists: the cache holds `None`.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why an item left the cache, as told to the
/// [`removal_listener`](crate::AutoRefreshBuilder::removal_listener).
///
/// # Examples
///
/// ```
/// use autorefresh::RemovalCause;
///
/// let cause = RemovalCause::Evicted;
/// assert!(cause.was_evicted());
/// assert!(!RemovalCause::Deleted.was_evicted());
/// assert_eq!(RemovalCause::TerminalExpired.as_str(), "terminal_expired");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// A caller's [`delete`](crate::AutoRefresh::delete).
    Deleted,
    /// The sweep after a caller's [`delete_delayed`](crate::AutoRefresh::delete_delayed).
    DeleteDelayed,
    /// The store evicted it to stay within its capacity.
    Evicted,
    /// It had been terminal for the
    /// [`terminal_ttl`](crate::AutoRefreshBuilder::terminal_ttl).
    TerminalExpired,
    /// The sync function answered [`SyncAction::Delete`](crate::SyncAction::Delete) for it.
    SyncDeleted,
}

impl RemovalCause {
    /// Whether the cache removed the item on its own to stay within its capacity (not asked
    /// to by a caller, the sync function or the terminal TTL).
    pub fn was_evicted(self) -> bool {
        self == Self::Evicted
    }

    /// A short snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::DeleteDelayed => "delete_delayed",
            Self::Evicted => "evicted",
            Self::TerminalExpired => "terminal_expired",
            Self::SyncDeleted => "sync_deleted",
        }
    }
}

impl fmt::Display for RemovalCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The listener as the builder keeps it.
pub(crate) type RemovalListener<K, V> = Arc<dyn Fn(K, V, RemovalCause) + Send + Sync>;

type Removal<K, V> = (K, V, RemovalCause);

/// The sending side, held by the cache, and the receiving side until `start` takes it.
pub(crate) struct Removals<K, V> {
    sender: mpsc::UnboundedSender<Removal<K, V>>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Removal<K, V>>>>,
    listener: RemovalListener<K, V>,
}

impl<K, V> Removals<K, V>
where
    K: Send + 'static,
    V: Send + 'static,
{
    pub(crate) fn new(listener: RemovalListener<K, V>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self { sender, receiver: Mutex::new(Some(receiver)), listener }
    }

    /// Queues a removal for the listener; never waits. Dropped once the delivery task ended
    /// (after a shutdown).
    pub(crate) fn send(&self, id: K, item: V, cause: RemovalCause) {
        // An error only means the delivery task ended: removals after shutdown are dropped.
        let _ = self.sender.send((id, item, cause));
    }

    /// Spawns the delivery task on `tracker` (once: the cache starts once). It calls the
    /// listener for each removal; when `cancel` fires it waits for the `engine` tasks to end,
    /// delivers what they queued, and ends.
    pub(crate) fn spawn(
        &self,
        name: &str,
        tracker: &TaskTracker,
        engine: TaskTracker,
        cancel: CancellationToken,
        runtime: &tokio::runtime::Handle,
    ) {
        let Some(receiver) = self.receiver.lock().take() else { return };
        let listener = Arc::clone(&self.listener);
        let name = name.to_owned();
        tracker.spawn_on(deliver(name, receiver, listener, engine, cancel), runtime);
    }
}

async fn deliver<K, V>(
    name: String,
    mut receiver: mpsc::UnboundedReceiver<Removal<K, V>>,
    listener: RemovalListener<K, V>,
    engine: TaskTracker,
    cancel: CancellationToken,
) {
    let call = |(id, item, cause): Removal<K, V>| {
        if std::panic::catch_unwind(AssertUnwindSafe(|| listener(id, item, cause))).is_err() {
            tracing::warn!(cache = %name, cause = cause.as_str(), "removal listener panicked");
        }
    };
    loop {
        tokio::select! {
            biased;
            removal = receiver.recv() => match removal {
                Some(removal) => call(removal),
                None => return,
            },
            () = cancel.cancelled() => break,
        }
    }
    // Shutting down: what the dispatcher and workers remove until they end is still told.
    engine.wait().await;
    while let Ok(removal) = receiver.try_recv() {
        call(removal);
    }
}
