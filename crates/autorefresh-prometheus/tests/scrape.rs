//! The one real HTTP test: install the global recorder, serve `/metrics` on an ephemeral
//! loopback port, call every `Metrics` method, scrape over TCP and check the text.
//!
//! It is the only test in this binary, since it installs the process-wide recorder. No time
//! passes in it: nothing waits on a clock.

use std::net::SocketAddr;
use std::time::Duration;

use autorefresh_core::{Metrics, SyncFailureKind};
use autorefresh_prometheus::{Error, Exporter, PrometheusMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the exporter");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
}

#[track_caller]
fn assert_line(body: &str, line: &str) {
    assert!(body.lines().any(|l| l == line), "no line `{line}` in:\n{body}");
}

#[tokio::test]
async fn scrape_over_http_shows_every_metric_with_its_value() {
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (jobs, exporter) = PrometheusMetrics::install("jobs", any_port).expect("install");
    let addr = exporter.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert_eq!(exporter.url(), format!("http://{addr}/metrics"));

    // A second install fails cleanly: the recorder is global.
    let again = PrometheusMetrics::install("other", any_port);
    assert!(matches!(again, Err(Error::RecorderAlreadyInstalled)), "{again:?}");

    // A second cache on the same recorder, registered so scrapes flush it.
    let builds = PrometheusMetrics::new("builds");
    exporter.register(&builds);

    for _ in 0..7 {
        jobs.cache_hit();
    }
    jobs.cache_miss();
    jobs.cache_miss();
    builds.cache_hit();
    jobs.eviction();
    jobs.size(12);
    jobs.batch_synced(4, Duration::from_millis(20));
    jobs.batch_synced(2, Duration::from_secs(3));
    jobs.sync_error(SyncFailureKind::Error, 3);
    jobs.sync_error(SyncFailureKind::Panic, 1);
    jobs.sync_error(SyncFailureKind::Timeout, 2);
    jobs.sync_error(SyncFailureKind::Timeout, 2);
    jobs.ignored_response();
    jobs.queue_added(6);
    jobs.queue_depth(5);
    jobs.queue_latency(Duration::from_millis(2));
    jobs.retried(3);
    jobs.unfinished_work(Duration::from_millis(1500), Duration::from_secs(1));
    jobs.staleness(Duration::from_secs(45));
    jobs.age_at_sync(Duration::from_secs(30));
    jobs.rate_limit_wait(Duration::from_millis(250));
    // Hits after the last flush: the scrape itself must flush them.
    jobs.cache_hit();
    builds.cache_hit();

    let (head, body) = http(addr, &get("/metrics")).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");

    for line in [
        r#"autorefresh_cache_hits_total{cache="jobs"} 8"#,
        r#"autorefresh_cache_hits_total{cache="builds"} 2"#,
        r#"autorefresh_cache_misses_total{cache="jobs"} 2"#,
        r#"autorefresh_cache_misses_total{cache="builds"} 0"#,
        r#"autorefresh_lru_evictions_total{cache="jobs"} 1"#,
        r#"autorefresh_size{cache="jobs"} 12"#,
        r#"autorefresh_sync_latency_seconds_count{cache="jobs"} 2"#,
        r#"autorefresh_sync_latency_seconds_sum{cache="jobs"} 3.02"#,
        r#"autorefresh_sync_latency_seconds_bucket{cache="jobs",le="0.025"} 1"#,
        r#"autorefresh_sync_latency_seconds_bucket{cache="jobs",le="2.5"} 1"#,
        r#"autorefresh_sync_latency_seconds_bucket{cache="jobs",le="5"} 2"#,
        r#"autorefresh_sync_latency_seconds_bucket{cache="jobs",le="+Inf"} 2"#,
        r#"autorefresh_synced_items_total{cache="jobs"} 6"#,
        r#"autorefresh_sync_errors_total{cache="jobs",kind="error"} 1"#,
        r#"autorefresh_sync_errors_total{cache="jobs",kind="panic"} 1"#,
        r#"autorefresh_sync_errors_total{cache="jobs",kind="timeout"} 2"#,
        r#"autorefresh_sync_failed_items_total{cache="jobs",kind="error"} 3"#,
        r#"autorefresh_sync_failed_items_total{cache="jobs",kind="panic"} 1"#,
        r#"autorefresh_sync_failed_items_total{cache="jobs",kind="timeout"} 4"#,
        r#"autorefresh_ignored_responses_total{cache="jobs"} 1"#,
        r#"autorefresh_workqueue_adds_total{cache="jobs"} 6"#,
        r#"autorefresh_workqueue_depth{cache="jobs"} 5"#,
        r#"autorefresh_workqueue_queue_duration_seconds_count{cache="jobs"} 1"#,
        r#"autorefresh_workqueue_queue_duration_seconds_sum{cache="jobs"} 0.002"#,
        r#"autorefresh_workqueue_queue_duration_seconds_bucket{cache="jobs",le="0.001"} 0"#,
        r#"autorefresh_workqueue_queue_duration_seconds_bucket{cache="jobs",le="0.01"} 1"#,
        r#"autorefresh_workqueue_retries_total{cache="jobs"} 3"#,
        r#"autorefresh_workqueue_unfinished_work_seconds{cache="jobs"} 1.5"#,
        r#"autorefresh_workqueue_longest_running_processor_seconds{cache="jobs"} 1"#,
        r#"autorefresh_staleness_seconds{cache="jobs"} 45"#,
        r#"autorefresh_age_at_sync_seconds_count{cache="jobs"} 1"#,
        r#"autorefresh_age_at_sync_seconds_sum{cache="jobs"} 30"#,
        r#"autorefresh_age_at_sync_seconds_bucket{cache="jobs",le="15"} 0"#,
        r#"autorefresh_age_at_sync_seconds_bucket{cache="jobs",le="30"} 1"#,
        r#"autorefresh_rate_limit_wait_seconds_count{cache="jobs"} 1"#,
        r#"autorefresh_rate_limit_wait_seconds_sum{cache="jobs"} 0.25"#,
        r#"autorefresh_rate_limit_wait_seconds_bucket{cache="jobs",le="0.25"} 1"#,
        "# TYPE autorefresh_cache_hits_total counter",
        "# TYPE autorefresh_size gauge",
        "# TYPE autorefresh_sync_latency_seconds histogram",
        "# HELP autorefresh_cache_hits_total Reads that found the id.",
    ] {
        assert_line(&body, line);
    }

    // Every metric line names its cache.
    for line in body.lines().filter(|l| l.starts_with("autorefresh_")) {
        assert!(line.contains(r#"cache="jobs""#) || line.contains(r#"cache="builds""#), "{line}");
    }

    // The routes around it.
    let (head, _) = http(addr, &get("/")).await;
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    let (head, _) = http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405 ") && head.contains("Allow: GET, HEAD"), "{head}");

    // A second scrape counts only what happened since: counters are cumulative.
    jobs.cache_hit();
    let (_, body) = http(addr, &get("/metrics")).await;
    assert_line(&body, r#"autorefresh_cache_hits_total{cache="jobs"} 9"#);

    // Binding a port in use is an error that names it; nothing else changes.
    let taken = Exporter::serve(exporter.handle().clone(), addr);
    match taken {
        Err(Error::Bind { addr: named, .. }) => assert_eq!(named, addr),
        other => panic!("expected a bind error, got {other:?}"),
    }

    exporter.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
}
