//! Criterion micro-benchmarks of the hot paths: `get` hit, `get_or_create` hit and miss, and
//! one sweep of 100k items (single-item batches and batches of 100).
//!
//! `cargo bench -p autorefresh-bench` (add `-- get` to pick some). Measurement times are short
//! on purpose: the machine is small and shared; the benchmark program (`src/main.rs`) is the
//! reference for the workloads.

// Criterion's `iter_custom` needs wall-clock time, and the sweep bench waits on a real clock.
// The workspace forbids `Instant::now` so engine code goes through tokio's pausable clock.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autorefresh::{
    AutoRefresh, Batch, CancellationToken, FixedSizeBatches, NoDelayRateLimiter, SyncResult,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use tokio::sync::Notify;

const N: usize = 100_000;

// The item, ids and sync answer of the benchmark program, shared rather than copied.
#[path = "../src/common.rs"]
#[allow(dead_code, unreachable_pub)]
mod common;

use common::{bumped, id, Job};

const NEW: Job = Job::NEW;

/// Counts item-syncs down from a target and wakes the waiter when they are all done.
struct Sweep {
    remaining: AtomicU64,
    done: Notify,
}

async fn count_down(batch: Batch<String, Job>, sweep: Arc<Sweep>) -> SyncResult<String, Job> {
    let len = batch.len() as u64;
    if sweep.remaining.fetch_sub(len, Ordering::AcqRel) == len {
        sweep.done.notify_one();
    }
    Ok(bumped(batch))
}

/// A loaded cache whose sync answers at once; not started.
fn loaded(sweep: Option<Arc<Sweep>>, batch: usize) -> AutoRefresh<String, Job> {
    let mut builder = AutoRefresh::builder("bench")
        .sync(move |b: Batch<String, Job>| {
            let sweep = sweep.clone();
            async move {
                match sweep {
                    Some(sweep) => count_down(b, sweep).await,
                    None => Ok(bumped(b)),
                }
            }
        })
        .capacity(N as u64)
        .parallelism(10)
        .resync_period(Duration::from_secs(3600))
        .rate_limiter(NoDelayRateLimiter::new())
        .sync_on_create(false);
    if batch > 1 {
        builder = builder.create_batches(FixedSizeBatches::new(NonZeroUsize::new(batch).unwrap()));
    }
    let cache = builder.build().unwrap();
    for i in 0..N {
        cache.get_or_create(id(i), NEW).unwrap();
    }
    cache
}

fn reads(c: &mut Criterion) {
    let cache = loaded(None, 1);
    let keys: Vec<String> = (0..N).map(id).collect();
    let mut group = c.benchmark_group("read");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));

    let mut i = 0usize;
    group.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % N; // a stride that visits every key, not in insertion order
            black_box(cache.get(&keys[i]).unwrap())
        })
    });
    group.bench_function("get_or_create_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(cache.get_or_create(keys[i].clone(), NEW).unwrap())
        })
    });
    // New ids into the full cache: each one inserts and evicts the least recently used.
    let mut next = 0usize;
    group.bench_function("get_or_create_miss", |b| {
        b.iter_batched(
            || {
                next += 1;
                format!("new-{next}")
            },
            |key| black_box(cache.get_or_create(key, NEW).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn sweeps(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("sweep_100k");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for batch in [1usize, 100] {
        let name = if batch == 1 { "single".to_owned() } else { format!("batch{batch}") };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let sweep = Arc::new(Sweep {
                        remaining: AtomicU64::new(N as u64),
                        done: Notify::new(),
                    });
                    let cache = loaded(Some(Arc::clone(&sweep)), batch);
                    total += rt.block_on(async {
                        let start = Instant::now();
                        let running = cache.start(CancellationToken::new()).unwrap();
                        sweep.done.notified().await;
                        let elapsed = start.elapsed();
                        running.shutdown().await;
                        elapsed
                    });
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reads, sweeps);
criterion_main!(benches);
