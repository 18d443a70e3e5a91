//! The engine's behaviour on paused tokio time: the Go test suite's cases and the Go defects
//! this crate fixes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, Error, FixedSizeBatches,
    ItemExponentialFailureRateLimiter, ItemSyncResponse, RateLimiter, SyncAction,
};
use common::{id, increment, load, settle, sync_with, Behaviour, Counter, Recorder, Service};
use tokio::sync::Notify;
use tokio::time::{advance, sleep};

fn builder(service: &Arc<Service>) -> autorefresh::AutoRefreshBuilder<String, Counter> {
    AutoRefresh::builder("test").sync(sync_with(service))
}

#[tokio::test(start_paused = true)]
async fn ten_items_converge_to_ten() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).resync_period(Duration::from_millis(10)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..10 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    sleep(Duration::from_millis(200)).await;
    for i in 0..10 {
        assert_eq!(cache.get(&id(i)).unwrap().value, 10, "item {i}");
    }
    assert!(service.seen_terminal().is_empty());
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn capacity_two_leaves_eight_not_found() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).capacity(2).build().unwrap();
    for i in 0..10 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    let missing = (0..10).filter(|&i| cache.get(&id(i)).is_err()).count();
    assert_eq!(missing, 8);
    assert_eq!(cache.len(), 2);
    // The newest two are the survivors.
    assert!(cache.get(&id(8)).is_ok() && cache.get(&id(9)).is_ok());
    assert!(matches!(cache.get(&id(0)), Err(Error::NotFound { .. })));
}

#[tokio::test(start_paused = true)]
async fn terminal_items_never_reach_sync() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).resync_period(Duration::from_millis(10)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..5 {
        cache.get_or_create(id(i), Counter::new(0)).unwrap(); // terminal from the start
    }
    for i in 5..10 {
        cache.get_or_create(id(i), Counter::new(3)).unwrap();
    }
    sleep(Duration::from_millis(500)).await;
    assert!(service.seen_terminal().is_empty());
    let attempted = service.attempted_ids();
    for i in 0..5 {
        assert!(!attempted.contains(&id(i)));
    }
    for i in 5..10 {
        assert_eq!(service.attempts(&id(i)).len(), 3, "synced until terminal, then never");
        assert_eq!(cache.get(&id(i)).unwrap().value, 3);
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn delete_delayed_keeps_the_item_until_the_next_sweep() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service).resync_period(Duration::from_secs(1)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.get_or_create(id(2), Counter::new(10)).unwrap();
    settle().await;

    cache.delete_delayed(&id(1)).unwrap();
    cache.delete_delayed(&id(404)).unwrap(); // absent: a no-op
    assert_eq!(cache.get(&id(1)).unwrap(), Counter::new(10));
    // get_or_create returns it and does not cancel the pending delete.
    assert_eq!(cache.get_or_create(id(1), Counter::new(99)).unwrap(), Counter::new(10));

    sleep(Duration::from_millis(1001)).await;
    assert!(cache.get(&id(1)).unwrap_err().is_not_found());
    assert!(cache.get(&id(2)).is_ok());
    assert_eq!(cache.len(), 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_pending_delete_is_not_synced() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service)
        .resync_period(Duration::from_secs(1))
        .sync_on_create(false)
        .build()
        .unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.delete_delayed(&id(1)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(service.calls(), 0);
    assert!(cache.get(&id(1)).is_err());
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_recreated_item_survives_the_old_delete_delayed() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service).resync_period(Duration::from_secs(1)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.delete_delayed(&id(1)).unwrap();
    cache.delete(&id(1));
    cache.get_or_create(id(1), Counter::new(20)).unwrap();
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(cache.get(&id(1)).unwrap(), Counter::new(20));
    running.shutdown().await;
}

/// Go's queue build-up test, without its defect: 100 always-failing items are each attempted,
/// never twice at once, and retried on the per-item exponential backoff.
#[tokio::test(start_paused = true)]
async fn failing_items_are_retried_on_their_backoff_never_concurrently() {
    let service = Service::new(Behaviour::Fail);
    let recorder = Arc::new(Recorder::default());
    let cache = builder(&service)
        .resync_period(Duration::from_secs(3600))
        .parallelism(10)
        .rate_limiter(ItemExponentialFailureRateLimiter::<String>::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
        ))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..100 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    sleep(Duration::from_millis(400)).await;

    assert!(service.overlaps().is_empty(), "ids sent twice at once: {:?}", service.overlaps());
    for i in 0..100 {
        let attempts = service.attempts(&id(i));
        // 5+10+20+40+80+160 = 315 ms of backoff: 7 attempts within 400 ms.
        assert_eq!(attempts.len(), 7, "item {i}");
        let gaps: Vec<u128> = attempts.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(gaps, [5, 10, 20, 40, 80, 160], "item {i}");
    }
    assert_eq!(load(&recorder.errors), 700);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_is_retried_before_the_next_period() {
    let service = Service::new(Behaviour::Fail);
    let cache = builder(&service).resync_period(Duration::from_secs(3600)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    settle().await;
    assert_eq!(service.calls(), 1);
    service.set_behaviour(Behaviour::Increment);
    sleep(Duration::from_millis(6)).await;
    assert_eq!(service.calls(), 2);
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_is_never_in_two_batches_while_sync_is_slower_than_the_period() {
    let service = Service::new(Behaviour::Increment);
    service.set_delay(Duration::from_millis(350));
    let cache = builder(&service)
        .resync_period(Duration::from_millis(100))
        .parallelism(10)
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..20 {
        cache.get_or_create(id(i), Counter::new(1000)).unwrap();
    }
    sleep(Duration::from_secs(10)).await;
    assert!(service.overlaps().is_empty(), "ids sent twice at once: {:?}", service.overlaps());
    for i in 0..20 {
        let attempts = service.attempts(&id(i));
        assert!(attempts.len() >= 5, "item {i} synced {} times", attempts.len());
        for gap in attempts.windows(2).map(|w| w[1] - w[0]) {
            assert!(gap >= Duration::from_millis(350), "item {i} re-sent while in flight");
        }
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sync_fails_its_batch_and_the_worker_goes_on() {
    let service = Service::new(Behaviour::Panic);
    let recorder = Arc::new(Recorder::default());
    let cache = builder(&service)
        .parallelism(1)
        .resync_period(Duration::from_secs(3600))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..10 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    sleep(Duration::from_millis(100)).await;
    let panics = load(&recorder.panics);
    assert!(panics >= 20, "every item attempted again after its backoff, got {panics} panics");
    service.set_behaviour(Behaviour::Increment);
    sleep(Duration::from_secs(2)).await;
    for i in 0..10 {
        assert!(cache.get(&id(i)).unwrap().value >= 1, "item {i} synced after the panics");
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_delete_during_a_sync_is_never_undone() {
    let release = Arc::new(Notify::new());
    let sync = {
        let release = Arc::clone(&release);
        move |batch: Batch<String, Counter>| {
            let release = Arc::clone(&release);
            async move {
                release.notified().await;
                Ok(increment(batch))
            }
        }
    };
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("test")
        .sync(sync)
        .resync_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.get_or_create(id(2), Counter::new(10)).unwrap();
    cache.get_or_create(id(3), Counter::new(10)).unwrap();
    settle().await;

    cache.delete(&id(1)); // deleted while in flight
    cache.delete(&id(2)); // deleted and created again while in flight
    cache.get_or_create(id(2), Counter::new(50)).unwrap();
    assert!(cache.update(&id(3), Counter { value: 7, target: 10 })); // updated while in flight
    release.notify_waiters();
    settle().await;

    assert!(cache.get(&id(1)).unwrap_err().is_not_found(), "no resurrection");
    assert_eq!(
        cache.get(&id(2)).unwrap().target,
        50,
        "the old refresh never lands on the new item"
    );
    assert_eq!(cache.get(&id(3)).unwrap().value, 7, "the caller's update wins");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_syncs_and_reads_go_on() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).resync_period(Duration::from_millis(10)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(1_000_000)).unwrap();
    sleep(Duration::from_millis(100)).await;
    running.shutdown().await;
    let calls = service.calls();
    let value = cache.get(&id(1)).unwrap().value;
    sleep(Duration::from_secs(10)).await;
    assert_eq!(service.calls(), calls);
    assert_eq!(cache.get(&id(1)).unwrap().value, value);
    cache.get_or_create(id(2), Counter::new(5)).unwrap();
    assert!(cache.get(&id(2)).is_ok());
    assert!(matches!(cache.start(CancellationToken::new()), Err(Error::AlreadyStarted { .. })));
}

#[tokio::test(start_paused = true)]
async fn shutdown_drops_a_hung_batch() {
    let service = Service::new(Behaviour::Increment);
    service.set_delay(Duration::from_secs(1_000_000));
    let cache = builder(&service).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    settle().await;
    assert_eq!(service.calls(), 1);
    running.shutdown().await; // returns although the sync never would
    assert_eq!(cache.get(&id(1)).unwrap().value, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_token_stops_the_refresh() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).resync_period(Duration::from_millis(10)).build().unwrap();
    let token = CancellationToken::new();
    let running = cache.start(token.clone()).unwrap();
    cache.get_or_create(id(1), Counter::new(1_000_000)).unwrap();
    sleep(Duration::from_millis(50)).await;
    token.cancel();
    running.stopped().await;
    let calls = service.calls();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(service.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn starting_twice_is_an_error() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    let err = cache.clone().start(CancellationToken::new()).unwrap_err();
    assert_eq!(err, Error::AlreadyStarted { name: "test".into() });
    running.shutdown().await;
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).build().unwrap();
    assert!(matches!(cache.start(CancellationToken::new()), Err(Error::NoRuntime { .. })));
    // The cache is usable without a runtime.
    cache.get_or_create(id(1), Counter::new(1)).unwrap();
    assert_eq!(cache.get(&id(1)).unwrap(), Counter::new(1));
}

#[test]
fn bad_configuration_is_an_error_naming_the_field() {
    let service = Service::new(Behaviour::Increment);
    let field = |b: autorefresh::AutoRefreshBuilder<String, Counter>| match b.build() {
        Err(Error::InvalidConfig { field, reason }) => {
            assert!(!reason.is_empty());
            field
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert_eq!(field(builder(&service).capacity(0)), "capacity");
    assert_eq!(field(builder(&service).parallelism(0)), "parallelism");
    assert_eq!(field(builder(&service).resync_period(Duration::ZERO)), "resync_period");
    assert_eq!(field(AutoRefresh::builder("no-sync")), "sync");
    let store = autorefresh::MokaStore::new(10).unwrap();
    assert_eq!(field(builder(&service).store(store).capacity(5)), "capacity");
    let err = builder(&service).parallelism(0).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cache configuration: `parallelism` must be at least 1, got 0"
    );
}

#[tokio::test(start_paused = true)]
async fn sync_on_create_syncs_at_once_and_can_be_turned_off() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service).resync_period(Duration::from_secs(3600)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    settle().await;
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    running.shutdown().await;

    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service)
        .resync_period(Duration::from_secs(3600))
        .sync_on_create(false)
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    sleep(Duration::from_secs(60)).await;
    assert_eq!(cache.get(&id(1)).unwrap().value, 0, "waits for the next sweep");
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn items_created_before_start_are_synced_once_it_runs() {
    let service = Service::new(Behaviour::Increment);
    let cache = builder(&service)
        .resync_period(Duration::from_secs(3600))
        .sync_on_create(false)
        .build()
        .unwrap();
    for i in 0..5 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    advance(Duration::from_secs(10)).await;
    assert_eq!(service.calls(), 0);
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    for i in 0..5 {
        assert_eq!(cache.get(&id(i)).unwrap().value, 1);
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn get_or_create_never_replaces() {
    let service = Service::new(Behaviour::Increment);
    let recorder = Arc::new(Recorder::default());
    let cache = builder(&service).metrics(Arc::clone(&recorder)).build().unwrap();
    assert_eq!(cache.get_or_create(id(1), Counter::new(5)).unwrap(), Counter::new(5));
    assert_eq!(cache.get_or_create(id(1), Counter::new(9)).unwrap(), Counter::new(5));
    assert_eq!(cache.get(&id(1)).unwrap(), Counter::new(5));
    assert!(cache.get(&id(2)).is_err());
    assert!(!cache.update(&id(2), Counter::new(1)), "update never inserts");
    assert!(cache.get(&id(2)).is_err());
    // Hits: the second get_or_create and the get of item-1; misses: the create and two gets.
    assert_eq!((load(&recorder.hits), load(&recorder.misses)), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn responses_for_ids_outside_the_batch_are_ignored_and_counted() {
    let recorder = Arc::new(Recorder::default());
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("test")
        .sync(|batch: Batch<String, Counter>| async move {
            let mut responses: Vec<_> = batch
                .into_iter()
                .map(|w| {
                    let (id, mut item) = w.into_parts();
                    item.value += 1;
                    ItemSyncResponse { id, item, action: SyncAction::Update }
                })
                .collect();
            responses.push(ItemSyncResponse {
                id: "stranger".to_string(),
                item: Counter::new(1),
                action: SyncAction::Update,
            });
            Ok(responses)
        })
        .resync_period(Duration::from_secs(3600))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    settle().await;
    assert_eq!(load(&recorder.ignored), 1);
    assert!(cache.get(&"stranger".to_string()).is_err(), "never inserted by a sync");
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn background_refresh_does_not_count_as_use() {
    let service = Service::new(Behaviour::Increment);
    let recorder = Arc::new(Recorder::default());
    let cache = builder(&service)
        .capacity(3)
        .resync_period(Duration::from_millis(10))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for name in ["a", "b", "c"] {
        cache.get_or_create(name.to_string(), Counter::new(1_000)).unwrap();
    }
    cache.get(&"a".to_string()).unwrap();
    sleep(Duration::from_millis(200)).await; // b and c are refreshed many times, never read
    assert!(cache.get(&"c".to_string()).unwrap().value >= 10);
    cache.get_or_create("d".to_string(), Counter::new(1_000)).unwrap();
    assert!(cache.get(&"b".to_string()).is_err(), "b was the least recently used by callers");
    for name in ["a", "c", "d"] {
        assert!(cache.get(&name.to_string()).is_ok(), "{name}");
    }
    assert_eq!(load(&recorder.evictions), 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_evicted_item_in_flight_is_not_resurrected_and_leaves_the_queue() {
    let service = Service::new(Behaviour::Increment);
    service.set_delay(Duration::from_millis(100));
    let cache =
        builder(&service).capacity(1).resync_period(Duration::from_secs(3600)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    settle().await;
    cache.get_or_create(id(2), Counter::new(10)).unwrap(); // evicts item-1 while in flight
    sleep(Duration::from_millis(300)).await;
    assert!(cache.get(&id(1)).is_err());
    assert_eq!(cache.get(&id(2)).unwrap().value, 1);
    assert_eq!(cache.len(), 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn batches_follow_the_batcher_and_each_item_is_synced_once_per_sweep() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service)
        .create_batches(FixedSizeBatches::new(std::num::NonZeroUsize::new(10).unwrap()))
        .resync_period(Duration::from_secs(1))
        .sync_on_create(false)
        .capacity(1000)
        .build()
        .unwrap();
    for i in 0..95 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    let mut sizes = service.batch_sizes();
    sizes.sort_unstable();
    assert_eq!(sizes.len(), 10);
    assert_eq!(sizes.iter().sum::<usize>(), 95);
    assert_eq!(sizes[0], 5);
    sleep(Duration::from_millis(1000)).await;
    settle().await;
    assert_eq!(service.batch_sizes().len(), 20, "one more sweep, one more round");
    for i in 0..95 {
        assert_eq!(service.attempts(&id(i)).len(), 2);
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batcher_error_or_panic_retries_its_items() {
    let failures = Arc::new(AtomicUsize::new(0));
    let service = Service::new(Behaviour::Increment);
    let recorder = Arc::new(Recorder::default());
    let batcher = {
        let failures = Arc::clone(&failures);
        move |items: Vec<autorefresh::ItemWrapper<String, Counter>>| match failures
            .fetch_add(1, Ordering::SeqCst)
        {
            0 => Err("batcher refused".into()),
            1 => panic!("batcher panicked on purpose"),
            _ => Ok(items.into_iter().map(|w| vec![w]).collect()),
        }
    };
    let cache = builder(&service)
        .create_batches(batcher)
        .resync_period(Duration::from_secs(3600))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(load(&recorder.errors), 1);
    assert_eq!(load(&recorder.panics), 1);
    assert_eq!(cache.get(&id(1)).unwrap().value, 1, "synced after two retries");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refresh_in_flight_leaves_an_item_pending_delete_as_it_was() {
    let service = Service::new(Behaviour::Increment);
    service.set_delay(Duration::from_millis(100));
    let cache = builder(&service).resync_period(Duration::from_secs(1)).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    settle().await;
    assert_eq!(service.calls(), 1);
    cache.delete_delayed(&id(1)).unwrap();
    sleep(Duration::from_millis(200)).await;
    assert_eq!(cache.get(&id(1)).unwrap().value, 0, "its previous state until the sweep");
    sleep(Duration::from_secs(1)).await;
    assert!(cache.get(&id(1)).is_err());
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_a_delete_leaves_no_limiter_state() {
    let service = Service::new(Behaviour::Fail);
    service.set_delay(Duration::from_millis(100));
    let limiter = Arc::new(ItemExponentialFailureRateLimiter::<String>::default());
    let cache = builder(&service)
        .resync_period(Duration::from_secs(3600))
        .rate_limiter(Arc::clone(&limiter))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.get_or_create(id(2), Counter::new(10)).unwrap();
    settle().await;
    cache.delete(&id(1)); // while its failing batch is in flight
    sleep(Duration::from_millis(150)).await;
    assert_eq!(limiter.tracked_items(), 1, "only item-2, which is still cached, is tracked");
    cache.delete(&id(2)); // while it waits for its retry
    assert_eq!(limiter.tracked_items(), 0);
    running.shutdown().await;
}

/// A hand-written `SyncFunc` that panics before it returns its future.
struct PanicsEagerly;

impl autorefresh::SyncFunc<String, Counter> for PanicsEagerly {
    fn sync<'a, 'async_trait>(
        &'a self,
        _batch: Batch<String, Counter>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = autorefresh::SyncResult<String, Counter>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'a: 'async_trait,
        Self: 'async_trait,
    {
        panic!("panicked before returning a future")
    }
}

#[tokio::test(start_paused = true)]
async fn a_sync_that_panics_before_its_future_does_not_kill_the_worker() {
    let recorder = Arc::new(Recorder::default());
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("test")
        .sync(PanicsEagerly)
        .parallelism(1)
        .resync_period(Duration::from_secs(3600))
        .metrics(Arc::clone(&recorder))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.get_or_create(id(2), Counter::new(10)).unwrap();
    sleep(Duration::from_millis(50)).await;
    assert!(load(&recorder.panics) >= 6, "both items retried on the one worker");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn limiter_state_is_forgotten_after_a_success_or_a_terminal_state() {
    let service = Service::new(Behaviour::Fail);
    let limiter = Arc::new(ItemExponentialFailureRateLimiter::<String>::default());
    let cache = builder(&service)
        .resync_period(Duration::from_secs(3600))
        .rate_limiter(Arc::clone(&limiter))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.get_or_create(id(2), Counter::new(10)).unwrap();
    sleep(Duration::from_millis(20)).await;
    assert_eq!(limiter.tracked_items(), 2);
    assert!(limiter.num_requeues(&id(1)) >= 2);

    // item-2 becomes terminal while it waits for its retry; item-1 then succeeds.
    assert!(cache.update(&id(2), Counter { value: 10, target: 10 }));
    service.set_behaviour(Behaviour::Increment);
    sleep(Duration::from_secs(60)).await;
    assert_eq!(cache.get(&id(1)).unwrap().value, 1);
    assert_eq!(limiter.tracked_items(), 0);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn responses_in_any_order_reach_their_own_items() {
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("order")
        .sync(|batch: Batch<String, Counter>| async move {
            // Every other item, in reverse, each set to its own number.
            Ok(batch
                .into_iter()
                .rev()
                .filter(|w| w.id().trim_start_matches("item-").parse::<u32>().unwrap() % 2 == 0)
                .map(|w| {
                    let (id, mut item) = w.into_parts();
                    item.value = id.trim_start_matches("item-").parse().unwrap();
                    ItemSyncResponse { id, item, action: SyncAction::Update }
                })
                .collect())
        })
        .create_batches(FixedSizeBatches::new(std::num::NonZeroUsize::new(50).unwrap()))
        .sync_on_create(false)
        .resync_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..100 {
        cache.get_or_create(id(i), Counter::new(1_000)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    for i in 0..100 {
        let expected = if i % 2 == 0 { i as u32 } else { 0 };
        assert_eq!(cache.get(&id(i)).unwrap().value, expected, "item {i}");
    }
    running.shutdown().await;
}
