//! Three replicas of one cache share the refresh of 300 jobs through Redis: each job is
//! synced once per period across the cluster, not once per replica, and when a replica shuts
//! down the others take its shards over.
//!
//! ```sh
//! redis-server --port 6379 &                       # or any Redis 6+
//! cargo run --example replicas --features redis    # or: ... -- redis://host:port
//! ```
//!
//! The three replicas run in one process here for the demonstration; in production each is
//! its own pod or machine, configured the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::redis::{RedisCluster, RedisConfig};
use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, Item, ItemSyncResponse, Running,
    SyncAction,
};
use serde::{Deserialize, Serialize};

/// A job in the external system: its status counts up at every sync.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    polls: u64,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        false
    }
}

const JOBS: usize = 300;
const PERIOD: Duration = Duration::from_secs(1);

/// Starts one replica: its cluster membership and its cache, counting its external calls.
async fn replica(
    url: &str,
    calls: Arc<AtomicUsize>,
) -> Result<
    (AutoRefresh<String, Job>, RedisCluster<String, Job>, Running),
    Box<dyn std::error::Error>,
> {
    // Leases as long as the period: a replica that dies is replaced within two periods.
    let config = RedisConfig { lease_ttl: PERIOD, ..RedisConfig::new(url) };
    let cluster = RedisCluster::connect("replicas-example", config).await?;
    let cache = AutoRefresh::builder("replicas-example")
        .sync(move |batch: Batch<String, Job>| {
            let calls = Arc::clone(&calls);
            async move {
                // One external call per job of the batch.
                calls.fetch_add(batch.len(), Ordering::Relaxed);
                let responses = batch
                    .into_iter()
                    .map(|wrapper| {
                        let (id, mut job) = wrapper.into_parts();
                        job.polls += 1;
                        ItemSyncResponse { id, item: job, action: SyncAction::Update }
                    })
                    .collect();
                Ok(responses)
            }
        })
        .resync_period(PERIOD)
        .create_batches(FixedSizeBatches::new(50.try_into()?))
        .cluster(cluster.clone())
        .build()?;
    let running = cache.start(CancellationToken::new())?;
    Ok((cache, cluster, running))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let calls: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut replicas = Vec::new();
    for counter in &calls {
        match replica(&url, Arc::clone(counter)).await {
            Ok(replica) => replicas.push(replica),
            Err(err) => {
                eprintln!("cannot reach Redis at {url}: {err}\nstart one with `redis-server --port 6379`, or pass its URL");
                std::process::exit(1);
            }
        }
    }

    // Created through the first replica; every replica gets them.
    for i in 0..JOBS {
        replicas[0].0.get_or_create(format!("job-{i}"), Job { polls: 0 })?;
    }
    // The replicas joined one after the other: wait until the shards are divided fairly
    // (64 shards: 21 or 22 each) and one full period more.
    for _ in 0..100 {
        let owned: Vec<usize> = replicas.iter().map(|r| r.1.owned_shards().len()).collect();
        if owned.iter().sum::<usize>() == 64 && owned.iter().all(|&n| n >= 21) {
            break;
        }
        tokio::time::sleep(PERIOD / 10).await;
    }
    tokio::time::sleep(PERIOD * 2).await;
    println!("every replica holds {} jobs", replicas.iter().map(|r| r.0.len()).min().unwrap_or(0));

    let report = |label: &str, live: usize| {
        let counts: Vec<_> = calls[..live].iter().map(|c| c.swap(0, Ordering::Relaxed)).collect();
        let total: usize = counts.iter().sum();
        println!("{label}: {total} external calls for {JOBS} jobs (per replica {counts:?})");
    };
    for _ in 0..3 {
        for counter in &calls {
            counter.store(0, Ordering::Relaxed);
        }
        tokio::time::sleep(PERIOD).await;
        report("one period, three replicas", 3);
    }
    for (i, (_, cluster, _)) in replicas.iter().enumerate() {
        println!("replica {i} holds shards {:?}", cluster.owned_shards());
    }

    // One replica leaves gracefully: its shards are handed over at once.
    let (_, _, running) = replicas.pop().expect("three replicas");
    running.shutdown().await;
    tokio::time::sleep(PERIOD / 2).await;
    for _ in 0..2 {
        for counter in &calls {
            counter.store(0, Ordering::Relaxed);
        }
        tokio::time::sleep(PERIOD).await;
        report("one period, two replicas", 2);
    }
    let job = replicas[1].0.get(&"job-7".to_owned())?;
    println!("job-7 was polled {} times, read on replica 1 without asking Redis", job.polls);

    for (_, _, running) in replicas {
        running.shutdown().await;
    }
    Ok(())
}
