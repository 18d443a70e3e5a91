//! Model-based property test: random sequences of caller operations, sync outcomes, batcher
//! faults and clock advances run against the real cache (on paused time) and against a plain
//! model (a map, the pending deletes and the LRU order). After every step the cache must hold
//! exactly what the model holds; at the end, once the faults stop, the limiter and the queue
//! must hold nothing.
//!
//! Two runs: on `MokaStore`, whose exact LRU the model predicts, with a batcher closure that
//! misbehaves on demand; on the default store, whose victim the test finds (any old entry,
//! never the new one), with `FixedSizeBatches`, which the engine applies itself.
//!
//! The sync function is the bridge: it runs inside the cache's worker, so it checks what the
//! engine dispatches against the model (live, not pending delete, not terminal, the current
//! value, never twice at once) and, when its result is about to be applied, applies the
//! engine's rule to the model (an `Update` lands only on the entry dispatched, still live, at
//! the version dispatched). Both happen in the same poll as the engine's own snapshot and
//! apply, so no caller step can fall between them.
//!
//! Sweeps run at `start + k * PERIOD` exactly (paused time, auto-advanced); the test's steps
//! run at `start + 1 ms + 10 ms * n`, so a step never coincides with a sweep and the model
//! knows which sweeps fell inside each clock advance.

mod common;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, Item,
    ItemExponentialFailureRateLimiter, ItemSyncResponse, ItemWrapper, MokaStore, SyncAction,
    SyncError,
};
use common::{load, queue_figures, settle, QueueFigures, Recorder};
use proptest::prelude::*;

/// The ids used: few, so that ids are deleted, evicted and created again.
const IDS: u32 = 10;
const CAPACITY: u64 = 5;
const PERIOD_MS: u64 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    /// Which creation or caller update made this value (unique per test case).
    tag: u32,
    /// How many refreshes landed on it since.
    syncs: u32,
    done: bool,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        self.done
    }
}

/// A value no refresh may ever store: sent for ids outside the batch.
const POISON: Job = Job { tag: u32::MAX, syncs: 0, done: false };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// `Update` with one more sync for each item.
    Update,
    /// `Update` with a terminal item.
    Finish,
    /// `Unchanged` for each item.
    Unchanged,
    /// No response at all (the items stay as they are).
    Silent,
    /// The call fails.
    Error,
    /// The call panics.
    Panic,
    /// `Update` for each item, plus an `Update` for an id outside the batch.
    Stray,
}

#[derive(Clone, Copy, Debug)]
struct SyncMode {
    outcome: Outcome,
    latency_ms: u64,
}

/// What the batcher does (on `MokaStore` runs, whose batcher is a closure; the default-store
/// runs use `FixedSizeBatches`, which the engine applies itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Batching {
    /// Batches of three.
    Fine,
    /// No batch at all: the items wait for the next sweep.
    Empty,
    /// Every batch twice, and all items in one more.
    Duplicates,
    /// Adds a batch naming an id it was not given.
    Invents,
    Error,
    Panic,
}

#[derive(Clone, Debug)]
enum Op {
    GetOrCreate(u32, bool),
    Get(u32),
    Update(u32, bool),
    Delete(u32),
    DeleteDelayed(u32),
    /// The sync calls made from now on behave so.
    SetSync(SyncMode),
    /// The batcher behaves so from now on.
    SetBatcher(Batching),
    /// Let `10 ms * n` of virtual time pass.
    Advance(u64),
}

#[derive(Debug)]
struct Entry {
    item: Job,
    /// Which creation of the id this is (a delete and re-create makes a new entry).
    generation: u64,
    /// Bumped by a caller's update and by each refresh that stored a value.
    version: u64,
    pending_delete: bool,
}

#[derive(Debug)]
struct Model {
    /// Whether the store evicts in exact LRU order (`MokaStore`), so the model predicts each
    /// victim; otherwise (the default store, LRU at the resolution of inserts, ties broken
    /// by ring position) the test finds the victim and checks it is one of the old entries.
    exact_lru: bool,
    entries: HashMap<u32, Entry>,
    /// Present ids, least recently used first.
    lru: Vec<u32>,
    /// `delete_delayed` marks since the last sweep: the id and the entry's generation.
    pending: Vec<(u32, u64)>,
    next_tag: u32,
    next_generation: u64,
    evictions: usize,
    mode: SyncMode,
    batching: Batching,
    in_flight: HashSet<u32>,
    violations: Vec<String>,
}

impl Model {
    fn new(exact_lru: bool) -> Self {
        Self {
            exact_lru,
            entries: HashMap::new(),
            lru: Vec::new(),
            pending: Vec::new(),
            next_tag: 0,
            next_generation: 0,
            evictions: 0,
            mode: SyncMode { outcome: Outcome::Update, latency_ms: 0 },
            batching: Batching::Fine,
            in_flight: HashSet::new(),
            violations: Vec::new(),
        }
    }

    fn job(&mut self, done: bool) -> Job {
        self.next_tag += 1;
        Job { tag: self.next_tag, syncs: 0, done }
    }

    fn touch(&mut self, id: u32) {
        self.lru.retain(|&other| other != id);
        self.lru.push(id);
    }

    /// Returns what `get_or_create` must return.
    fn get_or_create(&mut self, id: u32, item: Job) -> Job {
        if let Some(entry) = self.entries.get(&id) {
            let existing = entry.item.clone();
            self.touch(id);
            return existing;
        }
        self.next_generation += 1;
        let entry = Entry {
            item: item.clone(),
            generation: self.next_generation,
            version: 0,
            pending_delete: false,
        };
        self.entries.insert(id, entry);
        self.lru.push(id);
        if self.entries.len() as u64 > CAPACITY && self.exact_lru {
            let victim = self.lru.remove(0);
            self.evict(victim);
        }
        item
    }

    fn evict(&mut self, victim: u32) {
        self.lru.retain(|&other| other != victim);
        self.entries.remove(&victim);
        self.evictions += 1;
    }

    fn get(&mut self, id: u32) -> Option<Job> {
        let item = self.entries.get(&id)?.item.clone();
        self.touch(id);
        Some(item)
    }

    fn update(&mut self, id: u32, item: Job) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        // A caller's update replaces even an item pending delete (only a removed one is
        // out of reach).
        entry.item = item;
        entry.version += 1;
        self.touch(id);
        true
    }

    fn delete(&mut self, id: u32) {
        if self.entries.remove(&id).is_some() {
            self.lru.retain(|&other| other != id);
        }
    }

    fn delete_delayed(&mut self, id: u32) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if !entry.pending_delete {
            entry.pending_delete = true;
            let generation = entry.generation;
            self.pending.push((id, generation));
        }
        self.touch(id);
    }

    /// A sweep: every entry marked since the last one is removed, if it is still the entry
    /// the id maps to. The store's conditional removal reads the id's current entry, which
    /// counts as use when the id was created again.
    fn sweep(&mut self) {
        for (id, generation) in std::mem::take(&mut self.pending) {
            match self.entries.get(&id) {
                Some(entry) if entry.generation == generation => {
                    self.entries.remove(&id);
                    self.lru.retain(|&other| other != id);
                }
                Some(_) => self.touch(id),
                None => {}
            }
        }
    }
}

/// What a batcher closure returns.
type Batches = Result<Vec<Batch<u32, Job>>, SyncError>;

/// The batcher, misbehaving as the model's `batching` says.
fn batcher_fn(
    model: Arc<Mutex<Model>>,
) -> impl Fn(Vec<ItemWrapper<u32, Job>>) -> Batches + Send + Sync + 'static {
    move |items| {
        let batching = model.lock().unwrap().batching;
        let threes: Vec<Batch<u32, Job>> = items.chunks(3).map(<[_]>::to_vec).collect();
        match batching {
            Batching::Fine => Ok(threes),
            Batching::Empty => Ok(Vec::new()),
            Batching::Duplicates => {
                let mut batches = threes.clone();
                batches.extend(threes);
                batches.push(items);
                Ok(batches)
            }
            Batching::Invents => {
                let given: Vec<u32> = items.iter().map(|w| *w.id()).collect();
                let mut batches = threes;
                if let Some(stray) = (0..IDS).find(|id| !given.contains(id)) {
                    batches.push(vec![ItemWrapper::new(stray, POISON)]);
                }
                Ok(batches)
            }
            Batching::Error => Err(SyncError::from("the batcher failed")),
            Batching::Panic => panic!("the batcher panicked on purpose"),
        }
    }
}

/// What the sync function saw of one item at dispatch.
struct Dispatched {
    id: u32,
    generation: u64,
    version: u64,
    item: Job,
}

/// The sync function: checks the batch against the model, then behaves as the model's mode
/// says and, on success, applies the engine's rule to the model in the poll the engine
/// applies the responses.
fn sync_fn(
    model: Arc<Mutex<Model>>,
) -> impl Fn(Batch<u32, Job>) -> common::BoxFuture<u32, Job> + Send + Sync + 'static {
    move |batch: Batch<u32, Job>| {
        let model = Arc::clone(&model);
        let (mode, dispatched) = {
            let mut m = model.lock().unwrap();
            let mut dispatched = Vec::new();
            for w in &batch {
                let id = *w.id();
                if !m.in_flight.insert(id) {
                    m.violations.push(format!("{id} dispatched while already in flight"));
                }
                let problem = match m.entries.get(&id) {
                    None => Some(format!("{id} dispatched but deleted or evicted")),
                    Some(e) if e.pending_delete => {
                        Some(format!("{id} dispatched while pending delete"))
                    }
                    Some(e) if e.item.done => {
                        Some(format!("terminal {id} reached sync: {:?}", e.item))
                    }
                    Some(e) if e.item != *w.item() => {
                        Some(format!("{id} dispatched as {:?}, stored {:?}", w.item(), e.item))
                    }
                    Some(e) => {
                        dispatched.push(Dispatched {
                            id,
                            generation: e.generation,
                            version: e.version,
                            item: e.item.clone(),
                        });
                        None
                    }
                };
                m.violations.extend(problem);
            }
            (m.mode, dispatched)
        };
        let ids: Vec<u32> = batch.iter().map(|w| *w.id()).collect();
        Box::pin(async move {
            if mode.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(mode.latency_ms)).await;
            }
            let mut m = model.lock().unwrap();
            for id in &ids {
                m.in_flight.remove(id);
            }
            let updated = |item: &Job| match mode.outcome {
                Outcome::Finish => Job { syncs: item.syncs + 1, done: true, ..item.clone() },
                _ => Job { syncs: item.syncs + 1, ..item.clone() },
            };
            let responses: Vec<ItemSyncResponse<u32, Job>> = match mode.outcome {
                Outcome::Error => return Err(SyncError::from("the external system is down")),
                Outcome::Panic => {
                    drop(m);
                    panic!("sync panicked on purpose");
                }
                Outcome::Silent => Vec::new(),
                Outcome::Unchanged => dispatched
                    .iter()
                    .map(|d| ItemSyncResponse {
                        id: d.id,
                        item: d.item.clone(),
                        action: SyncAction::Unchanged,
                    })
                    .collect(),
                Outcome::Update | Outcome::Finish | Outcome::Stray => {
                    let mut responses: Vec<_> = dispatched
                        .iter()
                        .map(|d| ItemSyncResponse {
                            id: d.id,
                            item: updated(&d.item),
                            action: SyncAction::Update,
                        })
                        .collect();
                    if mode.outcome == Outcome::Stray {
                        if let Some(stray) = (0..IDS).find(|id| !ids.contains(id)) {
                            responses.push(ItemSyncResponse {
                                id: stray,
                                item: POISON,
                                action: SyncAction::Update,
                            });
                        }
                    }
                    // The engine's rule: only the entry dispatched, still live, unchanged.
                    for d in &dispatched {
                        if let Some(e) = m.entries.get_mut(&d.id) {
                            if e.generation == d.generation
                                && e.version == d.version
                                && !e.pending_delete
                            {
                                e.item = updated(&d.item);
                                e.version += 1;
                            }
                        }
                    }
                    responses
                }
            };
            Ok(responses)
        })
    }
}

/// The cache holds exactly the ids the model holds (no more than the capacity, every id the
/// model lost is gone, as many items), without reading a present item: every read counts as
/// use and would impose the model's recency order on the store, hiding a wrong eviction. The
/// values are checked by the steps' own reads, by the sync function at each dispatch, and by
/// [`check_values`].
fn check(cache: &AutoRefresh<u32, Job>, model: &Mutex<Model>, recorder: &Recorder, step: &str) {
    let m = model.lock().unwrap();
    assert!(m.violations.is_empty(), "after {step}: {:?}", m.violations);
    assert!(cache.len() as u64 <= CAPACITY, "after {step}: {} items", cache.len());
    assert_eq!(cache.len(), m.entries.len(), "after {step}: len");
    assert_eq!(load(&recorder.evictions), m.evictions, "after {step}: evictions");
    let exact_lru = m.exact_lru;
    for id in (0..IDS).filter(|id| !m.entries.contains_key(id)) {
        // A miss is not a use: this leaves the recency order alone.
        assert!(
            cache.get(&id).is_err(),
            "after {step}: {id} was deleted or evicted and came back: {:?}",
            cache.get(&id)
        );
    }
    drop(m);
    if !exact_lru {
        // The recency order is not checked: reading every item costs nothing.
        check_values(cache, model, step);
    }
}

/// Reads every present item, least recently used first (which keeps the recency order if
/// the model's is right), and compares it with the model's.
fn check_values(cache: &AutoRefresh<u32, Job>, model: &Mutex<Model>, step: &str) {
    let m = model.lock().unwrap();
    for id in &m.lru {
        let expected = &m.entries[id].item;
        match cache.get(id) {
            Ok(item) => assert_eq!(&item, expected, "after {step}: item {id}"),
            Err(err) => panic!("after {step}: item {id} is gone ({err}), expected {expected:?}"),
        }
    }
}

/// Which store the cache runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    /// `MokaStore`: exact LRU, which the model predicts.
    Moka,
    /// The builder's default store.
    Default,
}

/// The new item made the store evict one of the others: finds which (reading each present
/// id; only the victim is missing) and drops it from the model.
fn find_victim(cache: &AutoRefresh<u32, Job>, model: &Mutex<Model>, new: u32, step: &str) {
    let mut m = model.lock().unwrap();
    if m.entries.len() as u64 <= CAPACITY {
        return;
    }
    let missing: Vec<u32> = m.lru.iter().copied().filter(|id| cache.get(id).is_err()).collect();
    assert_eq!(missing.len(), 1, "{step}: one entry must be evicted, missing: {missing:?}");
    assert_ne!(missing[0], new, "{step}: the new entry was evicted");
    m.evict(missing[0]);
}

fn run(ops: Vec<Op>, store: StoreKind) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let model = Arc::new(Mutex::new(Model::new(store == StoreKind::Moka)));
        let recorder = Arc::new(Recorder::default());
        let limiter = Arc::new(ItemExponentialFailureRateLimiter::<u32>::new(
            Duration::from_millis(10),
            Duration::from_millis(200),
        ));
        let builder = AutoRefresh::builder("model")
            .sync(sync_fn(Arc::clone(&model)))
            .resync_period(Duration::from_millis(PERIOD_MS))
            .parallelism(2)
            .rate_limiter(Arc::clone(&limiter))
            .metrics(Arc::clone(&recorder));
        let cache: AutoRefresh<u32, Job> = match store {
            StoreKind::Moka => builder
                .store(MokaStore::new(CAPACITY).unwrap())
                .create_batches(batcher_fn(Arc::clone(&model))),
            StoreKind::Default => builder
                .capacity(CAPACITY)
                .create_batches(FixedSizeBatches::new(NonZeroUsize::new(3).unwrap())),
        }
        .build()
        .unwrap();
        let running = cache.start(CancellationToken::new()).unwrap();
        // The first sweep runs at start; from here on steps fall between sweeps.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut elapsed_ms = 1;

        for (n, op) in ops.iter().enumerate() {
            let step = format!("step {n} {op:?}");
            match *op {
                Op::GetOrCreate(id, done) => {
                    let item = model.lock().unwrap().job(done);
                    let got = cache.get_or_create(id, item.clone()).unwrap();
                    let expected = model.lock().unwrap().get_or_create(id, item);
                    assert_eq!(got, expected, "{step}: get_or_create replaced or lost an item");
                    find_victim(&cache, &model, id, &step);
                }
                Op::Get(id) => {
                    let got = cache.get(&id).ok();
                    let expected = model.lock().unwrap().get(id);
                    assert_eq!(got, expected, "{step}");
                }
                Op::Update(id, done) => {
                    let item = model.lock().unwrap().job(done);
                    let updated = cache.update(&id, item.clone());
                    assert_eq!(updated, model.lock().unwrap().update(id, item), "{step}");
                }
                Op::Delete(id) => {
                    cache.delete(&id);
                    model.lock().unwrap().delete(id);
                }
                Op::DeleteDelayed(id) => {
                    cache.delete_delayed(&id).unwrap();
                    model.lock().unwrap().delete_delayed(id);
                }
                Op::SetSync(mode) => model.lock().unwrap().mode = mode,
                Op::SetBatcher(batching) => model.lock().unwrap().batching = batching,
                Op::Advance(tens) => {
                    let before = elapsed_ms;
                    elapsed_ms += tens * 10;
                    tokio::time::sleep(Duration::from_millis(tens * 10)).await;
                    let sweeps = elapsed_ms / PERIOD_MS - before / PERIOD_MS;
                    for _ in 0..sweeps {
                        model.lock().unwrap().sweep();
                    }
                }
            }
            settle().await;
            check(&cache, &model, &recorder, &step);
        }

        // The faults stop: every retry and every slow call ends, a sweep refreshes what is
        // left, and nothing is tracked outside the store any more.
        model.lock().unwrap().mode = SyncMode { outcome: Outcome::Update, latency_ms: 0 };
        model.lock().unwrap().batching = Batching::Fine;
        let before = elapsed_ms;
        elapsed_ms += 5_000;
        tokio::time::sleep(Duration::from_millis(5_000)).await;
        for _ in 0..(elapsed_ms / PERIOD_MS - before / PERIOD_MS) {
            model.lock().unwrap().sweep();
        }
        check(&cache, &model, &recorder, "the faults stopped");
        check_values(&cache, &model, "the faults stopped");
        assert_eq!(limiter.tracked_items(), 0, "the limiter still tracks ids");
        assert_eq!(queue_figures(&cache), QueueFigures::default(), "the queue still holds ids");
        running.shutdown().await;
    });
}

fn id() -> impl Strategy<Value = u32> {
    0..IDS
}

fn terminal() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.15)
}

fn sync_mode() -> impl Strategy<Value = SyncMode> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Update),
        1 => Just(Outcome::Finish),
        1 => Just(Outcome::Unchanged),
        1 => Just(Outcome::Silent),
        2 => Just(Outcome::Error),
        1 => Just(Outcome::Panic),
        1 => Just(Outcome::Stray),
    ];
    // No wait, shorter than a retry, longer than the longest backoff, longer than a period.
    let latency = prop_oneof![3 => Just(0_u64), 1 => Just(30), 1 => Just(700), 1 => Just(2_500)];
    (outcome, latency).prop_map(|(outcome, latency_ms)| SyncMode { outcome, latency_ms })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (id(), terminal()).prop_map(|(id, done)| Op::GetOrCreate(id, done)),
        2 => id().prop_map(Op::Get),
        1 => (id(), terminal()).prop_map(|(id, done)| Op::Update(id, done)),
        1 => id().prop_map(Op::Delete),
        2 => id().prop_map(Op::DeleteDelayed),
        2 => sync_mode().prop_map(Op::SetSync),
        1 => prop_oneof![
            2 => Just(Batching::Fine),
            1 => Just(Batching::Empty),
            1 => Just(Batching::Duplicates),
            1 => Just(Batching::Invents),
            1 => Just(Batching::Error),
            1 => Just(Batching::Panic),
        ]
        .prop_map(Op::SetBatcher),
        3 => (1_u64..=150).prop_map(Op::Advance),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(64)
}

proptest! {
    // 64 cases by default; `PROPTEST_CASES=5000 cargo test --test model` for a longer hunt.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// On `MokaStore` (exact LRU), the cache and the model agree after every step: capacity,
    /// LRU evictions, no deleted or evicted id coming back, `get_or_create` never replacing,
    /// `delete_delayed` readable until the next sweep and gone after it, refreshes landing
    /// only where the engine's rule allows, terminal or pending items never dispatched, no
    /// id in two calls at once, and, once the faults stop, no state left in the limiter or
    /// the queue.
    #[test]
    fn the_cache_on_moka_behaves_as_the_model(ops in prop::collection::vec(op(), 1..=60)) {
        run(ops, StoreKind::Moka);
    }

    /// The same on the default store, whose eviction order is LRU only at the resolution of
    /// inserts: any old entry may be the victim, never the new one, and exactly one goes.
    #[test]
    fn the_cache_on_the_default_store_behaves_as_the_model(
        ops in prop::collection::vec(op(), 1..=60),
    ) {
        run(ops, StoreKind::Default);
    }
}
