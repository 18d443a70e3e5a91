//! The item plane against a real redis-server: replicas in one process, each with its own
//! link, outbox and in-memory local store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use autorefresh_core::LocalReplica;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Items;
use crate::codec::{Codec, Postcard};
use crate::config::RedisConfig;
use crate::link::Link;
use crate::testing::RedisServer;

/// The local store of a replica: what the cache would hold.
#[derive(Default)]
struct Store {
    items: Mutex<HashMap<String, String>>,
}

impl LocalReplica<String, String> for Store {
    fn upsert(&self, id: String, item: String) {
        self.items.lock().insert(id, item);
    }

    fn remove(&self, id: &String) {
        self.items.lock().remove(id);
    }

    fn get(&self, id: &String) -> Option<String> {
        self.items.lock().get(id).cloned()
    }

    fn for_each_id(&self, visit: &mut dyn FnMut(&String)) {
        let ids: Vec<String> = self.items.lock().keys().cloned().collect();
        ids.iter().for_each(visit);
    }
}

type Plane = Items<String, String, Postcard>;

/// One replica: its item plane running on a task, and its local store.
struct Replica {
    items: Arc<Plane>,
    store: Arc<Store>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    _acquired: mpsc::UnboundedSender<Vec<u16>>,
}

impl Replica {
    async fn start(server: &RedisServer, namespace: &str) -> Self {
        let config = RedisConfig {
            namespace: Some(namespace.to_owned()),
            shards: 8,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
            shutdown_flush_timeout: Duration::from_secs(1),
            retry_min_backoff: Duration::from_millis(20),
            retry_max_backoff: Duration::from_millis(200),
            ..RedisConfig::new(server.url())
        };
        let link = Arc::new(Link::connect("items-test", config).await.unwrap());
        let items = Arc::new(Items::new(link, Arc::new(Postcard)));
        let (acquired, _) = mpsc::unbounded_channel();
        let mut replica = Self { items, store: Arc::default(), running: None, _acquired: acquired };
        replica.resume();
        replica
    }

    /// Runs the item plane (again).
    fn resume(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let (items, store) = (Arc::clone(&self.items), Arc::clone(&self.store));
        let (_, acquired) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let shutdown = Box::pin(async move {
                let _ = stopped.await;
            });
            items.run(store, shutdown, acquired).await;
        });
        self.running = Some((stop, task));
    }

    /// Stops the item plane (flushing its outbox), as a shutdown would.
    async fn pause(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.unwrap();
        }
    }

    /// What the cache does on `get_or_create` of a new id.
    fn create(&self, id: &str, item: &str) {
        self.store.upsert(id.to_owned(), item.to_owned());
        self.items.created(&id.to_owned(), &item.to_owned());
    }

    fn update(&self, id: &str, item: &str) {
        self.store.upsert(id.to_owned(), item.to_owned());
        self.items.updated(&id.to_owned(), &item.to_owned());
    }

    fn refresh(&self, id: &str, item: &str) {
        self.store.upsert(id.to_owned(), item.to_owned());
        self.items.refreshed(&id.to_owned(), &item.to_owned());
    }

    fn delete(&self, id: &str) {
        self.store.remove(&id.to_owned());
        self.items.deleted(&id.to_owned());
    }

    fn local(&self, id: &str) -> Option<String> {
        self.store.get(&id.to_owned())
    }

    fn len(&self) -> usize {
        self.store.items.lock().len()
    }

    async fn remote(&self, id: &str) -> Option<String> {
        self.items.fetch(&id.to_owned()).await.unwrap()
    }

    async fn drained(&self) -> bool {
        self.items.state.lock().outbox.is_empty()
    }
}

/// Polls `condition` until it holds, failing after a generous deadline (real server, real
/// time).
macro_rules! eventually {
    ($what:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if $condition {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never happened: {}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

fn some(item: &str) -> Option<String> {
    Some(item.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_on_one_replica_appears_on_the_others_and_on_late_joiners() {
    let Some(server) = RedisServer::start() else { return };
    let a = Replica::start(&server, "create").await;
    let b = Replica::start(&server, "create").await;
    a.create("job-1", "one");
    eventually!("b sees job-1", b.local("job-1") == some("one"));
    assert_eq!(a.remote("job-1").await, some("one"));
    b.update("job-1", "one-b");
    eventually!("a sees b's update", a.local("job-1") == some("one-b"));
    for i in 0..300 {
        a.create(&format!("bulk-{i}"), &i.to_string());
    }
    eventually!("b sees 301 items", b.len() == 301);
    // A replica that joins later loads what was created before it.
    let c = Replica::start(&server, "create").await;
    eventually!("c loaded 301 items", c.len() == 301);
    assert_eq!(c.local("job-1"), some("one-b"));
    assert_eq!(b.remote("nobody").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_id_have_one_winner_everywhere() {
    let Some(server) = RedisServer::start() else { return };
    let a = Replica::start(&server, "race").await;
    let b = Replica::start(&server, "race").await;
    for i in 0..50 {
        let id = format!("race-{i}");
        a.create(&id, "from-a");
        b.create(&id, "from-b");
    }
    for i in 0..50 {
        let id = format!("race-{i}");
        eventually!(format!("{id} settled"), a.drained().await && b.drained().await);
        let winner = a.remote(&id).await.expect("created");
        eventually!(
            format!("{id}: both hold the winner {winner}"),
            a.local(&id).as_ref() == Some(&winner) && b.local(&id).as_ref() == Some(&winner)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_from_a_stale_version_loses_to_the_current_item() {
    let Some(server) = RedisServer::start() else { return };
    let mut a = Replica::start(&server, "stale").await;
    let b = Replica::start(&server, "stale").await;
    a.create("job", "v1");
    eventually!("b sees v1", b.local("job") == some("v1"));
    // A refreshes from v1 while it is cut off; meanwhile B's caller updates the item.
    a.pause().await;
    a.refresh("job", "a-refresh-of-v1");
    b.update("job", "b-update");
    eventually!("b's update landed", b.remote("job").await == some("b-update"));
    a.resume();
    eventually!("a ends with b's update", a.local("job") == some("b-update") && a.drained().await);
    assert_eq!(a.remote("job").await, some("b-update"));
    assert_eq!(b.local("job"), some("b-update"));
    // From the current version, A's next refresh wins.
    a.refresh("job", "a-refresh");
    eventually!("b sees a's refresh", b.local("job") == some("a-refresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_reaches_the_others_and_nothing_brings_it_back() {
    let Some(server) = RedisServer::start() else { return };
    let a = Replica::start(&server, "delete").await;
    let mut b = Replica::start(&server, "delete").await;
    a.create("gone", "x");
    a.create("kept", "y");
    eventually!("b sees both", b.local("gone").is_some() && b.local("kept").is_some());
    // B's late refresh and update race A's delete: whatever order, the delete stands.
    b.pause().await;
    a.delete("gone");
    eventually!("the delete landed", a.remote("gone").await.is_none());
    b.refresh("gone", "zombie-refresh");
    b.update("gone", "zombie-update");
    b.resume();
    eventually!("b removed it", b.local("gone").is_none() && b.drained().await);
    assert_eq!(a.remote("gone").await, None);
    assert_eq!(a.local("gone"), None);
    assert_eq!(b.local("kept"), some("y"));
    // A delete seen live.
    a.delete("kept");
    eventually!("b sees the delete", b.local("kept").is_none());
    // And a create after a delete is a new item.
    b.create("gone", "again");
    eventually!("a sees the new item", a.local("gone") == some("again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_redis_is_down_land_and_a_restart_loses_nothing() {
    let Some(mut server) = RedisServer::start() else { return };
    let a = Replica::start(&server, "outage").await;
    let b = Replica::start(&server, "outage").await;
    for i in 0..20 {
        a.create(&format!("old-{i}"), "old");
    }
    eventually!("b sees the old items", b.len() == 20);
    server.kill();
    // Writes while Redis is down wait in the outboxes; reads keep serving the local stores.
    a.create("new-a", "a");
    b.create("new-b", "b");
    a.update("old-1", "updated-while-down");
    a.delete("old-2");
    b.delete("old-3");
    for i in 0..5 {
        a.refresh("old-4", &format!("refresh-{i}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.local("new-a"), some("a"));
    // Restarted empty (no persistence): the replicas write their items back.
    server.restart();
    let mut expected: HashMap<String, String> =
        (0..20).map(|i| (format!("old-{i}"), "old".to_owned())).collect();
    expected.insert("new-a".into(), "a".into());
    expected.insert("new-b".into(), "b".into());
    expected.insert("old-1".into(), "updated-while-down".into());
    // A refresh made during the outage is written back only where absent: B's copy may win,
    // and the next sync brings the external state again. Either way, all agree.
    expected.remove("old-4");
    expected.remove("old-2");
    expected.remove("old-3");
    for (id, item) in &expected {
        eventually!(
            format!(
                "{id} in redis and both replicas: {:?} {:?} {:?}",
                a.remote(id).await,
                a.local(id),
                b.local(id)
            ),
            a.remote(id).await.as_ref() == Some(item)
                && a.local(id).as_ref() == Some(item)
                && b.local(id).as_ref() == Some(item)
        );
    }
    eventually!("old-4 agrees everywhere", {
        let remote = a.remote("old-4").await;
        remote.as_deref().is_some_and(|item| item == "old" || item == "refresh-4")
            && a.local("old-4") == remote
            && b.local("old-4") == remote
    });
    for id in ["old-2", "old-3"] {
        eventually!(
            format!("{id} deleted everywhere"),
            a.remote(id).await.is_none() && a.local(id).is_none() && b.local(id).is_none()
        );
    }
    assert!(a.drained().await && b.drained().await);
    assert_eq!((a.len(), b.len()), (expected.len() + 1, expected.len() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_messages_resynchronizes() {
    let Some(server) = RedisServer::start() else { return };
    let mut a = Replica::start(&server, "missed").await;
    let b = Replica::start(&server, "missed").await;
    b.create("deleted-meanwhile", "x");
    b.create("updated-meanwhile", "x");
    eventually!("a sees both", a.len() == 2);
    // A is not listening while B writes: it misses the events.
    a.pause().await;
    b.delete("deleted-meanwhile");
    b.update("updated-meanwhile", "y");
    b.create("created-meanwhile", "z");
    eventually!("b's writes landed", b.drained().await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.local("updated-meanwhile"), some("x"));
    a.resume();
    eventually!(
        "a caught up",
        a.local("deleted-meanwhile").is_none()
            && a.local("updated-meanwhile") == some("y")
            && a.local("created-meanwhile") == some("z")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_outbox_and_gives_up_when_redis_is_down() {
    let Some(mut server) = RedisServer::start() else { return };
    let mut a = Replica::start(&server, "shutdown").await;
    let b = Replica::start(&server, "shutdown").await;
    for i in 0..500 {
        a.create(&format!("job-{i}"), "x");
    }
    a.pause().await;
    assert!(a.drained().await, "shutdown returned before the outbox was written");
    for i in [0, 250, 499] {
        assert_eq!(b.remote(&format!("job-{i}")).await, some("x"));
    }
    // With Redis gone, shutdown gives up after about two response timeouts (0.5 s here)
    // rather than hanging; the generous bound is for slow machines.
    a.resume();
    server.kill();
    a.create("unsent", "x");
    let started = tokio::time::Instant::now();
    a.pause().await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!a.drained().await, "the unsent write stays queued for the next run");
}

/// How many connections the server has accepted so far.
async fn connections_received(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_lost_right_after_it_starts_is_retried_with_backoff() {
    let Some(server) = RedisServer::start() else { return };
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let a = Replica::start(&server, "flapping").await;
    a.create("job-1", "x");
    eventually!("a's write landed", a.drained().await);
    // Something (a proxy, an output buffer limit, a ping timing out on a busy Redis) drops
    // the event subscription as soon as it is up, for a second. Every new session costs a
    // full resync: without backoff the replica reconnects and rereads every shard at once,
    // in a loop, against a Redis that is already struggling.
    let before = connections_received(&mut admin).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        let _: redis::RedisResult<redis::Value> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reconnects = connections_received(&mut admin).await - before;
    // The backoff (20 ms doubling to 200 ms here) allows about ten in a second.
    assert!(reconnects <= 30, "{reconnects} reconnects in one second");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_never_answers_an_item_this_replica_knows_is_deleted() {
    let Some(server) = RedisServer::start() else { return };
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let a = Replica::start(&server, "fetch-deleted").await;
    let mut b = Replica::start(&server, "fetch-deleted").await;
    a.create("job-1", "x");
    eventually!("b sees job-1", b.local("job-1") == some("x"));
    let keys = crate::keys::Keys::new("fetch-deleted");
    let shard = crate::shard::shard_of(&Postcard.encode(&"job-1".to_owned()).unwrap(), 8);
    let version: String = redis::cmd("HGET")
        .arg(keys.versions(shard))
        .arg(Postcard.encode(&"job-1".to_owned()).unwrap())
        .query_async(&mut admin)
        .await
        .unwrap();
    a.delete("job-1");
    eventually!("b applied the delete", b.local("job-1").is_none());
    // B's fetch read Redis just before A's delete landed, and its answer comes back after
    // B applied the delete's event (the two travel on different connections): Redis
    // answers the item as it was, which is put back here as that read would have seen it.
    let id = Postcard.encode(&"job-1".to_owned()).unwrap();
    let _: () = redis::pipe()
        .hset(keys.items(shard), &id, Postcard.encode(&"x".to_owned()).unwrap())
        .hset(keys.versions(shard), &id, &version)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(b.remote("job-1").await, None, "the cache would store the deleted item again");

    // The same with a delete of B's own that Redis has not taken yet.
    b.pause().await;
    b.delete("job-1");
    assert_eq!(b.remote("job-1").await, None, "the cache would store the deleted item again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_decode_are_counted_and_skipped_never_silently() {
    let Some(server) = RedisServer::start() else { return };
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let a = Replica::start(&server, "foreign").await;
    a.create("job-1", "x");
    eventually!("a's write landed", a.drained().await);
    // Another service writes under the same namespace with another codec: an id and an item
    // that are not postcard strings (0xff 0xff is no valid length).
    let keys = crate::keys::Keys::new("foreign");
    let garbage: &[u8] = &[0xff, 0xff, 0xff];
    let id = Postcard.encode(&"job-2".to_owned()).unwrap();
    let shard = crate::shard::shard_of(&id, 8);
    let _: () = redis::pipe()
        .hset(keys.items(shard), &id, garbage)
        .hset(keys.versions(shard), &id, 1_000)
        .hset(keys.items(0), garbage, Postcard.encode(&"y".to_owned()).unwrap())
        .hset(keys.versions(0), garbage, 1_001)
        .query_async(&mut admin)
        .await
        .unwrap();
    // A replica joining reads every shard: both are skipped, counted, and nothing else lost.
    let b = Replica::start(&server, "foreign").await;
    eventually!("b read job-1", b.local("job-1") == some("x"));
    eventually!("b counted both", b.items.undecodable_count() >= 2);
    assert_eq!(b.local("job-2"), None);
    assert_eq!(a.items.undecodable_count(), 0, "a read nothing foreign yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_cannot_flush_counts_and_logs_what_it_gave_up() {
    let Some(mut server) = RedisServer::start() else { return };
    let mut a = Replica::start(&server, "unflushed").await;
    a.create("job-1", "x");
    eventually!("a's write landed", a.drained().await);
    assert_eq!(a.items.unflushed_count(), 0);
    server.kill();
    a.update("job-1", "y");
    a.create("job-2", "z");
    // Redis is away for the whole flush (1 s here): both writes are given up, and counted.
    a.pause().await;
    assert_eq!(a.items.unflushed_count(), 2);
}
