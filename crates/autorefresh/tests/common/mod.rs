//! Shared fixtures: a small item, a fake external service that records every call, and a
//! metrics recorder.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{Batch, Item, ItemSyncResponse, Metrics, SyncAction, SyncError, SyncFailureKind};
use tokio::time::Instant;

/// A counter that is terminal once it reaches its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub value: u32,
    pub target: u32,
}

impl Counter {
    pub fn new(target: u32) -> Self {
        Self { value: 0, target }
    }
}

impl Item for Counter {
    fn is_terminal(&self) -> bool {
        self.value >= self.target
    }
}

pub fn id(n: usize) -> String {
    format!("item-{n}")
}

/// What the fake external service does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Every item's value goes up by one.
    Increment,
    /// The call fails with an error.
    Fail,
    /// The call panics.
    Panic,
    /// Nothing changed.
    Unchanged,
}

/// A fake external service: records every call, the ids in flight, and any overlap.
#[derive(Default)]
pub struct Service {
    state: Mutex<ServiceState>,
    in_flight: InFlight,
    pub calls: AtomicUsize,
}

#[derive(Default)]
struct ServiceState {
    behaviour: Option<Behaviour>,
    delay: Duration,
    /// Ids sent while already in flight: must stay empty.
    /// Every time each id was sent.
    attempts: HashMap<String, Vec<Instant>>,
    batch_sizes: Vec<usize>,
    seen_terminal: Vec<String>,
}

impl Service {
    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        let service = Self::default();
        service.state.lock().unwrap().behaviour = Some(behaviour);
        Arc::new(service)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = Some(behaviour);
    }

    /// Each call takes this long (on tokio time).
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn overlaps(&self) -> Vec<String> {
        self.in_flight.overlaps()
    }

    pub fn attempts(&self, id: &str) -> Vec<Instant> {
        self.state.lock().unwrap().attempts.get(id).cloned().unwrap_or_default()
    }

    pub fn attempted_ids(&self) -> HashSet<String> {
        self.state.lock().unwrap().attempts.keys().cloned().collect()
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        self.state.lock().unwrap().batch_sizes.clone()
    }

    pub fn seen_terminal(&self) -> Vec<String> {
        self.state.lock().unwrap().seen_terminal.clone()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub async fn sync(
        self: Arc<Self>,
        batch: Batch<String, Counter>,
    ) -> Result<Vec<ItemSyncResponse<String, Counter>>, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (behaviour, delay) = {
            let mut state = self.state.lock().unwrap();
            state.batch_sizes.push(batch.len());
            let now = Instant::now();
            for w in &batch {
                if w.item().is_terminal() {
                    state.seen_terminal.push(w.id().clone());
                }
                state.attempts.entry(w.id().clone()).or_default().push(now);
            }
            (state.behaviour.unwrap_or(Behaviour::Increment), state.delay)
        };
        let _in_flight = self.in_flight.enter(batch.iter().map(|w| w.id().clone()).collect());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match behaviour {
            Behaviour::Increment => Ok(increment(batch)),
            Behaviour::Unchanged => Ok(Vec::new()),
            Behaviour::Fail => Err("the external system is down".into()),
            Behaviour::Panic => panic!("sync function panicked on purpose"),
        }
    }
}

/// Which ids are inside a sync call right now; an id sent while already inside is an
/// overlap, which the engine must never cause.
#[derive(Default)]
pub struct InFlight {
    ids: Mutex<HashSet<String>>,
    overlaps: Mutex<Vec<String>>,
}

impl InFlight {
    /// Marks `ids` in flight until the guard drops, however the call ends (return, panic,
    /// timeout, shutdown).
    pub fn enter(&self, ids: Vec<String>) -> InFlightGuard<'_> {
        let mut in_flight = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        for id in &ids {
            if !in_flight.insert(id.clone()) {
                self.overlaps.lock().unwrap_or_else(|e| e.into_inner()).push(id.clone());
            }
        }
        InFlightGuard { in_flight: self, ids }
    }

    /// The ids that were sent while already in flight.
    pub fn overlaps(&self) -> Vec<String> {
        self.overlaps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Takes its ids out of flight when dropped.
pub struct InFlightGuard<'a> {
    in_flight: &'a InFlight,
    ids: Vec<String>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.ids.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            in_flight.remove(id);
        }
    }
}

/// The future a fixture sync closure returns.
pub type SyncFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = autorefresh::SyncResult<String, Counter>> + Send>,
>;

/// What a fake external system answers for a batch: every item's value goes up by one.
pub fn increment(batch: Batch<String, Counter>) -> Vec<ItemSyncResponse<String, Counter>> {
    batch
        .into_iter()
        .map(|w| {
            let (id, mut item) = w.into_parts();
            item.value += 1;
            ItemSyncResponse { id, item, action: SyncAction::Update }
        })
        .collect()
}

/// A sync closure calling `service`.
pub fn sync_with(
    service: &Arc<Service>,
) -> impl Fn(Batch<String, Counter>) -> SyncFuture + Send + Sync + 'static {
    let service = Arc::clone(service);
    move |batch| Box::pin(Arc::clone(&service).sync(batch))
}

/// Counts every metrics event.
#[derive(Default, Debug)]
pub struct Recorder {
    pub hits: AtomicUsize,
    pub misses: AtomicUsize,
    pub evictions: AtomicUsize,
    pub synced_batches: AtomicUsize,
    pub errors: AtomicUsize,
    pub panics: AtomicUsize,
    pub timeouts: AtomicUsize,
    pub ignored: AtomicUsize,
    pub rate_limit_waits: AtomicUsize,
}

impl Metrics for Recorder {
    fn cache_hit(&self) {
        self.hits.fetch_add(1, Ordering::SeqCst);
    }
    fn cache_miss(&self) {
        self.misses.fetch_add(1, Ordering::SeqCst);
    }
    fn eviction(&self) {
        self.evictions.fetch_add(1, Ordering::SeqCst);
    }
    fn batch_synced(&self, _items: usize, _elapsed: Duration) {
        self.synced_batches.fetch_add(1, Ordering::SeqCst);
    }
    fn sync_error(&self, kind: SyncFailureKind, _items: usize) {
        match kind {
            SyncFailureKind::Panic => self.panics.fetch_add(1, Ordering::SeqCst),
            SyncFailureKind::Timeout => self.timeouts.fetch_add(1, Ordering::SeqCst),
            _ => self.errors.fetch_add(1, Ordering::SeqCst),
        };
    }
    fn ignored_response(&self) {
        self.ignored.fetch_add(1, Ordering::SeqCst);
    }
    fn rate_limit_wait(&self, waited: Duration) {
        if !waited.is_zero() {
            self.rate_limit_waits.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub fn load(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

/// Lets spawned tasks run to their next await without moving the clock.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// What the cache's work queue holds, read from the cache's `Debug` output (the only public
/// view of it): ids tracked in any slot, ids pooled for the batcher, formed batches, retries
/// waiting for their deadline, and ids registered in flight (each with the entries parked
/// behind it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueFigures {
    pub entries: usize,
    pub pool: usize,
    pub batches: usize,
    pub delayed: usize,
    pub in_flight: usize,
}

/// Reads [`QueueFigures`] from `format!("{cache:?}")`; panics, naming what it looked for, if
/// the `Debug` output no longer shows them.
pub fn queue_figures<K: 'static, V: 'static>(
    cache: &autorefresh::AutoRefresh<K, V>,
) -> QueueFigures {
    let debug = format!("{cache:?}");
    let queue = debug
        .split_once("WorkQueue {")
        .unwrap_or_else(|| panic!("no `WorkQueue {{` in the cache's Debug output: {debug}"))
        .1;
    let field = |name: &str| -> usize {
        let after = queue
            .split_once(&format!("{name}: "))
            .unwrap_or_else(|| panic!("no `{name}` in the queue's Debug output: {debug}"))
            .1;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("`{name}` is not a number in: {debug}"))
    };
    QueueFigures {
        entries: field("entries"),
        pool: field("pool"),
        batches: field("batches"),
        delayed: field("delayed"),
        in_flight: field("in_flight"),
    }
}

/// The future of a sync closure over any id and item types.
pub type BoxFuture<K, V> =
    std::pin::Pin<Box<dyn std::future::Future<Output = autorefresh::SyncResult<K, V>> + Send>>;

/// How many ids have subscribers' senders in the cache, read from its `Debug` output
/// (`watched: N`); panics if the output no longer shows it.
pub fn watched<K: 'static, V: 'static>(cache: &autorefresh::AutoRefresh<K, V>) -> usize {
    let debug = format!("{cache:?}");
    let after = debug
        .split_once("watched: ")
        .unwrap_or_else(|| panic!("no `watched` in the cache's Debug output: {debug}"))
        .1;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("`watched` is not a number in: {debug}"))
}

/// What a recording removal listener was told.
pub type Told = Arc<Mutex<Vec<(String, Counter, autorefresh::RemovalCause)>>>;

/// A builder named `name` syncing through `service`, every `period`, whose removal listener
/// records what it is told.
pub fn listening_builder(
    name: &str,
    service: &Arc<Service>,
    period: Duration,
) -> (autorefresh::AutoRefreshBuilder<String, Counter>, Told) {
    let told: Told = Arc::default();
    let builder = autorefresh::AutoRefresh::builder(name)
        .sync(sync_with(service))
        .resync_period(period)
        .removal_listener({
            let told = Arc::clone(&told);
            move |id, item, cause| told.lock().unwrap().push((id, item, cause))
        });
    (builder, told)
}

/// A copy of what a recording removal listener was told so far.
pub fn told(told: &Told) -> Vec<(String, Counter, autorefresh::RemovalCause)> {
    told.lock().unwrap().clone()
}

/// A counter at `value` of `target`.
pub fn counter(value: u32, target: u32) -> Counter {
    Counter { value, target }
}
