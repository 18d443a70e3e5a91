//! What the engine reports to its `Metrics` observer, on paused time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{AutoRefresh, CancellationToken, Metrics, SyncFailureKind};
use common::{id, sync_with, Behaviour, Counter, Service};
use tokio::time::sleep;

#[derive(Clone, Debug, PartialEq)]
enum Event {
    Hit,
    Miss,
    Size(usize),
    Synced(usize),
    Failed(SyncFailureKind, usize),
    Added(usize),
    Depth(usize),
    QueueLatency(Duration),
    Retried(usize),
    Unfinished(Duration, Duration),
    Staleness(Duration),
    AgeAtSync(Duration),
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Events {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Metrics for Events {
    fn cache_hit(&self) {
        self.push(Event::Hit);
    }
    fn cache_miss(&self) {
        self.push(Event::Miss);
    }
    fn size(&self, items: usize) {
        self.push(Event::Size(items));
    }
    fn batch_synced(&self, items: usize, _elapsed: Duration) {
        self.push(Event::Synced(items));
    }
    fn sync_error(&self, kind: SyncFailureKind, items: usize) {
        self.push(Event::Failed(kind, items));
    }
    fn queue_added(&self, items: usize) {
        self.push(Event::Added(items));
    }
    fn queue_depth(&self, ready: usize) {
        self.push(Event::Depth(ready));
    }
    fn queue_latency(&self, waited: Duration) {
        self.push(Event::QueueLatency(waited));
    }
    fn retried(&self, items: usize) {
        self.push(Event::Retried(items));
    }
    fn unfinished_work(&self, total: Duration, longest: Duration) {
        self.push(Event::Unfinished(total, longest));
    }
    fn staleness(&self, oldest: Duration) {
        self.push(Event::Staleness(oldest));
    }
    fn age_at_sync(&self, age: Duration) {
        self.push(Event::AgeAtSync(age));
    }
}

fn cache(
    service: &Arc<Service>,
    events: &Arc<Events>,
    parallelism: usize,
) -> AutoRefresh<String, Counter> {
    AutoRefresh::builder("events")
        .sync(sync_with(service))
        .resync_period(Duration::from_secs(1))
        .parallelism(parallelism)
        .metrics(Arc::clone(events))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_healthy_cache_reports_sizes_adds_syncs_and_small_staleness() {
    let service = Service::new(Behaviour::Increment);
    let events = Arc::new(Events::default());
    let cache = cache(&service, &events, 1);
    cache.get_or_create(id(1), Counter::new(1000)).unwrap();
    cache.get_or_create(id(2), Counter::new(1000)).unwrap();
    cache.get(&id(1)).unwrap();
    assert!(cache.get(&id(3)).is_err());
    assert_eq!(
        events.take(),
        [Event::Miss, Event::Added(1), Event::Miss, Event::Added(1), Event::Hit, Event::Miss]
    );

    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(3500)).await;
    let events = events.take();
    let sizes: Vec<_> = events.iter().filter(|e| matches!(e, Event::Size(_))).collect();
    assert_eq!(sizes, [&Event::Size(2); 4], "one per sweep: at 0, 1, 2 and 3 s");
    let synced = events.iter().filter(|e| **e == Event::Synced(1)).count();
    assert_eq!(synced, 8, "two items, four sweeps");
    for event in &events {
        match event {
            Event::Staleness(age) | Event::AgeAtSync(age) => {
                assert!(*age <= Duration::from_secs(1), "{event:?}")
            }
            Event::QueueLatency(waited) => assert!(waited.is_zero(), "{event:?}"),
            Event::Failed(..) | Event::Retried(_) => panic!("nothing failed: {event:?}"),
            _ => {}
        }
    }
    assert!(events.contains(&Event::Unfinished(Duration::ZERO, Duration::ZERO)));
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failures_show_as_errors_retries_and_growing_staleness() {
    let service = Service::new(Behaviour::Fail);
    let events = Arc::new(Events::default());
    let cache = cache(&service, &events, 1);
    cache.get_or_create(id(1), Counter::new(1000)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(10_500)).await;
    let events = events.take();
    assert!(events.contains(&Event::Failed(SyncFailureKind::Error, 1)));
    assert!(events.contains(&Event::Retried(1)));
    let stalest = events
        .iter()
        .filter_map(|e| if let Event::Staleness(age) = e { Some(*age) } else { None })
        .max()
        .unwrap();
    assert_eq!(stalest, Duration::from_secs(10), "never synced since its creation");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_batch_shows_as_unfinished_work_and_queue_latency() {
    let service = Service::new(Behaviour::Increment);
    service.set_delay(Duration::from_millis(5_500));
    let events = Arc::new(Events::default());
    let cache = cache(&service, &events, 1);
    cache.get_or_create(id(1), Counter::new(1000)).unwrap();
    cache.get_or_create(id(2), Counter::new(1000)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_secs(6)).await;
    let events = events.take();
    assert!(
        events.contains(&Event::Unfinished(Duration::from_secs(5), Duration::from_secs(5))),
        "{events:?}"
    );
    assert!(events.contains(&Event::QueueLatency(Duration::from_millis(5_500))), "item-2 waited");
    assert!(events.contains(&Event::Depth(1)), "item-2 waited while item-1 ran");
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn staleness_drops_to_zero_once_nothing_is_left_to_refresh() {
    let service = Service::new(Behaviour::Fail);
    let events = Arc::new(Events::default());
    let cache = cache(&service, &events, 1);
    cache.get_or_create(id(1), Counter::new(1)).unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    sleep(Duration::from_millis(5_500)).await;
    assert!(events.take().contains(&Event::Staleness(Duration::from_secs(5))));
    service.set_behaviour(Behaviour::Increment); // item-1 becomes terminal
    sleep(Duration::from_secs(2)).await;
    let last = events.take().into_iter().rfind(|e| matches!(e, Event::Staleness(_)));
    assert_eq!(last, Some(Event::Staleness(Duration::ZERO)));
    running.shutdown().await;
}
