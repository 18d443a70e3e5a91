//! The item plane: shared items in Redis, the outbox of local changes, and the changes of
//! other replicas applied locally.
//!
//! - Notifications encode the change and queue it in the [`Outbox`] (never blocking on
//!   Redis, never failing); the writer sends the outbox in batches through one Lua script
//!   ([`scripts`]) and reconciles every answer through the [`LocalReplica`].
//! - The subscriber applies the other replicas' events newer than the mirror (the version
//!   this replica last saw per id), and resynchronizes every shard after a reconnect.
//! - Newly leased shards are loaded, so their new owner refreshes current items.
//! - The epoch tells a Redis that lost its data: every local item is then written back.

mod events;
mod outbox;
mod scripts;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::{LocalReplica, Shutdown};
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::outbox::{Kind, Newer, Op, Outbox};
use self::scripts::{Answer, Reply};
use crate::cluster::{ClusterItem, ClusterKey};
use crate::codec::Codec;
use crate::error::CodecError;
use crate::error::RedisClusterError;
use crate::link::Link;
use crate::shard::shard_of;

/// The most writes sent in one script call: large enough to amortize the round trip, small
/// enough not to stall Redis.
const BATCH: usize = 128;

/// How long a delete is remembered: far longer than an event spends on its way.
const TOMB_TTL: Duration = Duration::from_secs(30);

type Map<K, T> = HashMap<K, T, foldhash::fast::RandomState>;

/// One replica's item plane.
pub(crate) struct Items<K, V, C> {
    link: Arc<Link>,
    codec: Arc<C>,
    state: Mutex<State<K, V>>,
    /// Wakes the writer when the outbox gains a write.
    wake: Notify,
    /// One resync or reseed at a time: they read and rewrite the whole mirror.
    sync: tokio::sync::Mutex<()>,
    /// Whether Redis is known to be unreachable: warn once per outage, not per retry.
    outage: AtomicBool,
    encode_warned: AtomicBool,
    /// Ids and items read from Redis that would not decode (see [`Items::undecodable`]).
    undecodable: AtomicU64,
    /// Writes given up when a shutdown's flush ran out of time.
    unflushed: AtomicU64,
}

struct State<K, V> {
    /// The cluster version this replica last saw per id: CAS bases, and which events are
    /// newer than the local item. Ids with a write in the outbox are governed by the writer.
    mirror: Map<K, u64>,
    /// Versions of recent deletes, so an older change still on its way (an event published
    /// before this replica's own delete, a resync's snapshot) does not bring the item back.
    /// Kept for [`TOMB_TTL`], and while a resync runs.
    tombs: Map<K, (u64, Instant)>,
    /// The size at which `tombs` is next pruned (amortized: pruning walks them all).
    prune_at: usize,
    syncing: usize,
    outbox: Outbox<K, V>,
    /// The epoch this replica's writes are for (`None` until first read).
    epoch: Option<Vec<u8>>,
    /// Bumped at every reseed: a batch built before one is sent again as write-backs.
    generation: u64,
}

impl<K: ClusterKey, V> State<K, V> {
    /// The newest version known for `id`, deleted or not.
    fn known(&self, id: &K) -> u64 {
        self.mirror.get(id).copied().max(self.tombs.get(id).map(|&(v, _)| v)).unwrap_or(0)
    }

    /// `id` was deleted at `version`.
    fn forget(&mut self, id: &K, version: u64) {
        self.mirror.remove(id);
        let now = Instant::now();
        if self.tombs.len() >= self.prune_at && self.syncing == 0 {
            self.tombs.retain(|_, &mut (_, at)| now.duration_since(at) < TOMB_TTL);
            self.prune_at = (2 * self.tombs.len()).max(1024);
        }
        self.tombs.insert(id.clone(), (version, now));
    }
}

/// Writes taken from the outbox for one script call.
struct Batch<K> {
    generation: u64,
    epoch: Vec<u8>,
    ops: Vec<(K, Op)>,
}

impl<K: ClusterKey, V: ClusterItem, C: Codec> Items<K, V, C> {
    pub(crate) fn new(link: Arc<Link>, codec: Arc<C>) -> Self {
        Self {
            link,
            codec,
            state: Mutex::new(State {
                mirror: Map::default(),
                tombs: Map::default(),
                prune_at: 1024,
                syncing: 0,
                outbox: Outbox::default(),
                epoch: None,
                generation: 0,
            }),
            wake: Notify::new(),
            sync: tokio::sync::Mutex::new(()),
            outage: AtomicBool::new(false),
            encode_warned: AtomicBool::new(false),
            undecodable: AtomicU64::new(0),
            unflushed: AtomicU64::new(0),
        }
    }

    /// How many ids and items read from Redis would not decode with this replica's codec, since
    /// it started.
    pub(crate) fn undecodable_count(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Bytes read from Redis that do not decode (another service's data under the same
    /// namespace, another codec or version of the item type, a corrupt write): skipped, never
    /// silently. Logged at the first and then at every power of two, so that a namespace
    /// full of foreign data does not flood the log.
    fn undecodable(&self, what: &'static str, error: &CodecError) {
        let count = self.undecodable.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            warn!(
                what,
                count,
                error = %error,
                "skipped bytes in redis that do not decode with this cache's codec"
            );
        }
    }

    /// How many ids have a write waiting for Redis or on its way.
    pub(crate) fn pending_writes(&self) -> usize {
        self.state.lock().outbox.len()
    }

    pub(crate) fn created(&self, id: &K, item: &V) {
        self.queue(id, Some(item), Kind::Create);
    }

    pub(crate) fn updated(&self, id: &K, item: &V) {
        self.queue(id, Some(item), Kind::Update);
    }

    pub(crate) fn refreshed(&self, id: &K, item: &V) {
        self.queue(id, Some(item), Kind::Refresh(None));
    }

    pub(crate) fn deleted(&self, id: &K) {
        self.queue(id, None, Kind::Delete);
    }

    fn queue(&self, id: &K, item: Option<&V>, kind: Kind) {
        let encoded = self.codec.encode(id).and_then(|id| {
            let item = item.map(|item| self.codec.encode(item)).transpose()?;
            Ok((id, item.unwrap_or_default()))
        });
        let (id_bytes, item) = match encoded {
            Ok(encoded) => encoded,
            Err(error) => {
                // The id or item cannot be shared; the local store keeps it.
                if !self.encode_warned.swap(true, Ordering::Relaxed) {
                    warn!(%error, ?id, "an item does not encode: it stays on this replica");
                }
                return;
            }
        };
        let shard = shard_of(&id_bytes, self.link.config.shards);
        let mut state = self.state.lock();
        let kind = match kind {
            // The base is the version the refreshed item derives from: the mirror's, unless
            // a write of this replica is ahead of it (then: what that write produces).
            Kind::Refresh(_) if !state.outbox.contains(id) => {
                Kind::Refresh(state.mirror.get(id).copied())
            }
            other => other,
        };
        state.outbox.push(id.clone(), Op { kind, id: id_bytes, shard, item });
        drop(state);
        self.wake.notify_one();
    }

    pub(crate) async fn fetch(&self, id: &K) -> Result<Option<V>, RedisClusterError> {
        let id_bytes = self.codec.encode(id)?;
        let shard = shard_of(&id_bytes, self.link.config.shards);
        let mut conn = self.link.conn.clone();
        let Some((version, item)) =
            scripts::fetch(&mut conn, &self.link.keys, shard, &id_bytes).await?
        else {
            return Ok(None);
        };
        let item = self.codec.decode(&item)?;
        let mut state = self.state.lock();
        // The cache stores what a fetch answers, and nothing here removes it again (a
        // non-owner never syncs it; a resync removes only ids in the mirror). So an answer
        // that a delete this replica knows of has overtaken is no item: one applied from
        // another replica's event while the read was on its way (they travel on different
        // connections), or one of this replica's own that Redis has not taken yet.
        let deleted_since = state.tombs.get(id).is_some_and(|&(deleted, _)| deleted > version);
        let deleting = state
            .outbox
            .entry_mut(id)
            .is_some_and(|entry| matches!(&entry.pending, Some(op) if op.kind == Kind::Delete));
        if deleted_since || deleting {
            return Ok(None);
        }
        if !state.outbox.contains(id) && version > state.known(id) {
            state.mirror.insert(id.clone(), version);
        }
        Ok(Some(item))
    }

    pub(crate) async fn run(
        &self,
        local: Arc<dyn LocalReplica<K, V>>,
        shutdown: Shutdown,
        acquired: mpsc::UnboundedReceiver<Vec<u16>>,
    ) {
        let (stop_tx, stop) = watch::channel(false);
        let local = &*local;
        let trigger = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(
            trigger,
            self.write_loop(local, stop.clone()),
            self.subscribe_loop(local, stop.clone()),
            self.load_loop(local, acquired, stop),
        );
    }

    // ---- the writer ----

    /// Sends the outbox until `stop`, then flushes it for at most the shutdown flush timeout.
    async fn write_loop(&self, local: &dyn LocalReplica<K, V>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(&self.link);
        let mut deadline = None;
        loop {
            if deadline.is_none() && *stop.borrow() {
                deadline = Some(Instant::now() + self.link.config.shutdown_flush_timeout);
            }
            if let Err(error) = bounded(deadline, self.ensure_epoch()).await {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return self.abandon();
                }
                self.down(&error);
                pause(&mut backoff, deadline, &mut stop).await;
                continue;
            }
            let Some(batch) = self.next_batch() else {
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = stopped(&mut stop) => {}
                }
                continue;
            };
            let ops: Vec<&Op> = batch.ops.iter().map(|(_, op)| op).collect();
            let mut conn = self.link.conn.clone();
            let sent = scripts::write(
                &mut conn,
                &self.link.keys,
                &self.link.member,
                &batch.epoch,
                self.tombstone_window_ms(),
                &ops,
            );
            match bounded(deadline, sent).await {
                Ok(Reply::Answers(answers)) => {
                    self.settle(local, batch, answers);
                    backoff.reset();
                    self.up();
                }
                Ok(Reply::Epoch) => {
                    self.requeue(batch);
                    if let Err(error) = bounded(deadline, self.resync(local, None, true)).await {
                        self.down(&error);
                        pause(&mut backoff, deadline, &mut stop).await;
                    }
                }
                Err(error) => {
                    self.requeue(batch);
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return self.abandon();
                    }
                    self.down(&error);
                    pause(&mut backoff, deadline, &mut stop).await;
                }
            }
        }
    }

    /// The shutdown's flush ran out of time: what is left is given up, counted and logged.
    fn abandon(&self) {
        let unsent = self.state.lock().outbox.len();
        if unsent > 0 {
            self.unflushed.fetch_add(unsent as u64, Ordering::Relaxed);
            warn!(
                unsent,
                timeout = ?self.link.config.shutdown_flush_timeout,
                "shutting down with writes redis did not take: the other replicas will not see \
                 these changes (see shutdown_flush_timeout)"
            );
        }
    }

    /// How many writes shutdowns gave up (see [`RedisConfig::shutdown_flush_timeout`]).
    ///
    /// [`RedisConfig::shutdown_flush_timeout`]: crate::RedisConfig::shutdown_flush_timeout
    pub(crate) fn unflushed_count(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// How long after an epoch starts deletes leave tombstones: long enough for every
    /// replica to notice a data loss and write its items back.
    fn tombstone_window_ms(&self) -> u64 {
        let config = &self.link.config;
        let window = Duration::from_secs(60) + 20 * config.retry_max_backoff + 2 * config.lease_ttl;
        u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    }

    fn next_batch(&self) -> Option<Batch<K>> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let epoch = state.epoch.clone()?;
        let mut ops = state.outbox.take(BATCH);
        if ops.is_empty() {
            return None;
        }
        for (id, op) in &mut ops {
            if op.kind == Kind::Refresh(None) {
                op.kind = Kind::Refresh(Some(state.mirror.get(id).copied().unwrap_or(0)));
            }
        }
        Some(Batch { generation: state.generation, epoch, ops })
    }

    fn requeue(&self, batch: Batch<K>) {
        let mut state = self.state.lock();
        let stale = batch.generation != state.generation;
        for (id, op) in batch.ops {
            state.outbox.requeue(id, if stale { op.reseeded() } else { op });
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Applies the answers of a batch to the mirror and, where this replica's write did not
    /// win, to the local store.
    fn settle(&self, local: &dyn LocalReplica<K, V>, batch: Batch<K>, answers: Vec<Answer>) {
        let mut guard = self.state.lock();
        if batch.generation != guard.generation {
            // Answered before a reseed this replica made since: send them again.
            drop(guard);
            return self.requeue(batch);
        }
        let state = &mut *guard;
        for ((id, op), answer) in batch.ops.into_iter().zip(answers) {
            let learned = match answer {
                Answer::Applied(version) if op.kind == Kind::Delete => {
                    state.forget(&id, version);
                    version
                }
                Answer::Applied(version) => {
                    state.mirror.insert(id.clone(), version);
                    version
                }
                Answer::Current { version, item } => {
                    // Lost (a create) or stale (a refresh): the cluster's item stands, and a
                    // refresh queued since derives from the loser. A caller's change still goes.
                    state.mirror.insert(id.clone(), version);
                    let entry = state.outbox.entry_mut(&id);
                    if let Some(entry) = entry {
                        if matches!(entry.pending, Some(Op { kind: Kind::Refresh(_), .. })) {
                            entry.pending = None;
                        }
                        if entry.pending.is_none() {
                            match self.codec.decode::<V>(&item) {
                                Ok(item) => local.upsert(id.clone(), item),
                                Err(error) => self.undecodable("item", &error),
                            }
                        }
                    }
                    version
                }
                Answer::Gone => {
                    // Deleted elsewhere: never undone by this replica's update or refresh.
                    state.mirror.remove(&id);
                    if let Some(entry) = state.outbox.entry_mut(&id) {
                        if let Some(Op {
                            kind: Kind::Refresh(_) | Kind::Update | Kind::Reseed,
                            ..
                        }) = entry.pending
                        {
                            entry.pending = None;
                        }
                        if matches!(entry.pending, None | Some(Op { kind: Kind::Delete, .. })) {
                            local.remove(&id);
                        }
                    }
                    0
                }
            };
            if let Some(entry) = state.outbox.entry_mut(&id) {
                let newer = entry.newer.take().filter(|newer| newer.version > learned);
                if let (None, Some(newer)) = (&entry.pending, newer) {
                    // Another replica wrote after this one while the answer was on its way.
                    match newer.item {
                        Some(item) => {
                            state.mirror.insert(id.clone(), newer.version);
                            local.upsert(id.clone(), item);
                        }
                        None => {
                            state.forget(&id, newer.version);
                            local.remove(&id);
                        }
                    }
                }
            }
            state.outbox.settle(&id);
        }
    }

    // ---- the epoch, resync and reseed ----

    async fn ensure_epoch(&self) -> RedisResult<()> {
        let known = self.state.lock().epoch.is_some();
        if known {
            return Ok(());
        }
        let mut conn = self.link.conn.clone();
        let epoch = scripts::claim_epoch(&mut conn, &self.link.keys, 0).await?;
        self.state.lock().epoch.get_or_insert(epoch);
        Ok(())
    }

    /// Brings `shards` (`None`: all) up to Redis: newer items upserted, and with `removals`,
    /// local ids that Redis no longer holds removed. Reseeds first if Redis lost its data.
    async fn resync(
        &self,
        local: &dyn LocalReplica<K, V>,
        shards: Option<Vec<u16>>,
        removals: bool,
    ) -> RedisResult<()> {
        let _one = self.sync.lock().await;
        self.ensure_epoch().await?;
        let (mut shards, mut removals) = (shards, removals);
        while !self.resync_once(local, shards.as_deref(), removals).await? {
            self.reseed(local).await?;
            (shards, removals) = (None, true);
        }
        Ok(())
    }

    /// One pass of [`resync`](Self::resync); `false` if the epoch changed.
    async fn resync_once(
        &self,
        local: &dyn LocalReplica<K, V>,
        shards: Option<&[u16]>,
        removals: bool,
    ) -> RedisResult<bool> {
        let all: Vec<u16>;
        let shards = match shards {
            Some(shards) => shards,
            None => {
                all = (0..self.link.config.shards).collect();
                &all
            }
        };
        let _syncing = Syncing::new(&self.state);
        let mut local_ids: HashMap<u16, Vec<(K, Vec<u8>)>> = HashMap::new();
        if removals {
            local.for_each_id(&mut |id| {
                if let Ok(bytes) = self.codec.encode(id) {
                    let shard = shard_of(&bytes, self.link.config.shards);
                    local_ids.entry(shard).or_default().push((id.clone(), bytes));
                }
            });
        }
        let mut conn = self.link.conn.clone();
        let (mut upserted, mut removed) = (0_usize, 0_usize);
        for &shard in shards {
            let snapshot = scripts::snapshot(&mut conn, &self.link.keys, shard).await?;
            let mut guard = self.state.lock();
            let state = &mut *guard;
            if snapshot.epoch != state.epoch {
                return Ok(false);
            }
            let mut present = HashSet::new();
            for (id_bytes, version, item_bytes) in &snapshot.items {
                present.insert(id_bytes.as_slice());
                let id = match self.codec.decode::<K>(id_bytes) {
                    Ok(id) => id,
                    Err(error) => {
                        self.undecodable("id", &error);
                        continue;
                    }
                };
                let version = *version;
                if let Some(entry) = state.outbox.entry_mut(&id) {
                    if entry.newer.as_ref().is_none_or(|newer| newer.version < version) {
                        match self.codec.decode::<V>(item_bytes) {
                            Ok(item) => entry.newer = Some(Newer { version, item: Some(item) }),
                            Err(error) => self.undecodable("item", &error),
                        }
                    }
                    continue;
                }
                if version <= state.known(&id) {
                    continue;
                }
                let item = match self.codec.decode::<V>(item_bytes) {
                    Ok(item) => item,
                    Err(error) => {
                        self.undecodable("item", &error);
                        continue;
                    }
                };
                state.mirror.insert(id.clone(), version);
                local.upsert(id, item);
                upserted += 1;
            }
            for (id, bytes) in local_ids.remove(&shard).unwrap_or_default() {
                // Gone from Redis, and not because of a write this replica has yet to make
                // or one newer than the snapshot.
                if present.contains(bytes.as_slice()) || state.outbox.contains(&id) {
                    continue;
                }
                if state.mirror.get(&id).is_some_and(|&version| version <= snapshot.clock) {
                    state.mirror.remove(&id);
                    local.remove(&id);
                    removed += 1;
                }
            }
        }
        debug!(shards = shards.len(), upserted, removed, "resynchronized from redis");
        Ok(true)
    }

    /// Redis lost its data: take the new epoch, and write every local item back.
    async fn reseed(&self, local: &dyn LocalReplica<K, V>) -> RedisResult<()> {
        let highest = {
            let state = self.state.lock();
            let tombs = state.tombs.values().map(|&(version, _)| version);
            state.mirror.values().copied().chain(tombs).max().unwrap_or(0)
        };
        let mut conn = self.link.conn.clone();
        let epoch = scripts::claim_epoch(&mut conn, &self.link.keys, highest).await?;
        let mut back = Vec::new();
        local.for_each_id(&mut |id| back.push(id.clone()));
        let ops: Vec<(K, Op)> = back
            .into_iter()
            .filter_map(|id| {
                let item = self.codec.encode(&local.get(&id)?).ok()?;
                let id_bytes = self.codec.encode(&id).ok()?;
                let shard = shard_of(&id_bytes, self.link.config.shards);
                Some((id, Op { kind: Kind::Reseed, id: id_bytes, shard, item }))
            })
            .collect();
        let mut written = 0_usize;
        {
            let mut state = self.state.lock();
            state.mirror.clear();
            state.tombs.clear();
            state.outbox.reseed();
            state.epoch = Some(epoch);
            state.generation += 1;
            for (id, op) in ops {
                if !state.outbox.contains(&id) {
                    state.outbox.push(id, op);
                    written += 1;
                }
            }
        }
        self.wake.notify_one();
        warn!(
            items = written,
            "redis lost its data (new epoch): writing this replica's items back"
        );
        Ok(())
    }

    // ---- the subscriber ----

    /// Applies the other replicas' events; after every (re)connect, resynchronizes first.
    async fn subscribe_loop(
        &self,
        local: &dyn LocalReplica<K, V>,
        mut stop: watch::Receiver<bool>,
    ) {
        let config = &self.link.config;
        let mut backoff = Backoff::new(&self.link);
        let ping_every = config.response_timeout.max(Duration::from_secs(1));
        loop {
            let session = async {
                let pubsub =
                    timed(config.connect_timeout, self.link.client.get_async_pubsub()).await?;
                let (mut sink, stream) = pubsub.split();
                timed(config.response_timeout, sink.subscribe(self.link.keys.events())).await?;
                // Subscribed first, so nothing published after the snapshot is missed.
                self.resync(local, None, true).await?;
                RedisResult::Ok((sink, stream))
            };
            let session = tokio::select! {
                session = session => session,
                () = stopped(&mut stop) => return,
            };
            let (mut sink, mut stream) = match session {
                Ok(session) => session,
                Err(error) => {
                    self.down(&error);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next()) => continue,
                        () = stopped(&mut stop) => return,
                    }
                }
            };
            self.up();
            let started = Instant::now();
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                tokio::select! {
                    () = stopped(&mut stop) => return,
                    message = stream.next() => match message {
                        Some(message) => self.apply_event(local, message.get_payload_bytes()),
                        None => break,
                    },
                    _ = ping.tick() => {
                        let pong = timed(config.response_timeout, sink.ping::<redis::Value>());
                        if pong.await.is_err() {
                            break;
                        }
                    }
                }
            }
            self.down(&"the event subscription was lost");
            // Every session starts with a full resync (every shard read back): reconnecting at
            // once after a session that died young (a busy Redis failing the pings, a proxy or
            // an output buffer limit dropping it) would reread the whole keyspace in a loop,
            // against a Redis already struggling. Back off as after a failed connect; only a
            // session that outlived a ping was healthy enough to start the backoff over.
            if started.elapsed() >= ping_every {
                backoff.reset();
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next()) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    fn apply_event(&self, local: &dyn LocalReplica<K, V>, payload: &[u8]) {
        let Some(event) = events::parse(payload) else {
            debug!(len = payload.len(), "ignored a malformed event");
            return;
        };
        if event.member == self.link.member.as_bytes() {
            return;
        }
        let id = match self.codec.decode::<K>(event.id) {
            Ok(id) => id,
            Err(error) => return self.undecodable("event id", &error),
        };
        let item = if event.upsert {
            match self.codec.decode::<V>(event.item) {
                Ok(item) => Some(item),
                Err(error) => return self.undecodable("event item", &error),
            }
        } else {
            None
        };
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if let Some(entry) = state.outbox.entry_mut(&id) {
            // This replica's own write for the id is ahead: settled first, then compared.
            if entry.newer.as_ref().is_none_or(|newer| newer.version < event.version) {
                entry.newer = Some(Newer { version: event.version, item });
            }
            return;
        }
        if event.version <= state.known(&id) {
            return;
        }
        match item {
            Some(item) => {
                state.mirror.insert(id.clone(), event.version);
                local.upsert(id, item);
            }
            None => {
                state.forget(&id, event.version);
                local.remove(&id);
            }
        }
    }

    // ---- newly leased shards ----

    async fn load_loop(
        &self,
        local: &dyn LocalReplica<K, V>,
        mut acquired: mpsc::UnboundedReceiver<Vec<u16>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut waiting = BTreeSet::new();
        let mut backoff = Backoff::new(&self.link);
        let mut open = true;
        loop {
            if waiting.is_empty() {
                if !open {
                    return stopped(&mut stop).await;
                }
                tokio::select! {
                    shards = acquired.recv() => match shards {
                        Some(shards) => waiting.extend(shards),
                        None => open = false,
                    },
                    () = stopped(&mut stop) => return,
                }
                continue;
            }
            while let Ok(shards) = acquired.try_recv() {
                waiting.extend(shards);
            }
            let shards: Vec<u16> = waiting.iter().copied().collect();
            let loaded = tokio::select! {
                loaded = self.resync(local, Some(shards), false) => loaded,
                () = stopped(&mut stop) => return,
            };
            match loaded {
                Ok(()) => {
                    waiting.clear();
                    backoff.reset();
                }
                Err(error) => {
                    self.down(&error);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next()) => {}
                        () = stopped(&mut stop) => return,
                    }
                }
            }
        }
    }

    // ---- outages ----

    fn down(&self, error: &dyn Display) {
        if !self.outage.swap(true, Ordering::Relaxed) {
            warn!(%error, "redis unreachable: reads serve the local store, writes wait in the outbox");
        }
    }

    fn up(&self) {
        if self.outage.swap(false, Ordering::Relaxed) {
            info!(pending = self.state.lock().outbox.len(), "redis reachable again");
        }
    }
}

/// Counts a resync in progress (tombstones are not pruned meanwhile), also when it is
/// cancelled or fails.
struct Syncing<'a, K: ClusterKey, V> {
    state: &'a Mutex<State<K, V>>,
}

impl<'a, K: ClusterKey, V> Syncing<'a, K, V> {
    fn new(state: &'a Mutex<State<K, V>>) -> Self {
        state.lock().syncing += 1;
        Self { state }
    }
}

impl<K: ClusterKey, V> Drop for Syncing<'_, K, V> {
    fn drop(&mut self) {
        self.state.lock().syncing -= 1;
    }
}

/// Exponential backoff between the configured bounds, with jitter so replicas that lost
/// Redis together do not retry in step.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(link: &Link) -> Self {
        let (min, max) = (link.config.retry_min_backoff, link.config.retry_max_backoff);
        Self { min, max, next: min }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: `run` is ending anyway.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Waits out one backoff, cut short by `deadline`; a stop during it starts the flush.
async fn pause(backoff: &mut Backoff, deadline: Option<Instant>, stop: &mut watch::Receiver<bool>) {
    let until = Instant::now() + backoff.next();
    match deadline {
        Some(deadline) => tokio::time::sleep_until(until.min(deadline)).await,
        None => tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = stopped(stop) => {}
        },
    }
}

/// `future`, failing with a timeout error at `deadline`.
async fn bounded<T>(
    deadline: Option<Instant>,
    future: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match deadline {
        Some(deadline) => {
            tokio::time::timeout_at(deadline, future).await.unwrap_or_else(|_| Err(timed_out()))
        }
        None => future.await,
    }
}

/// `future`, failing with a timeout error after `limit`.
async fn timed<T>(limit: Duration, future: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(limit, future).await.unwrap_or_else(|_| Err(timed_out()))
}

fn timed_out() -> RedisError {
    RedisError::from((ErrorKind::Io, "timed out"))
}
