//! Refreshing AWS-Batch-like jobs with a describe call that takes up to 100 job ids per
//! request: the same jobs tracked one per request (the default), in batches of 100
//! (`FixedSizeBatches`), and in batches of up to 100 grouped by job queue (a batcher closure).
//!
//! Run it with `cargo run --example batched`.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, CreateBatchesFunc, FixedSizeBatches, Item,
    ItemSyncResponse, ItemWrapper, SingleItemBatches, SyncAction, SyncError,
};
use tokio::time::Instant;

/// The most job ids one `DescribeJobs` request accepts, as in AWS Batch.
const MAX_IDS_PER_REQUEST: usize = 100;
const JOBS: usize = 1_000;
/// The job queues, and how many of the jobs go to each.
const QUEUES: [(&str, usize); 3] = [("gpu", 150), ("cpu-spot", 600), ("cpu-on-demand", 250)];

/// AWS Batch's job states, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Submitted,
    Pending,
    Runnable,
    Starting,
    Running,
    Succeeded,
    Failed,
}

impl Status {
    /// The state after this one; `fails` picks how a running job ends.
    fn next(self, fails: bool) -> Self {
        match self {
            Self::Submitted => Self::Pending,
            Self::Pending => Self::Runnable,
            Self::Runnable => Self::Starting,
            Self::Starting => Self::Running,
            Self::Running if fails => Self::Failed,
            Self::Running | Self::Succeeded => Self::Succeeded,
            Self::Failed => Self::Failed,
        }
    }
}

#[derive(Clone, Debug)]
struct Job {
    queue: &'static str,
    status: Status,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        matches!(self.status, Status::Succeeded | Status::Failed)
    }
}

/// A stand-in for the AWS Batch API: every time a job is described it has moved one state on.
/// It counts requests, the ids described, and requests that spanned several queues.
#[derive(Default)]
struct FakeBatchApi {
    jobs: Mutex<HashMap<String, Status>>,
    requests: AtomicU64,
    described: AtomicU64,
    mixed_queue_requests: AtomicU64,
}

impl FakeBatchApi {
    /// `DescribeJobs`: the current status of each job, by id.
    async fn describe_jobs(&self, ids: &[(&str, &'static str)]) -> Result<Vec<Status>, SyncError> {
        if ids.len() > MAX_IDS_PER_REQUEST {
            // What the real API answers; the batchers below never let it happen.
            return Err(format!("ClientException: {} job ids, at most 100", ids.len()).into());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.described.fetch_add(ids.len() as u64, Ordering::Relaxed);
        let queues: HashSet<&str> = ids.iter().map(|(_, queue)| *queue).collect();
        if queues.len() > 1 {
            self.mixed_queue_requests.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await; // network and service time
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(ids
            .iter()
            .map(|(id, _)| {
                // One job in ten fails: those whose id ends in 7.
                let fails = id.ends_with('7');
                let status = jobs.entry((*id).to_owned()).or_insert(Status::Submitted);
                *status = status.next(fails);
                *status
            })
            .collect())
    }
}

/// The sync function: one `DescribeJobs` request per batch.
async fn describe(
    api: Arc<FakeBatchApi>,
    batch: Batch<String, Job>,
) -> Result<Vec<ItemSyncResponse<String, Job>>, SyncError> {
    let ids: Vec<(&str, &'static str)> =
        batch.iter().map(|w| (w.id().as_str(), w.item().queue)).collect();
    let statuses = api.describe_jobs(&ids).await?;
    Ok(batch
        .iter()
        .zip(statuses)
        .filter(|(w, status)| w.item().status != *status) // report only the changes
        .map(|(w, status)| ItemSyncResponse {
            id: w.id().clone(),
            item: Job { queue: w.item().queue, status },
            action: SyncAction::Update,
        })
        .collect())
}

/// A batcher for when each request must stay within one queue (say each queue lives in its own
/// account, with its own client): batches of up to 100 jobs of the same queue.
fn by_queue(items: Vec<ItemWrapper<String, Job>>) -> Result<Vec<Batch<String, Job>>, SyncError> {
    let mut per_queue: HashMap<&'static str, Vec<ItemWrapper<String, Job>>> = HashMap::new();
    for item in items {
        per_queue.entry(item.item().queue).or_default().push(item);
    }
    let mut batches = Vec::new();
    for (_queue, mut jobs) in per_queue {
        while !jobs.is_empty() {
            let rest = jobs.split_off(jobs.len().min(MAX_IDS_PER_REQUEST));
            batches.push(std::mem::replace(&mut jobs, rest));
        }
    }
    Ok(batches)
}

/// Tracks `JOBS` jobs with `batcher` until every one has succeeded or failed, and prints what
/// it cost.
async fn run(
    label: &str,
    batcher: impl CreateBatchesFunc<String, Job>,
) -> Result<(), Box<dyn std::error::Error>> {
    let api = Arc::new(FakeBatchApi::default());
    let sync = {
        let api = Arc::clone(&api);
        move |batch: Batch<String, Job>| describe(Arc::clone(&api), batch)
    };
    let cache: AutoRefresh<String, Job> = AutoRefresh::builder("aws-batch-jobs")
        .sync(sync)
        .create_batches(batcher)
        .resync_period(Duration::from_millis(50))
        .parallelism(10)
        .capacity(JOBS as u64)
        .build()?;

    // Submit the jobs before starting: the first sweep then sees them all at once and the
    // batcher can fill its batches.
    let ids: Vec<String> = (0..JOBS).map(|n| format!("job-{n}")).collect();
    let queues = QUEUES.iter().flat_map(|&(queue, jobs)| std::iter::repeat_n(queue, jobs));
    for (id, queue) in ids.iter().zip(queues) {
        cache.get_or_create(id.clone(), Job { queue, status: Status::Submitted })?;
    }

    let started = Instant::now();
    let running = cache.start(CancellationToken::new())?;
    let deadline = started + Duration::from_secs(10);
    let (mut succeeded, mut failed);
    loop {
        (succeeded, failed) = (0, 0);
        for id in &ids {
            match cache.get(id)?.status {
                Status::Succeeded => succeeded += 1,
                Status::Failed => failed += 1,
                _ => {}
            }
        }
        if succeeded + failed == JOBS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    running.shutdown().await;

    let requests = api.requests.load(Ordering::Relaxed);
    let described = api.described.load(Ordering::Relaxed);
    println!(
        "{label:<26} {requests:>5} requests for {described} job refreshes ({:>5.1} per \
         request, {:>2} spanning queues): {succeeded} succeeded, {failed} failed in {:.2?}",
        described as f64 / requests.max(1) as f64,
        api.mixed_queue_requests.load(Ordering::Relaxed),
        elapsed,
    );
    if succeeded + failed < JOBS {
        return Err(format!("{label}: only {} of {JOBS} jobs finished", succeeded + failed).into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{JOBS} jobs over {} queues, 5 state changes each; DescribeJobs takes at most \
         {MAX_IDS_PER_REQUEST} ids",
        QUEUES.len()
    );
    run("one job per request:", SingleItemBatches).await?;
    let hundred = NonZeroUsize::new(MAX_IDS_PER_REQUEST).ok_or("batch size is 0")?;
    run("FixedSizeBatches(100):", FixedSizeBatches::new(hundred)).await?;
    run("by queue, up to 100 each:", by_queue).await?;
    Ok(())
}
