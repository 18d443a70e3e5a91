//! What the cache logs: spans per sweep and batch, an event per failure, nothing on reads.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autorefresh::{AutoRefresh, CancellationToken};
use common::{id, sync_with, Behaviour, Counter, Service};
use tracing_subscriber::fmt::MakeWriter;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn failures_are_logged_with_their_batch_and_reads_are_silent() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let service = Service::new(Behaviour::Fail);
    let cache: AutoRefresh<String, Counter> = AutoRefresh::builder("traced")
        .sync(sync_with(&service))
        .resync_period(Duration::from_secs(3600))
        .build()
        .unwrap();
    cache.get_or_create(id(1), Counter::new(10)).unwrap();
    cache.get(&id(1)).unwrap();
    assert!(cache.get(&id(2)).is_err());
    assert_eq!(captured.take(), "", "nothing on the read path");

    let running = cache.start(CancellationToken::new()).unwrap();
    common::settle().await;
    running.shutdown().await;
    let log = captured.take();
    assert!(log.contains("autorefresh.sweep"), "{log}");
    assert!(log.contains("autorefresh.batch"), "{log}");
    assert!(log.contains("cache=traced"), "{log}");
    assert!(log.contains("items=1"), "{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("sync failed"), "{log}");
    assert!(log.contains("the external system is down"), "{log}");
}
