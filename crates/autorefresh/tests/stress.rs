//! Many tasks on a multi-thread runtime hammer a running cache; the invariants hold
//! throughout. Bounded by operation count, not by time.

mod common;

use std::time::Duration;

use autorefresh::{AutoRefresh, CancellationToken, NoDelayRateLimiter};
use common::{sync_with, Behaviour, Counter, Service};

const TASKS: usize = 8;
const OWNED_PER_TASK: usize = 50;
const OPS_PER_TASK: usize = 4_000;
const CAPACITY: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_and_refresh_keep_the_invariants() {
    let service = Service::new(Behaviour::Increment);
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("stress")
        .sync(sync_with(&service))
        .resync_period(Duration::from_millis(1))
        .parallelism(8)
        .capacity(CAPACITY)
        .rate_limiter(NoDelayRateLimiter::<String>::new())
        .build()
        .unwrap();
    let running = cache.start(CancellationToken::new()).unwrap();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move { exercise(task, &cache).await }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    running.shutdown().await;

    assert!(cache.len() <= CAPACITY as usize);
    assert!(service.overlaps().is_empty(), "ids in two batches at once: {:?}", service.overlaps());
    assert!(service.seen_terminal().is_empty(), "terminal items reached sync");
    assert!(service.calls() > 0);
}

/// One caller: owns some ids (so it can check what it deleted stays deleted, and that a
/// re-created id never shows a refresh of its previous life) and churns shared ids to force
/// evictions.
async fn exercise(task: usize, cache: &AutoRefresh<String, Counter>) {
    // Each owned id's current life is told apart by its target: 1_000_000 + generation.
    let mut generation = vec![None::<u32>; OWNED_PER_TASK];
    let owned = |slot: usize| format!("owned-{task}-{slot}");
    let mut rng = (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for op in 0..OPS_PER_TASK {
        let roll = next();
        let slot = (roll >> 8) as usize % OWNED_PER_TASK;
        match roll % 6 {
            0 | 1 => {
                let target = 1_000_000 + op as u32;
                let item = cache.get_or_create(owned(slot), Counter::new(target)).unwrap();
                if item.target == target {
                    generation[slot] = Some(target);
                } else {
                    assert_eq!(Some(item.target), generation[slot], "an older life came back");
                }
            }
            2 => {
                cache.delete(&owned(slot));
                generation[slot] = None;
                tokio::task::yield_now().await;
                assert!(cache.get(&owned(slot)).is_err(), "a deleted id came back");
            }
            3 => match cache.get(&owned(slot)) {
                Ok(item) => assert_eq!(Some(item.target), generation[slot], "wrong life"),
                // Evicted by the churn, or never created.
                Err(err) => {
                    assert!(err.is_not_found());
                    generation[slot] = None;
                }
            },
            4 => {
                let shared = format!("shared-{}", roll % 5_000);
                cache.get_or_create(shared, Counter::new(1_000_000)).unwrap();
            }
            _ => {
                let shared = format!("shared-{}", roll % 5_000);
                cache.delete_delayed(&shared).unwrap();
            }
        }
        assert!(cache.len() <= CAPACITY as usize, "more than the capacity is readable");
        if op % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}
