//! The Go documentation's example, ported: a fake external service moves items from
//! Not-started to Started to Completed, and the cache keeps their status fresh.
//!
//! Run it with `cargo run --example quickstart`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{AutoRefresh, Batch, CancellationToken, Item, ItemSyncResponse, SyncAction};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExampleItemStatus {
    NotStarted,
    Started,
    Completed,
}

impl std::fmt::Display for ExampleItemStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotStarted => "Not-started",
            Self::Started => "Started",
            Self::Completed => "Completed",
        })
    }
}

#[derive(Clone, Debug)]
struct ExampleCacheItem {
    status: ExampleItemStatus,
}

impl Item for ExampleCacheItem {
    fn is_terminal(&self) -> bool {
        self.status == ExampleItemStatus::Completed
    }
}

/// Stands in for the external system: each look at a job advances it one state.
#[derive(Default)]
struct ExampleService {
    job_status: Mutex<HashMap<String, ExampleItemStatus>>,
}

impl ExampleService {
    fn get_status(&self, id: &str) -> ExampleItemStatus {
        let mut jobs = self.job_status.lock().unwrap_or_else(|e| e.into_inner());
        let status = jobs.entry(id.to_owned()).or_insert(ExampleItemStatus::NotStarted);
        *status = match *status {
            ExampleItemStatus::NotStarted => ExampleItemStatus::Started,
            _ => ExampleItemStatus::Completed,
        };
        *status
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // This cache suits keys created by the caller but processed by an external service, whose
    // progress we want to track without waiting on it.
    let service = Arc::new(ExampleService::default());

    // The sync function: asks the service for each item's status, and reports the changes.
    let sync = {
        let service = Arc::clone(&service);
        move |batch: Batch<String, ExampleCacheItem>| {
            let service = Arc::clone(&service);
            async move {
                let mut updated = Vec::with_capacity(batch.len());
                for wrapper in batch {
                    let (id, old) = wrapper.into_parts();
                    let status = service.get_status(&id);
                    if status != old.status {
                        updated.push(ItemSyncResponse {
                            id,
                            item: ExampleCacheItem { status },
                            action: SyncAction::Update,
                        });
                    }
                }
                Ok(updated)
            }
        }
    };

    // The resync period can be as short as we like; the cache is still bound by how long each
    // sync takes. The rate limiter (the default controller limiter here) spaces out retries.
    let resync_period = Duration::from_millis(1);
    let cache: AutoRefresh<String, ExampleCacheItem> = AutoRefresh::builder("my-cache")
        .sync(sync)
        .resync_period(resync_period)
        .parallelism(10)
        .capacity(100)
        .build()?;

    // Cancelling the token (or `running.shutdown()`) stops the refresh.
    let running = cache.start(CancellationToken::new())?;

    // Objects that go through a couple of state transitions to reach the final state.
    for id in ["item1", "item2"] {
        cache.get_or_create(
            id.to_owned(),
            ExampleCacheItem { status: ExampleItemStatus::NotStarted },
        )?;
    }

    // Let the cache go through a few refresh cycles, then check the status.
    tokio::time::sleep(resync_period * 10).await;
    match cache.get(&"item1".to_owned()) {
        Ok(item) => println!("Current status for item1 is {}", item.status),
        Err(err) if err.is_not_found() => println!("Item1 is no longer in the cache"),
        Err(err) => return Err(err.into()),
    }

    running.shutdown().await;
    Ok(())
}
