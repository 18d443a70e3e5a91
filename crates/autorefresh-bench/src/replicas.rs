//! R1 and R2: S1 and S2 with three replicas of one cache sharing items and the refresh
//! through a real Redis server (issue 9), beside the single-machine figures.
//!
//! Each run starts its own `redis-server` (on a free loopback port, persistence off) and
//! three replicas in this process, each on a tokio runtime of its own with one worker, as
//! `crates/autorefresh/tests/replicas.rs` does. This machine has 2 cores: the three
//! replicas, Redis and the benchmark's own polling all share them, so these figures are the
//! cluster's overhead on one machine, not a scale-out speed-up.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use autorefresh::redis::{RedisCluster, RedisConfig};
use autorefresh::{Batch, CancellationToken, Running, SyncResult};
use autorefresh_redis::testing::RedisServer;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::common::{
    builder, bumped, cpu_per_million, cpu_seconds, get_loop, id, short, wait_for, Cache, Counter,
    Job, Report, Scale, POLL,
};
use crate::scenarios::Batching;

const REPLICAS: usize = 3;
/// The default: 21, 21 and 22 shards over three replicas.
const SHARDS: u16 = 64;
/// How long creating the items through the cluster may take before the run gives up on it.
const SETUP_LIMIT: Duration = Duration::from_secs(120);

/// A sync that is held until the gate opens, so every replica's first sweep queues its whole
/// share before the clock starts.
#[derive(Debug)]
struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Gate {
    fn leak() -> &'static Self {
        Box::leak(Box::new(Self { open: AtomicBool::new(false), opened: Notify::new() }))
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.opened.notify_waiters();
    }

    async fn passed(&self) {
        while !self.open.load(Ordering::Acquire) {
            let opened = self.opened.notified();
            if self.open.load(Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }
}

/// Which replicas synced each item: a bit per replica.
#[derive(Debug)]
struct Syncers(Vec<AtomicU8>);

impl Syncers {
    fn leak(n: usize) -> &'static Self {
        Box::leak(Box::new(Self((0..n).map(|_| AtomicU8::new(0)).collect())))
    }

    fn mark(&self, id: &str, replica: usize) {
        if let Some(slot) = id.strip_prefix("item-").and_then(|n| n.parse::<usize>().ok()) {
            self.0[slot].fetch_or(1 << replica, Ordering::Relaxed);
        }
    }

    /// Items synced by more than one replica.
    fn shared(&self) -> usize {
        self.0.iter().filter(|s| s.load(Ordering::Relaxed).count_ones() > 1).count()
    }
}

/// What one replica's sync counts.
#[derive(Clone, Copy, Debug)]
struct Probe {
    replica: usize,
    gate: &'static Gate,
    counter: &'static Counter,
    syncers: &'static Syncers,
}

async fn gated_bump(batch: Batch<String, Job>, probe: Probe) -> SyncResult<String, Job> {
    probe.gate.passed().await;
    probe.counter.add(batch.len() as u64);
    for w in &batch {
        probe.syncers.mark(w.id(), probe.replica);
    }
    Ok(bumped(batch))
}

/// One replica: its cache and cluster handle, on a runtime of its own.
struct Replica {
    cache: Cache,
    cluster: RedisCluster<String, Job>,
    running: Option<Running>,
    runtime: Option<Runtime>,
}

impl Replica {
    fn start(
        url: &str,
        n: usize,
        period: Duration,
        batching: Batching,
        probe: Probe,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let (cache, cluster, running) = runtime.block_on(async {
            // The lease at most the period, as docs/scale-out.md advises.
            let config = RedisConfig { lease_ttl: period, shards: SHARDS, ..RedisConfig::new(url) };
            let cluster = RedisCluster::connect("bench", config)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let cache = batching
                .apply(builder(move |batch| gated_bump(batch, probe), n))
                .parallelism(10)
                .resync_period(period)
                .cluster(cluster.clone())
                .build()
                .map_err(|e| format!("build: {e}"))?;
            let running =
                cache.start(CancellationToken::new()).map_err(|e| format!("start: {e}"))?;
            Ok::<_, String>((cache, cluster, running))
        })?;
        Ok(Self { cache, cluster, running: Some(running), runtime: Some(runtime) })
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // The measurement is over: no goodbye (nothing waits on the handover).
        self.running = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A Redis server and three replicas of one cache on it.
struct Cluster {
    // Field order: the replicas go before their server.
    replicas: Vec<Replica>,
    counters: Vec<&'static Counter>,
    syncers: &'static Syncers,
    gate: &'static Gate,
    server: RedisServer,
}

impl Cluster {
    /// Starts Redis and the replicas, and waits until they divide the shards; `None` (after
    /// saying why) when no redis-server can be started here.
    fn start(what: &str, n: usize, period: Duration, batching: Batching) -> Option<Self> {
        let Some(server) = RedisServer::start() else {
            eprintln!("  {what}: skipped: no redis-server could be started here (install redis-server or set REDIS_SERVER)");
            return None;
        };
        let gate = Gate::leak();
        let syncers = Syncers::leak(n);
        let counters: Vec<_> = (0..REPLICAS).map(|_| Counter::leak()).collect();
        let replicas = (0..REPLICAS)
            .map(|replica| {
                let probe = Probe { replica, gate, counter: counters[replica], syncers };
                Replica::start(&server.url(), n, period, batching, probe)
            })
            .collect::<Result<Vec<_>, _>>();
        let replicas = match replicas {
            Ok(replicas) => replicas,
            Err(e) => {
                eprintln!("  {what}: skipped: a replica did not start: {e}");
                return None;
            }
        };
        let cluster = Self { replicas, counters, syncers, gate, server };
        if wait_for(Duration::from_secs(30), || cluster.partitioned()).is_none() {
            eprintln!("  warning: {what}: the replicas did not divide the shards within 30 s");
        }
        Some(cluster)
    }

    /// Whether every shard is held by exactly one replica.
    fn partitioned(&self) -> bool {
        let mut owned: Vec<u16> =
            self.replicas.iter().flat_map(|r| r.cluster.owned_shards()).collect();
        let held = owned.len();
        owned.sort_unstable();
        owned.dedup();
        held == usize::from(SHARDS) && owned.len() == held
    }

    /// Creates items `0..n` through the replicas in turn; the time until every replica holds
    /// every one of them (`None` past [`SETUP_LIMIT`]).
    fn create(&self, n: usize) -> Option<Duration> {
        let t0 = Instant::now();
        for i in 0..n {
            self.replicas[i % REPLICAS].cache.get_or_create(id(i), Job::NEW).expect("create");
        }
        wait_for(SETUP_LIMIT, || self.replicas.iter().all(|r| r.cache.len() == n))
            .map(|_| t0.elapsed())
    }

    fn synced(&self) -> u64 {
        self.counters.iter().map(|c| c.sum()).sum()
    }

    fn per_replica(&self) -> Vec<u64> {
        self.counters.iter().map(|c| c.sum()).collect()
    }

    /// The redis-server's CPU seconds so far (user + system), from /proc.
    fn redis_cpu_seconds(&self) -> f64 {
        redis_cpu_seconds(self.server.port()).unwrap_or(f64::NAN)
    }

    /// How many writes Redis applied so far: every applied create, update, refresh and
    /// delete takes its version from the namespace's `clock` counter (`INCR`).
    fn redis_writes(&self) -> f64 {
        redis_get_integer(self.server.port(), "autorefresh:{bench}:clock")
            .map_or(f64::NAN, |v| v as f64)
    }
}

/// `GET key` on the Redis at `port`, as an integer (0 when the key is absent), over a plain
/// connection of its own: the bench needs one number, not a client.
fn redis_get_integer(port: u16, key: &str) -> Option<u64> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let len: i64 = header.strip_prefix('$')?.trim_end().parse().ok()?;
    if len < 0 {
        return Some(0);
    }
    let mut value = vec![0; usize::try_from(len).ok()?];
    reader.read_exact(&mut value).ok()?;
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// The CPU seconds of the `redis-server` listening on `port`, found in /proc by its process
/// title (`redis-server 127.0.0.1:<port>`: the server rewrites its command line).
fn redis_cpu_seconds(port: u16) -> Option<f64> {
    let listening = format!(":{port}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        if comm.trim_end() != "redis-server" {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let title = String::from_utf8_lossy(&cmdline);
        if !title.split(['\0', ' ']).any(|arg| arg.ends_with(&listening)) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // Fields after the command's `)`: state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ: 100 on Linux, whatever the kernel's own tick.
        return Some(ticks as f64 / 100.0);
    }
    None
}

/// R1: S1's gets (2 threads, random existing ids, 3 s), spread over the three replicas'
/// caches: 100k items created through the cluster, measured once every replica holds them.
/// The replicas are started (they must be, to share items) with a period of an hour: no
/// sweep runs during the gets.
pub(crate) fn r1(_rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(100_000);
    let Some(cluster) = Cluster::start("r1", n, Duration::from_secs(3600), Batching::Single) else {
        return;
    };
    cluster.gate.open();
    if cluster.create(n).is_none() {
        eprintln!("  warning: r1: the replicas did not all hold {n} items in time");
    }
    let caches: Vec<&Cache> = cluster.replicas.iter().map(|r| &r.cache).collect();
    let keys: Vec<String> = (0..n).map(id).collect();
    let gets = get_loop(&caches, &keys, 2, scale.time(Duration::from_secs(3)));
    if gets.misses > 0 {
        eprintln!("  warning: r1: {} gets missed", gets.misses);
    }
    report.add("replicas=3,get_hit", gets.ops_per_sec, "ops/s");
}

/// How far each replica's store is known to show every item synced (status above 0): the
/// first item not seen synced yet. Only moves forward, so watching costs one pass in all.
struct Visible {
    cursors: Vec<usize>,
}

impl Visible {
    fn advance(&mut self, replicas: &[Replica], n: usize) -> bool {
        for (cursor, replica) in self.cursors.iter_mut().zip(replicas) {
            while *cursor < n && replica.cache.get(&id(*cursor)).is_ok_and(|j| j.status > 0) {
                *cursor += 1;
            }
        }
        self.cursors.iter().all(|&c| c == n)
    }
}

/// R2: S2 with three replicas: N items created through the cluster, a sync that answers
/// `Update` (status + 1) for every item, parallelism 10 per replica, period 1 s, single-item
/// batches and batches of 100. Every replica's sweep queues its share of the items while
/// the sync is held; the clock starts when it is let go. Figures: the time until every item
/// was synced once cluster-wide (`sweep`), until every replica's store shows every item's
/// update, written through Redis (`visible`), items synced/s over 10 s, external calls per
/// item per period over the last 8 s of the window (1.0 when the cluster keeps up: each item
/// synced once per period, by one replica), the writes Redis applied (per second over the
/// window, and per item per period over its last 8 s: below 1 when the outboxes coalesce
/// several refreshes of an item into one write because Redis falls behind), the items synced
/// by more than one replica, each replica's share of the calls, and CPU per million syncs of
/// the replicas (all three, this process but its main thread) and of Redis.
pub(crate) fn r2(_rt: &Runtime, scale: Scale, report: &mut Report) {
    let period = scale.time(Duration::from_secs(1));
    let window = scale.time(Duration::from_secs(10));
    let settled = scale.time(Duration::from_secs(2));
    let limit = window * 6;
    let sizes = match std::env::var("AUTOREFRESH_BENCH_R2_N") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        // 1M only when asked for: on this 2-core machine it did not finish in 8 minutes (the
        // replicas, starved, lose their 1 s leases while the items are created).
        Err(_) => vec![scale.n(100_000)],
    };
    for n in sizes {
        for batching in [Batching::Single, Batching::Fixed(100)] {
            let name = format!("n={},{},replicas=3", short(n), batching.name());
            let Some(cluster) = Cluster::start("r2", n, period, batching) else { return };
            let Some(created) = cluster.create(n) else {
                eprintln!("  warning: r2: {name}: the replicas did not all hold {n} items in {SETUP_LIMIT:?}; skipped");
                continue;
            };
            report.add(format!("{name},create"), created.as_secs_f64(), "s");
            // Two periods: every replica's sweep has queued its share since it held every
            // item and its final shards.
            std::thread::sleep(period * 2);
            if !cluster.partitioned() {
                eprintln!("  warning: r2: {name}: the shards are not divided one owner each");
            }

            let (cpu0, redis0) = (cpu_seconds(), cluster.redis_cpu_seconds());
            let writes0 = cluster.redis_writes();
            let t0 = Instant::now();
            cluster.gate.open();
            let mut visible = Visible { cursors: vec![0; REPLICAS] };
            let (mut sweep, mut seen) = (None, None);
            let mut at_settled = None;
            let mut at_window = None;
            loop {
                let elapsed = t0.elapsed();
                let synced = cluster.synced();
                if sweep.is_none() && synced >= n as u64 {
                    sweep = Some(elapsed);
                }
                if seen.is_none() && visible.advance(&cluster.replicas, n) {
                    seen = Some(t0.elapsed());
                }
                if at_settled.is_none() && elapsed >= settled {
                    at_settled = Some((elapsed, cluster.per_replica(), cluster.redis_writes()));
                }
                if at_window.is_none() && elapsed >= window {
                    let cpu = cpu_seconds() - cpu0;
                    let redis = cluster.redis_cpu_seconds() - redis0;
                    let writes = cluster.redis_writes();
                    at_window = Some((elapsed, cluster.per_replica(), cpu, redis, writes));
                }
                if at_window.is_some() && ((sweep.is_some() && seen.is_some()) || elapsed >= limit)
                {
                    break;
                }
                std::thread::sleep(POLL);
            }
            let (settled_at, before, writes_settled) = at_settled.expect("measured");
            let (window_at, after, cpu, redis, writes) = at_window.expect("measured");
            let synced: u64 = after.iter().sum();
            let late: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            let late_total: u64 = late.iter().sum();
            let periods = (window_at - settled_at).as_secs_f64() / period.as_secs_f64();

            report.add(format!("{name},sweep"), sweep.map_or(f64::NAN, |d| d.as_secs_f64()), "s");
            report.add(format!("{name},visible"), seen.map_or(f64::NAN, |d| d.as_secs_f64()), "s");
            report.add(format!("{name},rate"), synced as f64 / window_at.as_secs_f64(), "items/s");
            report.add(
                format!("{name},calls_per_item_per_period"),
                late_total as f64 / n as f64 / periods,
                "calls",
            );
            report.add(
                format!("{name},redis_writes"),
                (writes - writes0) / window_at.as_secs_f64(),
                "writes/s",
            );
            report.add(
                format!("{name},writes_per_item_per_period"),
                (writes - writes_settled) / n as f64 / periods,
                "writes",
            );
            report.add(
                format!("{name},synced_by_two_replicas"),
                cluster.syncers.shared() as f64,
                "items",
            );
            for (replica, calls) in late.iter().enumerate() {
                report.add(
                    format!("{name},replica{replica}_share"),
                    *calls as f64 / late_total.max(1) as f64,
                    "fraction",
                );
            }
            report.add(format!("{name},cpu"), cpu_per_million(cpu, synced), "cpu-s/M syncs");
            report.add(
                format!("{name},redis_cpu"),
                cpu_per_million(redis, synced),
                "cpu-s/M syncs",
            );
            drop(cluster);
        }
    }
}
