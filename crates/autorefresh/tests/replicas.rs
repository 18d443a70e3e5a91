//! Three replicas of one cache sharing items and the refresh through a real Redis server
//! (issue 9), each replica on a runtime of its own so one can be killed without a goodbye.
//!
//! These run in real time: a real server and its lease expiry cannot be paused. They poll
//! each condition up to a generous deadline and assert only the bounds (takeover
//! within two periods), never a tight duration. Each test starts its own `redis-server` on a
//! free port and skips, saying so, when none can be started (CI sets
//! `AUTOREFRESH_REQUIRE_REDIS`, which turns the skip into a failure).

// A real server's lease expiry runs on the wall clock: these tests must too.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, Item, ItemSyncResponse, Running,
    SyncAction,
};
use autorefresh_redis::testing::RedisServer;
use autorefresh_redis::{RedisCluster, RedisConfig};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// An item: a job whose status the external system counts up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Job {
    status: u64,
    owner: String,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        false
    }
}

fn job(owner: &str) -> Job {
    Job { status: 0, owner: owner.to_owned() }
}

/// Every external call: which id, from which replica, when.
#[derive(Default)]
struct Calls {
    log: Mutex<Vec<(String, usize, Instant)>>,
    /// How long each call takes (the external system's latency).
    latency: Mutex<Duration>,
}

impl Calls {
    fn take(&self) -> Vec<(String, usize, Instant)> {
        std::mem::take(&mut *self.log.lock())
    }
}

/// The shape every replica of a test shares.
#[derive(Clone, Copy)]
struct Shape {
    period: Duration,
    lease_ttl: Duration,
    shards: u16,
}

const SHAPE: Shape =
    Shape { period: Duration::from_secs(1), lease_ttl: Duration::from_secs(1), shards: 16 };

/// One replica: its cache, its cluster handle, and the runtime it runs on.
struct Replica {
    cache: AutoRefresh<String, Job>,
    cluster: RedisCluster<String, Job>,
    running: Option<Running>,
    runtime: Option<Runtime>,
}

impl Replica {
    fn start(url: &str, shape: Shape, index: usize, calls: &Arc<Calls>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let calls = Arc::clone(calls);
        let (cache, cluster, running) = runtime.block_on(async {
            let config = RedisConfig {
                lease_ttl: shape.lease_ttl,
                shards: shape.shards,
                // As long as the flush of earlier releases took (twice the response timeout).
                shutdown_flush_timeout: Duration::from_secs(4),
                ..RedisConfig::new(url)
            };
            let cluster = RedisCluster::connect("jobs", config).await.expect("connected");
            let cache = AutoRefresh::builder("jobs")
                .sync(move |batch: Batch<String, Job>| {
                    let calls = Arc::clone(&calls);
                    async move {
                        let latency = *calls.latency.lock();
                        if !latency.is_zero() {
                            tokio::time::sleep(latency).await;
                        }
                        let now = Instant::now();
                        let mut log = calls.log.lock();
                        let responses = batch
                            .into_iter()
                            .map(|wrapper| {
                                let (id, mut item) = wrapper.into_parts();
                                log.push((id.clone(), index, now));
                                item.status += 1;
                                ItemSyncResponse { id, item, action: SyncAction::Update }
                            })
                            .collect();
                        Ok(responses)
                    }
                })
                .resync_period(shape.period)
                .parallelism(4)
                .create_batches(FixedSizeBatches::new(100.try_into().expect("non-zero")))
                .capacity(100_000)
                .cluster(cluster.clone())
                .build()
                .expect("a valid cache");
            let running = cache.start(CancellationToken::new()).expect("started");
            (cache, cluster, running)
        });
        Self { cache, cluster, running: Some(running), runtime: Some(runtime) }
    }

    fn owned(&self) -> BTreeSet<u16> {
        if self.runtime.is_none() {
            return BTreeSet::new();
        }
        self.cluster.owned_shards().into_iter().collect()
    }

    fn fetch(&self, id: &str) -> Result<Job, autorefresh::Error> {
        let runtime = self.runtime.as_ref().expect("a live replica");
        runtime.block_on(self.cache.fetch(&id.to_owned()))
    }

    /// Dies without a goodbye: its tasks are dropped, its leases stay until they expire.
    fn kill(&mut self) {
        self.running = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Shuts down gracefully: hands its shards over and waits until it has.
    fn shutdown(&mut self) {
        if let (Some(runtime), Some(running)) = (self.runtime.take(), self.running.take()) {
            runtime.block_on(running.shutdown());
            runtime.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `condition` every 20 ms until it holds or `within` passed; returns how long it took.
fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < within, "timed out after {within:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Whether the live replicas own every shard exactly once.
fn partitioned(replicas: &[Replica], shards: u16) -> bool {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for replica in replicas {
        let owned = replica.owned();
        total += owned.len();
        seen.extend(owned);
    }
    total == usize::from(shards) && seen.len() == usize::from(shards)
}

fn id(i: usize) -> String {
    format!("job-{i}")
}

fn start_cluster(server: &RedisServer, shape: Shape, calls: &Arc<Calls>) -> Vec<Replica> {
    let replicas: Vec<_> = (0..3).map(|i| Replica::start(&server.url(), shape, i, calls)).collect();
    let fair = usize::from(shape.shards) / replicas.len();
    wait_until("the replicas divide the shards fairly", Duration::from_secs(20), || {
        partitioned(&replicas, shape.shards) && replicas.iter().all(|r| r.owned().len() >= fair)
    });
    replicas
}

#[test]
fn each_item_is_synced_once_per_period_across_the_cluster() {
    let Some(server) = RedisServer::start() else { return };
    let calls = Arc::new(Calls::default());
    let replicas = start_cluster(&server, SHAPE, &calls);
    for i in 0..3000 {
        replicas[i % 3].cache.get_or_create(id(i), job("test")).unwrap();
    }
    wait_until("every replica holds every item", Duration::from_secs(20), || {
        replicas.iter().all(|r| r.cache.len() == 3000)
    });
    let fair = usize::from(SHAPE.shards) / 3;
    for replica in &replicas {
        let owned = replica.owned().len();
        assert!((fair..=fair + 1).contains(&owned), "a replica owns {owned} of 16 shards");
    }

    std::thread::sleep(SHAPE.period * 2);
    calls.take();
    let periods = 4;
    std::thread::sleep(SHAPE.period * periods);
    let log = calls.take();

    let mut per_item: HashMap<&str, Vec<(usize, Instant)>> = HashMap::new();
    for (id, replica, at) in &log {
        per_item.entry(id).or_default().push((*replica, *at));
    }
    assert_eq!(per_item.len(), 3000, "every item was synced");
    let periods = usize::try_from(periods).unwrap();
    let mut total = 0;
    for (id, syncs) in &mut per_item {
        total += syncs.len();
        // One sweep per period: a window of whole periods sees one less or one more at its
        // edges, never two syncs within half a period (which two replicas would cause).
        assert!(
            (periods - 1..=periods + 1).contains(&syncs.len()),
            "{id} synced {} times in {periods} periods",
            syncs.len()
        );
        syncs.sort_by_key(|(_, at)| *at);
        for pair in syncs.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(gap > SHAPE.period / 2, "{id} synced twice {gap:?} apart: {syncs:?}");
        }
        let shard = replicas[0].cluster.shard_of(&id.to_string()).unwrap();
        for (replica, _) in syncs.iter() {
            assert!(replicas[*replica].owned().contains(&shard), "{id} synced by a non-owner");
        }
    }
    let expected = 3000 * periods;
    assert!(
        total.abs_diff(expected) <= 3000,
        "{total} external calls in {periods} periods of 3000 items"
    );
}

#[test]
fn items_created_on_one_replica_are_read_on_the_others() {
    let Some(server) = RedisServer::start() else { return };
    let calls = Arc::new(Calls::default());
    let replicas = start_cluster(&server, SHAPE, &calls);

    replicas[0].cache.get_or_create(id(1), job("zero")).unwrap();
    // fetch looks in Redis on a local miss, before the change reaches this store.
    wait_until("replica 2 fetches it", Duration::from_secs(5), || {
        replicas[2].fetch(&id(1)).is_ok()
    });
    wait_until("replica 1 reads it locally", Duration::from_secs(5), || {
        replicas[1].cache.get(&id(1)).is_ok()
    });

    // The same id created on two replicas at once: one item wins everywhere.
    replicas[1].cache.get_or_create(id(2), job("one")).unwrap();
    replicas[2].cache.get_or_create(id(2), job("two")).unwrap();
    wait_until("the replicas agree on the winner", Duration::from_secs(5), || {
        let owners: BTreeSet<_> =
            replicas.iter().filter_map(|r| r.cache.get(&id(2)).ok().map(|job| job.owner)).collect();
        owners.len() == 1 && replicas.iter().all(|r| r.cache.get(&id(2)).is_ok())
    });

    // An update on one replica reaches the others.
    let updated = Job { status: 1_000_000, owner: "updated".into() };
    replicas[2].cache.update(&id(1), updated.clone());
    wait_until("the update reaches replica 0", Duration::from_secs(5), || {
        replicas[0].cache.get(&id(1)).is_ok_and(|job| job.owner == "updated")
    });
}

#[test]
fn a_killed_replicas_shards_are_taken_over_within_two_periods() {
    let Some(server) = RedisServer::start() else { return };
    let calls = Arc::new(Calls::default());
    let mut replicas = start_cluster(&server, SHAPE, &calls);
    for i in 0..300 {
        replicas[0].cache.get_or_create(id(i), job("test")).unwrap();
    }
    wait_until("every replica holds every item", Duration::from_secs(20), || {
        replicas.iter().all(|r| r.cache.len() == 300)
    });
    let orphaned = replicas[2].owned();
    assert!(!orphaned.is_empty());

    replicas[2].kill();
    let killed = Instant::now();
    let takeover = wait_until("the survivors own every shard", SHAPE.period * 10, || {
        partitioned(&replicas, SHAPE.shards)
    });
    assert!(takeover <= SHAPE.period * 2, "taken over after {takeover:?}");

    // The orphaned shards' items are synced again by the survivors.
    let orphan = (0..300)
        .map(id)
        .find(|id| orphaned.contains(&replicas[0].cluster.shard_of(id).unwrap()))
        .expect("an item of the killed replica's shards");
    wait_until("an orphaned item is synced again", SHAPE.period * 4, || {
        calls
            .log
            .lock()
            .iter()
            .any(|(synced, replica, at)| *synced == orphan && *replica != 2 && *at > killed)
    });
}

#[test]
fn a_graceful_shutdown_hands_the_shards_over_at_once() {
    let Some(server) = RedisServer::start() else { return };
    let calls = Arc::new(Calls::default());
    // Leases long enough that waiting for their expiry would be plain to see.
    let shape = Shape { lease_ttl: Duration::from_secs(10), ..SHAPE };
    let mut replicas = start_cluster(&server, shape, &calls);

    let started = Instant::now();
    replicas[2].shutdown();
    let handover = wait_until("the others own every shard", shape.lease_ttl, || {
        partitioned(&replicas, shape.shards)
    });
    let handover = handover.max(started.elapsed());
    assert!(handover < shape.lease_ttl / 2, "handed over after {handover:?}");
}

#[test]
fn deletes_reach_every_replica_and_nothing_comes_back() {
    let Some(server) = RedisServer::start() else { return };
    let calls = Arc::new(Calls::default());
    // Syncs in flight when the deletes land.
    *calls.latency.lock() = Duration::from_millis(300);
    let replicas = start_cluster(&server, SHAPE, &calls);
    for i in 0..300 {
        replicas[i % 3].cache.get_or_create(id(i), job("test")).unwrap();
    }
    wait_until("every replica holds every item", Duration::from_secs(20), || {
        replicas.iter().all(|r| r.cache.len() == 300)
    });
    wait_until("syncs are in flight", Duration::from_secs(5), || !calls.log.lock().is_empty());

    for i in (0..300).step_by(2) {
        // From every replica, immediately and delayed, owned there or not.
        let replica = &replicas[i % 3].cache;
        if i % 4 == 0 {
            replica.delete(&id(i));
        } else {
            replica.delete_delayed(&id(i)).unwrap();
        }
    }
    wait_until("every replica drops the deleted items", SHAPE.period * 5, || {
        replicas.iter().all(|r| r.cache.len() == 150)
    });
    let deleted_at = Instant::now();
    // Several periods more: in-flight refreshes land, sweeps run; nothing comes back.
    std::thread::sleep(SHAPE.period * 3);
    for replica in &replicas {
        assert_eq!(replica.cache.len(), 150);
        for i in (0..300).step_by(2) {
            assert!(replica.cache.get(&id(i)).is_err(), "{} came back", id(i));
        }
    }
    for i in (0..300).step_by(2) {
        assert!(replicas[0].fetch(&id(i)).unwrap_err().is_not_found(), "{} is in Redis", id(i));
    }
    let late = calls
        .take()
        .into_iter()
        .filter(|(synced, _, at)| *at > deleted_at + SHAPE.period && is_even(synced))
        .count();
    assert_eq!(late, 0, "deleted items were synced after they were deleted");
}

fn is_even(id: &str) -> bool {
    id.trim_start_matches("job-").parse::<usize>().is_ok_and(|i| i % 2 == 0)
}

#[test]
fn a_redis_restart_mid_run_loses_nothing() {
    let Some(mut server) = RedisServer::start() else { return };
    let calls = Arc::new(Calls::default());
    let replicas = start_cluster(&server, SHAPE, &calls);
    for i in 0..600 {
        replicas[i % 3].cache.get_or_create(id(i), job("test")).unwrap();
    }
    wait_until("every replica holds every item", Duration::from_secs(20), || {
        replicas.iter().all(|r| r.cache.len() == 600)
    });

    server.kill();
    calls.take();
    // Redis down: reads serve the local stores, owned shards keep refreshing, and changes
    // wait for Redis to return.
    for replica in &replicas {
        assert!(replica.cache.get(&id(7)).is_ok());
    }
    wait_until("refresh goes on without Redis", SHAPE.period * 3, || calls.log.lock().len() >= 600);
    replicas[0].cache.update(&id(1), Job { status: 42, owner: "updated while down".into() });
    replicas[1].cache.delete(&id(2));
    replicas[2].cache.get_or_create(id(600), job("created while down")).unwrap();
    for replica in &replicas {
        assert!(replica.cluster.pending_writes() > 0, "changes wait for Redis");
    }

    server.restart();
    // A replica that joins after the restart sees what the others held, with the changes,
    // once the replicas' write-backs and their outboxes have landed (in whatever order).
    let newcomer = Replica::start(&server.url(), SHAPE, 3, &calls);
    let converged = |cache: &AutoRefresh<String, Job>| {
        cache.len() == 600
            && cache.get(&id(2)).is_err()
            && cache.get(&id(600)).is_ok()
            && cache.get(&id(1)).is_ok_and(|job| job.owner == "updated while down")
    };
    wait_until("the newcomer holds every item and every change", Duration::from_secs(30), || {
        converged(&newcomer.cache)
    });
    wait_until("every replica agrees", Duration::from_secs(10), || {
        replicas.iter().all(|r| converged(&r.cache))
    });
    // And it stays so: the delete is not undone by a later write-back or refresh.
    std::thread::sleep(SHAPE.period * 2);
    assert!(converged(&newcomer.cache));
    assert!(replicas.iter().all(|r| converged(&r.cache)));
    assert!(newcomer.fetch(&id(2)).unwrap_err().is_not_found(), "the deleted item is in Redis");
    wait_until("every outbox drains", Duration::from_secs(10), || {
        replicas.iter().all(|r| r.cluster.pending_writes() == 0)
    });
}
