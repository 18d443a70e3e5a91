//! Shard leases: membership, fair division, renewal, takeover and graceful release.
//!
//! Each replica is a member of the namespace's `members` sorted set, with its expiry (Redis
//! time) as the score, and holds the leases of its share of the shards: the key
//! `lease:<shard>` holding its member id, with a TTL of [`RedisConfig::lease_ttl`]. A round,
//! every third of a lease and at once when another member joins, leaves or releases shards,
//! heartbeats, renews what it holds, then releases or takes shards towards its fair share.
//!
//! The owned bitset is what the sweep reads: a shard's bit is set only after its lease was
//! taken, and cleared before it is released, so two members never both mean to refresh one
//! shard while Redis answers. While Redis does not answer, the bits stay as they are (the
//! owned shards keep refreshing locally) and the next round that reaches Redis learns, from
//! the renewals, which leases were lost meanwhile.
//!
//! [`RedisConfig::lease_ttl`]: crate::RedisConfig::lease_ttl

mod scripts;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::Shutdown;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use crate::link::Link;
use crate::shard::OwnedShards;

use self::scripts::Scripts;

/// The lease loop of one replica.
#[derive(Debug)]
pub(crate) struct Leases {
    link: Arc<Link>,
    owned: Arc<OwnedShards>,
    scripts: Scripts,
}

impl Leases {
    pub(crate) fn new(link: Arc<Link>, owned: Arc<OwnedShards>) -> Self {
        Self { link, owned, scripts: Scripts::new() }
    }

    /// Runs until `shutdown`: keeps this member alive, renews its leases, takes and releases
    /// shards towards its fair share, and sends every batch of newly taken shards on
    /// `acquired`. At shutdown, releases every lease and leaves at once.
    pub(crate) async fn run(&self, shutdown: Shutdown, acquired: mpsc::UnboundedSender<Vec<u16>>) {
        let wake = Notify::new();
        // The round and watch loops never return: only the shutdown ends the select. A round
        // cut off mid-flight is harmless: `leave` releases by key, not by the owned bits.
        tokio::select! {
            () = shutdown => {}
            () = self.rounds(&wake, &acquired) => {}
            () = self.watch(&wake) => {}
        }
        self.leave().await;
    }

    /// A round every third of a lease (so a lost renewal still leaves another before the
    /// lease expires), and one as soon as `wake` says the membership changed.
    async fn rounds(&self, wake: &Notify, acquired: &mpsc::UnboundedSender<Vec<u16>>) {
        let period = self.period();
        // Bounds the rounds a flood of membership messages can cause: at most one per gap.
        let min_gap = (period / 10).max(Duration::from_millis(5));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut health = Health::default();
        let mut last_round: Option<Instant> = None;
        // Until when this member takes no free shard (see `round`).
        let mut settle_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = wake.notified() => {
                    if let Some(last) = last_round {
                        tokio::time::sleep_until(last + min_gap).await;
                    }
                    // This round stands for the next tick.
                    ticks.reset();
                }
            }
            last_round = Some(Instant::now());
            let outcome = match tokio::time::timeout(
                self.round_timeout(),
                self.round(acquired, &mut settle_until),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(RoundError::TimedOut(self.round_timeout())),
            };
            match outcome {
                Ok(()) => health.reached(&self.link.member),
                Err(error) => health.failed(&self.link.member, &error, self.owned.len()),
            }
        }
    }

    /// One round: heartbeat, renew, then release or take shards towards the fair share.
    async fn round(
        &self,
        acquired: &mpsc::UnboundedSender<Vec<u16>>,
        settle_until: &mut Option<Instant>,
    ) -> Result<(), RoundError> {
        let mut conn = self.link.conn.clone();
        let shards = self.link.config.shards;
        let (added, mut members): (i64, Vec<String>) = self
            .scripts
            .heartbeat
            .key(self.link.keys.members())
            .arg(&self.link.member)
            .arg(self.ttl_ms())
            .arg(self.link.keys.membership())
            .arg(self.message("join"))
            .invoke_async(&mut conn)
            .await?;
        // The set is ordered by expiry, which changes every heartbeat: the division needs an
        // order every member agrees on.
        members.sort_unstable();
        members.dedup();
        let Some(share) = Share::of(&members, &self.link.member, shards) else {
            // Only if this member expired between its ZADD and the ZRANGE, which a lease
            // of at least 100 ms rules out; the next round adds it again.
            return Err(RoundError::Answer(format!(
                "the live members {members:?} do not include this one"
            )));
        };

        let retaken = self.renew(&mut conn).await?;
        // Back in the set with leases that were gone from Redis: Redis lost its data
        // (restarted empty), or every lease expired while it was out of reach. The other
        // members in the same case are taking their own shards back in their next round; a
        // shard of theirs looks free until then. Take none for a lease, so they all have
        // their rounds (three per lease) and a shard does not change hands for nothing;
        // a member that died meanwhile has its shards taken when the lease is over.
        if added == 1 && retaken > 0 {
            *settle_until = Some(Instant::now() + self.link.config.lease_ttl);
        }
        let settling = settle_until.is_some_and(|until| Instant::now() < until);

        let held = self.owned.len();
        if held > share.target {
            self.release_extras(&mut conn, &share, held - share.target).await?;
        } else if held < share.target && !settling {
            self.acquire(&mut conn, &share, share.target - held, acquired).await?;
        }
        Ok(())
    }

    /// Renews every owned lease in one script; drops the shards another member holds now.
    /// Returns how many leases were gone from Redis and were taken back.
    async fn renew(&self, conn: &mut ConnectionManager) -> Result<usize, RoundError> {
        let held = self.owned.to_vec();
        if held.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.scripts.renew.prepare_invoke();
        for &shard in &held {
            invocation.key(self.link.keys.lease(shard));
        }
        let kept: Vec<i64> =
            invocation.arg(&self.link.member).arg(self.ttl_ms()).invoke_async(conn).await?;
        if kept.len() != held.len() {
            return Err(RoundError::Answer(format!(
                "renewing {} leases answered {} results",
                held.len(),
                kept.len()
            )));
        }
        let lost: Vec<u16> = held
            .iter()
            .zip(&kept)
            .filter(|&(_, &kept)| kept == 0)
            .map(|(&shard, _)| shard)
            .collect();
        for &shard in &lost {
            self.owned.remove(shard);
        }
        if !lost.is_empty() {
            tracing::info!(
                member = %self.link.member,
                shards = ?lost,
                "shard leases lost to other members (they expired while Redis was out of reach)"
            );
        }
        Ok(kept.iter().filter(|&&kept| kept == 2).count())
    }

    /// Releases `count` owned shards, those last in this member's preferred order, so the
    /// members below their share can take them; the script tells them.
    async fn release_extras(
        &self,
        conn: &mut ConnectionManager,
        share: &Share,
        count: usize,
    ) -> Result<(), RoundError> {
        let mut held = self.owned.to_vec();
        held.sort_by_key(|&shard| share.rank(shard));
        let extras = held.split_off(held.len().saturating_sub(count));
        // Stop refreshing them before another member may start.
        for &shard in &extras {
            self.owned.remove(shard);
        }
        let mut invocation = self.scripts.release.prepare_invoke();
        for &shard in &extras {
            invocation.key(self.link.keys.lease(shard));
        }
        let released: Result<i64, _> = invocation
            .arg(&self.link.member)
            .arg(self.link.keys.membership())
            .arg(self.message("release"))
            .invoke_async(conn)
            .await;
        if let Err(error) = released {
            // Redis went away mid-round: keep refreshing them, as with every owned shard
            // while Redis is down; the next renewal tells whether they are still this
            // member's (or takes them back if the deletes went through and nobody took them).
            for &shard in &extras {
                self.owned.insert(shard);
            }
            return Err(error.into());
        }
        tracing::debug!(member = %self.link.member, shards = ?extras, "released shards above the fair share");
        Ok(())
    }

    /// Takes up to `count` free shards, in this member's preferred order, in one script.
    async fn acquire(
        &self,
        conn: &mut ConnectionManager,
        share: &Share,
        count: usize,
        acquired: &mpsc::UnboundedSender<Vec<u16>>,
    ) -> Result<(), RoundError> {
        let candidates: Vec<u16> =
            share.preferred().filter(|&shard| !self.owned.contains(shard)).collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.acquire.prepare_invoke();
        for &shard in &candidates {
            invocation.key(self.link.keys.lease(shard));
        }
        let positions: Vec<i64> = invocation
            .arg(&self.link.member)
            .arg(self.ttl_ms())
            .arg(count)
            .invoke_async(conn)
            .await?;
        let mut taken = Vec::with_capacity(positions.len());
        for position in positions {
            // Lua's positions count from 1; anything else is not an answer this script gives.
            let shard = usize::try_from(position)
                .ok()
                .and_then(|position| position.checked_sub(1))
                .and_then(|index| candidates.get(index));
            match shard {
                Some(&shard) => {
                    if self.owned.insert(shard) {
                        taken.push(shard);
                    }
                }
                None => {
                    return Err(RoundError::Answer(format!(
                        "taking shards answered position {position} of {}",
                        candidates.len()
                    )))
                }
            }
        }
        if !taken.is_empty() {
            taken.sort_unstable();
            tracing::debug!(member = %self.link.member, shards = ?taken, "took shards");
            // The item plane may have stopped first at shutdown: nobody to tell then.
            let _ = acquired.send(taken);
        }
        Ok(())
    }

    /// Listens on the membership channel and wakes the round loop when another member joins,
    /// leaves or releases shards. Reconnects with backoff when the subscription is lost, and
    /// wakes a round then too, as messages may have been missed meanwhile.
    async fn watch(&self, wake: &Notify) {
        let config = &self.link.config;
        let mut backoff = config.retry_min_backoff;
        loop {
            match self.subscribe().await {
                Ok(mut messages) => {
                    backoff = config.retry_min_backoff;
                    wake.notify_one();
                    while let Some(message) = messages.next().await {
                        // This member's own messages say nothing it does not know.
                        let own = message
                            .get_payload_bytes()
                            .strip_suffix(self.link.member.as_bytes())
                            .is_some();
                        if !own {
                            wake.notify_one();
                        }
                    }
                    tracing::debug!(member = %self.link.member, "membership subscription lost");
                }
                Err(error) => {
                    tracing::debug!(member = %self.link.member, %error, "cannot subscribe to membership changes");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.retry_max_backoff);
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSubStream, RoundError> {
        let connect = async {
            let mut pubsub = self.link.client.get_async_pubsub().await?;
            pubsub.subscribe(self.link.keys.membership()).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(self.link.config.connect_timeout, connect).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RoundError::TimedOut(self.link.config.connect_timeout)),
        }
    }

    /// Stops refreshing, then releases every lease and leaves in one script, within the
    /// response timeout: a Redis that does not answer leaves the leases to expire.
    async fn leave(&self) {
        for shard in self.owned.to_vec() {
            self.owned.remove(shard);
        }
        let mut conn = self.link.conn.clone();
        let mut invocation = self.scripts.leave.prepare_invoke();
        invocation.key(self.link.keys.members());
        for shard in 0..self.link.config.shards {
            invocation.key(self.link.keys.lease(shard));
        }
        invocation
            .arg(&self.link.member)
            .arg(self.link.keys.membership())
            .arg(self.message("leave"));
        let timeout = self.link.config.response_timeout;
        match tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(released)) => {
                tracing::debug!(member = %self.link.member, released, "left the cluster");
            }
            Ok(Err(error)) => tracing::warn!(
                member = %self.link.member,
                %error,
                "could not leave the cluster: its leases expire after lease_ttl"
            ),
            Err(_) => tracing::warn!(
                member = %self.link.member,
                ?timeout,
                "Redis did not answer the leave in time: its leases expire after lease_ttl"
            ),
        }
    }

    /// A third of a lease: two renewals may fail before it expires.
    fn period(&self) -> Duration {
        self.link.config.lease_ttl / 3
    }

    /// A round is up to four commands, each bounded by the response timeout on the
    /// connection; this bounds the round as a whole (a reconnect may add its own wait).
    fn round_timeout(&self) -> Duration {
        self.link.config.response_timeout * 2
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.link.config.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// `<kind> <member>`: the watchers of other members skip their own by the suffix.
    fn message(&self, kind: &str) -> String {
        format!("{kind} {}", self.link.member)
    }
}

/// This member's share: how many shards it should hold and where it starts looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share {
    /// `shards / n`, plus one for the first `shards % n` members in sorted order: the
    /// targets of all members sum to the shard count exactly.
    target: usize,
    /// Where this member's slice would start in an even split (`index × shards / n`), so
    /// members starting together reach for different shards instead of racing for the same.
    offset: u16,
    shards: u16,
}

impl Share {
    /// The share of `member` among `members` (sorted, no duplicates), or `None` if it is not
    /// one of them.
    fn of(members: &[String], member: &str, shards: u16) -> Option<Self> {
        let index = members.iter().position(|m| m == member)?;
        let n = members.len();
        let total = usize::from(shards);
        let target = total / n + usize::from(index < total % n);
        let offset = u16::try_from(index * total / n).unwrap_or(0);
        Some(Self { target, offset, shards })
    }

    /// Every shard, from the offset round to just before it.
    fn preferred(&self) -> impl Iterator<Item = u16> {
        (self.offset..self.shards).chain(0..self.offset)
    }

    /// A shard's place in [`preferred`](Self::preferred).
    fn rank(&self, shard: u16) -> u16 {
        if shard >= self.offset {
            shard - self.offset
        } else {
            shard + (self.shards - self.offset)
        }
    }
}

/// Whether Redis answered the last round, so an outage is logged once, not every round.
#[derive(Debug, Default)]
struct Health {
    down_since: Option<Instant>,
}

impl Health {
    fn failed(&mut self, member: &str, error: &RoundError, owned: usize) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(
                member,
                %error,
                owned,
                "cannot reach Redis for the shard leases: refreshing the owned shards locally until it answers"
            );
        } else {
            tracing::debug!(member, %error, "lease round failed again");
        }
    }

    fn reached(&mut self, member: &str) {
        if let Some(since) = self.down_since.take() {
            tracing::info!(member, down_for = ?since.elapsed(), "Redis answers the lease rounds again");
        }
    }
}

/// Why a round (or the subscription) did not complete; the next one tries again.
#[derive(Debug)]
enum RoundError {
    Redis(redis::RedisError),
    TimedOut(Duration),
    /// An answer that decoded but cannot be one of the script's.
    Answer(String),
}

impl From<redis::RedisError> for RoundError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error)
    }
}

impl fmt::Display for RoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(error) => write!(f, "{error}"),
            Self::TimedOut(after) => write!(f, "no answer within {after:?}"),
            Self::Answer(what) => write!(f, "unexpected answer: {what}"),
        }
    }
}
