//! Terminal expiry on paused time: off by default, removal after the TTL and not before (from
//! a refresh, a creation or a caller's update), told once as `TerminalExpired`; and its
//! configuration.

mod common;

use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, AutoRefreshBuilder, AutoRefreshConfig, CancellationToken, Error, RemovalCause,
};
use common::{counter, id, listening_builder, sync_with, told, Behaviour, Counter, Service, Told};
use tokio::time::sleep;

const PERIOD: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_millis(2500);

fn builder(service: &Arc<Service>) -> (AutoRefreshBuilder<String, Counter>, Told) {
    listening_builder("terminal-ttl", service, PERIOD)
}

#[tokio::test(start_paused = true)]
async fn terminal_items_stay_by_default() {
    let service = Service::new(Behaviour::Increment);
    let (builder, removed) = builder(&service);
    let cache = builder.build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(1)).unwrap();
    cache.get_or_create(id(2), counter(3, 3)).unwrap();
    sleep(PERIOD * 100).await;
    assert_eq!(cache.get(&id(1)).unwrap(), counter(1, 1));
    assert_eq!(cache.get(&id(2)).unwrap(), counter(3, 3));
    assert!(told(&removed).is_empty());
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_made_terminal_by_a_refresh_or_created_terminal_goes_after_the_ttl_not_before() {
    let service = Service::new(Behaviour::Increment);
    let (builder, removed) = builder(&service);
    let cache = builder.terminal_ttl(TTL).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    // Terminal at 0 s: by its sync on create, and by creation.
    cache.get_or_create(id(1), Counter::new(1)).unwrap();
    cache.get_or_create(id(2), counter(3, 3)).unwrap();
    // Terminal at 2 s, at its third sync: on create, then the sweeps at 1 s and 2 s.
    cache.get_or_create(id(3), Counter::new(3)).unwrap();
    let mut rx = cache.subscribe(&id(1)).unwrap();

    // Sweeps at 1 s and 2 s: younger than the TTL.
    sleep(Duration::from_millis(2900)).await;
    assert!(cache.get(&id(1)).is_ok() && cache.get(&id(2)).is_ok());
    assert!(told(&removed).is_empty());

    // The sweep at 3 s: 3 s ≥ 2.5 s.
    sleep(Duration::from_millis(200)).await;
    assert!(cache.get(&id(1)).unwrap_err().is_not_found());
    assert!(cache.get(&id(2)).unwrap_err().is_not_found());
    assert_eq!(*rx.borrow_and_update(), counter(1, 1));
    assert!(rx.changed().await.is_err(), "subscribers see the channel closed");
    let mut seen = told(&removed);
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            (id(1), counter(1, 1), RemovalCause::TerminalExpired),
            (id(2), counter(3, 3), RemovalCause::TerminalExpired),
        ]
    );

    // id(3) became terminal at its third sync (2 s): still there at 4.9 s, gone at 5.1 s.
    assert_eq!(cache.get(&id(3)).unwrap(), counter(3, 3));
    sleep(Duration::from_millis(1800)).await;
    assert!(cache.get(&id(3)).is_ok());
    sleep(Duration::from_millis(200)).await;
    assert!(cache.get(&id(3)).unwrap_err().is_not_found());
    assert_eq!(told(&removed).len(), 3);
    assert_eq!(told(&removed)[2], (id(3), counter(3, 3), RemovalCause::TerminalExpired));

    sleep(PERIOD * 10).await;
    assert_eq!(told(&removed).len(), 3, "each told once");
    assert!(cache.is_empty());
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_callers_update_to_terminal_starts_the_clock() {
    // Failing syncs never refresh the item: its last refresh time stays at its creation.
    let service = Service::new(Behaviour::Fail);
    let (builder, removed) = builder(&service);
    let cache = builder.terminal_ttl(TTL).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(5)).unwrap();
    sleep(Duration::from_millis(10_100)).await;
    assert!(cache.update(&id(1), counter(5, 5)));

    // Terminal since 10.1 s: the sweeps at 11 s and 12 s keep it, the one at 13 s removes it.
    sleep(Duration::from_millis(2800)).await;
    assert_eq!(cache.get(&id(1)).unwrap(), counter(5, 5));
    sleep(Duration::from_millis(200)).await;
    assert!(cache.get(&id(1)).unwrap_err().is_not_found());
    assert_eq!(told(&removed), vec![(id(1), counter(5, 5), RemovalCause::TerminalExpired)]);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_item_updated_back_to_non_terminal_is_kept() {
    let service = Service::new(Behaviour::Unchanged);
    let (builder, removed) = builder(&service);
    let cache = builder.terminal_ttl(TTL).build().unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), counter(1, 1)).unwrap();
    sleep(Duration::from_millis(2000)).await;
    assert!(cache.update(&id(1), counter(0, 1)));
    sleep(PERIOD * 10).await;
    assert_eq!(cache.get(&id(1)).unwrap(), counter(0, 1));
    assert!(told(&removed).is_empty());
    running.shutdown().await;
}

#[test]
fn a_zero_ttl_is_an_error_naming_the_field() {
    let service = Service::new(Behaviour::Unchanged);
    let err = AutoRefresh::<String, Counter>::builder("terminal-ttl")
        .sync(sync_with(&service))
        .terminal_ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "terminal_ttl", .. }), "{err}");
}

#[test]
fn the_config_reads_terminal_ttl_as_a_human_duration() {
    let config: AutoRefreshConfig = toml::from_str(r#"terminal_ttl = "5m""#).unwrap();
    assert_eq!(config.terminal_ttl, Some(Duration::from_secs(300)));
    let config: AutoRefreshConfig = serde_yaml::from_str("terminal_ttl: 1h 30m").unwrap();
    assert_eq!(config.terminal_ttl, Some(Duration::from_secs(5400)));
    assert_eq!(AutoRefreshConfig::default().terminal_ttl, None, "off by default");
    let round_trip: AutoRefreshConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(round_trip, config);

    let service = Service::new(Behaviour::Unchanged);
    let zero: AutoRefreshConfig = toml::from_str(r#"terminal_ttl = "0s""#).unwrap();
    let err = AutoRefresh::<String, Counter>::builder("terminal-ttl")
        .sync(sync_with(&service))
        .config(zero)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "terminal_ttl", .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_configured_ttl_expires_terminal_items() {
    let service = Service::new(Behaviour::Increment);
    let config: AutoRefreshConfig =
        toml::from_str("resync_period = \"1s\"\nterminal_ttl = \"2500ms\"").unwrap();
    let cache = AutoRefresh::<String, Counter>::builder("terminal-ttl")
        .sync(sync_with(&service))
        .config(config)
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    cache.get_or_create(id(1), Counter::new(1)).unwrap();
    sleep(Duration::from_millis(2900)).await;
    assert!(cache.get(&id(1)).is_ok());
    sleep(Duration::from_millis(200)).await;
    assert!(cache.get(&id(1)).unwrap_err().is_not_found());
    running.shutdown().await;
}
