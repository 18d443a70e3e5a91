//! Every user callback the cache calls may panic: the sync function (in the call and in its
//! future), the batcher, the rate limiter's `when`, `forget` and `num_requeues`, each
//! `Metrics` method the refresh calls, the removal listener, `Item::is_terminal`, the id's
//! `Clone`, `Hash` and `Eq`, and the item's `Clone`. Each one here panics once (or a few
//! times), alone or with a failing sync or batcher, with the default single-item batches and
//! with a custom batcher (whose path holds the items taken from the queue while it calls the
//! limiter and the metrics); afterwards the refresh of every item still in the cache goes on:
//! each is synced again within a few periods. A panic in a caller's own call (a
//! `get_or_create` whose id hashes, or whose eviction calls the metrics) may reach that
//! caller; the test catches it and goes on.
//!
//! On paused time; assertions count syncs per id, never time. Each test runs all its
//! variants and reports every failing one.

mod common;

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, CancellationToken, FixedSizeBatches, Item,
    ItemExponentialFailureRateLimiter, ItemSyncResponse, ItemWrapper, Metrics, RateLimiter,
    RemovalCause, SyncAction, SyncError, SyncFailureKind,
};
use common::{queue_figures, BoxFuture, QueueFigures};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);
const ITEMS: usize = 10;

// ---------------------------------------------------------------------------------------
// Traps: a callback that panics (or fails) on chosen calls.
// ---------------------------------------------------------------------------------------

/// Fires on calls `from .. from + times` of one callback, counted from when it was armed;
/// harmless while disarmed.
#[derive(Debug)]
struct Trap {
    what: &'static str,
    calls: AtomicUsize,
    from: AtomicUsize,
    times: AtomicUsize,
    fired: AtomicUsize,
}

impl Trap {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            calls: AtomicUsize::new(0),
            from: AtomicUsize::new(usize::MAX),
            times: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
        }
    }

    /// Fires on the `from`-th call from now (0: the next one) and the `times - 1` after it.
    fn arm(&self, from: usize, times: usize) {
        self.from.store(usize::MAX, Ordering::SeqCst);
        self.calls.store(0, Ordering::SeqCst);
        self.times.store(times, Ordering::SeqCst);
        self.from.store(from, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.from.store(usize::MAX, Ordering::SeqCst);
    }

    /// Counts a call; whether this one fires.
    fn fires(&self) -> bool {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let from = self.from.load(Ordering::SeqCst);
        let fire = call >= from && call - from < self.times.load(Ordering::SeqCst);
        if fire {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        fire
    }

    /// Counts a call; panics if this one fires.
    fn spring(&self) {
        if self.fires() {
            panic!("{} panicked on purpose", self.what);
        }
    }

    fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}

/// The item: counts its syncs; its `Clone` and `is_terminal` can be trapped.
#[derive(Debug)]
struct Job {
    syncs: u32,
    done: bool,
    traps: Option<Arc<JobTraps>>,
}

#[derive(Debug)]
struct JobTraps {
    clone: Trap,
    is_terminal: Trap,
}

impl Job {
    fn new() -> Self {
        Self { syncs: 0, done: false, traps: None }
    }

    fn trapped(traps: &Arc<JobTraps>) -> Self {
        Self { syncs: 0, done: false, traps: Some(Arc::clone(traps)) }
    }
}

impl Clone for Job {
    fn clone(&self) -> Self {
        if let Some(traps) = &self.traps {
            traps.clone.spring();
        }
        Self { syncs: self.syncs, done: self.done, traps: self.traps.clone() }
    }
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        if let Some(traps) = &self.traps {
            traps.is_terminal.spring();
        }
        self.done
    }
}

/// An id whose `Clone`, `Hash` and `Eq` can be trapped (they look at the name only).
struct Key {
    name: String,
    traps: Arc<KeyTraps>,
}

struct KeyTraps {
    clone: Trap,
    hash: Trap,
    eq: Trap,
}

impl KeyTraps {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            clone: Trap::new("K::clone"),
            hash: Trap::new("K::hash"),
            eq: Trap::new("K::eq"),
        })
    }

    fn by_name(&self, op: &str) -> &Trap {
        match op {
            "clone" => &self.clone,
            "hash" => &self.hash,
            _ => &self.eq,
        }
    }

    fn disarm(&self) {
        self.clone.disarm();
        self.hash.disarm();
        self.eq.disarm();
    }
}

impl Clone for Key {
    fn clone(&self) -> Self {
        self.traps.clone.spring();
        Self { name: self.name.clone(), traps: Arc::clone(&self.traps) }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.traps.hash.spring();
        self.name.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.traps.eq.spring();
        self.name == other.name
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What the per-id sync counts are keyed by, read without cloning the id.
trait Named {
    fn name(&self) -> &str;
}

impl Named for String {
    fn name(&self) -> &str {
        self
    }
}

impl Named for Key {
    fn name(&self) -> &str {
        &self.name
    }
}

// ---------------------------------------------------------------------------------------
// The fake external system, the batcher, the limiter, the metrics.
// ---------------------------------------------------------------------------------------

/// Counts successful syncs per id; its traps fail or panic chosen calls.
struct Syncs {
    counts: Mutex<HashMap<String, usize>>,
    /// The call returns an error.
    fail: Trap,
    /// The sync closure panics before it returns its future.
    panic_in_call: Trap,
    /// The future panics when polled.
    panic_in_future: Trap,
}

impl Syncs {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            fail: Trap::new("sync (error)"),
            panic_in_call: Trap::new("the sync closure"),
            panic_in_future: Trap::new("the sync future"),
        })
    }

    fn count(&self, name: &str) -> usize {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn sync_fn<K: Named + Send + Sync + 'static>(
        self: &Arc<Self>,
    ) -> impl Fn(Batch<K, Job>) -> BoxFuture<K, Job> + Send + Sync + 'static {
        let syncs = Arc::clone(self);
        move |batch: Batch<K, Job>| {
            syncs.panic_in_call.spring();
            let syncs = Arc::clone(&syncs);
            Box::pin(async move {
                syncs.panic_in_future.spring();
                if syncs.fail.fires() {
                    let err: SyncError = "the external system failed".into();
                    return Err(err);
                }
                let mut counts = syncs.counts.lock().unwrap();
                Ok(batch
                    .into_iter()
                    .map(|w| {
                        let (id, job) = w.into_parts();
                        *counts.entry(id.name().to_owned()).or_default() += 1;
                        let item = Job { syncs: job.syncs + 1, ..job };
                        ItemSyncResponse { id, item, action: SyncAction::Update }
                    })
                    .collect())
            })
        }
    }
}

/// How the items are cut into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Batching {
    /// The default: one item per batch.
    Single,
    /// `FixedSizeBatches` of this size (the queue cuts the runs itself).
    Fixed(usize),
    /// A closure batcher: runs of this size, in the order given.
    Custom(usize),
    /// A closure batcher: runs of this size, in reverse order (the engine must then look
    /// the ids up, hashing them).
    Reversed(usize),
}

/// A closure batcher's traps.
struct BatcherTraps {
    fail: Trap,
    panic: Trap,
}

impl BatcherTraps {
    fn new() -> Arc<Self> {
        Arc::new(Self { fail: Trap::new("batcher (error)"), panic: Trap::new("the batcher") })
    }
}

fn runs<K, V>(items: Vec<ItemWrapper<K, V>>, size: usize) -> Vec<Batch<K, V>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    for item in items {
        batch.push(item);
        if batch.len() == size {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

fn with_batching<K>(
    builder: AutoRefreshBuilder<K, Job>,
    batching: Batching,
    traps: &Arc<BatcherTraps>,
) -> AutoRefreshBuilder<K, Job>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    let (size, reversed) = match batching {
        Batching::Single => return builder,
        Batching::Fixed(size) => {
            return builder.create_batches(FixedSizeBatches::new(NonZeroUsize::new(size).unwrap()))
        }
        Batching::Custom(size) => (size, false),
        Batching::Reversed(size) => (size, true),
    };
    let traps = Arc::clone(traps);
    builder.create_batches(
        move |mut items: Vec<ItemWrapper<K, Job>>| -> Result<Vec<Batch<K, Job>>, SyncError> {
            traps.panic.spring();
            if traps.fail.fires() {
                return Err("the batcher failed".into());
            }
            if reversed {
                items.reverse();
            }
            Ok(runs(items, size))
        },
    )
}

/// A real limiter whose methods can be trapped.
struct TrappedLimiter<K> {
    inner: ItemExponentialFailureRateLimiter<K>,
    when: Trap,
    forget: Trap,
    num_requeues: Trap,
}

impl<K> TrappedLimiter<K> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: ItemExponentialFailureRateLimiter::new(
                Duration::from_millis(10),
                Duration::from_millis(200),
            ),
            when: Trap::new("RateLimiter::when"),
            forget: Trap::new("RateLimiter::forget"),
            num_requeues: Trap::new("RateLimiter::num_requeues"),
        })
    }

    fn by_name(&self, method: &str) -> &Trap {
        match method {
            "when" => &self.when,
            "forget" => &self.forget,
            _ => &self.num_requeues,
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> RateLimiter<K> for TrappedLimiter<K> {
    fn when(&self, id: &K) -> Duration {
        self.when.spring();
        self.inner.when(id)
    }
    fn forget(&self, id: &K) {
        self.forget.spring();
        self.inner.forget(id);
    }
    fn num_requeues(&self, id: &K) -> u32 {
        self.num_requeues.spring();
        self.inner.num_requeues(id)
    }
}

/// Metrics whose method `which` is trapped.
struct TrappedMetrics {
    which: &'static str,
    trap: Trap,
}

impl TrappedMetrics {
    fn new(which: &'static str) -> Arc<Self> {
        Arc::new(Self { which, trap: Trap::new(which) })
    }

    fn hit(&self, method: &str) {
        if method == self.which {
            self.trap.spring();
        }
    }
}

impl Metrics for TrappedMetrics {
    fn eviction(&self) {
        self.hit("eviction");
    }
    fn size(&self, _items: usize) {
        self.hit("size");
    }
    fn batch_synced(&self, _items: usize, _elapsed: Duration) {
        self.hit("batch_synced");
    }
    fn sync_error(&self, _kind: SyncFailureKind, _items: usize) {
        self.hit("sync_error");
    }
    fn ignored_response(&self) {
        self.hit("ignored_response");
    }
    fn queue_added(&self, _items: usize) {
        self.hit("queue_added");
    }
    fn queue_depth(&self, _ready: usize) {
        self.hit("queue_depth");
    }
    fn queue_latency(&self, _waited: Duration) {
        self.hit("queue_latency");
    }
    fn retried(&self, _items: usize) {
        self.hit("retried");
    }
    fn unfinished_work(&self, _total: Duration, _longest: Duration) {
        self.hit("unfinished_work");
    }
    fn staleness(&self, _oldest: Duration) {
        self.hit("staleness");
    }
    fn age_at_sync(&self, _age: Duration) {
        self.hit("age_at_sync");
    }
}

/// The refresh's metrics methods, each trapped in turn.
const METRICS: [&str; 11] = [
    "queue_depth",
    "queue_added",
    "queue_latency",
    "batch_synced",
    "sync_error",
    "retried",
    "size",
    "staleness",
    "age_at_sync",
    "eviction",
    "unfinished_work",
];

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

fn id(n: usize) -> String {
    format!("job-{n}")
}

fn builder<K>(syncs: &Arc<Syncs>) -> AutoRefreshBuilder<K, Job>
where
    K: Hash + Eq + Clone + fmt::Debug + Named + Send + Sync + 'static,
{
    AutoRefresh::builder("callback-panics")
        .sync(syncs.sync_fn())
        .resync_period(PERIOD)
        .parallelism(2)
}

/// Runs `call`, catching a panic from user code it reaches (the test goes on).
fn caught<T>(call: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(call)).ok()
}

/// Enables every span and event, into a sink, for the whole test binary: span fields (such
/// as the batch span's `attempt`, which asks the limiter's `num_requeues`) are then
/// evaluated, and nothing is printed. Global, and installed before any test's cache runs:
/// a thread-local default is not seen by callsites first hit on other test threads.
fn quiet_tracing() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    });
}

/// Every id of `ids` still in the cache, not terminal, is synced at least three more times
/// over the next four periods (traps must be disarmed: this reads the cache). `Err` names
/// the ids that were not, or says the cache was empty.
async fn refresh_goes_on<K>(
    cache: &AutoRefresh<K, Job>,
    syncs: &Syncs,
    ids: &[K],
) -> Result<(), String>
where
    K: Hash + Eq + Clone + fmt::Debug + Named + Send + Sync + 'static,
{
    let before: Vec<(String, usize)> = ids
        .iter()
        .filter(|id| cache.get(id).is_ok_and(|job| !job.done))
        .map(|id| (id.name().to_owned(), syncs.count(id.name())))
        .collect();
    if before.is_empty() {
        return Err("no item left in the cache".to_owned());
    }
    sleep(PERIOD * 4).await;
    let stuck: Vec<String> = before
        .iter()
        .filter(|(name, count)| syncs.count(name) < count + 3)
        .map(|(name, count)| format!("{name}: {count} -> {}", syncs.count(name)))
        .collect();
    if stuck.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} ids not synced again in 4 periods: {stuck:?}",
            stuck.len(),
            before.len()
        ))
    }
}

/// Fails the test with every failing variant, if any.
fn report(failures: &[String]) {
    assert!(failures.is_empty(), "{} failing variant(s):\n{}", failures.len(), failures.join("\n"));
}

fn check(failures: &mut Vec<String>, variant: String, outcome: Result<(), String>) {
    if let Err(err) = outcome {
        failures.push(format!("{variant}: {err}"));
    }
}

fn check_fired(failures: &mut Vec<String>, variant: &str, trap: &Trap) {
    if trap.fired() == 0 {
        failures
            .push(format!("{variant}: {} was never called (the variant tests nothing)", trap.what));
    }
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_sync_function_panicking_once_or_a_few_times() {
    quiet_tracing();
    let mut failures = Vec::new();
    for in_future in [false, true] {
        for times in [1, 3] {
            for batching in [Batching::Single, Batching::Custom(4), Batching::Fixed(4)] {
                let variant = format!("panic in future {in_future}, {times}x, {batching:?}");
                let syncs = Syncs::new();
                let batcher = BatcherTraps::new();
                let cache = with_batching(builder(&syncs), batching, &batcher).build().unwrap();
                let ids: Vec<String> = (0..ITEMS).map(id).collect();
                for id in &ids {
                    cache.get_or_create(id.clone(), Job::new()).unwrap();
                }
                let trap = if in_future { &syncs.panic_in_future } else { &syncs.panic_in_call };
                trap.arm(0, times);
                let running = cache.start(CancellationToken::new()).unwrap();
                sleep(PERIOD * 3 / 2).await;
                trap.disarm();
                check_fired(&mut failures, &variant, trap);
                check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
                running.shutdown().await;
            }
        }
    }
    report(&failures);
}

#[tokio::test(start_paused = true)]
async fn a_batcher_panicking_or_failing_once() {
    quiet_tracing();
    let mut failures = Vec::new();
    for panics in [false, true] {
        for batching in [Batching::Custom(4), Batching::Reversed(10)] {
            let variant = format!("batcher panics {panics}, {batching:?}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let cache = with_batching(builder(&syncs), batching, &batcher).build().unwrap();
            let ids: Vec<String> = (0..ITEMS).map(id).collect();
            for id in &ids {
                cache.get_or_create(id.clone(), Job::new()).unwrap();
            }
            let trap = if panics { &batcher.panic } else { &batcher.fail };
            trap.arm(0, 1);
            let running = cache.start(CancellationToken::new()).unwrap();
            sleep(PERIOD * 3 / 2).await;
            trap.disarm();
            check_fired(&mut failures, &variant, trap);
            check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// The batcher fails (or panics) once, and the limiter's `when`, asked for the backoff of
/// the items it was given, panics: the items the batcher was given must not be lost.
#[tokio::test(start_paused = true)]
async fn a_batcher_failing_once_then_a_panicking_when() {
    quiet_tracing();
    let mut failures = Vec::new();
    for panics in [false, true] {
        for when_from in [0, 3] {
            let variant = format!("batcher panics {panics}, `when` panics at call {when_from}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let limiter = TrappedLimiter::new();
            let cache = with_batching(builder(&syncs), Batching::Custom(4), &batcher)
                .rate_limiter(Arc::clone(&limiter))
                .build()
                .unwrap();
            let ids: Vec<String> = (0..ITEMS).map(id).collect();
            for id in &ids {
                cache.get_or_create(id.clone(), Job::new()).unwrap();
            }
            let trap = if panics { &batcher.panic } else { &batcher.fail };
            trap.arm(0, 1);
            limiter.when.arm(when_from, 1);
            let running = cache.start(CancellationToken::new()).unwrap();
            sleep(PERIOD * 3 / 2).await;
            trap.disarm();
            limiter.when.disarm();
            check_fired(&mut failures, &variant, trap);
            check_fired(&mut failures, &variant, &limiter.when);
            check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// A sync call fails, then the limiter's `when`, asked for the backoff of its items, panics.
#[tokio::test(start_paused = true)]
async fn a_sync_failing_then_a_panicking_when() {
    quiet_tracing();
    let mut failures = Vec::new();
    for batching in [Batching::Single, Batching::Custom(10), Batching::Fixed(10)] {
        for when_from in [0, 5] {
            let variant = format!("{batching:?}, `when` panics at call {when_from}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let limiter = TrappedLimiter::new();
            let cache = with_batching(builder(&syncs), batching, &batcher)
                .rate_limiter(Arc::clone(&limiter))
                .build()
                .unwrap();
            let ids: Vec<String> = (0..ITEMS).map(id).collect();
            for id in &ids {
                cache.get_or_create(id.clone(), Job::new()).unwrap();
            }
            // Every batch of the first sync fails: one `when` per item.
            let failing = if batching == Batching::Single { ITEMS } else { 1 };
            syncs.fail.arm(0, failing);
            limiter.when.arm(when_from, 1);
            let running = cache.start(CancellationToken::new()).unwrap();
            sleep(PERIOD * 3 / 2).await;
            syncs.fail.disarm();
            limiter.when.disarm();
            check_fired(&mut failures, &variant, &limiter.when);
            check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// Each limiter method panics once or a few times while syncs fail (so `when` is asked)
/// and then succeed (so `forget` is told), and a caller deletes an item (`forget` again).
#[tokio::test(start_paused = true)]
async fn a_limiter_method_panicking() {
    quiet_tracing();
    let mut failures = Vec::new();
    for method in ["when", "forget", "num_requeues"] {
        for times in [1, 3] {
            for batching in [Batching::Single, Batching::Custom(4)] {
                let variant = format!("{method} {times}x, {batching:?}");
                let syncs = Syncs::new();
                let batcher = BatcherTraps::new();
                let limiter = TrappedLimiter::new();
                let cache = with_batching(builder(&syncs), batching, &batcher)
                    .rate_limiter(Arc::clone(&limiter))
                    .build()
                    .unwrap();
                let ids: Vec<String> = (0..ITEMS).map(id).collect();
                for id in &ids {
                    cache.get_or_create(id.clone(), Job::new()).unwrap();
                }
                syncs.fail.arm(0, 3);
                let trap = limiter.by_name(method);
                trap.arm(0, times);
                let running = cache.start(CancellationToken::new()).unwrap();
                sleep(PERIOD / 2).await;
                caught(|| cache.delete(&ids[ITEMS - 1]));
                sleep(PERIOD).await;
                trap.disarm();
                syncs.fail.disarm();
                check_fired(&mut failures, &variant, trap);
                check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
                running.shutdown().await;
            }
        }
    }
    report(&failures);
}

/// Each metrics method the refresh calls panics its first three times, while syncs fail
/// (errors, retries) and callers create past the capacity (evictions).
#[tokio::test(start_paused = true)]
async fn a_metrics_method_panicking() {
    quiet_tracing();
    let mut failures = Vec::new();
    for method in METRICS {
        for batching in [Batching::Single, Batching::Custom(4)] {
            let variant = format!("{method}, {batching:?}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let metrics = TrappedMetrics::new(method);
            let cache = with_batching(builder(&syncs), batching, &batcher)
                .metrics(Arc::clone(&metrics))
                .capacity(12)
                .build()
                .unwrap();
            let ids: Vec<String> = (0..ITEMS + 5).map(id).collect();
            for id in &ids[..ITEMS] {
                cache.get_or_create(id.clone(), Job::new()).unwrap();
            }
            syncs.fail.arm(0, 2);
            metrics.trap.arm(0, 3);
            let running = cache.start(CancellationToken::new()).unwrap();
            sleep(PERIOD * 5 / 2).await;
            for id in &ids[ITEMS..] {
                caught(|| cache.get_or_create(id.clone(), Job::new()));
            }
            sleep(PERIOD * 2).await;
            metrics.trap.disarm();
            syncs.fail.disarm();
            check_fired(&mut failures, &variant, &metrics.trap);
            if cache.len() > 12 {
                failures.push(format!("{variant}: {} items in a cache of 12", cache.len()));
            }
            check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// The removal listener panics on its first two calls (a delete, a delayed delete and
/// evictions come through it): the rest of the cache refreshes on, and later removals are
/// still told.
#[tokio::test(start_paused = true)]
async fn a_removal_listener_panicking() {
    quiet_tracing();
    let syncs = Syncs::new();
    let trap = Arc::new(Trap::new("the removal listener"));
    let told: Arc<Mutex<Vec<(String, RemovalCause)>>> = Arc::default();
    let cache = builder::<String>(&syncs)
        .capacity(12)
        .removal_listener({
            let trap = Arc::clone(&trap);
            let told = Arc::clone(&told);
            move |id, _job, cause| {
                trap.spring();
                told.lock().unwrap().push((id, cause));
            }
        })
        .build()
        .unwrap();
    let ids: Vec<String> = (0..ITEMS + 5).map(id).collect();
    for id in &ids[..ITEMS] {
        cache.get_or_create(id.clone(), Job::new()).unwrap();
    }
    trap.arm(0, 2);
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 2).await;
    cache.delete(&ids[0]);
    cache.delete_delayed(&ids[1]).unwrap();
    for id in &ids[ITEMS..] {
        cache.get_or_create(id.clone(), Job::new()).unwrap(); // evicts
    }
    sleep(PERIOD * 2).await;
    assert_eq!(trap.fired(), 2);
    let before = told.lock().unwrap().len();
    // A delete, two evictions and the delayed delete: the two after the panics are told.
    assert!(before >= 2, "removals after the panics are told: {:?}", told.lock().unwrap());
    refresh_goes_on(&cache, &syncs, &ids).await.unwrap();
    // The listener is still called.
    let last = &ids[ITEMS + 4];
    assert!(cache.get(last).is_ok(), "just created, never evicted");
    cache.delete(last);
    sleep(PERIOD).await;
    let told = told.lock().unwrap().clone();
    assert!(told.contains(&(last.clone(), RemovalCause::Deleted)), "{told:?}");
    running.shutdown().await;
}

/// Callers create past the capacity while the limiter's `forget` or the metrics'
/// `eviction`, called on each eviction, panic (the panic reaches the creating caller): the
/// items left are refreshed, and once they are made terminal the queue holds nothing.
#[tokio::test(start_paused = true)]
async fn evictions_while_the_limiter_or_metrics_panic() {
    quiet_tracing();
    let mut failures = Vec::new();
    for culprit in ["forget", "eviction"] {
        for batching in [Batching::Single, Batching::Custom(4)] {
            let variant = format!("{culprit}, {batching:?}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let limiter = TrappedLimiter::new();
            let metrics = TrappedMetrics::new("eviction");
            let trap = if culprit == "forget" { &limiter.forget } else { &metrics.trap };
            let cache = with_batching(builder(&syncs), batching, &batcher)
                .rate_limiter(Arc::clone(&limiter))
                .metrics(Arc::clone(&metrics))
                .capacity(8)
                .build()
                .unwrap();
            let running = cache.start(CancellationToken::new()).unwrap();
            let ids: Vec<String> = (0..40).map(id).collect();
            // Some failures, so that the limiter tracks the items being evicted.
            syncs.fail.arm(0, 4);
            trap.arm(0, 4);
            for chunk in ids.chunks(8) {
                for id in chunk {
                    caught(|| cache.get_or_create(id.clone(), Job::new()));
                }
                sleep(PERIOD / 4).await;
            }
            sleep(PERIOD).await;
            trap.disarm();
            syncs.fail.disarm();
            check_fired(&mut failures, &variant, trap);
            if cache.len() > 8 {
                failures.push(format!("{variant}: {} items in a cache of 8", cache.len()));
            }
            check(&mut failures, variant.clone(), refresh_goes_on(&cache, &syncs, &ids).await);
            for id in &ids {
                cache.update(id, Job { syncs: 0, done: true, traps: None });
            }
            sleep(PERIOD * 2).await;
            let figures = queue_figures(&cache);
            if figures != QueueFigures::default() {
                failures.push(format!("{variant}: the queue still holds work: {figures:?}"));
            }
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// `is_terminal` panics a few times: in the caller's `get_or_create` (which asks it to
/// queue the new item; the caller catches the panic) and in the refresh.
#[tokio::test(start_paused = true)]
async fn an_is_terminal_panicking() {
    quiet_tracing();
    let mut failures = Vec::new();
    for from in [0, 4, 12] {
        for batching in [Batching::Single, Batching::Custom(4)] {
            let variant = format!("is_terminal panics from call {from}, {batching:?}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let traps = Arc::new(JobTraps {
                clone: Trap::new("V::clone"),
                is_terminal: Trap::new("Item::is_terminal"),
            });
            let cache = with_batching(builder(&syncs), batching, &batcher).build().unwrap();
            let running = cache.start(CancellationToken::new()).unwrap();
            let ids: Vec<String> = (0..ITEMS).map(id).collect();
            traps.is_terminal.arm(from, 3);
            for id in &ids {
                caught(|| cache.get_or_create(id.clone(), Job::trapped(&traps)));
            }
            sleep(PERIOD * 5 / 2).await;
            traps.is_terminal.disarm();
            check_fired(&mut failures, &variant, &traps.is_terminal);
            if cache.len() != ITEMS {
                failures.push(format!("{variant}: {} items, not {ITEMS}", cache.len()));
            }
            check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// The item's `Clone` panics once while a batch of 10 is dispatched (the batcher's snapshot
/// of the items, or the worker's): all 10 are synced again later.
#[tokio::test(start_paused = true)]
async fn a_value_clone_panicking_during_dispatch_of_a_batch_of_10() {
    quiet_tracing();
    let mut failures = Vec::new();
    for batching in [Batching::Custom(10), Batching::Fixed(10), Batching::Single] {
        // A sweep clones each item once to dispatch it, and a custom batcher's path once
        // more before (to hand it to the batcher).
        let clones = if matches!(batching, Batching::Custom(_)) { 2 * ITEMS } else { ITEMS };
        for nth in [0, 3, 9, 10, 14, 19].into_iter().filter(|nth| *nth < clones) {
            let variant = format!("V::clone panics at call {nth}, {batching:?}");
            let syncs = Syncs::new();
            let batcher = BatcherTraps::new();
            let traps = Arc::new(JobTraps {
                clone: Trap::new("V::clone"),
                is_terminal: Trap::new("Item::is_terminal"),
            });
            let cache = with_batching(builder(&syncs), batching, &batcher).build().unwrap();
            let ids: Vec<String> = (0..ITEMS).map(id).collect();
            for id in &ids {
                cache.get_or_create(id.clone(), Job::trapped(&traps)).unwrap();
            }
            let running = cache.start(CancellationToken::new()).unwrap();
            sleep(PERIOD * 3 / 2).await; // synced at start, and by the sweep at 1 s
            traps.clone.arm(nth, 1);
            sleep(PERIOD).await; // the sweep at 2 s
            traps.clone.disarm();
            check_fired(&mut failures, &variant, &traps.clone);
            check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
            running.shutdown().await;
        }
    }
    report(&failures);
}

/// The id's `Clone`, `Hash` or `Eq` panics once in the refresh (after `nth` calls), and then
/// once in a caller's `get_or_create` of a new and of an existing id (caught by the test).
#[tokio::test(start_paused = true)]
async fn an_id_clone_hash_or_eq_panicking() {
    quiet_tracing();
    let mut failures = Vec::new();
    for op in ["clone", "hash", "eq"] {
        for batching in [Batching::Single, Batching::Custom(4), Batching::Reversed(10)] {
            for nth in [0, 1, 5, 12] {
                let variant = format!("K::{op} panics at call {nth}, {batching:?}");
                let syncs = Syncs::new();
                let batcher = BatcherTraps::new();
                let traps = KeyTraps::new();
                let key = |n: usize| Key { name: id(n), traps: Arc::clone(&traps) };
                let cache =
                    with_batching(builder::<Key>(&syncs), batching, &batcher).build().unwrap();
                let ids: Vec<Key> = (0..ITEMS + 1).map(key).collect();
                for id in &ids[..ITEMS] {
                    cache.get_or_create(id.clone(), Job::new()).unwrap();
                }
                let running = cache.start(CancellationToken::new()).unwrap();
                sleep(PERIOD * 3 / 2).await;
                let trap = traps.by_name(op);
                // In the refresh.
                trap.arm(nth, 1);
                sleep(PERIOD).await;
                traps.disarm();
                let in_refresh = trap.fired();
                // In a caller's call.
                for n in [ITEMS, 0] {
                    trap.arm(0, 1);
                    caught(|| cache.get_or_create(key(n), Job::new()));
                    traps.disarm();
                }
                sleep(PERIOD / 2).await;
                if trap.fired() == 0 {
                    failures.push(format!("{variant}: never called"));
                }
                let variant = format!("{variant} (fired {in_refresh}x in the refresh)");
                check(&mut failures, variant, refresh_goes_on(&cache, &syncs, &ids).await);
                running.shutdown().await;
            }
        }
    }
    report(&failures);
}
