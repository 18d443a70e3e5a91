//! What the stores cost besides reads: creating ids, evicting, walking the entries, memory.
//!
//! ```text
//! cargo run --release -p autorefresh-papaya --example store_costs -- papaya-store
//! cargo run --release -p autorefresh-papaya --example store_costs -- moka-store
//! cargo run --release -p autorefresh-papaya --example store_costs -- papaya-store-foldhash
//! cargo run --release -p autorefresh-papaya --example store_costs -- hit-ratio
//! ```
//!
//! `hit-ratio` compares how well the eviction orders keep what is used: 2M reads of ids drawn
//! from a Zipf distribution (exponent `ZIPF`, default 0.9) over 100k ids, a miss creating the
//! id, into stores of capacity 1k, 10k and 50k; the hit ratios of `PapayaStore` (LRU of a
//! window of 32) and `MokaStore` (exact LRU).
//!
//! One store per process (so that the resident-memory figure is that store's): `N` ids
//! (default 1M, `"item-<n>"`) created into a store of capacity `N` from one thread (no
//! eviction), then two walks of every entry (`for_each_entry`, what a refresh sweep does):
//! the first right after filling (it may finish work left by the map's growth), the second
//! reading each item,
//! then `N` more ids created (each evicting one), and `N` creates from 2 threads at once
//! into a fresh store of capacity `N / 10` (evicting). Prints one JSON line per figure.
// A benchmark measures the wall clock: the tokio-time rule of the workspace is for tests.
#![allow(clippy::disallowed_methods)]

use std::env;
use std::thread;
use std::time::Instant;

use autorefresh_core::{EntryHandle, Store};
use autorefresh_moka::MokaStore;
use autorefresh_papaya::PapayaStore;

/// The item of the benchmarks: `{ status, terminal }`.
#[derive(Clone, Debug)]
struct Item {
    status: u64,
    terminal: bool,
}

fn env_or(name: &str, default: u64) -> u64 {
    env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn report(name: &str, figure: &str, value: f64, unit: &str) {
    println!("{{\"candidate\":\"{name}\",\"figure\":\"{figure}\",\"value\":{value:.1},\"unit\":\"{unit}\"}}");
}

fn measure<S: Store<String, Item> + Clone>(name: &str, make: impl Fn(u64) -> S) {
    let n = env_or("N", 1_000_000);
    let ids: Vec<String> = (0..2 * n).map(|i| format!("item-{i}")).collect();
    let item = Item { status: 1, terminal: false };

    let before = rss_bytes();
    let store = make(n);
    let started = Instant::now();
    for id in &ids[..n as usize] {
        store.get_or_insert(id.clone(), EntryHandle::new(item.clone()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    assert_eq!(store.len() as u64, n);
    report(name, "create_new_ids", n as f64 / elapsed, "ids/s");
    report(name, "resident_bytes_per_entry", (after - before) as f64 / n as f64, "B");

    let started = Instant::now();
    let mut visited = 0_u64;
    store.for_each_entry(&mut |_, _| visited += 1);
    assert_eq!(visited, n);
    report(
        name,
        "first_walk_after_filling",
        n as f64 / started.elapsed().as_secs_f64(),
        "entries/s",
    );

    let started = Instant::now();
    let mut live = 0_u64;
    store.for_each_entry(&mut |_, entry| {
        live += u64::from(entry.with(|i| !i.terminal && i.status > 0))
    });
    assert_eq!(live, n);
    report(
        name,
        "walk_reading_every_item",
        n as f64 / started.elapsed().as_secs_f64(),
        "entries/s",
    );

    let started = Instant::now();
    for id in &ids[n as usize..] {
        store.get_or_insert(id.clone(), EntryHandle::new(item.clone()));
    }
    report(name, "create_evicting", n as f64 / started.elapsed().as_secs_f64(), "ids/s");
    assert_eq!(store.len() as u64, n);
    drop(store);

    let store = make((n / 10).max(1));
    let started = Instant::now();
    thread::scope(|s| {
        for half in ids[..n as usize].chunks(n as usize / 2 + 1) {
            let (store, item) = (store.clone(), item.clone());
            s.spawn(move || {
                for id in half {
                    store.get_or_insert(id.clone(), EntryHandle::new(item.clone()));
                }
            });
        }
    });
    report(name, "create_evicting_2_threads", n as f64 / started.elapsed().as_secs_f64(), "ids/s");
    assert!(store.len() as u64 <= (n / 10).max(1));
}

/// Draws from a Zipf distribution over `0..n` by inverse transform on a cumulative table.
struct Zipf {
    cumulative: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        Self { cumulative, state: 0x9E37_79B9_7F4A_7C15 }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let total = *self.cumulative.last().expect("not empty");
        let u = (self.state >> 11) as f64 / (1_u64 << 53) as f64 * total;
        self.cumulative.partition_point(|&c| c < u).min(self.cumulative.len() - 1)
    }
}

fn hit_ratio() {
    let exponent = env::var("ZIPF").ok().and_then(|v| v.parse().ok()).unwrap_or(0.9);
    let ids: Vec<String> = (0..100_000).map(|i| format!("item-{i}")).collect();
    // Ranks are scattered over the ids, so that popularity does not follow insertion order.
    let scatter = |rank: usize| (rank * 7_919) % ids.len();
    for capacity in [1_000_u64, 10_000, 50_000] {
        let run = |store: &dyn Store<String, u64>| {
            let mut zipf = Zipf::new(ids.len(), exponent);
            let mut hits = 0_u64;
            let reads = 2_000_000;
            for _ in 0..reads {
                let id = &ids[scatter(zipf.next())];
                if store.get(id).is_some() {
                    hits += 1;
                } else {
                    store.get_or_insert(id.clone(), EntryHandle::new(0));
                }
            }
            hits as f64 / reads as f64
        };
        let papaya = run(&PapayaStore::new(capacity).expect("capacity"));
        let moka = run(&MokaStore::new(capacity).expect("capacity"));
        for (name, ratio) in [("papaya-store", papaya), ("moka-store", moka)] {
            println!(
                "{{\"candidate\":\"{name}\",\"figure\":\"hit_ratio\",\"zipf\":{exponent},\"capacity\":{capacity},\"value\":{ratio:.4}}}"
            );
        }
    }
}

fn main() {
    let which = env::args().nth(1).unwrap_or_else(|| "papaya-store".to_string());
    match which.as_str() {
        "hit-ratio" => hit_ratio(),
        "papaya-store" => measure(&which, |cap| PapayaStore::new(cap).expect("capacity")),
        "papaya-store-foldhash" => measure(&which, |cap| {
            PapayaStore::with_hasher(cap, foldhash::fast::RandomState::default()).expect("capacity")
        }),
        "moka-store" => measure(&which, |cap| MokaStore::new(cap).expect("capacity")),
        other => panic!(
            "unknown candidate {other}: papaya-store, papaya-store-foldhash, moka-store, hit-ratio"
        ),
    }
}
