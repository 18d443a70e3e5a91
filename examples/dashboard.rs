//! 10 000 simulated batch jobs moving from Submitted to Running to Succeeded or Failed, tracked
//! by the cache and shown live in the terminal, with the cache's metrics served for
//! Prometheus. It ends once every job is terminal (or after 30 s), with a summary of the calls
//! made and the time the cache took to converge.
//!
//! Run it with `cargo run --example dashboard [HOLD_SECONDS]`: HOLD_SECONDS keeps `/metrics`
//! up that long after the end, for a look with curl. Without a terminal (piped output) the
//! bars are hidden and a plain progress line is printed every second instead.

use std::error::Error;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, Item, ItemSyncResponse, SyncAction,
    SyncError,
};
use autorefresh_prometheus::PrometheusMetrics;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const JOBS: u32 = 10_000;
const BATCH_SIZE: usize = 100;
const RESYNC_PERIOD: Duration = Duration::from_millis(250);
/// The dashboard gives up (and says so) if the cache has not converged by then.
const TIME_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Submitted,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug)]
struct Job {
    seq: u32,
    status: Status,
}

impl Item for Job {
    fn is_terminal(&self) -> bool {
        matches!(self.status, Status::Succeeded | Status::Failed)
    }
}

/// The external system: job `seq` waits in its queue, runs, then ends, on a fixed schedule
/// drawn from its number, measured from `epoch`. One describe call in 40 fails with a 503.
struct FakeScheduler {
    epoch: Instant,
    calls: AtomicU64,
    failed_calls: AtomicU64,
    described: AtomicU64,
}

/// A well-spread hash of `n` (splitmix64), so the schedule needs no random-number crate.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FakeScheduler {
    /// When job `seq` starts running and when it ends, from the epoch.
    fn schedule(seq: u32) -> (Duration, Duration) {
        let hash = mix(u64::from(seq));
        let starts = Duration::from_millis(hash % 500);
        let runs = Duration::from_millis(300 + (hash >> 16) % 1_500);
        (starts, starts + runs)
    }

    fn status_of(&self, seq: u32) -> Status {
        let (starts, ends) = Self::schedule(seq);
        let now = self.epoch.elapsed();
        if now < starts {
            Status::Submitted
        } else if now < ends {
            Status::Running
        } else if seq % 10 == 3 {
            Status::Failed
        } else {
            Status::Succeeded
        }
    }

    /// One describe call for a batch of jobs: their new states, for those that changed.
    async fn describe(
        &self,
        batch: Batch<String, Job>,
    ) -> Result<Vec<ItemSyncResponse<String, Job>>, SyncError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
        if call % 40 == 39 {
            self.failed_calls.fetch_add(1, Ordering::Relaxed);
            return Err("503 Service Unavailable".into()); // the cache retries these jobs
        }
        self.described.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(batch
            .into_iter()
            .filter_map(|w| {
                let status = self.status_of(w.item().seq);
                let (id, job) = w.into_parts();
                (status != job.status).then_some(ItemSyncResponse {
                    id,
                    item: Job { status, ..job },
                    action: SyncAction::Update,
                })
            })
            .collect())
    }
}

/// How many jobs the cache shows in each state.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    submitted: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
}

impl Counts {
    fn terminal(&self) -> u64 {
        self.succeeded + self.failed
    }
}

/// The live display: one bar per state, and a line of totals.
struct Display {
    multi: MultiProgress,
    bars: [ProgressBar; 4],
    totals: ProgressBar,
}

impl Display {
    fn new() -> Result<Self, Box<dyn Error>> {
        // Bars draw on stderr, and only when it is a terminal: otherwise they are hidden.
        let multi = MultiProgress::new();
        let style =
            ProgressStyle::with_template("{prefix:>10} [{bar:50.cyan/blue}] {pos:>5}/{len}")?
                .progress_chars("=> ");
        let bars = ["submitted", "running", "succeeded", "failed"].map(|state| {
            let bar = multi.add(ProgressBar::new(u64::from(JOBS)));
            bar.set_style(style.clone());
            bar.set_prefix(state);
            bar
        });
        let totals = multi.add(ProgressBar::new_spinner());
        totals.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
        Ok(Self { multi, bars, totals })
    }

    fn show(&self, counts: Counts, calls: u64, elapsed: Duration) {
        for (bar, count) in self.bars.iter().zip([
            counts.submitted,
            counts.running,
            counts.succeeded,
            counts.failed,
        ]) {
            bar.set_position(count);
        }
        self.totals.set_message(format!("{calls} describe calls, {:.1} s", elapsed.as_secs_f64()));
        self.totals.tick();
    }

    fn finish(&self) {
        // `abandon` keeps each bar where it is (`finish` would fill it).
        for bar in self.bars.iter().chain([&self.totals]) {
            bar.abandon();
        }
    }
}

/// A `/metrics` scrape over real HTTP, as Prometheus does it.
async fn scrape(addr: SocketAddr) -> Result<String, Box<dyn Error>> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    Ok(tokio::time::timeout(Duration::from_secs(5), request).await??)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let hold: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(0);

    // Port 0: the system picks a free one.
    let (metrics, exporter) = PrometheusMetrics::install("jobs", "127.0.0.1:0".parse()?)?;
    println!("tracking {JOBS} jobs; metrics at {}", exporter.url());

    let scheduler = Arc::new(FakeScheduler {
        epoch: Instant::now(),
        calls: AtomicU64::new(0),
        failed_calls: AtomicU64::new(0),
        described: AtomicU64::new(0),
    });
    let sync = {
        let scheduler = Arc::clone(&scheduler);
        move |batch: Batch<String, Job>| {
            let scheduler = Arc::clone(&scheduler);
            async move { scheduler.describe(batch).await }
        }
    };
    let batch_size = NonZeroUsize::new(BATCH_SIZE).ok_or("batch size is 0")?;
    let cache: AutoRefresh<String, Job> = AutoRefresh::builder("jobs")
        .sync(sync)
        .create_batches(FixedSizeBatches::new(batch_size))
        .metrics(metrics)
        .resync_period(RESYNC_PERIOD)
        .parallelism(8)
        .capacity(u64::from(JOBS))
        .build()?;

    let ids: Vec<String> = (0..JOBS).map(|seq| format!("job-{seq:05}")).collect();
    for (seq, id) in (0..JOBS).zip(&ids) {
        cache.get_or_create(id.clone(), Job { seq, status: Status::Submitted })?;
    }
    // The jobs were submitted when the scheduler's clock started: time convergence from there.
    let started = scheduler.epoch;
    let running = cache.start(CancellationToken::new())?;

    // The dashboard reads the cache, never the external system: every read is answered at
    // once from what the background refresh last saw.
    let display = Display::new()?;
    let plain = display.multi.is_hidden();
    let mut reads = 0_u64;
    let mut next_plain_line = started;
    let counts = loop {
        let mut counts = Counts::default();
        for id in &ids {
            match cache.get(id)?.status {
                Status::Submitted => counts.submitted += 1,
                Status::Running => counts.running += 1,
                Status::Succeeded => counts.succeeded += 1,
                Status::Failed => counts.failed += 1,
            }
        }
        reads += ids.len() as u64;
        let calls = scheduler.calls.load(Ordering::Relaxed);
        let done = counts.terminal() == u64::from(JOBS) || started.elapsed() > TIME_LIMIT;
        display.show(counts, calls, started.elapsed());
        if plain && (Instant::now() >= next_plain_line || done) {
            println!(
                "{:>5.1} s: {} submitted, {} running, {} succeeded, {} failed; {calls} calls",
                started.elapsed().as_secs_f64(),
                counts.submitted,
                counts.running,
                counts.succeeded,
                counts.failed,
            );
            next_plain_line += Duration::from_secs(1);
        }
        if done {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let converged_in = started.elapsed();
    display.finish();
    running.shutdown().await;

    let calls = scheduler.calls.load(Ordering::Relaxed);
    let failed_calls = scheduler.failed_calls.load(Ordering::Relaxed);
    let described = scheduler.described.load(Ordering::Relaxed);
    let last_end = (0..JOBS).map(|seq| FakeScheduler::schedule(seq).1).max().unwrap_or_default();
    let converged = counts.terminal() == u64::from(JOBS);
    println!(
        "{} in {:.2} s: {} succeeded, {} failed; the last job ended at {:.2} s, so the cache \
         lagged {:.2} s behind (resync period {:.2} s)",
        if converged { "converged" } else { "NOT converged" },
        converged_in.as_secs_f64(),
        counts.succeeded,
        counts.failed,
        last_end.as_secs_f64(),
        converged_in.saturating_sub(last_end).as_secs_f64(),
        RESYNC_PERIOD.as_secs_f64(),
    );
    println!(
        "{calls} describe calls ({failed_calls} failed and were retried) refreshed {described} \
         job states, {:.0} per call; the dashboard read the cache {reads} times",
        described as f64 / (calls - failed_calls).max(1) as f64,
    );

    let scraped = scrape(exporter.local_addr()).await?;
    let wanted = [
        "autorefresh_synced_items_total",
        "autorefresh_sync_errors_total",
        "autorefresh_workqueue_retries_total",
    ];
    for line in scraped.lines().filter(|line| wanted.iter().any(|name| line.starts_with(name))) {
        println!("  /metrics: {line}");
    }
    if hold > 0 {
        println!("serving {} for {hold} s more", exporter.url());
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    exporter.shutdown().await;
    if !converged {
        return Err(format!("the cache did not converge within {TIME_LIMIT:?}").into());
    }
    Ok(())
}
