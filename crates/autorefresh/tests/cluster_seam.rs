//! The facade's side of the cluster seam, against an in-memory fake `Cluster` on paused time:
//! which ids this instance syncs, what it reports to the cluster (and what it must not), the
//! `LocalReplica` the cluster is given, `fetch` of a local miss, and the cluster's task
//! lifecycle.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, CancellationToken, Cluster, ClusterError, Error, Item,
    ItemSyncResponse, LocalReplica, Shutdown, SyncAction,
};
use common::{queue_figures, settle, BoxFuture};
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};

/// The resync period of every cache here.
const PERIOD: Duration = Duration::from_secs(1);
/// The name of every cache here (errors name it).
const NAME: &str = "cluster-seam";
/// How long the fake cluster's graceful leave takes once shutdown completes.
const HANDOVER: Duration = Duration::from_secs(5);

/// A job at some step; terminal once done.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    step: u32,
    done: bool,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        self.done
    }
}

/// A running job at `step`.
fn job(step: u32) -> Job {
    Job { step, done: false }
}

/// A finished (terminal) job at `step`.
fn done(step: u32) -> Job {
    Job { step, done: true }
}

/// Whether `id` is even: the ids the fake cluster gives this instance unless told otherwise.
fn even(id: &u64) -> bool {
    id % 2 == 0
}

/// What the cache told the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Told {
    Created(u64, Job),
    Updated(u64, Job),
    Refreshed(u64, Job),
    Deleted(u64),
}

/// Which ids the fake cluster gives this instance.
type Refreshes = Box<dyn Fn(&u64) -> bool + Send + Sync>;

/// The fake cluster's state, shared by the clone given to the builder and the test's.
struct State {
    told: Mutex<Vec<Told>>,
    refreshes: Mutex<Refreshes>,
    /// What `fetch` finds in the "cluster".
    remote: Mutex<HashMap<u64, Job>>,
    /// When set, `fetch` fails with this message.
    fetch_error: Mutex<Option<String>>,
    /// Every id `fetch` was asked for.
    fetched: Mutex<Vec<u64>>,
    /// The replica `run` was given, kept so the test can drive it.
    local: Mutex<Option<Arc<dyn LocalReplica<u64, Job>>>>,
    runs: Mutex<usize>,
    /// When `run` returned, if it did.
    returned: Mutex<Option<Instant>>,
    /// Called with the id each time `created` is told, if set.
    on_created: Mutex<Option<OnCreated>>,
    /// Whether `run` panics once it has its replica.
    panics: Mutex<bool>,
}

/// A test's look at the cache from inside `Cluster::created`.
type OnCreated = Box<dyn Fn(u64) + Send + Sync>;

/// An in-memory `Cluster`: records every notification, answers `refreshes` from a settable
/// predicate and `fetch` from a map (or with an error), and keeps the `LocalReplica` it is
/// given in `run`, which returns [`HANDOVER`] after its shutdown future completes.
#[derive(Clone)]
struct FakeCluster(Arc<State>);

impl FakeCluster {
    /// A cluster that gives this instance the even ids and holds nothing.
    fn new() -> Self {
        Self(Arc::new(State {
            told: Mutex::default(),
            refreshes: Mutex::new(Box::new(even)),
            remote: Mutex::default(),
            fetch_error: Mutex::default(),
            fetched: Mutex::default(),
            local: Mutex::default(),
            runs: Mutex::new(0),
            returned: Mutex::default(),
            on_created: Mutex::default(),
            panics: Mutex::new(false),
        }))
    }

    /// From now on this instance refreshes the ids `refreshes` accepts.
    fn set_refreshes(&self, refreshes: impl Fn(&u64) -> bool + Send + Sync + 'static) {
        *self.0.refreshes.lock().unwrap() = Box::new(refreshes);
    }

    /// Makes `run` panic once it has its replica (a bug in the cluster's task).
    fn panic_in_run(&self) {
        *self.0.panics.lock().unwrap() = true;
    }

    /// A copy of what the cache told the cluster so far.
    fn told(&self) -> Vec<Told> {
        self.0.told.lock().unwrap().clone()
    }

    /// Calls `hook` with the id each time `created` is told (`None`: no more).
    fn on_created(&self, hook: Option<OnCreated>) {
        *self.0.on_created.lock().unwrap() = hook;
    }

    /// Forgets what the cache told so far.
    fn clear_told(&self) {
        self.0.told.lock().unwrap().clear();
    }

    /// Puts `item` under `id` in the "cluster", for `fetch` to find.
    fn hold(&self, id: u64, item: Job) {
        self.0.remote.lock().unwrap().insert(id, item);
    }

    /// Makes every later `fetch` fail with `message`.
    fn fail_fetches(&self, message: &str) {
        *self.0.fetch_error.lock().unwrap() = Some(message.to_owned());
    }

    /// The ids `fetch` was asked for, in order.
    fn fetched(&self) -> Vec<u64> {
        self.0.fetched.lock().unwrap().clone()
    }

    /// How many times `run` was called.
    fn runs(&self) -> usize {
        *self.0.runs.lock().unwrap()
    }

    /// When `run` returned, if it did.
    fn returned(&self) -> Option<Instant> {
        *self.0.returned.lock().unwrap()
    }

    /// The replica given to `run`, once the cache's task has started it; panics if it never
    /// is.
    async fn local(&self) -> Arc<dyn LocalReplica<u64, Job>> {
        for _ in 0..100 {
            if let Some(local) = self.0.local.lock().unwrap().clone() {
                return local;
            }
            tokio::task::yield_now().await;
        }
        panic!("`Cluster::run` was never given a LocalReplica");
    }

    /// Records `told`.
    fn tell(&self, told: Told) {
        self.0.told.lock().unwrap().push(told);
    }
}

#[async_trait]
impl Cluster<u64, Job> for FakeCluster {
    fn refreshes(&self, id: &u64) -> bool {
        (self.0.refreshes.lock().unwrap())(id)
    }

    fn created(&self, id: &u64, item: &Job) {
        self.tell(Told::Created(*id, item.clone()));
        if let Some(hook) = &*self.0.on_created.lock().unwrap() {
            hook(*id);
        }
    }

    fn updated(&self, id: &u64, item: &Job) {
        self.tell(Told::Updated(*id, item.clone()));
    }

    fn refreshed(&self, id: &u64, item: &Job) {
        self.tell(Told::Refreshed(*id, item.clone()));
    }

    fn deleted(&self, id: &u64) {
        self.tell(Told::Deleted(*id));
    }

    async fn fetch(&self, id: &u64) -> Result<Option<Job>, ClusterError> {
        self.0.fetched.lock().unwrap().push(*id);
        if let Some(message) = self.0.fetch_error.lock().unwrap().clone() {
            return Err(message.into());
        }
        Ok(self.0.remote.lock().unwrap().get(id).cloned())
    }

    async fn run(&self, local: Arc<dyn LocalReplica<u64, Job>>, shutdown: Shutdown) {
        *self.0.runs.lock().unwrap() += 1;
        *self.0.local.lock().unwrap() = Some(local);
        if *self.0.panics.lock().unwrap() {
            panic!("the cluster's task failed");
        }
        shutdown.await;
        // A graceful leave (handing over leases) takes a while: `shutdown` must wait for it.
        sleep(HANDOVER).await;
        // Drop the replica as a real cluster would, which also breaks the cycle cache ->
        // cluster -> replica -> cache.
        self.0.local.lock().unwrap().take();
        *self.0.returned.lock().unwrap() = Some(Instant::now());
    }
}

/// Counts the sync calls per id; each item is answered by the given `answer`.
#[derive(Clone, Default)]
struct Syncs(Arc<Mutex<HashMap<u64, usize>>>);

impl Syncs {
    /// How many times `id` was sent to the sync function.
    fn count(&self, id: u64) -> usize {
        self.0.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    /// A sync function that counts each id and answers it with `answer(id, item)`, if any;
    /// before answering it takes a permit from `gate`, if given (so a test can hold a sync in
    /// flight).
    fn func(
        &self,
        gate: Option<Arc<Semaphore>>,
        answer: impl Fn(u64, &Job) -> Option<(Job, SyncAction)> + Send + Sync + 'static,
    ) -> impl Fn(Batch<u64, Job>) -> BoxFuture<u64, Job> + Send + Sync + 'static {
        let counts = Arc::clone(&self.0);
        let answer = Arc::new(answer);
        move |batch: Batch<u64, Job>| {
            let counts = Arc::clone(&counts);
            let answer = Arc::clone(&answer);
            let gate = gate.clone();
            Box::pin(async move {
                {
                    let mut counts = counts.lock().unwrap();
                    for w in &batch {
                        *counts.entry(*w.id()).or_default() += 1;
                    }
                }
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
                Ok(batch
                    .iter()
                    .filter_map(|w| {
                        answer(*w.id(), w.item()).map(|(item, action)| ItemSyncResponse {
                            id: *w.id(),
                            item,
                            action,
                        })
                    })
                    .collect())
            })
        }
    }
}

/// Answers every item with the next step.
fn step_up(_id: u64, item: &Job) -> Option<(Job, SyncAction)> {
    Some((job(item.step + 1), SyncAction::Update))
}

/// Answers that nothing changed.
fn unchanged(_id: u64, _item: &Job) -> Option<(Job, SyncAction)> {
    None
}

/// A builder sharing its items through `cluster`, whose syncs `syncs` counts and answers with
/// `answer`, every [`PERIOD`].
fn builder(
    cluster: &FakeCluster,
    syncs: &Syncs,
    answer: impl Fn(u64, &Job) -> Option<(Job, SyncAction)> + Send + Sync + 'static,
) -> AutoRefreshBuilder<u64, Job> {
    AutoRefresh::builder(NAME)
        .sync(syncs.func(None, answer))
        .resync_period(PERIOD)
        .cluster(cluster.clone())
}

/// A cache on a fresh fake cluster (even ids refreshed here) whose syncs step items up.
fn cache() -> (AutoRefresh<u64, Job>, FakeCluster, Syncs) {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, step_up).build().unwrap();
    (cache, cluster, syncs)
}

// 1. What this instance syncs.

#[tokio::test(start_paused = true)]
async fn the_sweep_syncs_only_the_ids_the_cluster_gives_this_instance() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, step_up).sync_on_create(false).build().unwrap();
    for id in 0..6 {
        cache.get_or_create(id, job(0)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 3 + PERIOD / 2).await; // sweeps at 0, 1, 2 and 3 periods
    for id in 0..6 {
        let expected = if id % 2 == 0 { 4 } else { 0 };
        assert_eq!(syncs.count(id), expected, "syncs of id {id}");
    }
    assert_eq!(cache.get(&2).unwrap(), job(4));
    assert_eq!(cache.get(&3).unwrap(), job(0), "another instance refreshes it");

    // The cluster moves the shards: every sweep asks again.
    cluster.set_refreshes(|id| id % 2 == 1);
    sleep(PERIOD * 2).await; // sweeps at 4 and 5 periods
    for id in 0..6 {
        let expected = if id % 2 == 0 { 4 } else { 2 };
        assert_eq!(syncs.count(id), expected, "syncs of id {id} after the move");
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_task_that_panics_stops_this_instance_refreshing_its_shards() {
    let cluster = FakeCluster::new();
    cluster.panic_in_run();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, step_up).build().unwrap();
    for id in 0..6 {
        cache.get_or_create(id, job(0)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    // The task panics as soon as it runs; a sweep may have come first.
    cluster.local().await;
    sleep(PERIOD / 2).await;
    let before: Vec<usize> = (0..6).map(|id| syncs.count(id)).collect();
    sleep(PERIOD * 3).await;
    let after: Vec<usize> = (0..6).map(|id| syncs.count(id)).collect();
    assert_eq!(after, before, "its leases lapse: another instance refreshes its shards now");
    // Reads and local writes go on; a new id is not synced here either.
    assert!(cache.update(&2, job(7)));
    assert_eq!(cache.get(&2).unwrap(), job(7));
    cache.get_or_create(10, job(0)).unwrap();
    sleep(PERIOD * 2).await;
    assert_eq!(syncs.count(10), 0);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn sync_on_create_queues_only_the_ids_the_cluster_gives_this_instance() {
    let (cache, _cluster, syncs) = cache();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await; // past the first sweep
    for id in 0..4 {
        cache.get_or_create(id, job(0)).unwrap();
    }
    settle().await;
    assert_eq!([0, 1, 2, 3].map(|id| syncs.count(id)), [1, 0, 1, 0]);
    running.shutdown().await;
}

// 2. What is reported to the cluster.

#[tokio::test(start_paused = true)]
async fn get_or_create_reports_a_new_id_as_created_and_an_existing_one_not() {
    let (cache, cluster, _syncs) = cache();
    assert_eq!(cache.get_or_create(1, job(0)).unwrap(), job(0));
    assert_eq!(cache.get_or_create(1, job(9)).unwrap(), job(0));
    assert_eq!(cache.get_or_create(2, job(3)).unwrap(), job(3));
    assert_eq!(cluster.told(), vec![Told::Created(1, job(0)), Told::Created(2, job(3))]);
}

/// On a multi-threaded runtime a worker may sync a new item, and report it `refreshed`, as
/// soon as it is queued: `created` must be told first, or the cluster is sent a refresh of an
/// item it does not hold yet, then the creation of the stale item.
#[tokio::test(start_paused = true)]
async fn created_is_told_before_the_new_item_is_queued_for_its_sync() {
    let (cache, cluster, _syncs) = cache();
    let queued_when_told = Arc::new(Mutex::new(Vec::new()));
    cluster.on_created(Some(Box::new({
        let cache = cache.clone();
        let queued = Arc::clone(&queued_when_told);
        move |_id| queued.lock().unwrap().push(queue_figures(&cache).entries)
    })));
    cache.get_or_create(2, job(0)).unwrap();
    cluster.on_created(None); // drops its clone of the cache
    assert_eq!(queue_figures(&cache).entries, 1, "queued for its sync on create");
    assert_eq!(*queued_when_told.lock().unwrap(), vec![0], "not yet queued when told");
}

#[tokio::test(start_paused = true)]
async fn update_reports_updated_only_when_the_id_is_held() {
    let (cache, cluster, _syncs) = cache();
    cache.get_or_create(1, job(0)).unwrap();
    cluster.clear_told();
    assert!(cache.update(&1, job(5)));
    assert!(!cache.update(&7, job(5)));
    assert_eq!(cluster.told(), vec![Told::Updated(1, job(5))]);
}

#[tokio::test(start_paused = true)]
async fn a_sync_update_is_reported_as_refreshed_with_the_new_item() {
    let (cache, cluster, _syncs) = cache();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await;
    cache.get_or_create(2, job(0)).unwrap();
    cache.get_or_create(3, job(0)).unwrap(); // not refreshed here
    settle().await;
    assert_eq!(
        cluster.told(),
        vec![Told::Created(2, job(0)), Told::Created(3, job(0)), Told::Refreshed(2, job(1))]
    );
    sleep(PERIOD).await;
    assert_eq!(cluster.told().last(), Some(&Told::Refreshed(2, job(2))));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_sync_is_not_reported() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, unchanged).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(2, job(0)).unwrap();
    sleep(PERIOD * 3).await;
    assert!(syncs.count(2) >= 3);
    assert_eq!(cluster.told(), vec![Told::Created(2, job(0))]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_sync_delete_is_reported_as_deleted() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache =
        builder(&cluster, &syncs, |id, item| (id == 4).then(|| (item.clone(), SyncAction::Delete)))
            .build()
            .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await;
    cache.get_or_create(2, job(0)).unwrap();
    cache.get_or_create(4, job(0)).unwrap();
    settle().await;
    assert!(cache.get(&4).unwrap_err().is_not_found());
    assert_eq!(
        cluster.told(),
        vec![Told::Created(2, job(0)), Told::Created(4, job(0)), Told::Deleted(4)]
    );
    sleep(PERIOD * 2).await;
    assert_eq!(cluster.told().len(), 3, "reported once");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn delete_is_reported_also_for_an_id_this_store_does_not_hold() {
    let (cache, cluster, _syncs) = cache();
    cache.get_or_create(1, job(0)).unwrap();
    cluster.clear_told();
    cache.delete(&1);
    cache.delete(&9); // another instance may hold it
    assert!(cache.get(&1).unwrap_err().is_not_found());
    assert_eq!(cluster.told(), vec![Told::Deleted(1), Told::Deleted(9)]);
}

#[tokio::test(start_paused = true)]
async fn delete_delayed_is_reported_once_at_the_next_sweep() {
    let (cache, cluster, _syncs) = cache();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await; // past the first sweep
    cache.get_or_create(2, job(0)).unwrap();
    cache.get_or_create(3, job(0)).unwrap(); // refreshed elsewhere, deleted from here
    settle().await;
    cluster.clear_told();
    cache.delete_delayed(&2).unwrap();
    cache.delete_delayed(&3).unwrap();
    cache.delete_delayed(&2).unwrap(); // twice: still once
    cache.delete_delayed(&8).unwrap(); // absent: a no-op
    settle().await;
    assert_eq!(cluster.told(), vec![]);
    assert!(cache.get(&2).is_ok());
    sleep(PERIOD).await; // the next sweep
    assert!(cache.get(&2).unwrap_err().is_not_found());
    assert!(cache.get(&3).unwrap_err().is_not_found());
    let mut told = cluster.told();
    told.sort_by_key(|told| format!("{told:?}"));
    assert_eq!(told, vec![Told::Deleted(2), Told::Deleted(3)]);
    sleep(PERIOD * 3).await;
    assert_eq!(cluster.told().len(), 2, "reported once");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn terminal_expiry_is_reported_as_deleted_by_the_instance_that_refreshes_the_item() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, step_up).terminal_ttl(PERIOD * 2).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await;
    cache.get_or_create(2, done(1)).unwrap();
    cache.get_or_create(3, done(1)).unwrap(); // another instance expires it
    cluster.clear_told();
    sleep(PERIOD * 2).await; // the sweep at 2 periods: 1.9 periods terminal
    assert!(cache.get(&2).is_ok());
    assert_eq!(cluster.told(), vec![]);
    sleep(PERIOD).await; // the sweep at 3 periods: 2.9 periods terminal
    assert!(cache.get(&2).unwrap_err().is_not_found());
    assert_eq!(cache.get(&3).unwrap(), done(1));
    assert_eq!(cluster.told(), vec![Told::Deleted(2)]);
    sleep(PERIOD * 3).await;
    assert_eq!(cluster.told(), vec![Told::Deleted(2)]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_eviction_is_not_reported() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, step_up).capacity(2).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for id in 1..=3 {
        cache.get_or_create(id, job(0)).unwrap();
    }
    settle().await;
    assert_eq!(cache.len(), 2, "one was evicted");
    sleep(PERIOD * 2).await;
    assert!(
        cluster.told().iter().all(|told| !matches!(told, Told::Deleted(_))),
        "told: {:?}",
        cluster.told()
    );
    running.shutdown().await;
}

// 3. The LocalReplica the cluster is given.

/// A started cache whose syncs answer "unchanged" (so they report nothing), and the replica
/// its cluster was given.
async fn started_replica() -> (
    AutoRefresh<u64, Job>,
    FakeCluster,
    Syncs,
    autorefresh::Running,
    Arc<dyn LocalReplica<u64, Job>>,
) {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let cache = builder(&cluster, &syncs, unchanged).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    let local = cluster.local().await;
    sleep(PERIOD / 10).await; // past the first sweep
    (cache, cluster, syncs, running, local)
}

#[tokio::test(start_paused = true)]
async fn upsert_of_a_new_id_inserts_it_and_queues_it_only_if_refreshed_here() {
    let (cache, cluster, syncs, running, local) = started_replica().await;
    local.upsert(2, job(7));
    local.upsert(3, job(7));
    settle().await;
    assert_eq!(cache.get(&2).unwrap(), job(7));
    assert_eq!(cache.get(&3).unwrap(), job(7));
    assert_eq!(local.get(&2), Some(job(7)));
    assert_eq!((syncs.count(2), syncs.count(3)), (1, 0), "synced on create only if ours");
    assert_eq!(cluster.told(), vec![], "no echo");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn upsert_of_an_existing_id_replaces_it_and_tells_subscribers() {
    let (cache, cluster, _syncs, running, local) = started_replica().await;
    cache.get_or_create(1, job(0)).unwrap();
    cluster.clear_told();
    let mut receiver = cache.subscribe(&1).unwrap();
    let mut updates = cache.updates();
    local.upsert(1, job(5));
    receiver.changed().await.unwrap();
    assert_eq!(*receiver.borrow_and_update(), job(5));
    assert_eq!(updates.recv().await.unwrap(), (1, job(5)));
    assert_eq!(cache.get(&1).unwrap(), job(5));
    assert_eq!(cache.len(), 1);
    settle().await;
    assert_eq!(cluster.told(), vec![], "no echo");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn remove_removes_it_and_closes_the_subscribers_channel() {
    let (cache, cluster, _syncs, running, local) = started_replica().await;
    cache.get_or_create(1, job(0)).unwrap();
    cluster.clear_told();
    let mut receiver = cache.subscribe(&1).unwrap();
    local.remove(&1);
    local.remove(&9); // absent: a no-op
    assert!(receiver.changed().await.is_err(), "the item left: the channel closes");
    assert!(cache.get(&1).unwrap_err().is_not_found());
    assert_eq!(local.get(&1), None);
    settle().await;
    assert_eq!(cluster.told(), vec![], "no echo");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn get_and_for_each_id_see_the_local_store() {
    let (cache, cluster, _syncs, running, local) = started_replica().await;
    for id in [1, 2, 3] {
        cache.get_or_create(id, job(id as u32)).unwrap();
    }
    local.upsert(4, job(4));
    cache.delete(&3);
    cluster.clear_told();
    assert_eq!(local.get(&2), Some(job(2)));
    assert_eq!(local.get(&4), Some(job(4)));
    assert_eq!(local.get(&3), None);
    let mut ids = BTreeSet::new();
    local.for_each_id(&mut |id| {
        ids.insert(*id);
    });
    assert_eq!(ids, BTreeSet::from([1, 2, 4]));
    assert_eq!(cluster.told(), vec![], "reads report nothing");
    running.shutdown().await;
}

// 4. `fetch`.

#[tokio::test(start_paused = true)]
async fn fetch_of_a_local_hit_does_not_ask_the_cluster() {
    let (cache, cluster, _syncs) = cache();
    cache.get_or_create(1, job(0)).unwrap();
    cluster.hold(1, job(9)); // the local item wins
    assert_eq!(cache.fetch(&1).await.unwrap(), job(0));
    assert_eq!(cluster.fetched(), Vec::<u64>::new());
}

#[tokio::test(start_paused = true)]
async fn fetch_of_a_local_miss_stores_what_the_cluster_holds() {
    let (cache, cluster, syncs) = cache();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await;
    cluster.hold(2, job(4));
    cluster.hold(3, job(4));
    assert_eq!(cache.fetch(&2).await.unwrap(), job(4));
    assert_eq!(cache.fetch(&3).await.unwrap(), job(4));
    assert_eq!(cluster.fetched(), vec![2, 3]);
    assert_eq!(cache.get(&3).unwrap(), job(4));
    settle().await;
    // Stored here and queued for a sync if this instance refreshes it.
    assert_eq!((syncs.count(2), syncs.count(3)), (1, 0));
    assert_eq!(cache.get(&2).unwrap(), job(5));
    // Found now locally: the cluster is not asked again.
    assert_eq!(cache.fetch(&3).await.unwrap(), job(4));
    assert_eq!(cluster.fetched(), vec![2, 3]);
    // What came from the cluster is not sent back to it as created.
    assert_eq!(cluster.told(), vec![Told::Refreshed(2, job(5))]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fetch_found_nowhere_is_not_found() {
    let (cache, cluster, _syncs) = cache();
    let err = cache.fetch(&7).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(cluster.fetched(), vec![7]);
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn fetch_when_the_cluster_fails_is_a_cluster_error_naming_the_cache() {
    let (cache, cluster, _syncs) = cache();
    cluster.hold(7, job(1));
    cluster.fail_fetches("connection refused");
    match cache.fetch(&7).await {
        Err(Error::Cluster { name, reason }) => {
            assert_eq!(name, NAME);
            assert!(reason.contains("connection refused"), "{reason}");
        }
        other => panic!("expected Error::Cluster, got {other:?}"),
    }
    assert!(cache.is_empty());
}

// 5. The cluster's task.

#[tokio::test(start_paused = true)]
async fn start_runs_the_cluster_once_and_shutdown_waits_until_run_returned() {
    let (cache, cluster, _syncs) = cache();
    settle().await;
    assert_eq!(cluster.runs(), 0, "not before start");
    let running = cache.start(CancellationToken::new()).unwrap();
    cluster.local().await;
    assert!(matches!(cache.start(CancellationToken::new()), Err(Error::AlreadyStarted { .. })));
    sleep(PERIOD * 10).await;
    assert_eq!(cluster.runs(), 1);
    assert_eq!(cluster.returned(), None, "runs until shutdown");
    let shutdown_at = Instant::now();
    running.shutdown().await;
    let returned = cluster.returned().expect("`run` returned before `shutdown` did");
    assert_eq!(returned, shutdown_at + HANDOVER, "`run` left gracefully, and was waited for");
    assert_eq!(cluster.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_token_ends_run_and_stopped_waits_for_it() {
    let (cache, cluster, _syncs) = cache();
    let token = CancellationToken::new();
    let running = cache.start(token.clone()).unwrap();
    cluster.local().await;
    token.cancel();
    running.stopped().await;
    assert!(cluster.returned().is_some());
}

// 6. The per-entry version rule against the cluster's writes.

#[tokio::test(start_paused = true)]
async fn a_refresh_that_lost_to_a_remote_upsert_does_not_overwrite_it() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let gate = Arc::new(Semaphore::new(0));
    let cache = AutoRefresh::builder(NAME)
        .sync(syncs.func(Some(Arc::clone(&gate)), step_up))
        .resync_period(PERIOD)
        .cluster(cluster.clone())
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    let local = cluster.local().await;
    sleep(PERIOD / 10).await;
    cache.get_or_create(2, job(0)).unwrap();
    settle().await;
    assert_eq!(syncs.count(2), 1, "the sync is in flight, held at the gate");
    local.upsert(2, job(50)); // another instance's write lands meanwhile
    gate.add_permits(1); // the sync answers job(1), from the item it was given
    settle().await;
    assert_eq!(cache.get(&2).unwrap(), job(50), "the upserted item is kept");
    assert_eq!(cluster.told(), vec![Told::Created(2, job(0))], "the lost refresh is not reported");

    // The next refresh goes on from the upserted item.
    gate.add_permits(1);
    sleep(PERIOD).await;
    assert_eq!(syncs.count(2), 2);
    assert_eq!(cache.get(&2).unwrap(), job(51));
    assert_eq!(cluster.told().last(), Some(&Told::Refreshed(2, job(51))));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_sync_delete_that_lost_to_a_remote_upsert_does_not_remove_it() {
    let cluster = FakeCluster::new();
    let syncs = Syncs::default();
    let gate = Arc::new(Semaphore::new(0));
    let cache = AutoRefresh::builder(NAME)
        .sync(
            syncs.func(Some(Arc::clone(&gate)), |_, item| Some((item.clone(), SyncAction::Delete))),
        )
        .resync_period(PERIOD)
        .cluster(cluster.clone())
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    let local = cluster.local().await;
    sleep(PERIOD / 10).await;
    cache.get_or_create(2, job(0)).unwrap();
    settle().await;
    local.upsert(2, job(50));
    gate.add_permits(1);
    settle().await;
    assert_eq!(cache.get(&2).unwrap(), job(50));
    assert_eq!(cluster.told(), vec![Told::Created(2, job(0))]);
    running.shutdown().await;
}

/// A cluster built like the Redis one: notifications take its lock, and its task applies
/// other instances' changes while holding that lock. The cache must never notify it while
/// holding an entry's lock, or the two would deadlock.
struct LockingCluster {
    /// Counts the notifications.
    lock: Arc<parking_lot::Mutex<u64>>,
}

#[async_trait]
impl Cluster<u64, Job> for LockingCluster {
    fn refreshes(&self, _id: &u64) -> bool {
        true
    }
    fn created(&self, _id: &u64, _item: &Job) {
        *self.lock.lock() += 1;
    }
    fn updated(&self, _id: &u64, _item: &Job) {
        *self.lock.lock() += 1;
    }
    fn refreshed(&self, _id: &u64, _item: &Job) {
        *self.lock.lock() += 1;
    }
    fn deleted(&self, _id: &u64) {
        *self.lock.lock() += 1;
    }
    async fn fetch(&self, _id: &u64) -> Result<Option<Job>, ClusterError> {
        Ok(None)
    }
    async fn run(&self, local: Arc<dyn LocalReplica<u64, Job>>, shutdown: Shutdown) {
        let apply = async {
            for step in 0.. {
                {
                    let _held = self.lock.lock();
                    local.upsert(step % 8, job(u32::try_from(step % 1000).unwrap_or(0)));
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            () = apply => {}
            () = shutdown => {}
        }
    }
}

#[test]
fn notifications_never_come_under_an_entry_lock_so_a_locking_cluster_cannot_deadlock() {
    // On a runtime of its own, so a deadlock (which blocks the runtime's threads) fails the
    // test instead of hanging it. The wait is a guard, not a timing assertion.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let told = runtime.block_on(callers_and_a_locking_cluster());
        let _ = done.send(told);
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(told) => assert!(told > 20_000, "the cluster was told of the changes: {told}"),
        Err(_) => panic!("callers and the cluster's task deadlocked"),
    }
}

/// Two callers create, update and delete 8 ids 20 000 times each while the cache syncs them
/// every millisecond and a [`LockingCluster`] upserts them; returns how many notifications
/// the cluster had.
async fn callers_and_a_locking_cluster() -> u64 {
    let told = Arc::new(parking_lot::Mutex::new(0));
    let cache = AutoRefresh::<u64, Job>::builder(NAME)
        .sync(|batch: Batch<u64, Job>| async move {
            Ok(batch
                .into_iter()
                .map(|w| {
                    let (id, item) = w.into_parts();
                    ItemSyncResponse { id, item: job(item.step + 1), action: SyncAction::Update }
                })
                .collect())
        })
        .resync_period(Duration::from_millis(1))
        .parallelism(4)
        .cluster(LockingCluster { lock: Arc::clone(&told) })
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    let callers: Vec<_> = (0..2)
        .map(|caller| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for step in 0..20_000_u32 {
                    let id = u64::from(step % 8);
                    cache.get_or_create(id, job(0)).unwrap();
                    cache.update(&id, job(step));
                    if step % 100 == caller {
                        cache.delete(&id);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    running.shutdown().await;
    let told = *told.lock();
    told
}
