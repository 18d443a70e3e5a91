//! Builds a cache from the TOML file shipped beside this example.
//!
//! Run it with `cargo run --example config` (or pass another TOML file's path).

use std::time::Duration;

use autorefresh::{
    AutoRefresh, AutoRefreshConfig, Batch, CancellationToken, Item, ItemSyncResponse, SyncAction,
};

#[derive(Clone, Debug)]
struct Run {
    state: u8,
}

impl Item for Run {
    fn is_terminal(&self) -> bool {
        self.state >= 3
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/config.toml").into()
    });
    let config: AutoRefreshConfig = toml::from_str(&std::fs::read_to_string(&path)?)?;
    println!("settings from {path}: {config:?}");

    let cache: AutoRefresh<String, Run> = AutoRefresh::builder("runs")
        .sync(|batch: Batch<String, Run>| async move {
            println!("syncing a batch of {}", batch.len());
            Ok(batch
                .into_iter()
                .map(|w| {
                    let (id, run) = w.into_parts();
                    ItemSyncResponse {
                        id,
                        item: Run { state: run.state + 1 },
                        action: SyncAction::Update,
                    }
                })
                .collect())
        })
        .config(config)
        .build()?;
    let running = cache.start(CancellationToken::new())?;
    for n in 0..60 {
        cache.get_or_create(format!("run-{n}"), Run { state: 0 })?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.shutdown().await;
    let done =
        (0..60).filter(|n| cache.get(&format!("run-{n}")).is_ok_and(|r| r.is_terminal())).count();
    println!("{done} of 60 runs reached their terminal state");
    Ok(())
}
