//! Scale the [autorefresh] cache past one machine: replicas of a service share one refresh
//! workload through Redis.
//!
//! Each replica keeps its own local store, so reads never wait on Redis; [`RedisCluster`]
//! (a [`Cluster`](autorefresh_core::Cluster)) carries the rest:
//!
//! - **Shared items**: a create goes to Redis as create-if-absent (one winner), updates are
//!   written with a version checked in a Lua script (a stale refresh or one after a delete
//!   never overwrites nor resurrects), deletes reach every replica, and a local miss may
//!   look in Redis. Values are encoded by a [`Codec`] ([`Postcard`] by default).
//! - **One refresher per item**: ids are split into [`RedisConfig::shards`] by a stable hash;
//!   the live replicas divide the shards' leases fairly (`SET NX PX`, renewed), and each
//!   syncs only the items of its shards.
//! - **Failover**: a dead replica's leases expire after [`RedisConfig::lease_ttl`] and are
//!   taken over; a replica shutting down releases them at once.
//! - **Propagation**: applied changes are published; other replicas apply them to their
//!   local stores (and subscribers) within milliseconds, and resynchronize from Redis after
//!   a reconnect.
//! - **Faults**: with Redis down or slow, reads serve the local store and owned shards keep
//!   refreshing; writes wait in an outbox, retried with backoff, and are reconciled by
//!   version when Redis returns.
//!
//! The data model, the guarantees and their limits are in `docs/scale-out.md`.
//!
//! [autorefresh]: https://docs.rs/autorefresh
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod cluster;
mod codec;
mod config;
mod error;
mod items;
mod keys;
mod lease;
mod link;
mod shard;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cluster::{ClusterItem, ClusterKey, RedisCluster};
pub use codec::{Codec, Json, Postcard};
pub use config::{RedisConfig, MAX_SHARDS};
pub use error::{CodecError, RedisClusterError};
