//! Timeout, retry and a concurrency limit around a flaky, sometimes-hanging external service:
//! refresh goes on whatever the service does.
//!
//! Run it with `cargo run --example middleware`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::tower::concurrency::ConcurrencyLimitLayer;
use autorefresh::tower::retry::{retry_layer, BackoffRetryPolicy, Transient};
use autorefresh::tower::timeout::TimeoutLayer;
use autorefresh::{
    AutoRefresh, Batch, CancellationToken, Item, ItemSyncResponse, SyncAction, SyncError,
};

#[derive(Clone, Debug)]
struct Build {
    polls: u64,
}

impl Item for Build {
    fn is_terminal(&self) -> bool {
        false
    }
}

/// What the fake service did, call by call.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    hung: AtomicU64,
    flaky: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tally = Arc::new(Tally::default());
    let sync = {
        let tally = Arc::clone(&tally);
        move |batch: Batch<String, Build>| {
            let tally = Arc::clone(&tally);
            async move {
                let call = tally.calls.fetch_add(1, Ordering::Relaxed);
                match call % 10 {
                    // One call in ten hangs: the timeout drops it, the queue retries it.
                    3 => {
                        tally.hung.fetch_add(1, Ordering::Relaxed);
                        std::future::pending::<()>().await;
                    }
                    // One in ten fails with a transient error: the retry layer tries again.
                    7 => {
                        tally.flaky.fetch_add(1, Ordering::Relaxed);
                        let err: SyncError = Transient::new("connection reset").into();
                        return Err(err);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                Ok(batch
                    .into_iter()
                    .map(|w| {
                        let (id, build) = w.into_parts();
                        let item = Build { polls: build.polls + 1 };
                        ItemSyncResponse { id, item, action: SyncAction::Update }
                    })
                    .collect())
            }
        }
    };

    let cache: AutoRefresh<String, Build> = AutoRefresh::builder("builds")
        .sync(sync)
        // Outermost first, as tower's ServiceBuilder: retry around a per-attempt timeout,
        // and at most 4 calls in flight whatever the number of workers.
        .layer(retry_layer(BackoffRetryPolicy::new(2)))
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .layer(ConcurrencyLimitLayer::new(4))
        .parallelism(16)
        .resync_period(Duration::from_millis(100))
        .build()?;
    let running = cache.start(CancellationToken::new())?;
    for n in 0..50 {
        cache.get_or_create(format!("build-{n}"), Build { polls: 0 })?;
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    running.shutdown().await;

    let polls: Vec<u64> = (0..50)
        .map(|n| cache.get(&format!("build-{n}")).map(|b| b.polls))
        .collect::<Result<_, _>>()?;
    let calls = tally.calls.load(Ordering::Relaxed);
    println!(
        "{calls} sync calls: {} hung and timed out, {} failed transiently and were retried",
        tally.hung.load(Ordering::Relaxed),
        tally.flaky.load(Ordering::Relaxed),
    );
    println!(
        "every build refreshed: least {} polls, most {}",
        polls.iter().min().unwrap_or(&0),
        polls.iter().max().unwrap_or(&0)
    );
    Ok(())
}
