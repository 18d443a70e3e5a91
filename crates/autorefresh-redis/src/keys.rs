//! The names of the keys and channels a cache uses in Redis.
//!
//! Every name starts with `autorefresh:{<namespace>}:`; the braces make the namespace a hash
//! tag, so on a Redis Cluster all of a cache's keys share one slot and its scripts may touch
//! several of them.

/// The key names of one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        Self { prefix: format!("autorefresh:{{{namespace}}}:") }
    }

    /// HASH: encoded id → encoded item, for the ids of `shard`.
    pub(crate) fn items(&self, shard: u16) -> String {
        format!("{}items:{shard}", self.prefix)
    }

    /// HASH: encoded id → the item's version (an integer from [`Keys::clock`]).
    pub(crate) fn versions(&self, shard: u16) -> String {
        format!("{}versions:{shard}", self.prefix)
    }

    /// STRING: the counter every write takes its version from, so versions never repeat,
    /// even for an id deleted and created again.
    pub(crate) fn clock(&self) -> String {
        format!("{}clock", self.prefix)
    }

    /// STRING: a token written when the namespace is first used; a replica that finds it
    /// gone or changed knows Redis lost its data.
    pub(crate) fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// ZSET: member id → when its membership expires (Redis time, ms).
    pub(crate) fn members(&self) -> String {
        format!("{}members", self.prefix)
    }

    /// STRING: the member holding `shard`'s lease, with the lease's expiry as its TTL.
    pub(crate) fn lease(&self, shard: u16) -> String {
        format!("{}lease:{shard}", self.prefix)
    }

    /// Pub/sub channel of item changes (upserts and deletes).
    pub(crate) fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// Pub/sub channel of membership changes (joins, leaves, released shards).
    pub(crate) fn membership(&self) -> String {
        format!("{}membership", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_a_hash_tag() {
        let keys = Keys::new("jobs");
        assert_eq!(keys.items(3), "autorefresh:{jobs}:items:3");
        assert_eq!(keys.lease(0), "autorefresh:{jobs}:lease:0");
        assert_eq!(keys.events(), "autorefresh:{jobs}:events");
    }
}
