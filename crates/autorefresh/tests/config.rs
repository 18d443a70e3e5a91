//! `AutoRefreshConfig`: TOML and YAML, defaults, round trips and one clear error per field.

mod common;

use std::time::Duration;

use autorefresh::{AutoRefresh, AutoRefreshBuilder, AutoRefreshConfig, CancellationToken, Error};
use common::{id, settle, sync_with, Behaviour, Counter, Service};

const TOML: &str = r#"
resync_period = "10s"
parallelism = 20
capacity = 5000
sync_on_create = false
batch_size = 100
timeout = "1m 30s"
retry_attempts = 2

[limiter]
base_delay = "10ms"
max_delay = "5m"
qps = 50.0
burst = 200
"#;

const YAML: &str = r#"
resync_period: 10s
parallelism: 20
capacity: 5000
sync_on_create: false
batch_size: 100
timeout: 1m 30s
retry_attempts: 2
limiter:
  base_delay: 10ms
  max_delay: 5m
  qps: 50.0
  burst: 200
"#;

fn expected() -> AutoRefreshConfig {
    let mut config = AutoRefreshConfig::default();
    config.resync_period = Duration::from_secs(10);
    config.parallelism = 20;
    config.capacity = Some(5000);
    config.sync_on_create = false;
    config.batch_size = Some(100);
    config.timeout = Some(Duration::from_secs(90));
    config.retry_attempts = 2;
    config.limiter.base_delay = Duration::from_millis(10);
    config.limiter.max_delay = Duration::from_secs(300);
    config.limiter.qps = 50.0;
    config.limiter.burst = 200;
    config
}

#[test]
fn toml_and_yaml_read_the_same_settings() {
    assert_eq!(toml::from_str::<AutoRefreshConfig>(TOML).unwrap(), expected());
    assert_eq!(serde_yaml::from_str::<AutoRefreshConfig>(YAML).unwrap(), expected());
}

#[test]
fn settings_round_trip_through_both_formats() {
    let config = expected();
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains(r#"resync_period = "10s""#), "human-readable durations: {text}");
    assert_eq!(toml::from_str::<AutoRefreshConfig>(&text).unwrap(), config);
    let text = serde_yaml::to_string(&config).unwrap();
    assert_eq!(serde_yaml::from_str::<AutoRefreshConfig>(&text).unwrap(), config);
}

#[test]
fn an_empty_file_gives_the_builder_defaults() {
    let config: AutoRefreshConfig = toml::from_str("").unwrap();
    assert_eq!(config, AutoRefreshConfig::default());
    assert_eq!(config.resync_period, autorefresh::DEFAULT_RESYNC_PERIOD);
    assert_eq!(config.parallelism, autorefresh::DEFAULT_PARALLELISM);
    assert_eq!(config.capacity, None, "the builder's default capacity applies");
    assert!(config.sync_on_create);
    assert_eq!(config.timeout, None);
}

#[test]
fn unknown_fields_are_errors() {
    let err = toml::from_str::<AutoRefreshConfig>("parralelism = 3").unwrap_err();
    assert!(err.to_string().contains("parralelism"), "{err}");
    let err = serde_yaml::from_str::<AutoRefreshConfig>("limiter:\n  qbs: 3\n").unwrap_err();
    assert!(err.to_string().contains("qbs"), "{err}");
    assert!(toml::from_str::<AutoRefreshConfig>(r#"timeout = "soon""#).is_err());
}

fn builder(service: &std::sync::Arc<Service>) -> AutoRefreshBuilder<String, Counter> {
    AutoRefresh::builder("config").sync(sync_with(service))
}

#[test]
fn each_bad_value_names_its_field_and_value() {
    let service = Service::new(Behaviour::Increment);
    let error = |text: &str| {
        let config: AutoRefreshConfig = toml::from_str(text).unwrap();
        match builder(&service).config(config).build() {
            Err(Error::InvalidConfig { field, reason }) => (field, reason),
            other => panic!("expected InvalidConfig for {text:?}, got {other:?}"),
        }
    };
    assert_eq!(error("parallelism = 0").0, "parallelism");
    assert_eq!(error(r#"resync_period = "0s""#).0, "resync_period");
    assert_eq!(error("capacity = 0").0, "capacity");
    assert_eq!(error("batch_size = 0").0, "batch_size");
    assert_eq!(error(r#"timeout = "0s""#).0, "timeout");
    let (field, reason) = error("[limiter]\nqps = -5.0");
    assert_eq!(field, "limiter.qps");
    assert!(reason.contains("-5"), "{reason}");
    assert_eq!(error("[limiter]\nburst = 0").0, "limiter.burst");
    let (field, reason) = error("[limiter]\nbase_delay = \"10m\"\nmax_delay = \"1m\"");
    assert_eq!(field, "limiter.base_delay");
    assert!(reason.contains("600s"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_configured_cache_batches_as_told() {
    let service = Service::new(Behaviour::Increment);
    let config: AutoRefreshConfig =
        toml::from_str("batch_size = 10\nsync_on_create = false\ntimeout = \"5s\"").unwrap();
    let cache = builder(&service).config(config).build().unwrap();
    for i in 0..25 {
        cache.get_or_create(id(i), Counter::new(10)).unwrap();
    }
    let running = cache.start(CancellationToken::new()).unwrap();
    settle().await;
    let mut sizes = service.batch_sizes();
    sizes.sort_unstable();
    assert_eq!(sizes, [5, 10, 10]);
    running.shutdown().await;
}
