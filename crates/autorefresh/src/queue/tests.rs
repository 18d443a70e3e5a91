//! The queue's protocol, one step at a time on one thread (`model.rs` checks it across
//! threads).

use super::*;

type Queue = WorkQueue<&'static str, u32>;

fn queue() -> Queue {
    WorkQueue::new()
}

fn pop(queue: &Queue) -> Option<Vec<TakenItem<&'static str, u32>>> {
    let mut into = Vec::new();
    let mut release = Vec::new();
    let popped = queue.pop_batch(&mut Vec::new(), &mut release, &mut into).map(|_| into);
    queue.release(&mut release);
    popped
}

fn ids(batch: &[TakenItem<&'static str, u32>]) -> Vec<&'static str> {
    batch.iter().map(|item| item.id).collect()
}

/// Batches the pool as one batch, as the dispatcher does with a batcher.
fn batch_all(queue: &Queue) {
    let mut hand = queue.take_pool();
    let all: Vec<usize> = (0..hand.pooled().len()).collect();
    assert!(hand.push_batches(&[all]).is_empty());
}

/// Finishes a batch as a worker does, its ids released as by the worker's next pop.
fn finish(
    queue: &Queue,
    batch: Vec<TakenItem<&'static str, u32>>,
    outcome: Outcome,
) -> Vec<&'static str> {
    let mut release = Vec::new();
    let forget = queue.finish(batch.into_iter().map(|t| (t, outcome)), &mut release);
    queue.release(&mut release);
    forget
}

#[tokio::test(start_paused = true)]
async fn an_entry_is_queued_once_and_runs_again_if_added_in_flight() {
    let queue = queue();
    let a = EntryHandle::new(1);
    assert!(queue.add("a", a.clone()));
    assert!(!queue.add("a", a.clone()), "already due");
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    assert_eq!(ids(&batch), ["a"]);
    assert!(pop(&queue).is_none());

    assert!(queue.add("a", a.clone())); // while in flight: never dispatched twice at once
    let mut sweep = queue.sweeper(Some(NonZeroUsize::MIN));
    sweep.offer(&"a", &a); // a sweep too
    assert_eq!(sweep.finish(), 0, "flagged once");
    batch_all(&queue);
    assert!(pop(&queue).is_none());
    assert_eq!(queue.stats().running, 1);

    finish(&queue, batch, Outcome::Done);
    batch_all(&queue);
    let again = pop(&queue).unwrap();
    assert_eq!(ids(&again), ["a"], "runs once more after");
    finish(&queue, again, Outcome::Done);
    assert_eq!(queue.stats(), QueueStats::default());
    assert_eq!(a.queue_state(), QueueState::default());
}

#[tokio::test(start_paused = true)]
async fn a_sweep_batches_by_size_and_skips_what_is_due() {
    let queue = queue();
    let entries: Vec<_> = (0..5).map(EntryHandle::new).collect();
    queue.add("c", entries[2].clone()); // due already, in the pool
    let mut sweep = queue.sweeper(NonZeroUsize::new(2));
    for (id, entry) in ["a", "b", "c", "d", "e"].iter().zip(&entries) {
        sweep.offer(id, entry);
    }
    assert_eq!(sweep.finish(), 4);
    assert_eq!(ids(&pop(&queue).unwrap()), ["a", "b"]);
    assert_eq!(ids(&pop(&queue).unwrap()), ["d", "e"]);
    assert!(pop(&queue).is_none());
    assert_eq!(queue.stats().ready, 1, "c waits in the pool");
}

#[tokio::test(start_paused = true)]
async fn a_sweep_queues_batches_larger_than_a_chunk_and_what_it_claimed_if_dropped() {
    let queue = WorkQueue::<usize, u32>::new();
    let size = NonZeroUsize::new(SWEEP_CHUNK + 10).unwrap();
    let entries: Vec<_> = (0..SWEEP_CHUNK + 15).map(|_| EntryHandle::new(0)).collect();
    let mut sweep = queue.sweeper(Some(size));
    for (id, entry) in entries.iter().enumerate() {
        sweep.offer(&id, entry);
    }
    assert_eq!(sweep.finish(), SWEEP_CHUNK + 15);
    let mut release = Vec::new();
    let mut into = Vec::new();
    queue.pop_batch(&mut Vec::new(), &mut release, &mut into).unwrap();
    assert_eq!(into.len(), SWEEP_CHUNK + 10);
    let mut rest = Vec::new();
    queue.pop_batch(&mut Vec::new(), &mut release, &mut rest).unwrap();
    assert_eq!(rest.len(), 5);

    let a = EntryHandle::new(0);
    let mut sweep = queue.sweeper(Some(size));
    sweep.offer(&usize::MAX, &a);
    drop(sweep); // a sweep that panicked
    let mut last = Vec::new();
    queue.pop_batch(&mut Vec::new(), &mut release, &mut last).unwrap();
    assert_eq!(last.len(), 1, "claimed, so queued");
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_its_deadline_unless_added_sooner() {
    let queue = queue();
    let a = EntryHandle::new(1);
    queue.add("a", a.clone());
    batch_all(&queue);
    finish(&queue, pop(&queue).unwrap(), Outcome::Retry(Duration::from_secs(10)));
    assert_eq!(queue.stats().delayed, 1);
    assert!(a.queue_state().backed_off);
    let deadline = queue.promote_due().unwrap();
    assert_eq!(deadline - Instant::now(), Duration::from_secs(10));

    tokio::time::advance(Duration::from_secs(3)).await;
    let mut sweep = queue.sweeper(None);
    sweep.offer(&"a", &a); // a sweep: the earlier deadline wins
    assert_eq!(sweep.finish(), 1);
    assert_eq!(queue.promote_due(), None, "no longer delayed");
    assert_eq!(queue.stats(), QueueStats { tracked: 1, ready: 1, ..QueueStats::default() });

    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    assert!(batch[0].backed_off, "the limiter still holds its failures");
    finish(&queue, batch, Outcome::Retry(Duration::from_secs(1)));
    assert!(queue.promote_due().is_some());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(queue.promote_due(), None);
    assert!(queue.has_pooled());

    batch_all(&queue);
    finish(&queue, pop(&queue).unwrap(), Outcome::Retry(Duration::ZERO));
    assert!(queue.has_pooled(), "no backoff: due at once");
}

#[tokio::test(start_paused = true)]
async fn a_removed_entry_leaves_the_queue_wherever_it_is() {
    let queue = queue();
    // In flight: not queued again, and its backoff is handed back to forget.
    let a = EntryHandle::new(1);
    queue.add("a", a.clone());
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    queue.add("a", a.clone());
    a.mark_removed();
    queue.remove(&a);
    let forget = finish(&queue, batch, Outcome::Retry(Duration::from_secs(1)));
    assert_eq!(forget, ["a"]);
    assert_eq!(queue.stats(), QueueStats::default(), "removed while in flight: dropped");

    // Queued: the worker skips it.
    let b = EntryHandle::new(2);
    queue.add("b", b.clone());
    batch_all(&queue);
    b.mark_removed();
    queue.remove(&b);
    assert_eq!(queue.stats(), QueueStats::default());
    assert!(pop(&queue).is_none());

    // Delayed: its retry is dropped.
    let c = EntryHandle::new(3);
    queue.add("c", c.clone());
    batch_all(&queue);
    finish(&queue, pop(&queue).unwrap(), Outcome::Retry(Duration::from_secs(5)));
    assert_eq!(queue.stats().delayed, 1);
    c.mark_removed();
    queue.remove(&c);
    assert_eq!(queue.stats(), QueueStats::default());
    assert_eq!(queue.promote_due(), None);
}

#[tokio::test(start_paused = true)]
async fn an_id_created_again_while_its_old_entry_is_in_flight_waits_for_it() {
    let queue = queue();
    let old = EntryHandle::new(4);
    queue.add("d", old.clone());
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    // The store let go of the old entry, and the id was created again, before the queue was
    // told of the removal (or without it ever being told): the guard is the id itself.
    let new = EntryHandle::new(5);
    assert!(queue.add("d", new.clone()));
    queue.add("e", EntryHandle::new(6));
    batch_all(&queue);
    assert_eq!(ids(&pop(&queue).unwrap()), ["e"], "d waits: never two in flight");
    assert!(pop(&queue).is_none());
    assert_eq!(queue.stats().in_flight, 2);
    assert_eq!(new.queue_state().slot, QueueSlot::Queued, "parked, still queued");
    old.mark_removed();
    queue.remove(&old);
    finish(&queue, batch, Outcome::Done);
    batch_all(&queue);
    let next = pop(&queue).unwrap();
    assert!(next[0].entry.same_entry(&new), "released when the old one ended");
    finish(&queue, next, Outcome::Done);
    assert_eq!(queue.stats().tracked, 1, "e is still in flight");
}

#[tokio::test(start_paused = true)]
async fn a_parked_entry_removed_meanwhile_is_dropped_when_released() {
    let queue = queue();
    let old = EntryHandle::new(1);
    queue.add("a", old.clone());
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    let new = EntryHandle::new(2);
    queue.add("a", new.clone());
    batch_all(&queue);
    assert!(pop(&queue).is_none(), "parked");
    new.mark_removed();
    queue.remove(&new);
    finish(&queue, batch, Outcome::Done);
    batch_all(&queue);
    assert!(pop(&queue).is_none());
    assert_eq!(queue.stats(), QueueStats::default());
}

#[tokio::test(start_paused = true)]
async fn entries_the_batcher_leaves_out_or_fails_on_are_handled() {
    let queue = queue();
    for id in ["a", "b", "c"] {
        queue.add(id, EntryHandle::new(0));
    }
    let mut hand = queue.take_pool();
    hand.pooled()[0]
        .as_ref()
        .unwrap()
        .item
        .entry
        .update_queue_state(|s| Some(QueueState { backed_off: true, ..s }))
        .unwrap();
    let forget = hand.leave(&[0]);
    assert_eq!(forget, ["a"], "left out, with limiter state to drop");
    assert_eq!(queue.stats().tracked, 2);

    let gone = hand.fail(&[Duration::from_secs(5), Duration::from_secs(5)]);
    assert!(gone.is_empty());
    assert_eq!(queue.stats(), QueueStats { tracked: 2, delayed: 2, ..QueueStats::default() });
}

#[tokio::test(start_paused = true)]
async fn a_hand_dropped_by_a_panic_lets_go_of_what_it_holds() {
    let queue = queue();
    let a = EntryHandle::new(0);
    queue.add("a", a.clone());
    queue.add("b", EntryHandle::new(0));
    let hand = queue.take_pool();
    drop(hand); // a batcher, limiter or `Clone` that panicked
    assert_eq!(queue.stats(), QueueStats::default());
    assert_eq!(a.queue_state().slot, QueueSlot::Idle, "the next sweep claims it again");
    let mut sweep = queue.sweeper(None);
    sweep.offer(&"a", &a);
    assert_eq!(sweep.finish(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_clone_in_a_sweep_strands_nothing() {
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Fragile;
    impl Clone for Fragile {
        fn clone(&self) -> Self {
            panic!("clone");
        }
    }
    let queue = WorkQueue::<Fragile, u32>::new();
    let a = EntryHandle::new(0);
    let mut sweep = queue.sweeper(None);
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sweep.offer(&Fragile, &a)));
    assert!(panicked.is_err());
    drop(sweep);
    assert_eq!(a.queue_state().slot, QueueSlot::Idle);
    assert_eq!(queue.stats(), QueueStats::default());
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_gives_up_releases_its_ids() {
    let queue = queue();
    let a = EntryHandle::new(1);
    queue.add("a", a.clone());
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    a.update_queue_state(|s| Some(QueueState { backed_off: true, ..s })).unwrap();
    assert!(finish(&queue, batch, Outcome::Abandoned).is_empty());
    assert_eq!(queue.stats(), QueueStats::default());
    assert_eq!(a.queue_state(), QueueState { slot: QueueSlot::Idle, backed_off: true });

    // Popped but not started (hashing an id panicked): let go.
    let b = EntryHandle::new(2);
    queue.add("b", b.clone());
    batch_all(&queue);
    let mut popped = Vec::new();
    {
        let mut inner = queue.inner.lock();
        let mark = inner.marks.pop_front().unwrap();
        let Inner { items, in_flight, .. } = &mut *inner;
        for item in items.drain(..mark.len) {
            in_flight.reserve(item, &mut popped);
        }
    }
    let mut release = Vec::new();
    queue.abandon(&mut popped, &mut release);
    queue.release(&mut release);
    assert_eq!(b.queue_state().slot, QueueSlot::Idle);
    assert_eq!(queue.stats(), QueueStats::default());
}

#[tokio::test(start_paused = true)]
async fn a_failure_finishing_after_close_is_returned_for_its_limiter_state() {
    let queue = queue();
    queue.add("a", EntryHandle::new(1));
    queue.add("b", EntryHandle::new(2));
    queue.add("c", EntryHandle::new(3));
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    queue.close(); // shutdown while the batch was in flight
    let mut release = Vec::new();
    let outcomes = batch.into_iter().map(|t| {
        let outcome = match t.id {
            "a" => Outcome::Retry(Duration::from_secs(1)),
            "b" => Outcome::Retry(Duration::ZERO),
            _ => Outcome::Done,
        };
        (t, outcome)
    });
    let mut forget = queue.finish(outcomes, &mut release);
    queue.release(&mut release);
    forget.sort_unstable();
    assert_eq!(forget, ["a", "b"], "the retries' backoff must be forgotten; a success has none");
    assert_eq!(queue.stats(), QueueStats::default());
}

#[tokio::test(start_paused = true)]
async fn close_lets_go_of_everything_and_ignores_later_adds() {
    let queue = queue();
    let a = EntryHandle::new(0);
    queue.add("a", a.clone());
    let b = EntryHandle::new(0);
    queue.add("b", b.clone());
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    let c = EntryHandle::new(0);
    queue.add("c", c.clone());
    queue.close();
    assert!(!queue.add("d", EntryHandle::new(0)));
    finish(&queue, batch, Outcome::Retry(Duration::from_secs(1)));
    assert_eq!(queue.stats(), QueueStats::default());
    assert!(!queue.has_pooled());
    for entry in [a, b, c] {
        assert_eq!(entry.queue_state().slot, QueueSlot::Idle);
    }
}

// ---------------------------------------------------------------------------------------
// Review attacks.
// ---------------------------------------------------------------------------------------

/// A retry's backoff is user data (the limiter's `when`, a sync error's `RetryAfter`): one
/// too long for an `Instant` (`Duration::MAX`: an uncapped `ItemExponentialFailureRateLimiter`
/// after ~61 failures, or `RetryAfter::new(Duration::MAX)`) makes `now + backoff` panic under
/// the queue's lock in `finish`, after the first entry was stepped to `Delayed` (no record),
/// with the other entries of the batch still `Running` and the parked ones, already released
/// from `in_flight`, still `Queued` with nobody holding them: stranded for good.
#[tokio::test(start_paused = true)]
async fn finish_with_an_unrepresentable_backoff_strands_nothing() {
    let queue = queue();
    let a = EntryHandle::new(1);
    let b = EntryHandle::new(2);
    queue.add("a", a.clone());
    queue.add("b", b.clone());
    batch_all(&queue);
    let batch = pop(&queue).unwrap();
    assert_eq!(ids(&batch), ["a", "b"]);
    // `a` created again while its old entry is in flight: parked behind it.
    let again = EntryHandle::new(3);
    queue.add("a", again.clone());
    batch_all(&queue);
    assert!(pop(&queue).is_none());

    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        finish(&queue, batch, Outcome::Retry(Duration::MAX))
    }));
    let stats = queue.stats();
    assert_eq!(stats.running, 0, "an entry of the batch was left Running: {stats:?}");
    assert_eq!(stats.in_flight, 0);
    assert!(!matches!(b.queue_state().slot, QueueSlot::Running { .. }), "b stranded");
    assert!(queue.has_pooled(), "the parked entry, released, must reach the pool");
    assert!(finished.is_ok(), "finish panicked on a long backoff");
}

/// The same overflow in `Hand::fail` (the batcher failed, each entry retried after the
/// limiter's backoff): the first entry is left `Delayed` with no record, the rest of the hand
/// is dropped while `Queued` (nobody will ever claim them again) and the depth counter keeps
/// them for good.
#[tokio::test(start_paused = true)]
async fn a_failed_batch_with_an_unrepresentable_backoff_strands_nothing() {
    let queue = queue();
    let a = EntryHandle::new(1);
    let b = EntryHandle::new(2);
    queue.add("a", a.clone());
    queue.add("b", b.clone());
    let mut hand = queue.take_pool();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hand.fail(&[Duration::MAX, Duration::MAX])
    }));
    drop(hand);
    let stats = queue.stats();
    assert_ne!(b.queue_state().slot, QueueSlot::Queued, "b: Queued, held by nobody");
    assert_eq!(stats.ready, 0, "{stats:?}");
    let delayed = [&a, &b]
        .iter()
        .filter(|e| matches!(e.queue_state().slot, QueueSlot::Delayed { .. }))
        .count();
    assert_eq!(stats.delayed, delayed, "every Delayed entry has its record");
    assert!(failed.is_ok(), "Hand::fail panicked on a long backoff");
}

// ---------------------------------------------------------------------------------------
// Review attacks (2): the deferred release of reserved ids.
// ---------------------------------------------------------------------------------------

/// `pop_batch` reserves the id of every popped entry before its `Queued` -> `Running` swap;
/// the id of an entry removed while its batch waited (the swap fails) goes to the worker's
/// `release` list, released only at that worker's next pop. If the rest of the batch
/// started, that is after the whole sync call of the rest: a new entry of the removed id
/// (deleted and created again) is parked behind a call that does not carry its id at all,
/// for as long as that unrelated call lasts (forever, for a sync without a timeout). The
/// last commit (ec1663a) releases at once for exactly this reason for the entries found
/// removed once started (`skipped`); those found removed at the swap are left out.
#[tokio::test(start_paused = true)]
async fn an_id_removed_in_a_waiting_batch_is_not_held_through_the_rest_of_its_call() {
    let queue = queue();
    let old = EntryHandle::new(1);
    let y = EntryHandle::new(2);
    let mut sweep = queue.sweeper(NonZeroUsize::new(2));
    sweep.offer(&"x", &old);
    sweep.offer(&"y", &y);
    assert_eq!(sweep.finish(), 2);
    // x deleted while its batch waits for a worker, and created again.
    old.mark_removed();
    queue.remove(&old);
    let new = EntryHandle::new(3);
    assert!(queue.add("x", new.clone()));

    // Worker A pops the batch: y starts (a long call), the old x fails its swap.
    let mut a_release = Vec::new();
    let mut a_batch = Vec::new();
    queue.pop_batch(&mut Vec::new(), &mut a_release, &mut a_batch).unwrap();
    assert_eq!(ids(&a_batch), ["y"]);

    // Worker B, while A's call of y runs: no call of x is in flight anywhere.
    queue.batch_pool_in_runs(NonZeroUsize::MIN);
    let b = pop(&queue).map(|batch| ids(&batch));
    assert_eq!(
        b,
        Some(vec!["x"]),
        "the new x is parked behind A's call of y ({:?})",
        new.queue_state().slot
    );
    assert_eq!(
        queue.stats().in_flight,
        2,
        "only x and y are in calls, yet {} ids are reserved (A still holds x, released at its next pop)",
        queue.stats().in_flight
    );
}
