//! Swapping the rate limiter that spaces out retries of failed items: a hand-written
//! `RateLimiter` (a fixed delay with jitter), then the provided `ItemFastSlowRateLimiter`.
//! The external system fails each item's first three syncs; the output shows when each
//! attempt happened.
//!
//! Run it with `cargo run --example custom_limiter`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, Item, ItemFastSlowRateLimiter, ItemSyncResponse,
    RateLimiter, SyncAction, SyncError,
};
use tokio::time::Instant;

/// How many times the external system fails each item before it answers.
const FAILURES_PER_ITEM: usize = 3;

#[derive(Clone, Debug)]
struct Payment {
    settled: bool,
}

impl Item for Payment {
    fn is_terminal(&self) -> bool {
        self.settled
    }
}

/// A hand-written limiter: every retry waits `delay`, give or take `jitter` (a fraction of it),
/// so that items that failed together do not all come back in the same instant. It counts
/// the retries of each id, and drops the count when the cache says `forget` (the item
/// succeeded or left the cache), so it never holds state for ids the cache no longer has.
struct JitteredDelay<K> {
    delay: Duration,
    jitter: f64,
    requeues: Mutex<HashMap<K, u32>>,
    random: RandomState,
}

impl<K> JitteredDelay<K> {
    fn new(delay: Duration, jitter: f64) -> Self {
        Self { delay, jitter, requeues: Mutex::new(HashMap::new()), random: RandomState::new() }
    }

    fn requeues(&self) -> MutexGuard<'_, HashMap<K, u32>> {
        self.requeues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tracked_ids(&self) -> usize {
        self.requeues().len()
    }
}

impl<K> RateLimiter<K> for JitteredDelay<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn when(&self, id: &K) -> Duration {
        let attempt = {
            let mut requeues = self.requeues();
            let count = requeues.entry(id.clone()).or_insert(0);
            *count += 1;
            *count
        };
        // A number in [0, 1) that differs per id, per attempt and per run (RandomState is
        // randomly keyed): no random-number crate needed.
        let unit = (self.random.hash_one((id, attempt)) >> 11) as f64 / (1_u64 << 53) as f64;
        self.delay.mul_f64(1.0 - self.jitter + 2.0 * self.jitter * unit)
    }

    fn forget(&self, id: &K) {
        self.requeues().remove(id);
    }

    fn num_requeues(&self, id: &K) -> u32 {
        self.requeues().get(id).copied().unwrap_or(0)
    }
}

/// When each sync attempt of each item happened, and whether it failed.
type Attempts = Arc<Mutex<HashMap<String, Vec<(Duration, bool)>>>>;

/// Tracks two payments through a payment API that fails each one's first syncs, with
/// `limiter` spacing the retries, and prints when each attempt ran.
async fn run(label: &str, limiter: impl RateLimiter<String>) -> Result<(), SyncError> {
    let attempts: Attempts = Arc::default();
    let epoch = Instant::now();
    let sync = {
        let attempts = Arc::clone(&attempts);
        move |batch: Batch<String, Payment>| {
            let attempts = Arc::clone(&attempts);
            async move {
                // One payment per batch (the default batcher).
                let mut log = attempts.lock().unwrap_or_else(PoisonError::into_inner);
                let mut responses = Vec::new();
                for w in batch {
                    let tries = log.entry(w.id().clone()).or_default();
                    let fails = tries.len() < FAILURES_PER_ITEM;
                    tries.push((epoch.elapsed(), fails));
                    if fails {
                        let err: SyncError = "payment API answered 503".into();
                        return Err(err);
                    }
                    let id = w.into_parts().0;
                    responses.push(ItemSyncResponse {
                        id,
                        item: Payment { settled: true },
                        action: SyncAction::Update,
                    });
                }
                Ok(responses)
            }
        }
    };
    let cache: AutoRefresh<String, Payment> = AutoRefresh::builder("payments")
        .sync(sync)
        .rate_limiter(limiter)
        // A long period: every attempt after the first is a retry paced by the limiter, not
        // a sweep (a sweep makes a waiting item due at once).
        .resync_period(Duration::from_secs(60))
        // And the first attempt is the first sweep's, at `start`: with sync on create, the
        // create would be another first attempt, racing with that sweep.
        .sync_on_create(false)
        .build()?;

    let ids = ["payment-1".to_owned(), "payment-2".to_owned()];
    for id in &ids {
        cache.get_or_create(id.clone(), Payment { settled: false })?;
    }
    let running = cache.start(CancellationToken::new())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut settled = 0;
        for id in &ids {
            settled += usize::from(cache.get(id)?.settled);
        }
        if settled == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{label}: the payments did not settle within 5 s").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown().await;

    println!("{label}");
    let log = attempts.lock().unwrap_or_else(PoisonError::into_inner);
    for id in &ids {
        let tries = log.get(id).map(Vec::as_slice).unwrap_or_default();
        // Times from the item's first attempt, and the wait before each retry.
        let first = tries.first().map_or(Duration::ZERO, |(at, _)| *at);
        let mut previous = first;
        let line: Vec<String> = tries
            .iter()
            .map(|&(at, failed)| {
                let outcome = if failed { "fail" } else { "ok" };
                let waited = at - previous;
                previous = at;
                format!(
                    "{outcome} at {:>3} ms (+{:>3})",
                    (at - first).as_millis(),
                    waited.as_millis()
                )
            })
            .collect();
        println!("  {id}: {}", line.join(", "));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), SyncError> {
    let jittered = Arc::new(JitteredDelay::new(Duration::from_millis(100), 0.2));
    // `Arc<L>` is a limiter too: we keep a handle to look inside after the run.
    run("JitteredDelay (hand-written): 100 ms +/- 20% per retry", Arc::clone(&jittered)).await?;
    println!("  ids it still tracks after both succeeded: {}", jittered.tracked_ids());

    let fast_slow = Arc::new(ItemFastSlowRateLimiter::new(
        Duration::from_millis(20),
        Duration::from_millis(300),
        2,
    ));
    run(
        "ItemFastSlowRateLimiter: 20 ms for the first 2 retries, then 300 ms",
        Arc::clone(&fast_slow),
    )
    .await?;
    println!("  ids it still tracks after both succeeded: {}", fast_slow.tracked_items());
    Ok(())
}
