//! How fast can each candidate foundation serve the cache's read path?
//!
//! 100k `String` ids (`"item-<n>"`), 2 reader threads doing `get` of random existing ids for
//! 2 s; prints one JSON line per candidate: `{"candidate": ..., "get_ops_per_s": ...}`.
//!
//! The machine may be shared: beside the wall-clock rate, each line has `cpu_share`, the
//! fraction of the run the reader threads were on a CPU (from `/proc/thread-self/schedstat`),
//! and `ops_per_s_on_cpu`, the rate per thread while on a CPU times the number of threads:
//! what an otherwise idle machine would give (comparable across runs when `cpu_share` is low).
//!
//! ```text
//! cargo run --release -p autorefresh-papaya --example read_ceiling             # all
//! cargo run --release -p autorefresh-papaya --example read_ceiling -- papaya-store moka-store
//! THREADS=1 SECS=3 HOT=1 cargo run --release -p autorefresh-papaya --example read_ceiling
//! ```
//!
//! `HOT=n` makes the readers use only the first `n` ids (`HOT=1`: every read hits one id, the
//! worst case for the reference count of a shared handle). `N` sets the number of ids.
//!
//! The candidates:
//! - `papaya-raw`, `dashmap-raw`: the bare maps holding a small value, as in
//!   `shared/tools/store-ceiling` (the ceiling, not a store).
//! - `papaya-flag`, `dashmap-flag`: the read path of a CLOCK store on that map: the map holds
//!   an [`EntryHandle`] and a "referenced" flag, set by a relaxed load then a store only if
//!   clear; the handle is cloned out, as `Store::get` must.
//! - `papaya-slot`: the same on papaya, with the flag in a dense side array indexed by the
//!   entry's ring slot (what `PapayaStore` does, so eviction sweeps flags without lookups).
//! - `quick_cache`, `scc-get`, `scc-read`: those caches holding an `EntryHandle`, cloned out
//!   (`scc-read` is scc's `read_sync`, which does not update its LRU, so it is no `Store::get`).
//! - `moka-store`: `autorefresh_moka::MokaStore::get`.
//! - `papaya-store`, `papaya-store-foldhash`: `autorefresh_papaya::PapayaStore::get`, with the
//!   std hasher and with foldhash; `papaya-store-load` also reads the item through the handle
//!   (`EntryHandle::load`, what the cache's `get` does).
// A benchmark measures the wall clock: the tokio-time rule of the workspace is for tests.
#![allow(clippy::disallowed_methods)]

use std::env;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use autorefresh_core::{EntryHandle, Store};
use autorefresh_moka::MokaStore;
use autorefresh_papaya::PapayaStore;

/// The item of the benchmarks: `{ status, terminal }`.
#[derive(Clone, Debug)]
struct Item {
    status: u64,
    terminal: bool,
}

const ITEM: Item = Item { status: 1, terminal: false };

fn env_or(name: &str, default: u64) -> u64 {
    env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn keys(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("item-{i}")).collect()
}

/// Nanoseconds this thread has spent on a CPU (Linux), if known.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Runs `read` on random ids from `threads` threads for `secs` seconds; ops/s.
fn run(name: &str, ids: &[String], read: impl Fn(&String) -> bool + Send + Sync) {
    let threads = env_or("THREADS", 2);
    let secs = env_or("SECS", 2);
    let hot = env_or("HOT", ids.len() as u64).clamp(1, ids.len() as u64);
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let on_cpu_ns = AtomicU64::new(0);
    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let (read, stop, total, on_cpu_ns) = (&read, &stop, &total, &on_cpu_ns);
            s.spawn(move || {
                let cpu_start = thread_cpu_ns();
                let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (t + 1);
                let (mut n, mut hits) = (0_u64, 0_u64);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1024 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        hits += u64::from(read(&ids[(x % hot) as usize]));
                    }
                    n += 1024;
                }
                assert_eq!(hits, n, "{name}: a read missed");
                total.fetch_add(n, Ordering::Relaxed);
                if let (Some(start), Some(end)) = (cpu_start, thread_cpu_ns()) {
                    on_cpu_ns.fetch_add(end - start, Ordering::Relaxed);
                }
            });
        }
        thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let wall = started.elapsed().as_secs_f64();
    let ops = total.load(Ordering::Relaxed) as f64;
    let on_cpu = on_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let share = on_cpu / (wall * threads as f64);
    let on_cpu_rate = if on_cpu > 0.0 { ops / on_cpu * threads as f64 } else { 0.0 };
    println!(
        "{{\"candidate\":\"{name}\",\"threads\":{threads},\"ids\":{},\"hot\":{hot},\"get_ops_per_s\":{:.0},\"cpu_share\":{share:.2},\"ops_per_s_on_cpu\":{on_cpu_rate:.0}}}",
        ids.len(),
        ops / wall,
    );
}

/// Sets a CLOCK "referenced" flag without writing a cache line that is already set.
#[inline]
fn touch(flag: &AtomicBool) {
    if !flag.load(Ordering::Relaxed) {
        flag.store(true, Ordering::Relaxed);
    }
}

/// Reads through a handle cloned out of a store, as `Store::get` returns it.
#[inline]
fn found(entry: Option<EntryHandle<Item>>) -> bool {
    entry.is_some()
}

fn fill_store<S: Store<String, Item>>(store: &S, ids: &[String]) {
    for id in ids {
        store.get_or_insert(id.clone(), EntryHandle::new(ITEM));
    }
    assert_eq!(store.len(), ids.len());
}

fn papaya_raw(ids: &[String]) {
    let map = papaya::HashMap::new();
    for id in ids {
        map.pin().insert(id.clone(), ITEM);
    }
    run("papaya-raw", ids, |id| map.pin().get(id).is_some_and(|v| v.status > 0 && !v.terminal));
}

fn papaya_flag(ids: &[String]) {
    let map = papaya::HashMap::new();
    for id in ids {
        map.pin().insert(id.clone(), (EntryHandle::new(ITEM), AtomicBool::new(false)));
    }
    run("papaya-flag", ids, |id| {
        found(map.pin().get(id).map(|(entry, flag)| {
            touch(flag);
            entry.clone()
        }))
    });
}

fn papaya_slot(ids: &[String]) {
    let map = papaya::HashMap::new();
    let flags: Vec<AtomicBool> = ids.iter().map(|_| AtomicBool::new(false)).collect();
    for (slot, id) in ids.iter().enumerate() {
        map.pin().insert(id.clone(), (EntryHandle::new(ITEM), slot));
    }
    run("papaya-slot", ids, |id| {
        found(map.pin().get(id).map(|(entry, slot)| {
            touch(&flags[*slot]);
            entry.clone()
        }))
    });
}

fn dashmap_raw(ids: &[String]) {
    let map = dashmap::DashMap::new();
    for id in ids {
        map.insert(id.clone(), ITEM);
    }
    run("dashmap-raw", ids, |id| map.get(id).is_some_and(|v| v.status > 0 && !v.terminal));
}

fn dashmap_flag(ids: &[String]) {
    let map = dashmap::DashMap::new();
    for id in ids {
        map.insert(id.clone(), (EntryHandle::new(ITEM), AtomicBool::new(false)));
    }
    run("dashmap-flag", ids, |id| {
        found(map.get(id).map(|e| {
            touch(&e.1);
            e.0.clone()
        }))
    });
}

fn quick_cache(ids: &[String]) {
    let cache = quick_cache::sync::Cache::new(ids.len());
    for id in ids {
        cache.insert(id.clone(), EntryHandle::new(ITEM));
    }
    // quick_cache may evict before it is full (per-shard capacity); read only what stayed.
    let stayed: Vec<String> = ids.iter().filter(|id| cache.peek(*id).is_some()).cloned().collect();
    eprintln!(
        "quick_cache: {} of {} ids stayed after filling to capacity",
        stayed.len(),
        ids.len()
    );
    run("quick_cache", &stayed, |id| found(cache.get(id)));
}

fn scc_cache(ids: &[String], lru: bool) {
    let cache = scc::HashCache::with_capacity(ids.len(), ids.len().next_power_of_two() * 2);
    for id in ids {
        let _ = cache.put_sync(id.clone(), EntryHandle::new(ITEM));
    }
    let stayed: Vec<String> =
        ids.iter().filter(|id| cache.read_sync(*id, |_, _| ()).is_some()).cloned().collect();
    eprintln!("scc HashCache: {} of {} ids stayed after filling", stayed.len(), ids.len());
    if lru {
        run("scc-get", &stayed, |id| found(cache.get_sync(id).map(|e| e.get().clone())));
    } else {
        run("scc-read", &stayed, |id| found(cache.read_sync(id, |_, e| e.clone())));
    }
}

fn moka_store(ids: &[String]) {
    let store = MokaStore::new(ids.len() as u64).expect("capacity");
    fill_store(&store, ids);
    run("moka-store", ids, |id| found(store.get(id)));
}

fn papaya_store(ids: &[String]) {
    let store = PapayaStore::new(ids.len() as u64).expect("capacity");
    fill_store(&store, ids);
    run("papaya-store", ids, |id| found(store.get(id)));
}

fn papaya_store_load(ids: &[String]) {
    let store = PapayaStore::new(ids.len() as u64).expect("capacity");
    fill_store(&store, ids);
    run("papaya-store-load", ids, |id| store.get(id).is_some_and(|e| e.load().status > 0));
}

fn papaya_store_foldhash(ids: &[String]) {
    let hasher = foldhash::fast::RandomState::default();
    let store = PapayaStore::with_hasher(ids.len() as u64, hasher).expect("capacity");
    fill_store(&store, ids);
    run("papaya-store-foldhash", ids, |id| found(store.get(id)));
}

/// A candidate's name and the function that measures it.
type Candidate<'a> = (&'a str, &'a dyn Fn(&[String]));

fn main() {
    let ids = keys(env_or("N", 100_000));
    let wanted: Vec<String> = env::args().skip(1).collect();
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "all");
    let candidates: [Candidate<'_>; 12] = [
        ("papaya-raw", &papaya_raw),
        ("papaya-flag", &papaya_flag),
        ("papaya-slot", &papaya_slot),
        ("dashmap-raw", &dashmap_raw),
        ("dashmap-flag", &dashmap_flag),
        ("quick_cache", &quick_cache),
        ("scc-get", &|ids| scc_cache(ids, true)),
        ("scc-read", &|ids| scc_cache(ids, false)),
        ("moka-store", &moka_store),
        ("papaya-store", &papaya_store),
        ("papaya-store-load", &papaya_store_load),
        ("papaya-store-foldhash", &papaya_store_foldhash),
    ];
    for (name, candidate) in candidates {
        if all || wanted.iter().any(|w| w == name) {
            candidate(&ids);
        }
    }
}
