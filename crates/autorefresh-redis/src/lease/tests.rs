//! The lease loop against a real redis-server: every test starts its own.
//!
//! Real time is unavoidable with a real server: conditions are polled up to a generous
//! deadline, and only the bounds the issue sets (takeover within two leases, a graceful
//! handover well within one) are asserted as durations.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::config::RedisConfig;
use crate::testing::RedisServer;

const SHARDS: u16 = 64;
const TTL: Duration = Duration::from_millis(300);
/// How long a condition that should hold soon may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// One replica's lease loop, run as its own task.
struct Replica {
    link: Arc<Link>,
    owned: Arc<OwnedShards>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    acquired: mpsc::UnboundedReceiver<Vec<u16>>,
}

impl Replica {
    async fn start(server: &RedisServer) -> Self {
        let config = RedisConfig { lease_ttl: TTL, ..RedisConfig::new(server.url()) };
        Self::start_with(config).await
    }

    async fn start_with(config: RedisConfig) -> Self {
        let link = Arc::new(Link::connect("test", config).await.expect("connect"));
        let owned = Arc::new(OwnedShards::new(link.config.shards));
        let leases = Arc::new(Leases::new(Arc::clone(&link), Arc::clone(&owned)));
        let (stop, stopped) = oneshot::channel::<()>();
        let (acquired_tx, acquired) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let shutdown: Shutdown = Box::pin(async move {
                let _ = stopped.await;
            });
            leases.run(shutdown, acquired_tx).await;
        });
        Self { link, owned, stop: Some(stop), task, acquired }
    }

    fn owned(&self) -> BTreeSet<u16> {
        self.owned.to_vec().into_iter().collect()
    }

    /// Graceful shutdown; waits for the loop to return.
    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("shutdown is bounded")
            .expect("the lease loop does not panic");
    }

    /// Every batch announced on `acquired` so far.
    fn announced(&mut self) -> BTreeSet<u16> {
        let mut shards = BTreeSet::new();
        while let Ok(batch) = self.acquired.try_recv() {
            shards.extend(batch);
        }
        shards
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `replicas` hold every shard, each exactly once, each within its fair share.
fn divided(replicas: &[&Replica]) -> bool {
    let n = replicas.len();
    let (low, high) = (usize::from(SHARDS) / n, usize::from(SHARDS).div_ceil(n));
    let mut seen = BTreeSet::new();
    for replica in replicas {
        let owned = replica.owned();
        if !(low..=high).contains(&owned.len()) {
            return false;
        }
        for shard in owned {
            if !seen.insert(shard) {
                return false;
            }
        }
    }
    seen.len() == usize::from(SHARDS)
}

/// Polls `condition` every 10 ms; the time it took, or a panic naming `what` after
/// [`DEADLINE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// The holder of every shard's lease in Redis.
async fn holders(link: &Link) -> Vec<Option<String>> {
    let keys: Vec<String> = (0..SHARDS).map(|shard| link.keys.lease(shard)).collect();
    redis::cmd("MGET").arg(keys).query_async(&mut link.conn.clone()).await.expect("MGET")
}

/// Redis agrees with the owned bits: each replica's shards are leased to it, and no other.
async fn assert_redis_agrees(replicas: &[&Replica]) {
    let holders = holders(&replicas[0].link).await;
    for (shard, holder) in (0..SHARDS).zip(&holders) {
        let owners: Vec<&str> = replicas
            .iter()
            .filter(|replica| replica.owned.contains(shard))
            .map(|replica| replica.link.member.as_str())
            .collect();
        assert_eq!(owners.len(), 1, "shard {shard} owned by {owners:?}");
        assert_eq!(holder.as_deref(), Some(owners[0]), "shard {shard}'s lease in Redis");
    }
}

async fn members(link: &Link) -> Vec<String> {
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(link.keys.members())
        .arg(0)
        .arg(-1)
        .query_async(&mut link.conn.clone())
        .await
        .expect("ZRANGE");
    members.sort();
    members
}

macro_rules! server_or_skip {
    () => {
        match RedisServer::start() {
            Some(server) => server,
            None => return,
        }
    };
}

#[test]
fn the_fair_shares_sum_to_the_shard_count() {
    for n in 1..=10_usize {
        let members: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
        let shares: Vec<Share> =
            members.iter().map(|m| Share::of(&members, m, SHARDS).expect("a member")).collect();
        assert_eq!(shares.iter().map(|s| s.target).sum::<usize>(), usize::from(SHARDS));
        assert!(shares.iter().all(|s| s.target == 64 / n || s.target == 64 / n + 1));
        assert!(shares.iter().all(|s| {
            let order: Vec<u16> = s.preferred().collect();
            order.len() == 64
                && order[0] == s.offset
                && order.iter().enumerate().all(|(i, &shard)| usize::from(s.rank(shard)) == i)
        }));
    }
    assert_eq!(Share::of(&["a".to_owned()], "b", SHARDS), None);
    let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let targets: Vec<usize> =
        three.iter().map(|m| Share::of(&three, m, SHARDS).map_or(0, |s| s.target)).collect();
    assert_eq!(targets, [22, 21, 21], "the first 64 % 3 members in order take one more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_divide_every_shard_fairly() {
    let server = server_or_skip!();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&server).await);
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    eventually("three members hold 21 or 22 shards each, every shard once", || divided(&all)).await;
    assert_redis_agrees(&all).await;
    let mut expected: Vec<String> = replicas.iter().map(|r| r.link.member.clone()).collect();
    expected.sort();
    assert_eq!(members(&replicas[0].link).await, expected);
    for replica in &mut replicas {
        let owned = replica.owned();
        let announced = replica.announced();
        assert!(owned.is_subset(&announced), "every owned shard was announced on `acquired`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_later_gets_its_share() {
    let server = server_or_skip!();
    let first = Replica::start(&server).await;
    let second = Replica::start(&server).await;
    eventually("two members hold 32 shards each", || divided(&[&first, &second])).await;
    let mut third = Replica::start(&server).await;
    let took = eventually("three members hold 21 or 22 shards each", || {
        divided(&[&first, &second, &third])
    })
    .await;
    eprintln!("a joiner got its share in {took:?}");
    assert_redis_agrees(&[&first, &second, &third]).await;
    assert_eq!(third.announced(), third.owned(), "the joiner announced what it took");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_shards_are_taken_over_within_two_leases() {
    let server = server_or_skip!();
    let first = Replica::start(&server).await;
    let second = Replica::start(&server).await;
    let victim = Replica::start(&server).await;
    eventually("three members divide the shards", || divided(&[&first, &second, &victim])).await;
    let victims = victim.owned();
    // A crash: the loop stops where it is, nothing is released; its leases expire at most
    // one lease after its last renewal, which was before this instant.
    victim.task.abort();
    let killed = Instant::now();
    eventually("two members cover every shard", || divided(&[&first, &second])).await;
    // From the abort to the first poll that sees full coverage (polls are 10 ms apart).
    let took = killed.elapsed();
    eprintln!(
        "{} shards of a killed member taken over {took:?} after the kill (lease {TTL:?})",
        victims.len()
    );
    // The bound is two leases from the death; 150 ms covers this test's polling and
    // a loaded machine's scheduling.
    assert!(
        took <= 2 * TTL + Duration::from_millis(150),
        "taken over {took:?} after the kill, more than 2 × {TTL:?}"
    );
    // Its last renewal was at most a round (TTL / 3, later on a loaded machine) before the
    // kill: a takeover much sooner would mean a live lease was taken.
    assert!(took >= TTL / 4, "{took:?}: taken before the dead member's leases could expire");
    assert_redis_agrees(&[&first, &second]).await;
    let members = members(&first.link).await;
    assert!(!members.contains(&victim.link.member), "the dead member expired: {members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_hands_over_at_once() {
    let server = server_or_skip!();
    let first = Replica::start(&server).await;
    let second = Replica::start(&server).await;
    let mut leaving = Replica::start(&server).await;
    eventually("three members divide the shards", || divided(&[&first, &second, &leaving])).await;
    let stopped = Instant::now();
    leaving.shut_down().await;
    assert!(leaving.owned().is_empty(), "a member that left refreshes nothing");
    eventually("two members cover every shard", || divided(&[&first, &second])).await;
    // From asking it to stop (the leave included) to the first poll seeing full coverage.
    let took = stopped.elapsed();
    eprintln!("a graceful shutdown handed over in {took:?} (lease {TTL:?})");
    // Its leases, renewed every TTL / 3, would have lasted at least 2 × TTL / 3 more.
    assert!(took < TTL / 2, "handed over in {took:?}, not well before its leases would expire");
    assert_redis_agrees(&[&first, &second]).await;
    let members = members(&first.link).await;
    assert!(!members.contains(&leaving.link.member), "the member left: {members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_shards_survive_a_redis_outage_and_leases_come_back() {
    let mut server = server_or_skip!();
    let config = outage_config(&server);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start_with(config.clone()).await);
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    eventually("three members divide the shards", || divided(&all)).await;
    let before: Vec<BTreeSet<u16>> = all.iter().map(|r| r.owned()).collect();

    server.kill();
    // Several leases' worth of failed rounds: the bits must not move.
    for _ in 0..10 {
        tokio::time::sleep(TTL / 2).await;
        let now: Vec<BTreeSet<u16>> = all.iter().map(|r| r.owned()).collect();
        assert_eq!(now, before, "owned shards kept while Redis is down");
    }

    server.restart();
    let mut expected: Vec<String> = all.iter().map(|r| r.link.member.clone()).collect();
    expected.sort();
    let start = Instant::now();
    loop {
        // The restarted server is empty: the members must join and lease again.
        let back =
            redis::cmd("PING").query_async::<String>(&mut all[0].link.conn.clone()).await.is_ok();
        if back && members(&all[0].link).await == expected && divided(&all) {
            let holders = holders(&all[0].link).await;
            if holders.iter().all(Option::is_some) {
                break;
            }
        }
        assert!(start.elapsed() < DEADLINE, "leases not re-established within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("leases re-established {:?} after the restart", start.elapsed());
    assert_redis_agrees(&all).await;
    let after: Vec<BTreeSet<u16>> = all.iter().map(|r| r.owned()).collect();
    assert_eq!(after, before, "each member took its own shards back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_when_redis_is_gone() {
    let mut server = server_or_skip!();
    let config = RedisConfig {
        lease_ttl: TTL,
        response_timeout: Duration::from_millis(300),
        ..RedisConfig::new(server.url())
    };
    let mut replica = Replica::start_with(config).await;
    eventually("a lone member holds every shard", || replica.owned().len() == 64).await;
    server.kill();
    let stopping = Instant::now();
    replica.shut_down().await;
    let took = stopping.elapsed();
    assert!(replica.owned().is_empty());
    assert!(took < Duration::from_secs(2), "shutdown took {took:?} with Redis gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dead_during_an_outage_is_covered_after_it() {
    let mut server = server_or_skip!();
    let config = outage_config(&server);
    let first = Replica::start_with(config.clone()).await;
    let second = Replica::start_with(config.clone()).await;
    let victim = Replica::start_with(config).await;
    eventually("three members divide the shards", || divided(&[&first, &second, &victim])).await;
    server.kill();
    victim.task.abort();
    tokio::time::sleep(TTL).await;
    server.restart();
    // The survivors take their own shards back at once, then wait a lease (the dead member
    // might only be late) before taking its shards.
    let took = eventually("two members cover every shard after the restart", || {
        divided(&[&first, &second])
    })
    .await;
    eprintln!("a member dead during the outage was covered {took:?} after the restart");
    // A reconnect (a round or two), the lease the survivors wait, and a round to take them.
    assert!(took < 4 * TTL, "covered {took:?} after the restart");
    assert_redis_agrees(&[&first, &second]).await;
}

/// Settings for the outage tests: short timeouts and backoff, so a dead server is noticed and
/// a restarted one found again within the tests' deadlines.
fn outage_config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        lease_ttl: TTL,
        response_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        retry_max_backoff: Duration::from_millis(500),
        ..RedisConfig::new(server.url())
    }
}
