//! Change notifications on paused time: `subscribe`, `wait_terminal`, the `updates()`
//! broadcast, and a sync function's `SyncAction::Delete`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{AutoRefresh, Batch, CancellationToken, Error, ItemSyncResponse, SyncAction};
use common::{id, settle, sync_with, watched, Behaviour, Counter, Service};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);

fn cache(service: &Arc<Service>) -> AutoRefresh<String, Counter> {
    AutoRefresh::builder("notify").sync(sync_with(service)).resync_period(PERIOD).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn many_subscribers_on_one_id_all_see_every_step_to_terminal() {
    let service = Service::new(Behaviour::Increment);
    let cache = cache(&service);
    cache.get_or_create(id(1), Counter::new(5)).unwrap();
    let receivers: Vec<_> = (0..50).map(|_| cache.subscribe(&id(1)).unwrap()).collect();
    assert_eq!(watched(&cache), 1, "one sender however many subscribers");
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let mut seen = vec![rx.borrow_and_update().value];
                while rx.changed().await.is_ok() {
                    let value = rx.borrow_and_update().value;
                    seen.push(value);
                    if value == 5 {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    let running = cache.start(CancellationToken::new()).unwrap();
    for task in tasks {
        // Each step is one sync, a period apart: a watcher sees all of them.
        assert_eq!(task.await.unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }
    assert_eq!(cache.get(&id(1)).unwrap().value, 5);
    // The receivers are gone and the item is terminal (never changes again): the next sweep
    // drops its sender.
    assert_eq!(watched(&cache), 1);
    sleep(PERIOD + PERIOD / 2).await;
    assert_eq!(watched(&cache), 0);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_dropped_mid_stream_leaves_the_others_and_its_sender_is_cleaned_up() {
    let service = Service::new(Behaviour::Increment);
    let cache = cache(&service);
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    let mut kept = cache.subscribe(&id(1)).unwrap();
    let dropped = cache.subscribe(&id(1)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();

    kept.changed().await.unwrap();
    assert_eq!(kept.borrow_and_update().value, 1);
    drop(dropped);
    sleep(PERIOD * 3 + PERIOD / 2).await; // three sweeps later
    assert!(kept.has_changed().unwrap());
    assert_eq!(kept.borrow_and_update().value, 4);
    assert_eq!(watched(&cache), 1);

    // Every receiver gone: the sender goes at the next change.
    drop(kept);
    assert_eq!(watched(&cache), 1);
    sleep(PERIOD).await;
    assert_eq!(watched(&cache), 0);
    // And a new subscriber starts from the current value.
    let fresh = cache.subscribe(&id(1)).unwrap();
    assert_eq!(fresh.borrow().value, cache.get(&id(1)).unwrap().value);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn subscribe_and_wait_terminal_on_unknown_or_terminal_ids() {
    let service = Service::new(Behaviour::Increment);
    let cache = cache(&service);
    assert!(cache.subscribe(&id(1)).unwrap_err().is_not_found());
    assert!(cache.wait_terminal(&id(1)).await.unwrap_err().is_not_found());
    // Already terminal: at once, without a start.
    cache.get_or_create(id(2), Counter { value: 3, target: 3 }).unwrap();
    assert_eq!(cache.wait_terminal(&id(2)).await.unwrap().value, 3);
    assert_eq!(watched(&cache), 0, "a finished wait leaves no sender behind");
    // The caller's update resolves it too.
    cache.get_or_create(id(3), Counter::new(1)).unwrap();
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.wait_terminal(&id(3)).await }
    });
    settle().await;
    assert!(!waiter.is_finished());
    assert!(cache.update(&id(3), Counter { value: 1, target: 1 }));
    assert_eq!(waiter.await.unwrap().unwrap().value, 1);
}

#[tokio::test(start_paused = true)]
async fn wait_terminal_racing_with_delete_errors() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = cache(&service);
    let running = cache.start(CancellationToken::new()).unwrap();
    for n in 0..3 {
        cache.get_or_create(id(n), Counter::new(1)).unwrap();
    }
    let waiters: Vec<_> = (0..3)
        .map(|n| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.wait_terminal(&id(n)).await })
        })
        .collect();
    sleep(PERIOD * 2 + PERIOD / 2).await; // between sweeps
    assert!(waiters.iter().all(|w| !w.is_finished()));

    cache.delete(&id(0));
    cache.delete_delayed(&id(1)).unwrap();
    settle().await;
    assert!(waiters[0].is_finished(), "delete ends the wait at once");
    assert!(!waiters[1].is_finished(), "delete_delayed waits for the sweep");
    sleep(PERIOD).await;
    let mut results = Vec::new();
    for waiter in waiters.into_iter().take(2) {
        results.push(waiter.await.unwrap());
    }
    assert!(results.iter().all(|r| matches!(r, Err(Error::NotFound { .. }))), "{results:?}");
    assert_eq!(cache.get(&id(2)).unwrap().value, 0);
    assert_eq!(watched(&cache), 1, "the deleted ids' senders are gone");

    // A delete racing a wait on the same tick, many times over: every wait ends.
    for round in 10..60 {
        cache.get_or_create(id(round), Counter::new(1)).unwrap();
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.wait_terminal(&id(round)).await })
        };
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
        cache.delete(&id(round));
        assert!(waiter.await.unwrap().unwrap_err().is_not_found());
    }
    assert_eq!(watched(&cache), 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn eviction_closes_the_evicted_items_channel() {
    let service = Service::new(Behaviour::Unchanged);
    let cache: AutoRefresh<String, Counter> =
        AutoRefresh::builder("notify").sync(sync_with(&service)).capacity(1).build().unwrap();
    cache.get_or_create(id(1), Counter::new(1)).unwrap();
    let mut rx = cache.subscribe(&id(1)).unwrap();
    cache.get_or_create(id(2), Counter::new(1)).unwrap(); // evicts id(1)
    assert!(rx.changed().await.is_err());
    assert_eq!(watched(&cache), 0);
}

#[tokio::test(start_paused = true)]
async fn a_re_created_id_has_a_new_channel() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = cache(&service);
    cache.get_or_create(id(1), Counter::new(5)).unwrap();
    let mut old = cache.subscribe(&id(1)).unwrap();
    cache.delete(&id(1));
    cache.get_or_create(id(1), Counter::new(7)).unwrap();
    let mut new = cache.subscribe(&id(1)).unwrap();
    assert!(old.changed().await.is_err());
    assert_eq!(new.borrow_and_update().target, 7);
    assert!(cache.update(&id(1), Counter { value: 2, target: 7 }));
    new.changed().await.unwrap();
    assert_eq!(new.borrow().value, 2);
}

#[tokio::test(start_paused = true)]
async fn updates_carries_sync_updates_and_caller_updates() {
    let service = Service::new(Behaviour::Increment);
    let cache = cache(&service);
    let mut updates = cache.updates();
    cache.get_or_create(id(1), Counter::new(2)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 3).await;
    assert_eq!(updates.recv().await.unwrap(), (id(1), Counter { value: 1, target: 2 }));
    assert_eq!(updates.recv().await.unwrap(), (id(1), Counter { value: 2, target: 2 }));
    assert!(matches!(updates.try_recv(), Err(TryRecvError::Empty)));
    assert!(cache.update(&id(1), Counter { value: 9, target: 10 }));
    assert_eq!(updates.recv().await.unwrap(), (id(1), Counter { value: 9, target: 10 }));
    assert!(!cache.update(&id(2), Counter::new(1)), "an absent id is not an update");
    assert!(matches!(updates.try_recv(), Err(TryRecvError::Empty)));
    running.shutdown().await;
}

/// Runs 200 items to a target of 5 steps and returns when all are terminal, in periods.
async fn periods_to_finish(cache: &AutoRefresh<String, Counter>) -> u32 {
    for n in 0..200 {
        cache.get_or_create(id(n), Counter::new(5)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    let mut periods = 0;
    while !(0..200).all(|n| cache.get(&id(n)).unwrap().value == 5) {
        sleep(PERIOD).await;
        periods += 1;
    }
    running.shutdown().await;
    periods
}

#[tokio::test(start_paused = true)]
async fn a_slow_updates_consumer_lags_and_never_slows_the_sync() {
    let baseline_service = Service::new(Behaviour::Increment);
    let baseline = periods_to_finish(&cache(&baseline_service)).await;

    let service = Service::new(Behaviour::Increment);
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("notify")
        .sync(sync_with(&service))
        .resync_period(PERIOD)
        .updates_capacity(16)
        .build()
        .unwrap();
    let mut never_reads = cache.updates();
    let mut slow = cache.updates();
    let slow_reader = tokio::spawn(async move {
        let (mut received, mut missed) = (0_u64, 0_u64);
        loop {
            match slow.recv().await {
                Ok(_) => {
                    received += 1;
                    sleep(Duration::from_millis(100)).await; // far slower than the workers
                }
                Err(RecvError::Lagged(n)) => missed += n,
                Err(RecvError::Closed) => return (received, missed),
            }
        }
    });
    let periods = periods_to_finish(&cache).await;
    assert_eq!(periods, baseline, "the consumers did not slow the refresh");
    assert_eq!(service.calls(), baseline_service.calls());

    // 200 items x 5 steps were sent; the one that never read kept only the last 16.
    match never_reads.try_recv() {
        Err(TryRecvError::Lagged(n)) => assert_eq!(n, 1000 - 16),
        other => panic!("expected a lag, got {other:?}"),
    }
    let mut kept = 0;
    while never_reads.try_recv().is_ok() {
        kept += 1;
    }
    assert_eq!(kept, 16);

    drop(cache); // the last sender: the slow reader sees the channel closed
    let (received, missed) = slow_reader.await.unwrap();
    assert_eq!(received + missed, 1000);
    assert!(missed > 0, "the slow reader lagged");
}

/// A sync function that answers `Delete` for ids listed in `gone`, `Update` (+1) otherwise,
/// after `delay`.
fn deleting_sync(
    gone: Arc<Vec<String>>,
    delay: Duration,
    calls: Arc<AtomicUsize>,
) -> impl Fn(Batch<String, Counter>) -> common::SyncFuture + Send + Sync + 'static {
    move |batch| {
        let gone = Arc::clone(&gone);
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            sleep(delay).await;
            Ok(batch
                .into_iter()
                .map(|w| {
                    let (id, mut item) = w.into_parts();
                    if gone.contains(&id) {
                        ItemSyncResponse { id, item, action: SyncAction::Delete }
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
async fn sync_action_delete_removes_the_item_and_tells_subscribers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(vec![id(1), id(2)]);
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("notify")
        .sync(deleting_sync(gone, Duration::ZERO, Arc::clone(&calls)))
        .resync_period(PERIOD)
        .build()
        .unwrap();
    for n in 0..3 {
        cache.get_or_create(id(n), Counter::new(100)).unwrap();
    }
    let mut rx = cache.subscribe(&id(1)).unwrap();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.wait_terminal(&id(2)).await })
    };
    settle().await;
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 3).await;
    assert!(rx.changed().await.is_err(), "the channel closed");
    assert!(waiter.await.unwrap().unwrap_err().is_not_found());
    assert!(cache.get(&id(1)).unwrap_err().is_not_found());
    assert!(cache.get(&id(2)).unwrap_err().is_not_found());
    assert_eq!(cache.len(), 1);
    assert!(cache.get(&id(0)).unwrap().value >= 3);
    assert_eq!(watched(&cache), 0);
    // Deleted ids are not synced again.
    let before = calls.load(Ordering::SeqCst);
    sleep(PERIOD * 2).await;
    assert_eq!(calls.load(Ordering::SeqCst) - before, 2, "only id(0), once a period");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn sync_action_delete_loses_to_a_caller_update_or_a_re_create() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(vec![id(1), id(2)]);
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("notify")
        .sync(deleting_sync(gone, Duration::from_millis(500), Arc::clone(&calls)))
        .resync_period(Duration::from_secs(60))
        .build()
        .unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    cache.get_or_create(id(2), Counter::new(100)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(100)).await; // both in flight
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let mut rx = cache.subscribe(&id(1)).unwrap();
    assert!(cache.update(&id(1), Counter { value: 7, target: 100 }));
    cache.delete(&id(2));
    cache.get_or_create(id(2), Counter::new(50)).unwrap();
    sleep(Duration::from_millis(200)).await; // the new id(2) is in flight too
    sleep(Duration::from_millis(300)).await; // the first answers came back
    assert_eq!(cache.get(&id(1)).unwrap().value, 7, "the caller's update won");
    assert!(rx.has_changed().unwrap(), "still open, and told of the update");
    assert_eq!(rx.borrow_and_update().value, 7);
    assert_eq!(cache.get(&id(2)).unwrap().target, 50, "the re-created item stays");
    running.shutdown().await;
}

/// Subscribing races with updates from other threads: once the writers stop, every receiver
/// holds the item `get` returns (no update is missed between reading the item and
/// registering, and of two racing updates the later one is kept).
#[test]
fn receivers_end_on_the_latest_item_under_racing_updates_and_subscribes() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = cache(&service);
    for n in 0..8 {
        cache.get_or_create(id(n), Counter::new(u32::MAX)).unwrap();
    }
    let receivers = std::thread::scope(|scope| {
        for writer in 0..4_u32 {
            let cache = &cache;
            scope.spawn(move || {
                for step in 0..2_000 {
                    let item = Counter { value: step * 4 + writer, target: u32::MAX };
                    assert!(cache.update(&id((step % 8) as usize), item));
                }
            });
        }
        let subscribers: Vec<_> = (0..4)
            .map(|_| {
                let cache = &cache;
                scope.spawn(move || {
                    let mut receivers = Vec::new();
                    for round in 0..500 {
                        receivers.push((round % 8, cache.subscribe(&id(round % 8)).unwrap()));
                        if round % 3 == 0 {
                            receivers.swap_remove(0); // some go away mid-stream
                        }
                    }
                    receivers
                })
            })
            .collect();
        subscribers.into_iter().flat_map(|s| s.join().unwrap()).collect::<Vec<_>>()
    });
    for (n, receiver) in &receivers {
        assert_eq!(*receiver.borrow(), cache.get(&id(*n)).unwrap(), "item {n}");
    }
}
