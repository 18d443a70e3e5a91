//! The removal listener on paused time: each cause told exactly once with the item as it was
//! removed, a panicking or slow listener, and removals before start and after shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, Batch, CancellationToken, ItemSyncResponse, RemovalCause,
    SyncAction,
};
use common::{
    counter, id, listening_builder, settle, sync_with, told, Behaviour, BoxFuture, Counter,
    Service, Told,
};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);

fn builder(service: &Arc<Service>) -> (AutoRefreshBuilder<String, Counter>, Told) {
    listening_builder("removal", service, PERIOD)
}

#[tokio::test(start_paused = true)]
async fn delete_is_told_once_with_the_item_as_it_was() {
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.update(&id(1), counter(4, 10));
    cache.delete(&id(1));
    cache.delete(&id(1)); // already gone: nothing more
    cache.update(&id(1), counter(9, 10)); // absent: no effect
    settle().await;
    assert_eq!(told(&removed), vec![(id(1), counter(4, 10), RemovalCause::Deleted)]);
    sleep(PERIOD * 3).await;
    assert_eq!(told(&removed).len(), 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn delete_delayed_is_told_at_the_sweep_and_not_before() {
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.build().unwrap();
    cache.get_or_create(id(1), counter(2, 10)).unwrap();
    cache.get_or_create(id(2), counter(3, 10)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD / 10).await; // past the first sweep
    cache.delete_delayed(&id(1)).unwrap();
    cache.delete_delayed(&id(2)).unwrap();
    cache.delete(&id(2)); // deleted before the sweep: told as deleted, once
    settle().await;
    assert_eq!(told(&removed), vec![(id(2), counter(3, 10), RemovalCause::Deleted)]);
    assert!(cache.get(&id(1)).is_ok());
    sleep(PERIOD).await; // the next sweep
    assert_eq!(
        told(&removed),
        vec![
            (id(2), counter(3, 10), RemovalCause::Deleted),
            (id(1), counter(2, 10), RemovalCause::DeleteDelayed),
        ]
    );
    sleep(PERIOD * 3).await;
    assert_eq!(told(&removed).len(), 2);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn eviction_for_capacity_is_told_with_the_evicted_item() {
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.capacity(3).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for n in 0..3 {
        cache.get_or_create(id(n), counter(n as u32, 10)).unwrap();
    }
    cache.get(&id(0)).unwrap(); // id(1) is now the least recently used
    cache.get_or_create(id(3), counter(3, 10)).unwrap();
    settle().await;
    assert_eq!(told(&removed), vec![(id(1), counter(1, 10), RemovalCause::Evicted)]);
    assert_eq!(cache.len(), 3);
    sleep(PERIOD * 3).await;
    assert_eq!(told(&removed).len(), 1);
    running.shutdown().await;
}

/// A sync that answers `Delete` for the ids in `gone` (with a value that must not be told)
/// and increments the others.
fn deleting_sync(
    gone: Vec<String>,
) -> impl Fn(Batch<String, Counter>) -> BoxFuture<String, Counter> + Send + Sync + 'static {
    move |batch| {
        let gone = gone.clone();
        Box::pin(async move {
            Ok(batch
                .into_iter()
                .map(|w| {
                    let (id, mut item) = w.into_parts();
                    if gone.contains(&id) {
                        ItemSyncResponse { id, item: counter(99, 99), action: SyncAction::Delete }
                    } else {
                        item.value += 1;
                        ItemSyncResponse { id, item, action: SyncAction::Update }
                    }
                })
                .collect())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn sync_delete_is_told_once_with_the_cached_item() {
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.sync(deleting_sync(vec![id(1)])).build().unwrap();
    cache.get_or_create(id(1), counter(5, 10)).unwrap();
    cache.get_or_create(id(2), counter(5, 10)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 3).await;
    assert!(cache.get(&id(1)).unwrap_err().is_not_found());
    assert_eq!(told(&removed), vec![(id(1), counter(5, 10), RemovalCause::SyncDeleted)]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_listener_does_not_stop_the_next_removals() {
    let service = Service::new(Behaviour::Unchanged);
    let calls = Arc::new(AtomicUsize::new(0));
    let told: Told = Arc::default();
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("removal")
        .sync(sync_with(&service))
        .resync_period(PERIOD)
        .removal_listener({
            let (calls, told) = (Arc::clone(&calls), Arc::clone(&told));
            move |id, item, cause| {
                if calls.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                    panic!("listener bug");
                }
                told.lock().unwrap().push((id, item, cause));
            }
        })
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for n in 0..4 {
        cache.get_or_create(id(n), counter(0, 1)).unwrap();
        cache.delete(&id(n));
    }
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let ids: Vec<_> = told.lock().unwrap().iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(ids, vec![id(1), id(3)]);
    // The cache and the delivery task go on.
    cache.get_or_create(id(9), counter(0, 1)).unwrap();
    cache.delete(&id(9));
    cache.delete(&id(9));
    running.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn removals_before_start_are_told_once_started_and_after_shutdown_are_dropped() {
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.build().unwrap();
    cache.get_or_create(id(1), counter(1, 10)).unwrap();
    cache.delete(&id(1));
    settle().await;
    assert!(told(&removed).is_empty(), "not told before start");

    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    assert_eq!(told(&removed), vec![(id(1), counter(1, 10), RemovalCause::Deleted)]);

    // What is queued when shutdown is asked is still told.
    cache.get_or_create(id(2), counter(2, 10)).unwrap();
    cache.delete(&id(2));
    running.shutdown().await;
    assert_eq!(told(&removed).len(), 2);
    assert_eq!(told(&removed)[1], (id(2), counter(2, 10), RemovalCause::Deleted));

    cache.get_or_create(id(3), counter(3, 10)).unwrap();
    cache.delete(&id(3));
    settle().await;
    sleep(PERIOD * 3).await;
    assert_eq!(told(&removed).len(), 2, "removals after shutdown are dropped");
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn removals_by_the_engine_during_shutdown_are_told() {
    // Shutdown while sweeps remove delete-delayed items: every removal the engine made before
    // it ended is told.
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.build().unwrap();
    for n in 0..20 {
        cache.get_or_create(id(n), counter(0, 10)).unwrap();
        cache.delete_delayed(&id(n)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    tokio::task::yield_now().await; // the dispatcher's first sweep, then shut down at once
    running.shutdown().await;
    assert!(cache.is_empty());
    assert_eq!(told(&removed).len(), 20);
    assert!(told(&removed).iter().all(|(.., cause)| *cause == RemovalCause::DeleteDelayed));
}

/// The listener runs on its own task, never inline in a caller's call nor on a worker: a
/// delete returns before the listener is told, and syncs go on while removals wait.
#[tokio::test(start_paused = true)]
async fn the_listener_runs_neither_in_the_callers_nor_on_the_workers() {
    let service = Service::new(Behaviour::Increment);
    let told = Arc::new(AtomicUsize::new(0));
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("removal")
        .sync(sync_with(&service))
        .resync_period(Duration::from_millis(10))
        .removal_listener({
            let told = Arc::clone(&told);
            move |_id, _item, _cause| {
                told.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for n in 0..=1000 {
        cache.get_or_create(id(n), Counter::new(u32::MAX)).unwrap();
    }
    for n in 0..500 {
        cache.delete(&id(n));
    }
    assert_eq!(told.load(Ordering::SeqCst), 0, "no delete called the listener itself");
    sleep(Duration::from_millis(100)).await;
    assert_eq!(told.load(Ordering::SeqCst), 500);
    assert!(service.calls() >= 501 * 9, "the workers went on: {} calls", service.calls());
    running.shutdown().await;
}
