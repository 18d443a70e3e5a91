//! The Prometheus adapter end to end: a cache drives it, `/metrics` is scraped over real HTTP
//! on an ephemeral loopback port, and each figure is exactly what the test caused.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{AutoRefresh, Batch, CancellationToken, SyncError};
use autorefresh_prometheus::PrometheusMetrics;
use common::{id, Counter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CREATED: usize = 30;
const CAPACITY: u64 = 20;
const FAILURES: usize = 4;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test(start_paused = true)]
async fn a_scrape_shows_exactly_what_the_cache_did() {
    let (metrics, exporter) =
        PrometheusMetrics::install("scraped", "127.0.0.1:0".parse().unwrap()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let sync = {
        let calls = Arc::clone(&calls);
        move |batch: Batch<String, Counter>| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call < FAILURES {
                    let err: SyncError = "injected failure".into();
                    return Err(err);
                }
                let _ = batch;
                Ok(Vec::new())
            }
        }
    };
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("scraped")
        .sync(sync)
        .metrics(metrics)
        .capacity(CAPACITY)
        .resync_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();
    for i in 0..CREATED {
        cache.get_or_create(id(i), Counter::new(5)).unwrap(); // 30 misses, 10 evictions
    }
    for i in 10..CREATED {
        cache.get(&id(i)).unwrap(); // 20 hits
    }
    for i in 0..5 {
        assert!(cache.get(&id(i)).is_err()); // 5 misses: evicted
    }
    // Let the injected failures be retried until every item synced once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.shutdown().await;

    let text = scrape(exporter.local_addr()).await;
    let label = r#"{cache="scraped"}"#;
    assert_eq!(sample(&text, &format!("autorefresh_cache_hits_total{label}")), 20.0);
    assert_eq!(sample(&text, &format!("autorefresh_cache_misses_total{label}")), 35.0);
    assert_eq!(sample(&text, &format!("autorefresh_lru_evictions_total{label}")), 10.0);
    assert_eq!(
        sample(&text, r#"autorefresh_sync_errors_total{cache="scraped",kind="error"}"#),
        FAILURES as f64
    );
    assert_eq!(sample(&text, &format!("autorefresh_size{label}")), CAPACITY as f64);
    assert!(text.contains("autorefresh_sync_latency_seconds_bucket"), "{text}");
    assert!(text.contains("autorefresh_workqueue_adds_total"), "{text}");
    exporter.shutdown().await;
}
