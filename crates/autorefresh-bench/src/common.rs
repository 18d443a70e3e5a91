//! What the scenarios share: the item, the counting sync functions, the clocks and gauges.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, Item, ItemSyncResponse, NoDelayRateLimiter, SyncAction,
    SyncFunc, SyncResult,
};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;

/// The benchmark item of BENCHMARKS.md: `{ status: u64, terminal: bool }`. Serde, so the
/// replica scenarios can share it through Redis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Job {
    pub(crate) status: u64,
    pub(crate) terminal: bool,
}

impl Job {
    pub(crate) const NEW: Self = Self { status: 0, terminal: false };
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

/// The id of item `n`: `"item-<n>"`.
pub(crate) fn id(n: usize) -> String {
    format!("item-{n}")
}

/// The cache every scenario builds.
pub(crate) type Cache = AutoRefresh<String, Job>;

/// A builder with the settings most scenarios share: `capacity`, a limiter that never delays,
/// no sync on create (items are loaded before `start`; the first sweep syncs them).
pub(crate) fn builder(
    sync: impl SyncFunc<String, Job>,
    capacity: usize,
) -> AutoRefreshBuilder<String, Job> {
    AutoRefresh::builder("bench")
        .sync(sync)
        .capacity(capacity as u64)
        .rate_limiter(NoDelayRateLimiter::new())
        .sync_on_create(false)
}

/// Creates items `0..n`.
pub(crate) fn load(cache: &Cache, n: usize) {
    for i in 0..n {
        cache.get_or_create(id(i), Job::NEW).expect("get_or_create");
    }
}

/// How many of items `0..n` were synced at least once (status above 0).
pub(crate) fn count_synced(cache: &Cache, n: usize) -> usize {
    (0..n).filter(|&i| cache.get(&id(i)).is_ok_and(|job| job.status > 0)).count()
}

const STRIPES: usize = 16;

/// A counter striped over cache lines, one stripe per thread (round robin), so that counting
/// item-syncs on the runtime's workers never contends.
#[derive(Debug)]
pub(crate) struct Counter {
    slots: [Slot; STRIPES],
}

#[derive(Debug)]
#[repr(align(128))]
struct Slot(AtomicU64);

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

impl Counter {
    /// A counter that lives as long as the process, so sync futures hold a plain reference
    /// (no `Arc` count to bump per batch). A scenario run is a process of its own.
    pub(crate) fn leak() -> &'static Self {
        Box::leak(Box::new(Self { slots: std::array::from_fn(|_| Slot(AtomicU64::new(0))) }))
    }

    pub(crate) fn add(&self, n: u64) {
        self.slots[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// Every item of the batch with its status one higher, as `Update`.
pub(crate) fn bumped(batch: Batch<String, Job>) -> Vec<ItemSyncResponse<String, Job>> {
    batch
        .into_iter()
        .map(|w| {
            let (id, job) = w.into_parts();
            ItemSyncResponse {
                id,
                item: Job { status: job.status + 1, terminal: false },
                action: SyncAction::Update,
            }
        })
        .collect()
}

async fn bump(batch: Batch<String, Job>, counter: &'static Counter) -> SyncResult<String, Job> {
    counter.add(batch.len() as u64);
    Ok(bumped(batch))
}

/// A sync that answers at once with `Update` (status + 1) for every item, counting item-syncs.
pub(crate) fn bump_sync(counter: &'static Counter) -> impl SyncFunc<String, Job> {
    move |batch| bump(batch, counter)
}

async fn sleep_bump(
    batch: Batch<String, Job>,
    latency: Duration,
    counter: &'static Counter,
) -> SyncResult<String, Job> {
    tokio::time::sleep(latency).await;
    counter.add(batch.len() as u64);
    Ok(bumped(batch))
}

/// A sync that waits `latency` per batch (an external API), then answers like
/// [`bump_sync`].
pub(crate) fn sleepy_sync(
    latency: Duration,
    counter: &'static Counter,
) -> impl SyncFunc<String, Job> {
    move |batch| sleep_bump(batch, latency, counter)
}

fn rusage_seconds(who: UsageWho) -> f64 {
    let usage = getrusage(who).expect("getrusage");
    (usage.user_time().num_microseconds() + usage.system_time().num_microseconds()) as f64 / 1e6
}

/// CPU time so far, user + system, in seconds, of every thread of the process but the
/// calling one (`getrusage` `RUSAGE_SELF` minus `RUSAGE_THREAD`). Called from the main
/// thread, which only watches the counters while the cache runs, it is the cache's CPU
/// (runtime workers and blocking threads) without the benchmark's own polling.
pub(crate) fn cpu_seconds() -> f64 {
    rusage_seconds(UsageWho::RUSAGE_SELF) - rusage_seconds(UsageWho::RUSAGE_THREAD)
}

/// CPU seconds spent per million item-syncs.
pub(crate) fn cpu_per_million(cpu: f64, syncs: u64) -> f64 {
    if syncs == 0 {
        f64::NAN
    } else {
        cpu / (syncs as f64 / 1e6)
    }
}

/// The process's resident set, in bytes (`VmRSS` of /proc/self/status).
pub(crate) fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// How often the main thread looks at a counter: rare enough not to steal the workers' cores,
/// fine enough for sweeps of tens of milliseconds.
pub(crate) const POLL: Duration = Duration::from_micros(500);

/// Polls `done` every [`POLL`] until it holds or `timeout` passes; the time it took.
pub(crate) fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// xorshift64*: a fast, good-enough generator for picking ids.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// What [`get_loop`] measured.
#[derive(Debug)]
pub(crate) struct Gets {
    pub(crate) ops_per_sec: f64,
    pub(crate) misses: u64,
}

/// `threads` threads `get` random ids of `keys` for `duration`, each get from the next of
/// `caches` in turn (one cache for S1 and S9, the replicas' for r1): total ops/s.
pub(crate) fn get_loop(
    caches: &[&Cache],
    keys: &[String],
    threads: usize,
    duration: Duration,
) -> Gets {
    const CHUNK: u64 = 1024;
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (ops, misses, elapsed) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                scope.spawn(move || {
                    let mut rng = Rng::new(t as u64 + 1);
                    let (mut ops, mut misses) = (0u64, 0u64);
                    let mut next = t % caches.len();
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..CHUNK {
                            let key = &keys[rng.below(keys.len())];
                            if black_box(caches[next].get(key)).is_err() {
                                misses += 1;
                            }
                            next = if next + 1 == caches.len() { 0 } else { next + 1 };
                        }
                        ops += CHUNK;
                    }
                    (ops, misses)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let totals = workers
            .into_iter()
            .map(|w| w.join().expect("get thread"))
            .fold((0, 0), |(ops, misses), (o, m)| (ops + o, misses + m));
        (totals.0, totals.1, start.elapsed())
    });
    Gets { ops_per_sec: ops as f64 / elapsed.as_secs_f64(), misses }
}

/// The sizes of a run: full, or ~10× smaller with `--quick`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    pub(crate) quick: bool,
}

impl Scale {
    pub(crate) fn n(self, full: usize) -> usize {
        if self.quick {
            full / 10
        } else {
            full
        }
    }

    pub(crate) fn time(self, full: Duration) -> Duration {
        if self.quick {
            full / 10
        } else {
            full
        }
    }
}

/// One measured figure of one run.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) variant: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
}

/// The figures one run of a scenario reports, in order.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) samples: Vec<Sample>,
}

impl Report {
    pub(crate) fn add(&mut self, variant: impl Into<String>, value: f64, unit: &str) {
        self.samples.push(Sample { variant: variant.into(), value, unit: unit.to_owned() });
    }
}

/// A short human form of a count: 1000000 -> "1M".
pub(crate) fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
