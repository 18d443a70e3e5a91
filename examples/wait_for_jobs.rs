//! Submits 100 simulated jobs and awaits them all with `wait_terminal`, instead of polling
//! `get`: each waiter wakes when the background refresh sees its job finish. The simulated
//! backend loses a few jobs, and the sync function reports them with `SyncAction::Delete`, so
//! their waits end with an error.
//!
//! Run it with `cargo run --example wait_for_jobs`; it ends by itself in about two seconds.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, Item, ItemSyncResponse, SyncAction, SyncError,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

const JOBS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug)]
struct Job {
    status: Status,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        matches!(self.status, Status::Succeeded | Status::Failed)
    }
}

/// Stands in for a batch system: job `n` starts 100 ms after submission and ends after a
/// duration derived from `n`; every 7th fails, and every 25th is lost (the backend forgets
/// it).
struct Backend {
    submitted: Mutex<HashMap<u64, Instant>>,
}

impl Backend {
    fn submit(&self, id: u64) {
        self.submitted.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Instant::now());
    }

    /// The job's status now, or `None` if the backend does not know it.
    fn describe(&self, id: u64) -> Option<Status> {
        let submitted = *self.submitted.lock().unwrap_or_else(|e| e.into_inner()).get(&id)?;
        let elapsed = submitted.elapsed();
        let runs_for = Duration::from_millis(200 + (id * 37) % 1300);
        Some(if id % 25 == 24 && elapsed > Duration::from_millis(300) {
            return None;
        } else if elapsed < Duration::from_millis(100) {
            Status::Queued
        } else if elapsed < runs_for {
            Status::Running
        } else if id % 7 == 6 {
            Status::Failed
        } else {
            Status::Succeeded
        })
    }

    /// One call describing a batch of jobs, as a batch API would.
    async fn describe_jobs(
        self: Arc<Self>,
        batch: Batch<u64, Job>,
    ) -> Result<Vec<ItemSyncResponse<u64, Job>>, SyncError> {
        tokio::time::sleep(Duration::from_millis(5)).await; // the network
        Ok(batch
            .into_iter()
            .map(|w| {
                let (id, job) = w.into_parts();
                match self.describe(id) {
                    Some(status) if status == job.status => {
                        ItemSyncResponse { id, item: job, action: SyncAction::Unchanged }
                    }
                    Some(status) => {
                        ItemSyncResponse { id, item: Job { status }, action: SyncAction::Update }
                    }
                    None => ItemSyncResponse { id, item: job, action: SyncAction::Delete },
                }
            })
            .collect())
    }
}

#[tokio::main]
async fn main() -> Result<(), autorefresh::Error> {
    let backend = Arc::new(Backend { submitted: Mutex::new(HashMap::new()) });
    let cache: AutoRefresh<u64, Job> = AutoRefresh::builder("jobs")
        .sync({
            let backend = Arc::clone(&backend);
            move |batch| Arc::clone(&backend).describe_jobs(batch)
        })
        .create_batches(autorefresh::FixedSizeBatches::new(
            NonZeroUsize::new(20).expect("not zero"),
        ))
        .resync_period(Duration::from_millis(100))
        .parallelism(4)
        .build()?;
    let running = cache.start(CancellationToken::new())?;

    // Count every change the cache applies, from a single broadcast receiver.
    let mut updates = cache.updates();
    let changes = tokio::spawn(async move {
        let mut changes = 0_u64;
        while updates.recv().await.is_ok() {
            changes += 1;
        }
        changes
    });

    let started = Instant::now();
    let mut waiters = JoinSet::new();
    for id in 0..JOBS {
        backend.submit(id);
        cache.get_or_create(id, Job { status: Status::Queued })?;
        let cache = cache.clone();
        waiters.spawn(async move { (id, cache.wait_terminal(&id).await) });
    }

    let (mut succeeded, mut failed, mut lost) = (0, 0, Vec::new());
    while let Some(joined) = waiters.join_next().await {
        match joined.expect("a waiter panicked") {
            (_, Ok(Job { status: Status::Succeeded })) => succeeded += 1,
            (_, Ok(_)) => failed += 1,
            (id, Err(err)) if err.is_not_found() => lost.push(id),
            (id, Err(err)) => panic!("job {id}: {err}"),
        }
    }
    lost.sort_unstable();
    println!(
        "{JOBS} jobs done in {:.1?}: {succeeded} succeeded, {failed} failed, {} lost by the backend {lost:?}",
        started.elapsed(),
        lost.len(),
    );
    println!("{} jobs left in the cache (the lost ones were removed)", cache.len());

    running.shutdown().await;
    drop(cache); // the last handle: the updates channel closes
    println!("{} status changes seen on `updates()`", changes.await.expect("counter panicked"));
    Ok(())
}
