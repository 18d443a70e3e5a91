//! Long runs: the staleness bound over hours of virtual time, and a multi-thread stress test
//! over real time.

mod common;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, Item,
    ItemExponentialFailureRateLimiter, ItemSyncResponse, SyncAction, SyncError,
};
use common::{increment, load, queue_figures, QueueFigures, Recorder};
use tokio::time::Instant;

/// A small deterministic generator (xorshift64*), so the tests need no RNG crate.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Tracked {
    syncs: u32,
    done: bool,
}

impl Item for Tracked {
    fn is_terminal(&self) -> bool {
        self.done
    }
}

mod staleness {
    use super::*;

    const ITEMS: usize = 10_000;
    const PERIOD: Duration = Duration::from_secs(60);
    const RUN: Duration = Duration::from_secs(2 * 3600);
    /// Sync calls take 0 to this long, uniformly.
    const MAX_SYNC_MS: u64 = 200;
    const MAX_SYNC: Duration = Duration::from_millis(MAX_SYNC_MS);
    const BASE_BACKOFF: Duration = Duration::from_millis(5);
    const MAX_BACKOFF: Duration = Duration::from_secs(2);
    /// Sync calls failing, per mille.
    const FAILURES: u64 = 50;
    /// Successful refreshes that make the item terminal, per mille.
    const FINISHES: u64 = 1;
    const BATCH: usize = 100;
    /// More workers than a sweep has batches: no batch waits for a worker.
    const WORKERS: usize = 128;

    #[derive(Clone, Copy, Debug)]
    struct Track {
        last_attempt: Instant,
        last_success: Instant,
        max_attempt_gap: Duration,
        max_success_gap: Duration,
        done: bool,
    }

    struct World {
        rng: Rng,
        items: Vec<Track>,
        terminal_synced: usize,
        calls: usize,
        failed_calls: usize,
    }

    fn sync_fn(
        world: Arc<Mutex<World>>,
    ) -> impl Fn(Batch<u32, Tracked>) -> common::BoxFuture<u32, Tracked> + Send + Sync + 'static
    {
        move |batch| {
            let world = Arc::clone(&world);
            let now = Instant::now();
            let (latency, fails) = {
                let mut w = world.lock().unwrap();
                w.calls += 1;
                for item in &batch {
                    if item.item().done {
                        w.terminal_synced += 1;
                    }
                    let track = &mut w.items[*item.id() as usize];
                    track.max_attempt_gap = track.max_attempt_gap.max(now - track.last_attempt);
                    track.last_attempt = now;
                }
                let latency = Duration::from_millis(w.rng.below(MAX_SYNC_MS + 1));
                (latency, w.rng.chance(FAILURES))
            };
            Box::pin(async move {
                tokio::time::sleep(latency).await;
                let mut w = world.lock().unwrap();
                if fails {
                    w.failed_calls += 1;
                    return Err(SyncError::from("the external system failed"));
                }
                let now = Instant::now();
                let mut responses = Vec::with_capacity(batch.len());
                for item in batch {
                    let (id, mut tracked) = item.into_parts();
                    tracked.syncs += 1;
                    tracked.done = w.rng.chance(FINISHES);
                    let track = &mut w.items[id as usize];
                    track.max_success_gap = track.max_success_gap.max(now - track.last_success);
                    track.last_success = now;
                    track.done = tracked.done;
                    responses.push(ItemSyncResponse {
                        id,
                        item: tracked,
                        action: SyncAction::Update,
                    });
                }
                Ok(responses)
            })
        }
    }

    /// 10 000 items, sync calls of random length of which 5% fail, two hours of virtual
    /// time: every item not yet terminal is refreshed successfully at least once in every
    /// window of `resync period + max backoff + max sync time`, and sent to the sync
    /// function at least once per resync period (every sweep's batches find a free worker).
    ///
    /// Why the success bound holds: a sweep queues every live non-terminal item once per
    /// period, a sweep arriving while an item waits for its retry makes it due at once, and
    /// one arriving while it is in flight makes it run again as soon as that call ends. An
    /// item is therefore attempted at least once per period, and one failed attempt costs a
    /// sync call plus its backoff before the next. The window covers up to six failures in a
    /// row with the slowest calls (about `7 * 200 ms + 315 ms` of backoff): seven in a row
    /// have a probability of 0.05^7 per item and sweep, about 1e-3 over this whole run, and
    /// would also need every call to be near the slowest.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn every_live_item_is_refreshed_within_the_staleness_window() {
        let start = Instant::now();
        let blank = Track {
            last_attempt: start,
            last_success: start,
            max_attempt_gap: Duration::ZERO,
            max_success_gap: Duration::ZERO,
            done: false,
        };
        let world = Arc::new(Mutex::new(World {
            rng: Rng(0x5EED_0F57_A1E5),
            items: vec![blank; ITEMS],
            terminal_synced: 0,
            calls: 0,
            failed_calls: 0,
        }));
        let limiter =
            Arc::new(ItemExponentialFailureRateLimiter::<u32>::new(BASE_BACKOFF, MAX_BACKOFF));
        let recorder = Arc::new(Recorder::default());
        let cache: AutoRefresh<u32, Tracked> = AutoRefresh::builder("staleness")
            .sync(sync_fn(Arc::clone(&world)))
            .create_batches(FixedSizeBatches::new(NonZeroUsize::new(BATCH).unwrap()))
            .resync_period(PERIOD)
            .parallelism(WORKERS)
            .capacity(ITEMS as u64)
            .rate_limiter(Arc::clone(&limiter))
            .metrics(Arc::clone(&recorder))
            .build()
            .unwrap();
        for id in 0..ITEMS as u32 {
            cache.get_or_create(id, Tracked { syncs: 0, done: false }).unwrap();
        }
        let running = cache.start(CancellationToken::new()).unwrap();
        tokio::time::sleep(RUN).await;
        let end = Instant::now();
        running.shutdown().await;

        let window = PERIOD + MAX_BACKOFF + MAX_SYNC;
        let w = world.lock().unwrap();
        assert_eq!(w.terminal_synced, 0, "terminal items reached sync");
        assert!(w.failed_calls > 500, "too few failures to mean anything: {}", w.failed_calls);
        assert_eq!(load(&recorder.errors), w.failed_calls, "every failure counted");
        let mut worst_success = Duration::ZERO;
        let mut worst_attempt = Duration::ZERO;
        let mut live = 0;
        for (id, track) in w.items.iter().enumerate() {
            if track.done {
                // Its last refresh made it terminal: the bound held until then.
                assert!(track.max_success_gap <= window, "item {id}: {track:?}");
                continue;
            }
            live += 1;
            let success_gap = track.max_success_gap.max(end - track.last_success);
            let attempt_gap = track.max_attempt_gap.max(end - track.last_attempt);
            worst_success = worst_success.max(success_gap);
            worst_attempt = worst_attempt.max(attempt_gap);
            assert!(success_gap <= window, "item {id} went {success_gap:?} unrefreshed: {track:?}");
            assert!(
                attempt_gap <= PERIOD,
                "item {id} went {attempt_gap:?} without a sync call: {track:?}"
            );
            assert!(!cache.get(&(id as u32)).unwrap().done);
        }
        assert!(live > ITEMS / 2, "most items stay live: {live}");
        eprintln!(
            "staleness: {} calls, {} failed, {live} live items, worst gap {worst_success:?} \
             (window {window:?}), worst gap between calls {worst_attempt:?}",
            w.calls, w.failed_calls
        );
        // Successes forgot the failures; only items whose last call failed are tracked.
        assert!(limiter.tracked_items() < ITEMS / 10, "{}", limiter.tracked_items());
        assert_eq!(queue_figures(&cache), QueueFigures::default(), "shutdown clears the queue");
    }
}

mod concurrency {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use autorefresh::ItemWrapper;
    use common::Counter;

    use super::*;

    const TASKS: usize = 8;
    const OWNED_PER_TASK: usize = 50;
    const SHARED_IDS: u64 = 5_000;
    const CAPACITY: u64 = 1_000;
    /// The test runs this long in real time...
    const RUN_FOR: std::time::Duration = std::time::Duration::from_secs(10);
    /// ...or until each task made this many operations, whichever comes first.
    const MAX_OPS_PER_TASK: usize = 50_000_000;

    /// What the sync function and the batcher saw that they never should.
    #[derive(Default)]
    struct Faults {
        rng: Mutex<Option<Rng>>,
        /// Whether the sync function and the batcher misbehave at random.
        on: AtomicBool,
        in_flight: common::InFlight,
        terminal_synced: AtomicUsize,
        ghosts_synced: AtomicUsize,
        calls: AtomicUsize,
    }

    impl Faults {
        fn roll(&self, per_mille: u64) -> bool {
            self.on.load(Ordering::Relaxed)
                && self.rng.lock().unwrap().get_or_insert(Rng(0xC0FFEE)).chance(per_mille)
        }
    }

    async fn sync(
        faults: Arc<Faults>,
        batch: Batch<String, Counter>,
    ) -> autorefresh::SyncResult<String, Counter> {
        faults.calls.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<String> = batch.iter().map(|w| w.id().clone()).collect();
        for w in &batch {
            if w.item().is_terminal() {
                faults.terminal_synced.fetch_add(1, Ordering::Relaxed);
            }
            if w.id().starts_with("ghost") {
                faults.ghosts_synced.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _in_flight = faults.in_flight.enter(ids);
        if faults.roll(20) {
            tokio::time::sleep(Duration::from_millis(3)).await;
        } else {
            tokio::task::yield_now().await;
        }
        if faults.roll(100) {
            return Err("the external system failed".into());
        }
        if faults.roll(20) {
            panic!("sync panicked on purpose");
        }
        Ok(increment(batch))
    }

    /// Batches of four, or, at random: an error, a panic, no batch at all, every batch
    /// twice, or an id the cache never had.
    /// What a batcher closure returns.
    type Batches = Result<Vec<Batch<String, Counter>>, SyncError>;

    fn batcher(
        faults: Arc<Faults>,
    ) -> impl Fn(Vec<ItemWrapper<String, Counter>>) -> Batches + Send + Sync + 'static {
        move |items| {
            if faults.roll(10) {
                return Err("the batcher failed".into());
            }
            if faults.roll(5) {
                panic!("batcher panicked on purpose");
            }
            if faults.roll(10) {
                return Ok(Vec::new());
            }
            let mut batches: Vec<Batch<String, Counter>> =
                items.chunks(4).map(<[_]>::to_vec).collect();
            if faults.roll(10) {
                batches.extend(batches.clone());
            }
            if faults.roll(10) {
                batches.push(vec![ItemWrapper::new("ghost-1".to_string(), Counter::new(10))]);
            }
            Ok(batches)
        }
    }

    /// Many tasks on a multi-thread runtime create, read, update, delete and delay-delete
    /// items while the refresh runs with random sync errors, panics and slow calls and a
    /// misbehaving batcher, for 10 s of real time. Throughout: the capacity holds, a deleted
    /// id never comes back, a re-created id never shows its previous life, a caller's update
    /// is never overwritten by a refresh that started before it, no id is in two sync calls
    /// at once, and no terminal or invented id reaches sync. At the end, with every id deleted, the limiter tracks nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mixed_operations_under_faults_keep_the_invariants() {
        let faults = Arc::new(Faults::default());
        faults.on.store(true, Ordering::Relaxed);
        let limiter = Arc::new(ItemExponentialFailureRateLimiter::<String>::new(
            Duration::from_millis(1),
            Duration::from_millis(50),
        ));
        let recorder = Arc::new(Recorder::default());
        let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("concurrency")
            .sync({
                let faults = Arc::clone(&faults);
                move |batch| sync(Arc::clone(&faults), batch)
            })
            .create_batches(batcher(Arc::clone(&faults)))
            .resync_period(Duration::from_millis(10))
            .parallelism(8)
            .capacity(CAPACITY)
            .rate_limiter(Arc::clone(&limiter))
            .metrics(Arc::clone(&recorder))
            .build()
            .unwrap();
        let running = cache.start(CancellationToken::new()).unwrap();

        // Real time on purpose: this test runs for a wall-clock duration; it never waits on it.
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now();
        let deadline = started + RUN_FOR;
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let cache = cache.clone();
                tokio::spawn(async move { exercise(task, &cache, deadline).await })
            })
            .collect();
        let mut ops = 0;
        for task in tasks {
            ops += task.await.unwrap();
        }
        let ran = started.elapsed();
        assert!(
            ran >= RUN_FOR || ops >= TASKS * MAX_OPS_PER_TASK,
            "stopped early: {ops} ops in {ran:?}"
        );

        // Delete every id the tasks used: the limiter must let go of all of them.
        for task in 0..TASKS {
            for slot in 0..OWNED_PER_TASK {
                cache.delete(&owned(task, slot));
            }
        }
        for n in 0..SHARED_IDS {
            cache.delete(&format!("shared-{n}"));
        }
        assert_eq!(cache.len(), 0);
        running.shutdown().await;
        assert_eq!(limiter.tracked_items(), 0, "the limiter kept failure counts for deleted ids");

        assert_eq!(faults.in_flight.overlaps().len(), 0, "an id was in two calls at once");
        assert_eq!(faults.terminal_synced.load(Ordering::Relaxed), 0, "terminal items synced");
        assert_eq!(faults.ghosts_synced.load(Ordering::Relaxed), 0, "invented ids synced");
        let calls = faults.calls.load(Ordering::Relaxed);
        assert!(calls > 1_000, "the refresh hardly ran: {calls} calls");
        assert!(load(&recorder.errors) > 0 && load(&recorder.panics) > 0);
        assert!(load(&recorder.evictions) > 0);
        eprintln!(
            "concurrency: {ops} operations in {ran:?}, {calls} sync calls, {} errors, {} panics, \
             {} evictions",
            load(&recorder.errors),
            load(&recorder.panics),
            load(&recorder.evictions)
        );
    }

    fn owned(task: usize, slot: usize) -> String {
        format!("owned-{task}-{slot}")
    }

    /// One caller. It owns some ids, each life told apart by its target (unique per task and
    /// operation), so it knows what each must read as; it churns shared ids to force
    /// evictions and delayed deletes. Returns how many operations it made.
    async fn exercise(
        task: usize,
        cache: &AutoRefresh<String, Counter>,
        deadline: std::time::Instant,
    ) -> usize {
        let mut life = vec![None::<u32>; OWNED_PER_TASK];
        let mut rng = Rng((task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for op in 0..MAX_OPS_PER_TASK {
            if op % 64 == 0 {
                #[allow(clippy::disallowed_methods)] // the real-time deadline, see above
                if std::time::Instant::now() >= deadline {
                    return op;
                }
                tokio::task::yield_now().await;
            }
            let roll = rng.next();
            let slot = (roll >> 8) as usize % OWNED_PER_TASK;
            let id = owned(task, slot);
            // Unique per task: a life's target, also its terminal value when it is terminal.
            let target = 1_000_000 + u32::try_from(op).unwrap();
            match roll % 10 {
                0 | 1 => {
                    let terminal = rng.chance(100);
                    let new = Counter { value: if terminal { target } else { 0 }, target };
                    let item = cache.get_or_create(id, new).unwrap();
                    if item.target == target {
                        // Created (what was there before, if anything, was evicted).
                        life[slot] = Some(target);
                    } else {
                        assert_eq!(Some(item.target), life[slot], "an older life came back");
                    }
                }
                2 => {
                    let terminal = rng.chance(100);
                    let new = Counter { value: if terminal { target } else { 0 }, target };
                    if cache.update(&id, new) {
                        life[slot] = Some(target);
                        // A refresh that started before the update never overwrites it.
                        match cache.get(&id) {
                            Ok(item) => assert_eq!(item.target, target, "update overwritten"),
                            Err(_) => life[slot] = None, // evicted meanwhile
                        }
                    } else {
                        life[slot] = None; // evicted, or never created
                    }
                }
                3 => {
                    cache.delete(&id);
                    life[slot] = None;
                    tokio::task::yield_now().await;
                    assert!(cache.get(&id).is_err(), "a deleted id came back");
                }
                4 | 5 => match cache.get(&id) {
                    Ok(item) => assert_eq!(Some(item.target), life[slot], "wrong life"),
                    Err(err) => {
                        assert!(err.is_not_found());
                        life[slot] = None; // evicted by the churn
                    }
                },
                6 | 7 => {
                    let shared = format!("shared-{}", roll % SHARED_IDS);
                    cache.get_or_create(shared, Counter::new(1_000_000)).unwrap();
                }
                8 => {
                    let shared = format!("shared-{}", roll % SHARED_IDS);
                    cache.delete_delayed(&shared).unwrap();
                }
                _ => {
                    let shared = format!("shared-{}", roll % SHARED_IDS);
                    let _ = cache.get(&shared);
                }
            }
            assert!(cache.len() <= CAPACITY as usize, "more than the capacity is readable");
        }
        MAX_OPS_PER_TASK
    }
}
