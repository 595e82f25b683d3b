//! Repair work, done by gateways for the coordinator: fetch `k` verified shards of a
//! segment, rebuild the missing ones, store them where the coordinator placed them, and
//! hand back the receipts.
//!
//! The coordinator decides what to repair and when (its queue, its bandwidth budget); a
//! gateway only asks for the next job whenever it is free. Jobs run one at a time per
//! worker, beside client traffic on the same connections.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::calls::RepairWork;
use cairn_client::coordinator::CallError;
use cairn_client::gateway_rpc::{RepairJob, RpcCode, StoredShard};
use cairn_client::node::ClientError;
use cairn_erasure::Codec;
use cairn_proto::order::Action;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{DataPath, ShardProblem};

/// Longest pause between asks when the coordinator cannot be reached or refuses.
const BACKOFF: Duration = Duration::from_secs(5);

/// What a finished job did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Shards stored.
    pub shards: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Asks the coordinator for repair jobs and does them, until the task is dropped.
/// `report` hears of nodes that sent bad bytes; `done` of every committed job.
pub async fn run_worker(
    path: Arc<DataPath>,
    report: Arc<dyn Fn(ShardProblem) + Send + Sync>,
    done: Arc<dyn Fn(Repaired) + Send + Sync>,
) {
    loop {
        let wait = match path.coordinator.repair_job().await {
            Ok(RepairWork::Job(job)) => {
                let ticket = job.ticket.clone();
                match execute(&path, &job, &report).await {
                    Ok(stored) => {
                        let repaired = Repaired {
                            shards: stored.len(),
                            bytes: stored.len() as u64 * shard_size(&job),
                        };
                        match path.coordinator.repair_done(ticket.clone(), stored).await {
                            Ok(()) => done(repaired),
                            Err(err) => tracing::warn!(
                                bucket = %ticket.bucket,
                                key = %ticket.key,
                                part = ticket.part,
                                segment = ticket.segment,
                                %err,
                                "repair not committed"
                            ),
                        }
                    }
                    Err(problem) => {
                        if let Err(err) = path.coordinator.repair_failed(ticket, problem).await {
                            tracing::warn!(%err, "could not report a failed repair job");
                        }
                    }
                }
                Duration::ZERO
            }
            Ok(RepairWork::Later(after)) => after.clamp(Duration::from_millis(20), BACKOFF * 12),
            Err(err @ CallError::Unexpected(_)) => {
                tracing::warn!(%err, "coordinator answered a repair ask with something else");
                BACKOFF
            }
            Err(CallError::Refused {
                code: RpcCode::Forbidden,
                ..
            }) => {
                tracing::debug!("not registered with the coordinator yet: no repair work");
                BACKOFF
            }
            Err(err) => {
                tracing::debug!(%err, "cannot ask for repair work");
                BACKOFF
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

fn shard_size(job: &RepairJob) -> u64 {
    job.targets
        .first()
        .and_then(|(_, placed)| match placed.order.order.action {
            Action::Put { size, .. } => Some(size),
            _ => None,
        })
        .unwrap_or(0)
}

/// Does one job: returns the stored shards with their receipts, or what went wrong.
async fn execute(
    path: &DataPath,
    job: &RepairJob,
    report: &Arc<dyn Fn(ShardProblem) + Send + Sync>,
) -> Result<Vec<(u32, StoredShard)>, String> {
    let codec = Codec::new(usize::from(job.erasure.k), usize::from(job.erasure.m))
        .map_err(|e| e.to_string())?;
    let size = codec.shard_len(job.len);
    // Generous for a slow volunteer uplink, bounded for a dead node.
    let limit = Duration::from_secs(30) + Duration::from_secs(size >> 20);
    let copies = match copy(path, job, limit).await {
        Some(copies) => copies,
        None => rebuild(path, job, codec, limit, report).await?,
    };

    // Store every shard where it was placed, in parallel.
    let sends = job.targets.iter().map(|(index, placed)| {
        let bytes = copies
            .iter()
            .find(|(i, _)| *i == *index as usize)
            .map(|(_, b)| b.as_slice());
        async move {
            let node = placed.order.order.node;
            let bytes = bytes.ok_or_else(|| format!("shard {index} was not rebuilt"))?;
            let client = path.node(node, &placed.addr).await?;
            match tokio::time::timeout(limit, client.put_shard(&placed.order, bytes)).await {
                Ok(Ok(receipt)) => Ok((
                    *index,
                    StoredShard {
                        order: placed.order.clone(),
                        receipt,
                    },
                )),
                Ok(Err(err)) => {
                    path.mark_down(node);
                    Err(format!("storing shard {index} on {node}: {err}"))
                }
                Err(_) => {
                    path.mark_down(node);
                    Err(format!(
                        "storing shard {index} on {node}: no answer within {limit:?}"
                    ))
                }
            }
        }
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .collect()
}

/// A move of shards that are still readable where they are (a drain, a rebalance): each
/// is copied, verified against its root by the node client, instead of decoded from `k`
/// others. `None` if any of them cannot be read that way.
async fn copy(path: &DataPath, job: &RepairJob, limit: Duration) -> Option<Vec<(usize, Vec<u8>)>> {
    let sources: Option<Vec<_>> = job
        .targets
        .iter()
        .map(|(index, _)| job.sources.iter().find(|(i, _, _)| i == index))
        .collect();
    let reads = sources?
        .into_iter()
        .map(|source| fetch(path, source, limit));
    let mut copies = Vec::new();
    for (index, node, shard, result) in futures_util::future::join_all(reads).await {
        match result {
            Ok(bytes) => copies.push((index as usize, bytes)),
            Err(err) => {
                tracing::debug!(%node, %shard, %err, "copying a shard failed; rebuilding it instead");
                return None;
            }
        }
    }
    Some(copies)
}

/// Reads `k` verified shards and rebuilds the job's targets from them.
async fn rebuild(
    path: &DataPath,
    job: &RepairJob,
    codec: Codec,
    limit: Duration,
    report: &Arc<dyn Fn(ShardProblem) + Send + Sync>,
) -> Result<Vec<(usize, Vec<u8>)>, String> {
    let k = codec.data_shards();
    // Read k shards, starting with the best k sources and taking the next one whenever a
    // read fails; every byte is verified against the order's root by the node client.
    let mut sources = job.sources.iter();
    let mut reads = FuturesUnordered::new();
    for source in sources.by_ref().take(k) {
        reads.push(fetch(path, source, limit));
    }
    let mut shards: Vec<(usize, Vec<u8>)> = Vec::with_capacity(k);
    let mut failures = Vec::new();
    while let Some((index, node, shard, result)) = reads.next().await {
        match result {
            Ok(bytes) => shards.push((index as usize, bytes)),
            Err(err) => {
                let (bucket, key) = (&job.ticket.bucket, &job.ticket.key);
                if let Some(problem) = ShardProblem::from_error(bucket, key, node, shard, &err) {
                    report(problem);
                }
                if matches!(err, ClientError::Connect(_) | ClientError::Stream(_)) {
                    path.mark_down(node);
                }
                failures.push(format!("shard {index} on {node}: {err}"));
                if let Some(next) = sources.next() {
                    reads.push(fetch(path, next, limit));
                }
            }
        }
        if shards.len() == k {
            break;
        }
    }
    drop(reads);
    if shards.len() < k {
        return Err(format!(
            "only {} of {k} shards could be read: {}",
            shards.len(),
            failures.join("; ")
        ));
    }

    // Rebuild on the blocking pool: decoding a 64 MiB segment is CPU work.
    let wanted: Vec<usize> = job.targets.iter().map(|(i, _)| *i as usize).collect();
    let roots = job.roots.clone();
    let len = job.len;
    let rebuilt = tokio::task::spawn_blocking(move || {
        let refs: Vec<(usize, &[u8])> = shards.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        codec.rebuild_shards(len, &roots, &refs, &wanted)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("rebuilding failed: {e}"))?;

    Ok(rebuilt.shards)
}

/// Reads one whole source shard.
async fn fetch<'a>(
    path: &'a DataPath,
    source: &'a (u32, String, cairn_proto::order::SignedOrder),
    limit: Duration,
) -> (
    u32,
    cairn_proto::identity::NodeId,
    cairn_proto::ids::ShardId,
    Result<Vec<u8>, ClientError>,
) {
    let (index, addr, order) = source;
    let node = order.order.node;
    let shard = match &order.order.action {
        Action::Get { shard, .. } => *shard,
        _ => cairn_proto::ids::ShardId([0; 16]),
    };
    let result = async {
        let client = path.node(node, addr).await.map_err(ClientError::Protocol)?;
        match tokio::time::timeout(limit, client.get_shard(order, None)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Stream(format!("no answer within {limit:?}"))),
        }
    }
    .await;
    (*index, node, shard, result)
}
