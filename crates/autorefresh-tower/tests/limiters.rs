//! Behaviour of the rate limiters against client-go's `workqueue` rate limiters.
//! Every time-dependent test runs on paused tokio time; none waits on the wall clock.

use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::RateLimiter;
use autorefresh_tower::{
    default_controller_rate_limiter, BucketRateLimiter, InvalidRateLimit,
    ItemExponentialFailureRateLimiter, ItemFastSlowRateLimiter, MaxOfRateLimiter,
    NoDelayRateLimiter,
};
use tokio::time::advance;

const MS: Duration = Duration::from_millis(1);

// ---- ItemExponentialFailureRateLimiter --------------------------------------------------

#[test]
fn exponential_doubles_from_base_and_caps_at_max() {
    let limiter = ItemExponentialFailureRateLimiter::new(5 * MS, 1000 * MS);
    let delays: Vec<_> = (0..10).map(|_| limiter.when(&"one")).collect();
    let expected: Vec<_> =
        [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000].into_iter().map(|ms| ms * MS).collect();
    assert_eq!(delays, expected);
    assert_eq!(limiter.num_requeues(&"one"), 10);
}

#[test]
fn exponential_counts_each_item_separately() {
    // client-go's TestItemExponentialFailureRateLimiter.
    let limiter = ItemExponentialFailureRateLimiter::new(MS, Duration::from_secs(1));
    assert_eq!(limiter.when(&"one"), MS);
    assert_eq!(limiter.when(&"one"), 2 * MS);
    assert_eq!(limiter.when(&"one"), 4 * MS);
    assert_eq!(limiter.when(&"one"), 8 * MS);
    assert_eq!(limiter.when(&"one"), 16 * MS);
    assert_eq!(limiter.num_requeues(&"one"), 5);

    assert_eq!(limiter.when(&"two"), MS);
    assert_eq!(limiter.when(&"two"), 2 * MS);
    assert_eq!(limiter.num_requeues(&"two"), 2);
    assert_eq!(limiter.num_requeues(&"never"), 0);
    assert_eq!(limiter.tracked_items(), 2);

    limiter.forget(&"one");
    assert_eq!(limiter.num_requeues(&"one"), 0);
    assert_eq!(limiter.when(&"one"), MS);
    assert_eq!(limiter.num_requeues(&"two"), 2);
}

#[test]
fn exponential_forget_removes_state() {
    let limiter = ItemExponentialFailureRateLimiter::new(MS, Duration::from_secs(1));
    for id in 0..1_000u32 {
        limiter.when(&id);
        limiter.when(&id);
    }
    assert_eq!(limiter.tracked_items(), 1_000);
    for id in 0..1_000u32 {
        limiter.forget(&id);
    }
    assert_eq!(limiter.tracked_items(), 0);
    // Forgetting an unknown id is harmless and does not create state.
    limiter.forget(&5_000);
    assert_eq!(limiter.num_requeues(&5_000), 0);
    assert_eq!(limiter.tracked_items(), 0);
}

#[test]
fn exponential_overflow_returns_max() {
    // client-go's TestItemExponentialFailureRateLimiterOverFlow: base 1 ms, max 1000 s.
    let limiter = ItemExponentialFailureRateLimiter::new(MS, Duration::from_secs(1000));
    for _ in 0..5 {
        limiter.when(&"one");
    }
    assert_eq!(limiter.when(&"one"), 32 * MS);
    for _ in 0..1000 {
        limiter.when(&"overflow1");
    }
    assert_eq!(limiter.when(&"overflow1"), Duration::from_secs(1000));

    // base 1 minute, max 1000 hours.
    let limiter = ItemExponentialFailureRateLimiter::new(
        Duration::from_secs(60),
        Duration::from_secs(1000 * 3600),
    );
    for _ in 0..2 {
        limiter.when(&"two");
    }
    assert_eq!(limiter.when(&"two"), Duration::from_secs(4 * 60));
    for _ in 0..1000 {
        limiter.when(&"overflow2");
    }
    assert_eq!(limiter.when(&"overflow2"), Duration::from_secs(1000 * 3600));
}

#[test]
fn exponential_beyond_i64_nanos_returns_max_even_if_max_is_larger() {
    // Go returns maxDelay once base * 2^n exceeds i64::MAX ns, whatever maxDelay is.
    let limiter = ItemExponentialFailureRateLimiter::new(5 * MS, Duration::MAX);
    for _ in 0..100 {
        limiter.when(&1u8);
    }
    assert_eq!(limiter.num_requeues(&1), 100);
    assert_eq!(limiter.when(&1), Duration::MAX);
}

#[test]
fn exponential_default_is_5ms_to_1000s() {
    let limiter = ItemExponentialFailureRateLimiter::<u8>::default();
    assert_eq!(limiter.base_delay(), 5 * MS);
    assert_eq!(limiter.max_delay(), Duration::from_secs(1000));
}

// ---- ItemFastSlowRateLimiter -----------------------------------------------------------

#[test]
fn fast_slow_switches_after_max_fast_attempts() {
    // client-go's TestItemFastSlowRateLimiter.
    let limiter = ItemFastSlowRateLimiter::new(5 * MS, 10 * Duration::from_secs(1), 3);
    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.when(&"one"), Duration::from_secs(10));
    assert_eq!(limiter.when(&"one"), Duration::from_secs(10));
    assert_eq!(limiter.num_requeues(&"one"), 5);

    assert_eq!(limiter.when(&"two"), 5 * MS);
    assert_eq!(limiter.when(&"two"), 5 * MS);
    assert_eq!(limiter.num_requeues(&"two"), 2);

    limiter.forget(&"one");
    assert_eq!(limiter.num_requeues(&"one"), 0);
    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.tracked_items(), 2);
}

// ---- BucketRateLimiter -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn bucket_burst_then_spaced_at_qps() {
    let bucket = BucketRateLimiter::new(10.0, 100).unwrap();
    for i in 0..100u32 {
        assert_eq!(bucket.when(&i), Duration::ZERO, "token {i} is in the burst");
    }
    for n in 1..=20u32 {
        assert_eq!(bucket.when(&0u32), n * 100 * MS, "reservation {n} past the burst");
    }
}

#[tokio::test(start_paused = true)]
async fn bucket_refills_as_time_advances() {
    let bucket = BucketRateLimiter::new(10.0, 100).unwrap();
    for _ in 0..100 {
        assert_eq!(bucket.when(&()), Duration::ZERO);
    }
    assert_eq!(bucket.when(&()), 100 * MS); // borrowed: bucket now at -1

    advance(100 * MS).await; // back to 0
    assert_eq!(bucket.when(&()), 100 * MS);

    advance(Duration::from_millis(1_100)).await; // -1 + 11 = 10 tokens
    for _ in 0..10 {
        assert_eq!(bucket.when(&()), Duration::ZERO);
    }
    assert_eq!(bucket.when(&()), 100 * MS);

    // A long idle time refills up to the burst, no more.
    advance(Duration::from_secs(3600)).await;
    for _ in 0..100 {
        assert_eq!(bucket.when(&()), Duration::ZERO);
    }
    assert_eq!(bucket.when(&()), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn bucket_partial_refill_shortens_the_wait() {
    let bucket = BucketRateLimiter::new(10.0, 1).unwrap();
    assert_eq!(bucket.when(&()), Duration::ZERO);
    advance(40 * MS).await; // 0.4 token
    assert_eq!(bucket.when(&()), 60 * MS);
}

#[tokio::test(start_paused = true)]
async fn bucket_ignores_ids() {
    let bucket = BucketRateLimiter::new(1.0, 1).unwrap();
    assert_eq!(bucket.when(&"a"), Duration::ZERO);
    assert_eq!(bucket.when(&"b"), Duration::from_secs(1));
    assert_eq!(RateLimiter::<&str>::num_requeues(&bucket, &"a"), 0);
    bucket.forget(&"b");
    // forget gives no token back.
    assert_eq!(bucket.when(&"b"), Duration::from_secs(2));
}

#[test]
fn bucket_rejects_bad_parameters() {
    for qps in [0.0, -0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        match BucketRateLimiter::new(qps, 10) {
            Err(InvalidRateLimit::Qps { qps: got }) => {
                assert!(got.is_nan() && qps.is_nan() || got == qps)
            }
            other => panic!("qps {qps}: expected a Qps error, got {other:?}"),
        }
    }
    assert_eq!(BucketRateLimiter::new(10.0, 0).unwrap_err(), InvalidRateLimit::Burst { burst: 0 });
    let message = BucketRateLimiter::new(-2.0, 1).unwrap_err().to_string();
    assert!(message.contains("qps") && message.contains("-2"), "{message}");
    let message = BucketRateLimiter::new(1.0, 0).unwrap_err().to_string();
    assert!(message.contains("burst") && message.contains('0'), "{message}");
}

#[test]
fn bucket_default_is_10_qps_burst_100() {
    let bucket = BucketRateLimiter::default();
    assert_eq!(bucket.qps(), 10.0);
    assert_eq!(bucket.burst(), 100);
}

// ---- MaxOfRateLimiter ------------------------------------------------------------------

#[test]
fn max_of_picks_the_larger_and_calls_every_limiter() {
    // client-go's TestMaxOfRateLimiter.
    let fast_slow = Arc::new(ItemFastSlowRateLimiter::new(5 * MS, 3 * Duration::from_secs(1), 3));
    let exponential = Arc::new(ItemExponentialFailureRateLimiter::new(MS, Duration::from_secs(1)));
    let limiter: MaxOfRateLimiter<&str> =
        MaxOfRateLimiter::new(vec![Box::new(fast_slow.clone()), Box::new(exponential.clone())]);
    assert_eq!(limiter.len(), 2);

    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.when(&"one"), 5 * MS);
    assert_eq!(limiter.when(&"one"), Duration::from_secs(3));
    assert_eq!(limiter.when(&"one"), Duration::from_secs(3));
    assert_eq!(limiter.num_requeues(&"one"), 5);
    assert_eq!(exponential.num_requeues(&"one"), 5, "every limiter is called");

    assert_eq!(limiter.when(&"two"), 5 * MS);
    assert_eq!(limiter.when(&"two"), 5 * MS);
    assert_eq!(limiter.num_requeues(&"two"), 2);

    limiter.forget(&"one");
    assert_eq!(limiter.num_requeues(&"one"), 0);
    assert_eq!(fast_slow.num_requeues(&"one"), 0);
    assert_eq!(exponential.num_requeues(&"one"), 0);
    assert_eq!(limiter.when(&"one"), 5 * MS);
}

#[test]
fn max_of_num_requeues_is_the_max() {
    let counting = Arc::new(NoDelayRateLimiter::new());
    let limiter: MaxOfRateLimiter<u8> = MaxOfRateLimiter::new(vec![
        Box::new(counting.clone()),
        Box::new(NoDelayRateLimiter::new()),
    ]);
    counting.when(&1);
    counting.when(&1);
    limiter.when(&1);
    assert_eq!(limiter.num_requeues(&1), 3);
}

#[test]
fn max_of_empty_never_delays() {
    let limiter: MaxOfRateLimiter<u8> = MaxOfRateLimiter::new(Vec::new());
    assert!(limiter.is_empty());
    assert_eq!(limiter.when(&1), Duration::ZERO);
    assert_eq!(limiter.num_requeues(&1), 0);
    limiter.forget(&1);
}

// ---- default_controller_rate_limiter ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn default_controller_bucket_dominates_after_100_ids() {
    let limiter = default_controller_rate_limiter::<u32>();
    for id in 0..100 {
        assert_eq!(limiter.when(&id), 5 * MS, "id {id}: the bucket still has tokens");
    }
    assert_eq!(limiter.when(&100), 100 * MS);
    assert_eq!(limiter.when(&101), 200 * MS);
    // An id's own backoff wins once it is longer than the bucket's wait.
    for _ in 0..9 {
        limiter.when(&0);
    }
    // id 0 has 10 failures: 5 ms * 2^10 = 5.12 s > the bucket's 1.2 s.
    assert_eq!(limiter.when(&0), Duration::from_millis(5 * 1024));
    assert_eq!(limiter.num_requeues(&0), 11);
    assert_eq!(limiter.num_requeues(&100), 1);

    // Once the bucket refills, per-item backoff is all that is left.
    advance(Duration::from_secs(60)).await;
    assert_eq!(limiter.when(&500), 5 * MS);
    limiter.forget(&0);
    assert_eq!(limiter.num_requeues(&0), 0);
    assert_eq!(limiter.when(&0), 5 * MS);
}

// ---- NoDelayRateLimiter ----------------------------------------------------------------

#[test]
fn no_delay_counts_and_forgets() {
    let limiter = NoDelayRateLimiter::new();
    for _ in 0..3 {
        assert_eq!(limiter.when(&"a"), Duration::ZERO);
    }
    assert_eq!(limiter.when(&"b"), Duration::ZERO);
    assert_eq!(limiter.num_requeues(&"a"), 3);
    assert_eq!(limiter.num_requeues(&"b"), 1);
    assert_eq!(limiter.tracked_items(), 2);
    limiter.forget(&"a");
    limiter.forget(&"b");
    assert_eq!(limiter.num_requeues(&"a"), 0);
    assert_eq!(limiter.tracked_items(), 0);
}

// ---- all limiters ----------------------------------------------------------------------

#[test]
fn limiters_are_usable_as_shared_trait_objects() {
    fn assert_limiter<L: RateLimiter<String> + std::fmt::Debug>(_: &L) {}
    let exponential = ItemExponentialFailureRateLimiter::<String>::default();
    assert_limiter(&exponential);
    assert_limiter(&ItemFastSlowRateLimiter::<String>::new(MS, MS, 1));
    assert_limiter(&BucketRateLimiter::default());
    assert_limiter(&NoDelayRateLimiter::<String>::new());
    assert_limiter(&default_controller_rate_limiter::<String>());

    let shared: Arc<dyn RateLimiter<String>> = Arc::new(exponential);
    let id = "x".to_string();
    let handle = {
        let shared = Arc::clone(&shared);
        let id = id.clone();
        std::thread::spawn(move || shared.when(&id))
    };
    let first = handle.join().unwrap();
    assert_eq!(first, 5 * MS);
    assert_eq!(shared.num_requeues(&id), 1);
    assert!(format!("{:?}", default_controller_rate_limiter::<String>()).contains("MaxOf"));
}
