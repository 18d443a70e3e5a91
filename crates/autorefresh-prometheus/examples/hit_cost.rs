//! What counting a cache hit costs on the read path, with 2 threads reading at once (the S1
//! `get_hit` workload's shape).
//!
//! ```text
//! cargo run --release -p autorefresh-prometheus --example hit_cost [calls-per-thread]
//! ```
//!
//! Prints nanoseconds per call per thread (the slower thread's, best of several interleaved
//! rounds) for:
//! - an empty loop;
//! - `PrometheusMetrics::cache_hit` (this crate: a per-thread slot, plain load and store);
//! - a `metrics-exporter-prometheus` counter incremented directly (one atomic shared by both
//!   threads: what an unbuffered adapter costs);
//! - a papaya map read of a random one of 100k `String` keys (the fastest store's own read,
//!   so the hardest case for the ratio), alone and with each way of counting the hit.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall-clock time

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use autorefresh_core::Metrics;
use autorefresh_prometheus::{PrometheusBuilder, PrometheusMetrics};

const THREADS: usize = 2;
const ROUNDS: usize = 5;
const KEYS: usize = 100_000;

type Map = papaya::HashMap<String, Arc<String>, foldhash::fast::RandomState>;
type Op = Arc<dyn Fn(usize) + Send + Sync>;

/// Runs `op` `calls` times on each of `THREADS` threads started together; the slower
/// thread's time per call.
fn run(calls: usize, op: &Op) -> f64 {
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (op, barrier) = (Arc::clone(op), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // A cheap pseudo-random walk over the keys, different per thread.
                let mut x = 0x9E37_79B9_7F4A_7C15_usize.wrapping_add(t);
                barrier.wait();
                let start = Instant::now();
                for _ in 0..calls {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    op(black_box(x % KEYS));
                }
                start.elapsed()
            })
        })
        .collect();
    let slowest =
        threads.into_iter().map(|t| t.join().expect("bench thread")).max().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let per_call = slowest.as_nanos() as f64 / calls as f64;
    per_call
}

fn main() {
    let calls: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000_000);
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let (metrics, shared) = metrics::with_local_recorder(&recorder, || {
        (
            PrometheusMetrics::new("bench"),
            metrics::counter!("bench_shared_hits_total", "cache" => "bench"),
        )
    });

    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("job-{i}")).collect());
    let map: Arc<Map> = Arc::new(Map::with_hasher(foldhash::fast::RandomState::default()));
    for key in keys.iter() {
        map.pin().insert(key.clone(), Arc::new(format!("state of {key}")));
    }
    let read = {
        let (map, keys) = (Arc::clone(&map), Arc::clone(&keys));
        move |i: usize| map.pin().get(&keys[i]).cloned()
    };

    let mut configs: Vec<(&str, Op, usize)> = Vec::new();
    configs.push((
        "empty loop",
        Arc::new(|i| {
            black_box(i);
        }),
        0,
    ));
    let m = metrics.clone();
    configs.push(("cache_hit (this crate)", Arc::new(move |_| m.cache_hit()), 1));
    let c = shared.clone();
    configs.push(("shared counter.increment(1)", Arc::new(move |_| c.increment(1)), 0));
    let r = read.clone();
    configs.push(("read", Arc::new(move |i| drop(black_box(r(i)))), 0));
    let (r, m) = (read.clone(), metrics.clone());
    configs.push((
        "read + cache_hit (this crate)",
        Arc::new(move |i| {
            if black_box(r(i)).is_some() {
                m.cache_hit();
            }
        }),
        1,
    ));
    let (r, c) = (read.clone(), shared.clone());
    configs.push((
        "read + shared counter",
        Arc::new(move |i| {
            if black_box(r(i)).is_some() {
                c.increment(1);
            }
        }),
        0,
    ));

    let mut best = vec![f64::INFINITY; configs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, op, _)) in configs.iter().enumerate() {
            best[i] = best[i].min(run(calls, op));
        }
    }

    println!("{THREADS} threads x {calls} calls, best of {ROUNDS} rounds, ns per call per thread:");
    let read_alone = best[3];
    for ((name, _, _), ns) in configs.iter().zip(&best) {
        if name.starts_with("read +") {
            let overhead = (ns - read_alone) / read_alone * 100.0;
            println!("  {name:<32} {ns:7.2}  ({overhead:+.1}% on the read)");
        } else {
            println!("  {name:<32} {ns:7.2}");
        }
    }

    // Every hit counted through this crate reaches the exporter once flushed.
    let counted: usize = configs.iter().map(|(_, _, hits)| hits).sum();
    let expected = ROUNDS * THREADS * calls * counted;
    let text = metrics.render(&handle);
    let line = format!("autorefresh_cache_hits_total{{cache=\"bench\"}} {expected}");
    assert!(text.lines().any(|l| l == line), "expected `{line}` after the flush");
}
