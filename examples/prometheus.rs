//! A cache of simulated jobs with its metrics served for Prometheus.
//!
//! Run it with `cargo run --example prometheus [ADDR] [SECONDS]`: it serves `/metrics` on
//! ADDR (default 127.0.0.1:9898) until Ctrl-C, or for SECONDS when given.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, Item, ItemSyncResponse, SyncAction, SyncError,
};
use autorefresh_prometheus::PrometheusMetrics;

#[derive(Clone, Debug)]
struct Job {
    progress: u32,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        self.progress >= 100
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9898").parse()?;
    let seconds: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let (metrics, exporter) = PrometheusMetrics::install("jobs", addr)?;
    println!("serving metrics at {}", exporter.url());

    // A flaky external system: one call in twenty fails.
    let calls = Arc::new(AtomicU64::new(0));
    let sync = {
        let calls = Arc::clone(&calls);
        move |batch: Batch<String, Job>| {
            let call = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if call % 20 == 19 {
                    let err: SyncError = "the job API answered 503".into();
                    return Err(err);
                }
                Ok(batch
                    .into_iter()
                    .map(|w| {
                        let (id, job) = w.into_parts();
                        let item = Job { progress: (job.progress + 7).min(100) };
                        ItemSyncResponse { id, item, action: SyncAction::Update }
                    })
                    .collect())
            }
        }
    };
    let cache: AutoRefresh<String, Job> = AutoRefresh::builder("jobs")
        .sync(sync)
        .metrics(metrics)
        .resync_period(Duration::from_secs(1))
        .parallelism(8)
        .capacity(500)
        .build()?;
    let running = cache.start(CancellationToken::new())?;

    // Submit a job every 10 ms and read a few back, forever (or for the given time).
    let submit = {
        let cache = cache.clone();
        async move {
            for n in 0_u64.. {
                cache.get_or_create(format!("job-{n}"), Job { progress: 0 })?;
                let _ = cache.get(&format!("job-{}", n / 2));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<(), autorefresh::Error>(())
        }
    };
    let stop = async {
        match seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        result = submit => result?,
        () = stop => {}
    }
    running.shutdown().await;
    println!("{} sync calls; {} jobs cached", calls.load(Ordering::Relaxed), cache.len());
    exporter.shutdown().await;
    Ok(())
}
