//! Adaptive refresh on paused time: an item that keeps syncing unchanged is synced 1, 2, 4,
//! 8… periods apart up to the cap; a changed value or a caller's update brings it back to
//! every period; off by default; and its configuration.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, AutoRefreshConfig, Batch, CancellationToken, Error,
    ItemSyncResponse, SyncAction,
};
use common::{counter, id, sync_with, Behaviour, Counter, Service, SyncFuture};
use tokio::time::{sleep, Instant};

const PERIOD: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(16);

fn builder(service: &Arc<Service>) -> AutoRefreshBuilder<String, Counter> {
    AutoRefresh::builder("adaptive")
        .sync(sync_with(service))
        .resync_period(PERIOD)
        .sync_on_create(false)
}

/// The gaps between `attempts`, in whole periods.
fn gaps(attempts: &[Instant]) -> Vec<u64> {
    attempts
        .windows(2)
        .map(|w| {
            let gap = w[1] - w[0];
            assert_eq!(gap.as_nanos() % PERIOD.as_nanos(), 0, "a sync off the sweep grid: {gap:?}");
            u64::try_from(gap.as_nanos() / PERIOD.as_nanos()).unwrap()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn unchanged_syncs_grow_one_two_four_eight_periods_apart_up_to_the_cap() {
    // The first sync changes the item (streak 0); every later one answers `Unchanged`.
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let sync = {
        let times = Arc::clone(&times);
        move |batch: Batch<String, Counter>| -> SyncFuture {
            let first = {
                let mut times = times.lock().unwrap();
                times.push(Instant::now());
                times.len() == 1
            };
            let responses = batch
                .into_iter()
                .map(|w| {
                    let (id, mut item) = w.into_parts();
                    let action = if first {
                        item.value += 1;
                        SyncAction::Update
                    } else {
                        SyncAction::Unchanged
                    };
                    ItemSyncResponse { id, item, action }
                })
                .collect();
            Box::pin(async move { Ok(responses) })
        }
    };
    let cache = AutoRefresh::builder("adaptive")
        .sync(sync)
        .resync_period(PERIOD)
        .sync_on_create(false)
        .adaptive_refresh(MAX)
        .build()
        .unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 80 + PERIOD / 2).await;
    let times = times.lock().unwrap().clone();
    // Synced at 0 (updated), 1, 3, 7, 15, 31, 47, 63, 79.
    assert_eq!(gaps(&times), [1, 2, 4, 8, 16, 16, 16, 16]);
    assert_eq!(cache.get(&id(1)).unwrap(), counter(1, 100));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_response_counts_as_unchanged_and_sync_on_create_starts_the_streak() {
    let service = Service::new(Behaviour::Unchanged); // answers nothing
    let cache = builder(&service).sync_on_create(true).adaptive_refresh(MAX).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    sleep(PERIOD * 50 + PERIOD / 2).await;
    // On create at 0, then 2, 6, 14, 30, 46.
    assert_eq!(gaps(&service.attempts(&id(1))), [2, 4, 8, 16, 16]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_update_from_the_sync_brings_the_item_back_to_every_period() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service).adaptive_refresh(MAX).build().unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    // Synced at 0, 2, 6, 14, 30: waiting 16 periods, to 46.
    sleep(PERIOD * 40 + PERIOD / 2).await;
    assert_eq!(service.attempts(&id(1)).len(), 5);
    service.set_behaviour(Behaviour::Increment);
    sleep(PERIOD * 10).await;
    let attempts = service.attempts(&id(1));
    // Still waiting at 40.5: its next sync, at 46, is the one that changes it; then every
    // period.
    assert_eq!(gaps(&attempts), [2, 4, 8, 16, 16, 1, 1, 1, 1]);
    assert_eq!(cache.get(&id(1)).unwrap(), counter(5, 100));

    // Unchanged again: the streak starts over from one.
    service.set_behaviour(Behaviour::Unchanged);
    sleep(PERIOD * 20).await;
    let attempts = service.attempts(&id(1));
    assert_eq!(gaps(&attempts[9..]), [1, 2, 4, 8]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_callers_update_brings_the_item_back_to_every_period() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service).adaptive_refresh(MAX).build().unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    // Synced at 0, 2, 6, 14, 30; the next would be at 46.
    sleep(PERIOD * 32 + PERIOD / 2).await;
    assert_eq!(service.attempts(&id(1)).len(), 5);
    assert!(cache.update(&id(1), counter(7, 100)));
    // The next sweep (33) syncs it: its streak was reset; unchanged again, 2 and 4 later.
    sleep(PERIOD * 7).await;
    let attempts = service.attempts(&id(1));
    assert_eq!(gaps(&attempts), [2, 4, 8, 16, 3, 2, 4]);
    assert_eq!(cache.get(&id(1)).unwrap(), counter(7, 100));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn off_by_default_every_item_is_synced_every_period() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service).build().unwrap();
    for i in 0..3 {
        cache.get_or_create(id(i), Counter::new(100)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(PERIOD * 20 + PERIOD / 2).await;
    for i in 0..3 {
        assert_eq!(gaps(&service.attempts(&id(i))), [1; 20]);
    }
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_is_retried_as_before_and_keeps_the_streak() {
    let service = Service::new(Behaviour::Unchanged);
    let cache = builder(&service).adaptive_refresh(MAX).build().unwrap();
    cache.get_or_create(id(1), Counter::new(100)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    // Synced at 0, 2, 6 (streak 3: next at 14).
    sleep(PERIOD * 10).await;
    assert_eq!(service.attempts(&id(1)).len(), 3);
    service.set_behaviour(Behaviour::Fail);
    sleep(PERIOD * 4 + PERIOD / 2).await; // the sync at 14 fails; retries follow at once
    let failed = service.attempts(&id(1)).len();
    assert!(failed > 4, "retried after the failure: {failed} attempts");
    service.set_behaviour(Behaviour::Unchanged);
    sleep(PERIOD * 2).await; // a retry succeeds, unchanged: streak 4, next 16 periods later
    let settled = service.attempts(&id(1)).len();
    assert!(settled > failed);
    sleep(PERIOD * 12).await;
    assert_eq!(service.attempts(&id(1)).len(), settled, "the streak was kept");
    running.shutdown().await;
}

#[test]
fn a_max_interval_shorter_than_the_period_is_an_error_naming_the_field_and_value() {
    let service = Service::new(Behaviour::Unchanged);
    let err = builder(&service).adaptive_refresh(Duration::from_millis(500)).build().unwrap_err();
    match err {
        Error::InvalidConfig { field, reason } => {
            assert_eq!(field, "adaptive_max_interval");
            assert!(reason.contains("500ms") && reason.contains("1s"), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    // Equal to the period is allowed (it changes nothing).
    assert!(builder(&service).adaptive_refresh(PERIOD).build().is_ok());

    let config: AutoRefreshConfig =
        toml::from_str("resync_period = \"10s\"\nadaptive_max_interval = \"5s\"").unwrap();
    assert_eq!(config.adaptive_max_interval, Some(Duration::from_secs(5)));
    let err = builder(&service).config(config).build().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "adaptive_max_interval", .. }), "{err:?}");
    let config: AutoRefreshConfig = toml::from_str("adaptive_max_interval = \"8m\"").unwrap();
    assert!(builder(&service).config(config).build().is_ok());
    assert_eq!(AutoRefreshConfig::default().adaptive_max_interval, None);
}
