//! The workloads S1–S10 of BENCHMARKS.md, and S11 (adaptive refresh, beyond them). Each function is one run of one scenario; the
//! caller runs it in a fresh process, three times, and takes the median.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autorefresh::tower::timeout::TimeoutLayer;
use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, CancellationToken, FixedSizeBatches, ItemSyncResponse,
    Running, SyncAction, SyncResult,
};
use tokio::runtime::Runtime;

use crate::common::{
    builder, bump_sync, bumped, count_synced, cpu_per_million, cpu_seconds, get_loop, id, load,
    rss_bytes, short, sleepy_sync, wait_for, Cache, Counter, Job, Report, Scale, POLL,
};

/// A period long enough that only the sweep at `start` happens during a scenario.
const ONE_SWEEP_ONLY: Duration = Duration::from_secs(3600);

fn start(rt: &Runtime, cache: &Cache) -> Running {
    let _runtime = rt.enter();
    cache.start(CancellationToken::new()).expect("start")
}

fn stop(rt: &Runtime, running: Running) {
    rt.block_on(running.shutdown());
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64())
}

fn millis(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// How items are split into batches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Batching {
    Single,
    Fixed(usize),
}

impl Batching {
    pub(crate) fn name(self) -> String {
        match self {
            Self::Single => "single".to_owned(),
            Self::Fixed(n) => format!("batch{n}"),
        }
    }

    pub(crate) fn apply(
        self,
        b: AutoRefreshBuilder<String, Job>,
    ) -> AutoRefreshBuilder<String, Job> {
        match self {
            Self::Single => b, // the default batcher
            Self::Fixed(n) => {
                b.create_batches(FixedSizeBatches::new(NonZeroUsize::new(n).expect("size > 0")))
            }
        }
    }
}

/// What [`refresh_window`] measured.
#[derive(Debug)]
struct Window {
    /// From `start` until `n` item-syncs were counted (every item synced once).
    sweep: Option<Duration>,
    /// Item-syncs counted during the window.
    synced: u64,
    /// Item-syncs per second over the window.
    rate: f64,
    /// CPU seconds of the process during the window.
    cpu: f64,
}

/// Starts the cache and watches `counter` for `window`, and on until the first sweep is done
/// (at most `sweep_limit`); stops the cache.
fn refresh_window(
    rt: &Runtime,
    cache: &Cache,
    counter: &Counter,
    n: usize,
    window: Duration,
    sweep_limit: Duration,
) -> Window {
    let base = counter.sum();
    let cpu0 = cpu_seconds();
    let running = start(rt, cache);
    let t0 = Instant::now();
    let mut sweep = None;
    let mut at_window = None;
    loop {
        let elapsed = t0.elapsed();
        let synced = counter.sum() - base;
        if sweep.is_none() && synced >= n as u64 {
            sweep = Some(elapsed);
        }
        if at_window.is_none() && elapsed >= window {
            at_window = Some((synced, elapsed, cpu_seconds() - cpu0));
        }
        if at_window.is_some() && (sweep.is_some() || elapsed >= sweep_limit) {
            break;
        }
        std::thread::sleep(POLL);
    }
    stop(rt, running);
    let (synced, elapsed, cpu) = at_window.expect("window measured");
    Window { sweep, synced, rate: synced as f64 / elapsed.as_secs_f64(), cpu }
}

fn warn_unsynced(cache: &Cache, n: usize, what: &str) {
    let synced = count_synced(cache, n);
    if synced != n {
        eprintln!("  warning: {what}: only {synced} of {n} items were synced after the sweep");
    }
}

/// S1: `get` hits from 2 threads on a loaded cache that is not started.
pub(crate) fn s1(_rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(100_000);
    let cache = builder(bump_sync(Counter::leak()), n).build().expect("build");
    load(&cache, n);
    let keys: Vec<String> = (0..n).map(id).collect();
    let gets = get_loop(&[&cache], &keys, 2, scale.time(Duration::from_secs(3)));
    if gets.misses > 0 {
        eprintln!("  warning: s1: {} gets missed", gets.misses);
    }
    report.add("get_hit", gets.ops_per_sec, "ops/s");
}

/// S2: sweeps of N items with a sync that answers at once and a limiter that never delays.
pub(crate) fn s2(rt: &Runtime, scale: Scale, report: &mut Report) {
    let period = scale.time(Duration::from_secs(1));
    let window = scale.time(Duration::from_secs(10));
    for n in [scale.n(100_000), scale.n(1_000_000)] {
        for batching in [Batching::Single, Batching::Fixed(100)] {
            let counter = Counter::leak();
            let cache = batching
                .apply(builder(bump_sync(counter), n))
                .parallelism(10)
                .resync_period(period)
                .build()
                .expect("build");
            load(&cache, n);
            let w = refresh_window(rt, &cache, counter, n, window, window * 6);
            let name = format!("n={},{}", short(n), batching.name());
            if w.sweep.is_some() {
                warn_unsynced(&cache, n, &name);
            }
            report.add(format!("{name},sweep"), secs(w.sweep), "s");
            report.add(format!("{name},rate"), w.rate, "items/s");
            report.add(format!("{name},cpu"), cpu_per_million(w.cpu, w.synced), "cpu-s/M syncs");
        }
    }
}

/// S3: S2 (N = 100k, single-item batches) with the default limiter.
pub(crate) fn s3(rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(100_000);
    let counter = Counter::leak();
    let cache = AutoRefresh::builder("bench")
        .sync(bump_sync(counter))
        .capacity(n as u64)
        .sync_on_create(false)
        .parallelism(10)
        .resync_period(scale.time(Duration::from_secs(1)))
        .build()
        .expect("build");
    load(&cache, n);
    let window = scale.time(Duration::from_secs(10));
    let w = refresh_window(rt, &cache, counter, n, window, window);
    let name = format!("n={},single,default_limiter", short(n));
    report.add(format!("{name},items"), w.synced as f64, "items");
    report.add(format!("{name},rate"), w.rate, "items/s");
}

/// S4: a sync that sleeps 10 ms per batch; throughput against parallelism / 10 ms.
pub(crate) fn s4(rt: &Runtime, scale: Scale, report: &mut Report) {
    const LATENCY: Duration = Duration::from_millis(10);
    let window = scale.time(Duration::from_secs(10));
    for (parallelism, n) in [(10, scale.n(10_000)), (1000, scale.n(100_000))] {
        let counter = Counter::leak();
        let cache = builder(sleepy_sync(LATENCY, counter), n)
            .parallelism(parallelism)
            .resync_period(scale.time(Duration::from_secs(1)))
            .build()
            .expect("build");
        load(&cache, n);
        let w = refresh_window(rt, &cache, counter, n, window, window);
        let ideal = parallelism as f64 / LATENCY.as_secs_f64();
        let name = format!("p={parallelism},n={}", short(n));
        report.add(format!("{name},rate"), w.rate, "items/s");
        report.add(format!("{name},of_ideal"), w.rate / ideal, "ratio");
        report.add(format!("{name},cpu"), cpu_per_million(w.cpu, w.synced), "cpu-s/M syncs");
    }
}

/// Builds, loads and sweeps once a cache of `n` items; returns resident bytes per item after
/// the load and after the sweep, the insert time, the sweep time and its CPU per M syncs.
fn load_and_sweep_once(rt: &Runtime, n: usize, batching: Batching) -> [f64; 5] {
    let rss0 = rss_bytes();
    let counter = Counter::leak();
    let cache = batching
        .apply(builder(bump_sync(counter), n))
        .parallelism(10)
        .resync_period(ONE_SWEEP_ONLY)
        .build()
        .expect("build");
    let t0 = Instant::now();
    load(&cache, n);
    let insert = t0.elapsed();
    let rss1 = rss_bytes();
    let cpu0 = cpu_seconds();
    let running = start(rt, &cache);
    let sweep = wait_for(Duration::from_secs(600), || counter.sum() >= n as u64);
    let cpu = cpu_seconds() - cpu0;
    // Let the last batches' results land before measuring.
    std::thread::sleep(Duration::from_millis(20));
    let rss2 = rss_bytes();
    stop(rt, running);
    let per_item = |rss: u64| rss.saturating_sub(rss0) as f64 / n as f64;
    [
        per_item(rss1),
        per_item(rss2),
        insert.as_secs_f64(),
        secs(sweep),
        cpu_per_million(cpu, n as u64),
    ]
}

/// S5: resident bytes per item, 1M items created and swept once (single-item batches).
pub(crate) fn s5(rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(1_000_000);
    let [after_insert, after_sweep, _, sweep, _] = load_and_sweep_once(rt, n, Batching::Single);
    let name = format!("n={}", short(n));
    report.add(format!("{name},after_insert"), after_insert, "B/item");
    report.add(format!("{name},after_sweep"), after_sweep, "B/item");
    report.add(format!("{name},sweep"), sweep, "s");
}

async fn panicking(_batch: Batch<String, Job>) -> SyncResult<String, Job> {
    panic!("autorefresh-bench S6: every sync panics")
}

/// S6: every sync panics; are the items still attempted, again and again?
pub(crate) fn s6(rt: &Runtime, scale: Scale, report: &mut Report) {
    const N: usize = 100;
    let window = scale.time(Duration::from_secs(2));
    let calls = Counter::leak();
    let attempts: &'static Mutex<HashMap<String, u32>> = Box::leak(Box::default());
    let sync = move |batch: Batch<String, Job>| {
        calls.add(1);
        let mut attempts = attempts.lock().expect("attempts");
        for w in &batch {
            *attempts.entry(w.id().clone()).or_default() += 1;
        }
        panicking(batch)
    };
    let cache = AutoRefresh::builder("bench") // the default limiter: backoff after a failure
        .sync(sync)
        .capacity(N as u64)
        .sync_on_create(false)
        .parallelism(10)
        .resync_period(scale.time(Duration::from_secs(1)))
        .build()
        .expect("build");
    load(&cache, N);
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let running = start(rt, &cache);
    std::thread::sleep(window / 2);
    let first_half = calls.sum();
    std::thread::sleep(window / 2);
    let total = calls.sum();
    stop(rt, running);
    std::panic::set_hook(previous_hook);
    let retried = attempts.lock().expect("attempts").values().filter(|&&a| a >= 2).count();
    let second_half = total - first_half;
    report.add("sync_calls", total as f64, "calls");
    report.add("sync_calls_second_half", second_half as f64, "calls");
    report.add("items_attempted_twice", retried as f64 / N as f64, "fraction");
    report.add("refresh_goes_on", f64::from(u8::from(second_half > 0 && retried == N)), "bool");
}

const STUCK: &str = "item-0";

async fn stuck_or_bump(
    batch: Batch<String, Job>,
    counter: &'static Counter,
    stuck_calls: &'static Counter,
) -> SyncResult<String, Job> {
    if batch.iter().any(|w| w.id() == STUCK) {
        stuck_calls.add(1);
        std::future::pending::<()>().await;
    }
    counter.add(batch.len() as u64);
    Ok(bumped(batch))
}

/// S7: the sync of one item never returns; parallelism 2, the default limiter, and the
/// timeout layer (a tenth of the period) on the sync path.
pub(crate) fn s7(rt: &Runtime, scale: Scale, report: &mut Report) {
    const N: usize = 1000;
    const SWEEPS: u32 = 5;
    let period = scale.time(Duration::from_secs(1));
    let (counter, stuck_calls) = (Counter::leak(), Counter::leak());
    let cache = AutoRefresh::builder("bench")
        .sync(move |batch: Batch<String, Job>| stuck_or_bump(batch, counter, stuck_calls))
        .layer(TimeoutLayer::new(period / 10))
        .capacity(N as u64)
        .sync_on_create(false)
        .parallelism(2)
        .resync_period(period)
        .build()
        .expect("build");
    load(&cache, N);
    let running = start(rt, &cache);
    let window = period * SWEEPS;
    std::thread::sleep(window);
    let synced = counter.sum();
    stop(rt, running);
    // Sweeps at 0, 1, .. 4 periods: each should sync the N - 1 items that do not hang.
    let coverage = synced as f64 / ((N - 1) as f64 * f64::from(SWEEPS));
    report.add("timeout_layer=on,rate", synced as f64 / window.as_secs_f64(), "items/s");
    report.add("timeout_layer=on,coverage", coverage, "fraction");
    report.add("timeout_layer=on,stuck_item_calls", stuck_calls.sum() as f64, "calls");
}

const S8_N: usize = 1000;
const S8_DELETED: usize = 500;
const S8_PERIOD: Duration = Duration::from_millis(100);

fn all_deleted_gone(cache: &Cache) -> bool {
    (0..S8_DELETED).all(|i| cache.get(&id(i)).is_err())
}

/// S8, idle: every item synced once and at rest; `delete_delayed` of 500 at a random phase of
/// the period; the time until all 500 read NotFound.
fn s8_idle(rt: &Runtime) -> Option<Duration> {
    let counter = Counter::leak();
    let cache = builder(bump_sync(counter), S8_N)
        .parallelism(10)
        .resync_period(S8_PERIOD)
        .build()
        .expect("build");
    load(&cache, S8_N);
    let running = start(rt, &cache);
    wait_for(Duration::from_secs(5), || counter.sum() >= S8_N as u64);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    std::thread::sleep(S8_PERIOD.mul_f64(f64::from(nanos % 1000) / 1000.0));
    let t0 = Instant::now();
    for i in 0..S8_DELETED {
        cache.delete_delayed(&id(i)).expect("delete_delayed");
    }
    let gone = wait_for(S8_PERIOD * 20, || all_deleted_gone(&cache)).map(|_| t0.elapsed());
    let kept = (S8_DELETED..S8_N).filter(|&i| cache.get(&id(i)).is_ok()).count();
    if kept != S8_N - S8_DELETED {
        eprintln!(
            "  warning: s8: {} items that were not deleted are gone",
            S8_N - S8_DELETED - kept
        );
    }
    stop(rt, running);
    gone
}

fn index_of(id: &str) -> usize {
    id.strip_prefix("item-").and_then(|n| n.parse().ok()).expect("an item id")
}

/// S8, in flight: the first sync of each of the 500 items is held until the deletes have
/// landed; then released (answering `Update`). The time until all 500 read NotFound, and how
/// many read Ok again three periods after the release (resurrected).
fn s8_in_flight(rt: &Runtime, hard_delete: bool) -> (Option<Duration>, usize) {
    let counter = Counter::leak();
    let entered: &'static AtomicUsize = Box::leak(Box::default());
    let (release, released) = tokio::sync::watch::channel(false);
    let sync = move |batch: Batch<String, Job>| {
        let held = batch.iter().any(|w| index_of(w.id()) < S8_DELETED);
        if held {
            entered.fetch_add(1, Ordering::SeqCst);
        }
        let mut released = released.clone();
        async move {
            if held {
                let _ = released.wait_for(|r| *r).await;
            }
            counter.add(batch.len() as u64);
            Ok(bumped(batch))
        }
    };
    let cache = builder(sync, S8_N)
        .parallelism(S8_N) // every held item in flight at once, the others still served
        .resync_period(S8_PERIOD)
        .build()
        .expect("build");
    load(&cache, S8_N);
    let running = start(rt, &cache);
    if wait_for(Duration::from_secs(5), || entered.load(Ordering::SeqCst) >= S8_DELETED).is_none() {
        eprintln!("  warning: s8: the held syncs never all started");
    }
    let t0 = Instant::now();
    for i in 0..S8_DELETED {
        if hard_delete {
            cache.delete(&id(i));
        } else {
            cache.delete_delayed(&id(i)).expect("delete_delayed");
        }
    }
    release.send_replace(true);
    let gone = wait_for(S8_PERIOD * 20, || all_deleted_gone(&cache)).map(|_| t0.elapsed());
    std::thread::sleep(S8_PERIOD * 3);
    let resurrected = (0..S8_DELETED).filter(|&i| cache.get(&id(i)).is_ok()).count();
    stop(rt, running);
    (gone, resurrected)
}

/// S8: `delete_delayed` of 500 of 1000 items, period 100 ms.
pub(crate) fn s8(rt: &Runtime, _scale: Scale, report: &mut Report) {
    report.add("delete_delayed,idle,time_to_notfound", millis(s8_idle(rt)), "ms");
    let (gone, resurrected) = s8_in_flight(rt, false);
    report.add("delete_delayed,in_flight,time_to_notfound", millis(gone), "ms");
    report.add("delete_delayed,in_flight,resurrected", resurrected as f64, "items");
    let (_, resurrected) = s8_in_flight(rt, true);
    report.add("delete,in_flight,resurrected", resurrected as f64, "items");
}

/// S9: S1's gets, first on the cache at rest, then while S2 (single-item batches) refreshes
/// it at full speed (a period so short that the workers never idle).
pub(crate) fn s9(rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(100_000);
    let counter = Counter::leak();
    let cache = builder(bump_sync(counter), n)
        .parallelism(10)
        .resync_period(Duration::from_secs_f64(n as f64 / 1e6)) // asks for 1M item-syncs/s
        .build()
        .expect("build");
    load(&cache, n);
    let keys: Vec<String> = (0..n).map(id).collect();
    let window = scale.time(Duration::from_secs(3));
    let baseline = get_loop(&[&cache], &keys, 2, window);
    let running = start(rt, &cache);
    let before = counter.sum();
    let t0 = Instant::now();
    let loaded = get_loop(&[&cache], &keys, 2, window);
    let refresh_rate = (counter.sum() - before) as f64 / t0.elapsed().as_secs_f64();
    stop(rt, running);
    if baseline.misses + loaded.misses > 0 {
        eprintln!("  warning: s9: {} gets missed", baseline.misses + loaded.misses);
    }
    report.add("get_at_rest", baseline.ops_per_sec, "ops/s");
    report.add("get_under_refresh", loaded.ops_per_sec, "ops/s");
    report.add("ratio", loaded.ops_per_sec / baseline.ops_per_sec, "ratio");
    report.add("refresh_rate", refresh_rate, "items/s");
}

/// S10: 10M items in batches of 1000: insert, one full sweep, resident bytes per item.
pub(crate) fn s10(rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(10_000_000);
    let [_, after_sweep, insert, sweep, cpu] = load_and_sweep_once(rt, n, Batching::Fixed(1000));
    let name = format!("n={},batch1000", short(n));
    report.add(format!("{name},insert"), insert, "s");
    report.add(format!("{name},sweep"), sweep, "s");
    report.add(format!("{name},after_sweep"), after_sweep, "B/item");
    report.add(format!("{name},cpu"), cpu, "cpu-s/M syncs");
}

/// S11's items: 1 in 10 changes at every sync, the rest never do.
const S11_CHANGING_EVERY: usize = 10;
const S11_PERIOD: Duration = Duration::from_millis(100);
const S11_PERIODS: u32 = 60;
/// Adaptive refresh's longest wait, in periods.
const S11_MAX_PERIODS: u32 = 16;

/// What S11's fake sync saw, by its own clock: per item, when it was last synced; per kind
/// (0 changing, 1 stable), item-syncs and the summed age at sync (time since the item's
/// previous sync).
struct S11Tracker {
    t0: Instant,
    /// Nanoseconds since `t0` of each item's last sync, plus one; 0 before its first.
    last: Vec<AtomicU64>,
    calls: AtomicU64,
    syncs: [AtomicU64; 2],
    age_nanos: [AtomicU64; 2],
    aged: [AtomicU64; 2],
}

impl S11Tracker {
    fn leak(n: usize) -> &'static Self {
        Box::leak(Box::new(Self {
            t0: Instant::now(),
            last: (0..n).map(|_| AtomicU64::new(0)).collect(),
            calls: AtomicU64::new(0),
            syncs: Default::default(),
            age_nanos: Default::default(),
            aged: Default::default(),
        }))
    }

    /// The mean age at sync of one kind of item, in milliseconds.
    fn mean_age_ms(&self, kind: usize) -> f64 {
        let aged = self.aged[kind].load(Ordering::Relaxed);
        if aged == 0 {
            return f64::NAN;
        }
        self.age_nanos[kind].load(Ordering::Relaxed) as f64 / aged as f64 / 1e6
    }
}

async fn s11_sync(
    batch: Batch<String, Job>,
    tracker: &'static S11Tracker,
) -> SyncResult<String, Job> {
    tracker.calls.fetch_add(1, Ordering::Relaxed);
    let now = u64::try_from(tracker.t0.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1;
    let mut responses = Vec::with_capacity(batch.len() / S11_CHANGING_EVERY + 1);
    for w in batch {
        let (key, job) = w.into_parts();
        let i: usize = key.rsplit('-').next().and_then(|n| n.parse().ok()).expect("item-<n>");
        let kind = usize::from(i % S11_CHANGING_EVERY != 0);
        tracker.syncs[kind].fetch_add(1, Ordering::Relaxed);
        let previous = tracker.last[i].swap(now, Ordering::Relaxed);
        if previous != 0 {
            tracker.age_nanos[kind].fetch_add(now.saturating_sub(previous), Ordering::Relaxed);
            tracker.aged[kind].fetch_add(1, Ordering::Relaxed);
        }
        if kind == 0 {
            // Changed: `Update`. The stable items get no response (unchanged).
            let item = Job { status: job.status + 1, terminal: false };
            responses.push(ItemSyncResponse { id: key, item, action: SyncAction::Update });
        }
    }
    Ok(responses)
}

/// One S11 mode: `n` items refreshed every 100 ms for 60 periods, adaptively or not.
fn s11_mode(rt: &Runtime, n: usize, adaptive: bool) -> &'static S11Tracker {
    let tracker = S11Tracker::leak(n);
    let mut b =
        builder(move |batch| s11_sync(batch, tracker), n).parallelism(10).resync_period(S11_PERIOD);
    b = Batching::Fixed(100).apply(b);
    if adaptive {
        b = b.adaptive_refresh(S11_PERIOD * S11_MAX_PERIODS);
    }
    let cache = b.build().expect("build");
    load(&cache, n);
    let running = start(rt, &cache);
    // The sweeps at 0, 1, …, 60 periods, and time for the last one's syncs.
    std::thread::sleep(S11_PERIOD * S11_PERIODS + S11_PERIOD / 2);
    stop(rt, running);
    tracker
}

/// S11 (not part of `all`): adaptive refresh. 10k items, 10% of which change at every sync
/// and 90% never, period 100 ms, for 60 periods, refreshed every period and then adaptively
/// (longest wait 16 periods): item-syncs and sync calls in each mode, the share saved, and
/// the mean age at sync (time since the previous sync, by the fake sync's clock) of the
/// changing items in both modes and of the stable items adaptively.
pub(crate) fn s11(rt: &Runtime, scale: Scale, report: &mut Report) {
    let n = scale.n(10_000);
    let name = format!("n={}", short(n));
    let fixed = s11_mode(rt, n, false);
    let adaptive = s11_mode(rt, n, true);
    let syncs = |t: &S11Tracker| t.syncs.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>();
    let (fixed_syncs, adaptive_syncs) = (syncs(fixed), syncs(adaptive));
    report.add(format!("{name},fixed,item_syncs"), fixed_syncs as f64, "syncs");
    report.add(format!("{name},adaptive,item_syncs"), adaptive_syncs as f64, "syncs");
    report.add(
        format!("{name},saved"),
        100.0 * (1.0 - adaptive_syncs as f64 / fixed_syncs as f64),
        "%",
    );
    report.add(format!("{name},fixed,calls"), fixed.calls.load(Ordering::Relaxed) as f64, "calls");
    report.add(
        format!("{name},adaptive,calls"),
        adaptive.calls.load(Ordering::Relaxed) as f64,
        "calls",
    );
    let (fixed_age, adaptive_age) = (fixed.mean_age_ms(0), adaptive.mean_age_ms(0));
    report.add(format!("{name},fixed,changing_age"), fixed_age, "ms");
    report.add(format!("{name},adaptive,changing_age"), adaptive_age, "ms");
    report.add(format!("{name},added_staleness"), adaptive_age - fixed_age, "ms");
    report.add(format!("{name},fixed,stable_age"), fixed.mean_age_ms(1), "ms");
    report.add(format!("{name},adaptive,stable_age"), adaptive.mean_age_ms(1), "ms");
}
