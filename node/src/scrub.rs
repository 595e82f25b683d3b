//! Background scrub: re-reads every stored shard at a bounded rate and re-hashes it against
//! its root, so that rot is found before a read or an audit needs the shard.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::ids::ShardId;

use crate::bandwidth::Bandwidth;
use crate::metrics::NodeMetrics;
use crate::store::ShardStore;

/// Shards listed per index read.
const BATCH: usize = 64;

/// Scrubs forever at `rate` bytes per second, pausing `pause` between full passes.
pub async fn run(store: Arc<ShardStore>, metrics: Arc<NodeMetrics>, rate: u64, pause: Duration) {
    let limiter = Bandwidth::new(rate);
    let mut cursor: Option<ShardId> = None;
    loop {
        let batch = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.scrub_batch(cursor, BATCH)).await
        };
        let batch = match batch {
            Ok(Ok(batch)) => batch,
            Ok(Err(err)) => {
                tracing::warn!(%err, "scrub cannot list shards");
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(_) => return,
        };
        if batch.is_empty() {
            cursor = None;
            tokio::time::sleep(pause).await;
            continue;
        }
        for (shard, size) in batch {
            limiter.take(size).await;
            let store_for_task = store.clone();
            let intact = tokio::task::spawn_blocking(move || store_for_task.verify(shard)).await;
            match intact {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    metrics.verification_failures.inc();
                    tracing::warn!(%shard, size, "scrub found a damaged shard");
                    refresh_damaged(&store, &metrics).await;
                }
                // Deleted since it was listed: nothing to check.
                Ok(Err(crate::store::StoreError::NotFound(_))) => {}
                Ok(Err(err)) => tracing::warn!(%shard, %err, "scrub could not check shard"),
                Err(_) => return,
            }
            metrics.scrubbed_bytes.inc_by(size);
            cursor = Some(shard);
        }
        refresh_damaged(&store, &metrics).await;
    }
}

/// Sets the damaged-shards gauge from the store's record.
pub async fn refresh_damaged(store: &Arc<ShardStore>, metrics: &NodeMetrics) {
    let store = store.clone();
    if let Ok(Ok(damaged)) = tokio::task::spawn_blocking(move || store.damaged()).await {
        metrics.damaged_shards.set(damaged.len() as i64);
    }
}
