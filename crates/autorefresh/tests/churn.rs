//! Churn on a multi-thread runtime, in real time: caller threads delete, re-create, update
//! and `delete_delayed` a small id space (more ids than the capacity, so the store evicts)
//! while syncs run every 2 ms on 4 workers, sometimes failing. Then the callers stop, and
//! the test checks what must hold once things are quiet:
//!
//! - no id was ever in two sync calls at once;
//! - every id still present (and not terminal) is synced again, with the generation a
//!   caller last wrote for it: no id is lost from the refresh by the churn;
//! - once every item is deleted or made terminal, the queue's figures are back to zero and
//!   the limiter holds no state for any id.
//!
//! The churn is bounded by a stop flag set after a fixed wall-clock time, and the waits
//! after it by generous deadlines (hundreds of periods); nothing asserts on timing.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, CancellationToken, Item,
    ItemExponentialFailureRateLimiter, ItemSyncResponse, MokaStore, SyncAction, SyncError,
};
use common::{queue_figures, BoxFuture, InFlight, QueueFigures};
use tokio::time::{sleep, Instant};

/// Ids `job-0` to `job-63`.
const IDS: usize = 64;
/// Below the id space: creates evict.
const CAPACITY: u64 = 48;
const PERIOD: Duration = Duration::from_millis(2);
const PARALLELISM: usize = 4;
const CALLER_THREADS: usize = 3;
/// How long the callers churn (wall clock).
const CHURN: Duration = Duration::from_millis(2500);
/// Each caller thread stops after this many operations, if the time is not up before.
const MAX_OPS_PER_THREAD: u64 = 2_000_000;
/// After the churn: how long to let sweeps run before reading what is present (pending
/// `delete_delayed`s are done by then).
const QUIESCE: Duration = Duration::from_millis(100);
/// The longest the test waits for what must happen after the churn: 2 500 periods.
const DEADLINE: Duration = Duration::from_secs(5);

fn id(n: usize) -> String {
    format!("job-{n}")
}

/// An item carrying the generation a caller wrote (each create and update takes a fresh one
/// from a global counter, so a later write always has a higher generation).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    generation: u64,
    syncs: u64,
    done: bool,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        self.done
    }
}

/// What the sync function saw of one id.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// Calls that held it.
    calls: u64,
    /// The highest generation it was given.
    generation: u64,
}

/// The fake external system: records every call per id, checks no id is in two calls at
/// once, sometimes yields or sleeps, and fails some calls while `failing` is set.
#[derive(Default)]
struct Recorder {
    seen: Mutex<HashMap<String, Seen>>,
    in_flight: InFlight,
    terminal_seen: AtomicUsize,
    failing: AtomicBool,
    calls: AtomicU64,
}

impl Recorder {
    fn seen(&self, id: &str) -> Seen {
        self.seen.lock().unwrap().get(id).copied().unwrap_or_default()
    }

    fn sync_fn(
        self: &Arc<Self>,
    ) -> impl Fn(Batch<String, Job>) -> BoxFuture<String, Job> + Send + Sync + 'static {
        let recorder = Arc::clone(self);
        move |batch| Box::pin(Arc::clone(&recorder).sync(batch))
    }

    async fn sync(
        self: Arc<Self>,
        batch: Batch<String, Job>,
    ) -> Result<Vec<ItemSyncResponse<String, Job>>, SyncError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<String> = batch.iter().map(|w| w.id().clone()).collect();
        // Marked in flight for the whole call, however it ends.
        let _in_flight = self.in_flight.enter(ids);
        {
            let mut seen = self.seen.lock().unwrap();
            for w in &batch {
                if w.item().done {
                    self.terminal_seen.fetch_add(1, Ordering::Relaxed);
                }
                let record = seen.entry(w.id().clone()).or_default();
                record.calls += 1;
                record.generation = record.generation.max(w.item().generation);
            }
        }
        match call % 4 {
            0 => tokio::task::yield_now().await,
            1 => sleep(Duration::from_micros(call % 1000)).await,
            _ => {}
        }
        if self.failing.load(Ordering::Relaxed) && call % 16 == 0 {
            return Err("the external system failed".into());
        }
        Ok(batch
            .into_iter()
            .map(|w| {
                let (id, job) = w.into_parts();
                let item = Job { syncs: job.syncs + 1, ..job };
                ItemSyncResponse { id, item, action: SyncAction::Update }
            })
            .collect())
    }
}

/// One caller thread: random operations on the whole id space until `stop`.
fn churn(
    cache: &AutoRefresh<String, Job>,
    seed: u64,
    generations: &AtomicU64,
    stop: &AtomicBool,
) -> u64 {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let job = |generation| Job { generation, syncs: 0, done: false };
    let mut ops = 0;
    while ops < MAX_OPS_PER_THREAD && !stop.load(Ordering::Relaxed) {
        let roll = next();
        let id = id((roll >> 16) as usize % IDS);
        // The first thread only deletes and re-creates (the review's reproduction); the
        // others mix every operation.
        let op = if seed == 1 { 0 } else { roll % 20 };
        match op {
            // The pattern a review found losing ids: delete, then create again at once.
            0..=6 => {
                cache.delete(&id);
                let generation = generations.fetch_add(1, Ordering::Relaxed);
                cache.get_or_create(id, job(generation)).unwrap();
            }
            7..=10 => {
                let generation = generations.fetch_add(1, Ordering::Relaxed);
                cache.get_or_create(id, job(generation)).unwrap();
            }
            11..=14 => {
                let generation = generations.fetch_add(1, Ordering::Relaxed);
                cache.update(&id, job(generation));
            }
            15..=16 => cache.delete_delayed(&id).unwrap(),
            _ => cache.delete(&id),
        }
        ops += 1;
    }
    ops
}

async fn churn_then_check(
    name: &str,
    customize: impl FnOnce(AutoRefreshBuilder<String, Job>) -> AutoRefreshBuilder<String, Job>,
) {
    let recorder = Arc::new(Recorder::default());
    recorder.failing.store(true, Ordering::Relaxed);
    let limiter = Arc::new(ItemExponentialFailureRateLimiter::<String>::new(
        Duration::from_millis(1),
        Duration::from_millis(20),
    ));
    let builder = AutoRefresh::builder(name)
        .sync(recorder.sync_fn())
        .resync_period(PERIOD)
        .parallelism(PARALLELISM)
        .rate_limiter(Arc::clone(&limiter));
    let cache: AutoRefresh<String, Job> = customize(builder).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();

    // The churn, on caller threads of their own (the cache's methods are synchronous).
    let started = Instant::now();
    let generations = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLER_THREADS)
        .map(|thread| {
            let cache = cache.clone();
            let generations = Arc::clone(&generations);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || churn(&cache, thread as u64 + 1, &generations, &stop))
        })
        .collect();
    sleep(CHURN).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    for caller in callers {
        ops += tokio::task::spawn_blocking(move || caller.join().unwrap()).await.unwrap();
    }
    let churned = started.elapsed();

    // Quiet: no caller writes, the external system stops failing, sweeps run.
    recorder.failing.store(false, Ordering::Relaxed);
    sleep(QUIESCE).await;
    let present: Vec<(String, Job, Seen)> = (0..IDS)
        .filter_map(|n| cache.get(&id(n)).ok().map(|job| (id(n), job, recorder.seen(&id(n)))))
        .collect();
    assert!(!present.is_empty(), "{name}: the churn left no item at all");

    // (b) Every present id is synced again, given the generation it holds now (the latest
    // written). Two more calls each: one could be a batch claimed before the quiet.
    let deadline = Instant::now() + DEADLINE;
    let lost = loop {
        let lost: Vec<String> = present
            .iter()
            .filter(|(id, job, before)| {
                // Gone since (a store may evict lazily): not refreshed, rightly.
                if cache.get(id).is_err() {
                    return false;
                }
                let now = recorder.seen(id);
                now.calls < before.calls + 2 || now.generation < job.generation
            })
            .map(|(id, job, before)| {
                let now = recorder.seen(id);
                format!(
                    "{id} (generation {}, seen up to {}, calls {} -> {})",
                    job.generation, now.generation, before.calls, now.calls
                )
            })
            .collect();
        if lost.is_empty() || Instant::now() >= deadline {
            break lost;
        }
        sleep(Duration::from_millis(10)).await;
    };
    let figures = queue_figures(&cache);

    // Every check is made, and every failure reported together.
    let mut failures = Vec::new();
    // (a) No overlap, ever.
    let overlaps = recorder.in_flight.overlaps();
    if !overlaps.is_empty() {
        failures.push(format!("ids in two sync calls at once: {overlaps:?}"));
    }
    // (b)
    if !lost.is_empty() {
        failures.push(format!(
            "{} of {} present ids never synced again after the churn (queue {figures:?}): \
             {lost:#?}",
            lost.len(),
            present.len(),
        ));
    }

    // (c) Every item leaves the refresh (half made terminal, half deleted): nothing is left
    // in the queue nor in the limiter.
    for n in 0..IDS {
        if n % 2 == 0 {
            let generation = generations.fetch_add(1, Ordering::Relaxed);
            cache.update(&id(n), Job { generation, syncs: 0, done: true });
        } else {
            cache.delete(&id(n));
        }
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let idle = queue_figures(&cache) == QueueFigures::default() && limiter.tracked_items() == 0;
        if idle || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let figures = queue_figures(&cache);
    if figures != QueueFigures::default() {
        failures.push(format!(
            "the queue still holds work with every item gone or terminal: {figures:?}"
        ));
    }
    if limiter.tracked_items() != 0 {
        failures.push(format!(
            "the limiter still tracks {} ids with every item gone or terminal",
            limiter.tracked_items()
        ));
    }
    for n in (0..IDS).step_by(2) {
        if cache.get(&id(n)).is_ok_and(|job| !job.done) {
            failures.push(format!("{}: a refresh overwrote the caller's terminal update", id(n)));
        }
    }
    let terminal_seen = recorder.terminal_seen.load(Ordering::Relaxed);
    if terminal_seen != 0 {
        failures.push(format!("the sync function was given {terminal_seen} terminal items"));
    }
    assert!(
        failures.is_empty(),
        "{name} ({ops} operations in {churned:?}, {} sync calls, {} present ids after the \
         churn):\n{}",
        recorder.calls.load(Ordering::Relaxed),
        present.len(),
        failures.join("\n"),
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_loses_no_id_from_the_refresh() {
    churn_then_check("churn", |b| b.capacity(CAPACITY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_loses_no_id_from_the_refresh_with_moka() {
    churn_then_check("churn-moka", |b| b.store(MokaStore::new(CAPACITY).unwrap())).await;
}
