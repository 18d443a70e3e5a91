//! Fault injection, on paused time: a sync function that fails, panics, hangs or crawls, and
//! a batcher that fails, panics, drops, repeats or invents ids. Each fault is handled (the
//! refresh goes on), counted where the metrics have a name for it, and leaves the cache
//! healthy: once the fault stops, every item converges, and nothing is left in the limiter
//! or the queue.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::tower::timeout::TimeoutLayer;
use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, CancellationToken, ItemExponentialFailureRateLimiter,
    ItemSyncResponse, ItemWrapper, SyncError,
};
use common::{id, increment, load, queue_figures, Counter, QueueFigures, Recorder};
use tokio::time::sleep;

const ITEMS: usize = 20;
/// Each item is terminal after this many successful refreshes.
const TARGET: u32 = 5;
const PERIOD: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the fake external system does, changeable while the cache runs.
#[derive(Default)]
struct Faults {
    /// Calls failing, and panicking, per mille (drawn per call).
    fail_per_mille: AtomicUsize,
    panic_per_mille: AtomicUsize,
    /// Calls holding one of these ids never return.
    hang: Mutex<HashSet<String>>,
    /// Every call takes this long.
    delay: Mutex<Duration>,
    rng: Mutex<u64>,
    calls: AtomicUsize,
    failed: AtomicUsize,
    panicked: AtomicUsize,
    hung: AtomicUsize,
    in_flight: common::InFlight,
    /// Ids the sync function was given, in order.
    seen: Mutex<Vec<String>>,
}

impl Faults {
    fn new() -> Arc<Self> {
        let faults = Self::default();
        *faults.rng.lock().unwrap() = 0x0DDB_A115_5EED;
        Arc::new(faults)
    }

    fn roll(&self, per_mille: usize) -> bool {
        let mut rng = self.rng.lock().unwrap();
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % 1000) < per_mille as u64
    }

    fn stop(&self) {
        self.fail_per_mille.store(0, Ordering::SeqCst);
        self.panic_per_mille.store(0, Ordering::SeqCst);
        self.hang.lock().unwrap().clear();
        *self.delay.lock().unwrap() = Duration::ZERO;
    }

    fn sync_fn(
        self: &Arc<Self>,
    ) -> impl Fn(Batch<String, Counter>) -> common::SyncFuture + Send + Sync + 'static {
        let faults = Arc::clone(self);
        move |batch| Box::pin(Arc::clone(&faults).sync(batch))
    }

    async fn sync(
        self: Arc<Self>,
        batch: Batch<String, Counter>,
    ) -> Result<Vec<ItemSyncResponse<String, Counter>>, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let ids: Vec<String> = batch.iter().map(|w| w.id().clone()).collect();
        self.seen.lock().unwrap().extend(ids.iter().cloned());
        let _in_flight = self.in_flight.enter(ids.clone());
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            sleep(delay).await;
        }
        if ids.iter().any(|id| self.hang.lock().unwrap().contains(id)) {
            self.hung.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if self.roll(self.fail_per_mille.load(Ordering::SeqCst)) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err("the external system failed".into());
        }
        if self.roll(self.panic_per_mille.load(Ordering::SeqCst)) {
            self.panicked.fetch_add(1, Ordering::SeqCst);
            panic!("sync panicked on purpose");
        }
        Ok(increment(batch))
    }
}

struct Setup {
    cache: AutoRefresh<String, Counter>,
    limiter: Arc<ItemExponentialFailureRateLimiter<String>>,
    recorder: Arc<Recorder>,
}

fn setup(
    faults: &Arc<Faults>,
    customize: impl FnOnce(AutoRefreshBuilder<String, Counter>) -> AutoRefreshBuilder<String, Counter>,
) -> Setup {
    let limiter = Arc::new(ItemExponentialFailureRateLimiter::<String>::new(
        Duration::from_millis(5),
        MAX_BACKOFF,
    ));
    let recorder = Arc::new(Recorder::default());
    let builder = AutoRefresh::builder("faults")
        .sync(faults.sync_fn())
        .resync_period(PERIOD)
        .parallelism(4)
        .rate_limiter(Arc::clone(&limiter))
        .metrics(Arc::clone(&recorder));
    let cache = customize(builder).build().unwrap();
    for i in 0..ITEMS {
        cache.get_or_create(id(i), Counter::new(TARGET)).unwrap();
    }
    Setup { cache, limiter, recorder }
}

/// Once the fault stopped: every item reaches its target, and neither the limiter nor the
/// queue holds anything for the (now terminal) items.
async fn assert_converges(setup: &Setup, faults: &Faults) {
    faults.stop();
    sleep(PERIOD * (TARGET + 2) + MAX_BACKOFF * 2).await;
    for i in 0..ITEMS {
        assert_eq!(setup.cache.get(&id(i)).unwrap(), Counter { value: TARGET, target: TARGET });
    }
    assert_eq!(setup.limiter.tracked_items(), 0, "the limiter still tracks ids");
    assert_eq!(queue_figures(&setup.cache), QueueFigures::default());
    assert_eq!(faults.in_flight.overlaps().len(), 0, "an id was in two calls at once");
}

#[tokio::test(start_paused = true)]
async fn sync_errors_at_any_rate_are_counted_and_items_converge() {
    for per_mille in [50, 300, 700, 1000] {
        let faults = Faults::new();
        faults.fail_per_mille.store(per_mille, Ordering::SeqCst);
        let setup = setup(&faults, |b| b);
        let running = setup.cache.start(CancellationToken::new()).unwrap();
        sleep(PERIOD * 20).await;
        let failed = faults.failed.load(Ordering::SeqCst);
        assert!(failed > 0, "{per_mille}‰: no failure");
        assert_eq!(load(&setup.recorder.errors), failed, "{per_mille}‰: every failure counted");
        if per_mille == 1000 {
            assert!(setup.limiter.tracked_items() > 0, "failing items are backing off");
        }
        assert_converges(&setup, &faults).await;
        running.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn sync_panics_are_counted_and_every_worker_survives() {
    let faults = Faults::new();
    faults.panic_per_mille.store(600, Ordering::SeqCst);
    let setup = setup(&faults, |b| b.parallelism(2));
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 20).await;
    let panicked = faults.panicked.load(Ordering::SeqCst);
    assert!(panicked > 10, "far more panics than workers: {panicked}");
    assert_eq!(load(&setup.recorder.panics), panicked, "every panic counted");
    assert_converges(&setup, &faults).await;
    running.shutdown().await;
}

/// Hung calls (never returning) are cut by the timeout layer: counted as timeouts, retried
/// with backoff, and the other items keep refreshing on the remaining workers. (A sweep
/// makes a hung item due again at once, whatever its backoff: each one costs a worker up to
/// the timeout every period, which the parallelism must leave room for.)
#[tokio::test(start_paused = true)]
async fn hung_syncs_time_out_and_the_rest_keep_refreshing() {
    let faults = Faults::new();
    faults.hang.lock().unwrap().extend((0..3).map(id));
    let setup = setup(&faults, |b| {
        b.parallelism(4).sync_on_create(false).layer(TimeoutLayer::new(Duration::from_millis(500)))
    });
    // Items never terminal, so they keep refreshing throughout.
    for i in 0..ITEMS {
        setup.cache.update(&id(i), Counter::new(1_000_000));
    }
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 30).await;
    let hung = faults.hung.load(Ordering::SeqCst);
    assert!(hung >= 6, "the hung items are retried: {hung}");
    // Each hung call but those still in flight timed out.
    let timeouts = load(&setup.recorder.timeouts);
    assert!(timeouts + 3 >= hung && timeouts <= hung, "{timeouts} timeouts, {hung} hung calls");
    for i in 3..ITEMS {
        let value = setup.cache.get(&id(i)).unwrap().value;
        assert!(value >= 29, "item {i} starved by the hung calls: {value} refreshes");
    }
    faults.stop();
    sleep(PERIOD * 3 + MAX_BACKOFF * 2).await;
    for i in 0..3 {
        assert!(setup.cache.get(&id(i)).unwrap().value > 0, "item {i} recovered");
    }
    running.shutdown().await;
}

/// Calls ten times longer than the period: no id is ever in two calls at once, each item is
/// synced once per call's length rather than piling up, and it converges.
#[tokio::test(start_paused = true)]
async fn very_slow_syncs_never_overlap_nor_pile_up() {
    let faults = Faults::new();
    *faults.delay.lock().unwrap() = PERIOD * 10;
    let setup = setup(&faults, |b| b.parallelism(ITEMS));
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 35).await;
    // Each item: one call at 0 s, 10 s, 20 s and 30 s.
    assert_eq!(faults.calls.load(Ordering::SeqCst), ITEMS * 4);
    assert_eq!(faults.in_flight.overlaps().len(), 0);
    assert_converges(&setup, &faults).await;
    running.shutdown().await;
}

/// What a misbehaving batcher does, changeable while the cache runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Batching {
    /// One item per batch.
    Fine,
    /// No batch at all.
    Empty,
    /// Every batch is there twice, and one batch holds every id.
    Duplicates,
    /// Adds an id that was not given (and one that was deleted).
    Invents,
    Error,
    Panic,
}

/// What a batcher closure returns.
type Batches = Result<Vec<Batch<String, Counter>>, SyncError>;

fn batcher(
    mode: Arc<Mutex<Batching>>,
    calls: Arc<AtomicUsize>,
) -> impl Fn(Vec<ItemWrapper<String, Counter>>) -> Batches + Send + Sync + 'static {
    move |items| {
        calls.fetch_add(1, Ordering::SeqCst);
        let single: Vec<Batch<String, Counter>> = items.iter().map(|w| vec![w.clone()]).collect();
        let mode = *mode.lock().unwrap();
        match mode {
            Batching::Fine => Ok(single),
            Batching::Empty => Ok(vec![Vec::new(), Vec::new()]),
            Batching::Duplicates => {
                let mut batches = single.clone();
                batches.extend(single);
                batches.push(items);
                Ok(batches)
            }
            Batching::Invents => {
                let mut batches = single;
                batches.push(vec![ItemWrapper::new("invented".to_string(), Counter::new(TARGET))]);
                batches.push(vec![ItemWrapper::new(id(ITEMS + 1), Counter::new(TARGET))]);
                Ok(batches)
            }
            Batching::Error => Err("the batcher failed".into()),
            Batching::Panic => panic!("batcher panicked on purpose"),
        }
    }
}

fn with_batcher(
    faults: &Arc<Faults>,
    mode: &Arc<Mutex<Batching>>,
    calls: &Arc<AtomicUsize>,
) -> Setup {
    let batcher = batcher(Arc::clone(mode), Arc::clone(calls));
    setup(faults, |b| b.create_batches(batcher))
}

#[tokio::test(start_paused = true)]
async fn a_batcher_returning_no_batches_leaves_items_waiting_for_the_next_sweep() {
    let faults = Faults::new();
    let mode = Arc::new(Mutex::new(Batching::Empty));
    let calls = Arc::new(AtomicUsize::new(0));
    let setup = with_batcher(&faults, &mode, &calls);
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 10).await;
    assert_eq!(faults.calls.load(Ordering::SeqCst), 0, "nothing is synced");
    assert!(calls.load(Ordering::SeqCst) >= 10, "each sweep offers the items again");
    assert_eq!(setup.cache.len(), ITEMS, "nothing is lost");
    *mode.lock().unwrap() = Batching::Fine;
    assert_converges(&setup, &faults).await;
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ids_repeated_across_batches_are_synced_once() {
    let faults = Faults::new();
    let mode = Arc::new(Mutex::new(Batching::Duplicates));
    let calls = Arc::new(AtomicUsize::new(0));
    let setup = with_batcher(&faults, &mode, &calls);
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    for i in 0..ITEMS {
        setup.cache.update(&id(i), Counter::new(1_000_000)); // never terminal
    }
    sleep(PERIOD * 10 + Duration::from_millis(500)).await;
    let seen = faults.seen.lock().unwrap().clone();
    for i in 0..ITEMS {
        // Synced on create, then once per sweep (11 sweeps: at 0 s, 1 s, ... 10 s).
        let times = seen.iter().filter(|s| **s == id(i)).count();
        assert!((11..=12).contains(&times), "item {i} synced {times} times");
    }
    assert_eq!(faults.in_flight.overlaps().len(), 0);
    *mode.lock().unwrap() = Batching::Fine;
    for i in 0..ITEMS {
        setup.cache.update(&id(i), Counter::new(TARGET));
    }
    assert_converges(&setup, &faults).await;
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ids_the_batcher_invents_are_never_synced_nor_created() {
    let faults = Faults::new();
    let mode = Arc::new(Mutex::new(Batching::Invents));
    let calls = Arc::new(AtomicUsize::new(0));
    let setup = with_batcher(&faults, &mode, &calls);
    // An id the cache had and deleted: the batcher names it, it must not come back.
    setup.cache.get_or_create(id(ITEMS + 1), Counter::new(TARGET)).unwrap();
    setup.cache.delete(&id(ITEMS + 1));
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 10).await;
    let seen = faults.seen.lock().unwrap().clone();
    assert!(!seen.iter().any(|s| s == "invented" || *s == id(ITEMS + 1)), "{seen:?}");
    assert!(setup.cache.get(&"invented".to_string()).is_err());
    assert!(setup.cache.get(&id(ITEMS + 1)).is_err());
    assert_converges(&setup, &faults).await;
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batcher_error_or_panic_is_counted_and_its_items_retried() {
    for fault in [Batching::Error, Batching::Panic] {
        let faults = Faults::new();
        let mode = Arc::new(Mutex::new(fault));
        let calls = Arc::new(AtomicUsize::new(0));
        let setup = with_batcher(&faults, &mode, &calls);
        let running = setup.cache.start(CancellationToken::new()).unwrap();
        sleep(PERIOD * 5).await;
        let batcher_calls = calls.load(Ordering::SeqCst);
        assert!(batcher_calls > 5, "{fault:?}: retried on its backoff: {batcher_calls} calls");
        let counted = match fault {
            Batching::Error => load(&setup.recorder.errors),
            _ => load(&setup.recorder.panics),
        };
        assert_eq!(counted, batcher_calls, "{fault:?}: every failure counted");
        assert!(setup.limiter.tracked_items() > 0, "{fault:?}: the items back off");
        *mode.lock().unwrap() = Batching::Fine;
        assert_converges(&setup, &faults).await;
        running.shutdown().await;
    }
}

/// An item whose sync failed, then left out by the batcher once: its failure count must not
/// outlive it. The queue forgets ids the batcher leaves out (the next sweep brings them
/// back); if the limiter kept their count, a later success would not drop it.
#[tokio::test(start_paused = true)]
async fn an_item_left_out_by_the_batcher_after_a_failure_keeps_no_limiter_state() {
    let faults = Faults::new();
    faults.fail_per_mille.store(1000, Ordering::SeqCst);
    let mode = Arc::new(Mutex::new(Batching::Fine));
    let calls = Arc::new(AtomicUsize::new(0));
    let setup = with_batcher(&faults, &mode, &calls);
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(1)).await; // synced on create (fails): backing off
    assert_eq!(setup.limiter.tracked_items(), ITEMS);
    *mode.lock().unwrap() = Batching::Empty; // the retries are left out
    sleep(Duration::from_millis(100)).await;
    *mode.lock().unwrap() = Batching::Fine;
    assert_converges(&setup, &faults).await;
    running.shutdown().await;
}

/// A batcher fails while one of the items it was given is deleted (here by the batcher
/// itself; in production, by a caller on another thread at that moment). The limiter's
/// `when` for the failure must not outlive the deleted id.
#[tokio::test(start_paused = true)]
async fn an_item_deleted_while_the_batcher_fails_keeps_no_limiter_state() {
    let faults = Faults::new();
    let handle: Arc<Mutex<Option<AutoRefresh<String, Counter>>>> = Arc::new(Mutex::new(None));
    let deleting = Arc::new(AtomicBool::new(true));
    let batcher = {
        let handle = Arc::clone(&handle);
        let deleting = Arc::clone(&deleting);
        move |items: Vec<ItemWrapper<String, Counter>>| -> Batches {
            if !deleting.load(Ordering::SeqCst) {
                return Ok(items.into_iter().map(|w| vec![w]).collect());
            }
            let cache = handle.lock().unwrap().clone().unwrap();
            for w in &items {
                cache.delete(w.id());
            }
            Err("the batcher failed".into())
        }
    };
    let setup = setup(&faults, |b| b.create_batches(batcher));
    *handle.lock().unwrap() = Some(setup.cache.clone());
    let running = setup.cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(setup.cache.len(), 0, "the batcher deleted every item");
    assert_eq!(load(&setup.recorder.errors), 1);
    assert_eq!(setup.limiter.tracked_items(), 0, "the limiter tracks deleted ids");
    deleting.store(false, Ordering::SeqCst);
    running.shutdown().await;
    // The batcher holds a handle to the cache: break the cycle.
    handle.lock().unwrap().take();
}
