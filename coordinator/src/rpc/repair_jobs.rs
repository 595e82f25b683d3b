//! Repair jobs over the gateway RPC: handing a queued segment to a gateway with everything
//! it needs (read orders for the shards that exist, put orders for the replacements), and
//! checking and committing what it did.
//!
//! The gateway is trusted to do the work, not to say what the catalog becomes: a rebuilt
//! shard must hash to the root the catalog already holds for its index (Reed-Solomon is
//! deterministic, so a correct rebuild reproduces the lost shard bit for bit), the node
//! must have signed a receipt for exactly that, and the commit lands only if the shards it
//! replaces are still the current ones.

use cairn_erasure::Codec;
use cairn_proto::identity::PublicKey;

use super::context::{
    Answer, RpcContext, address, bucket_record, candidate, candidates, commit, error, internal,
    now_ms,
};
use super::orders::{fresh_enough, random, sign_get, sign_put};
use cairn_client::gateway_rpc::{
    GatewayResponse, PlacedShard, RepairJob, RepairTicket, RpcCode, StoredShard,
};

use super::verify_shard;
use crate::catalog::model::{NodeRecord, NodeState, ObjectBody, ObjectRecord};
use crate::catalog::{Catalog, CatalogFault, Command, CommandResult, ShardReplacement};
use crate::durability::Need;
use crate::placement::{PlacementRequest, guarantee_of, place_moves, place_replacements, rule};

/// Queued segments looked at per request before answering "nothing for now": a need can
/// be stale (the object was overwritten) or not placeable yet.
const TRIES: usize = 8;

/// Hands out the next repair job, if any.
pub(super) fn next_job(ctx: &RpcContext, peer: PublicKey) -> GatewayResponse {
    for _ in 0..TRIES {
        let need = match ctx.repairs.next() {
            Ok(need) => need,
            Err(wait) => {
                return GatewayResponse::NoRepairWork {
                    retry_after_ms: wait.as_millis() as u64,
                };
            }
        };
        match prepare(ctx, peer, &need) {
            Ok(Some(job)) => {
                tracing::info!(
                    bucket = %need.bucket,
                    key = %need.key,
                    part = need.part,
                    segment = need.segment,
                    margin = need.margin,
                    shards = job.targets.len(),
                    gateway = %peer,
                    reason = job.ticket.reason.as_str(),
                    "repair job handed out"
                );
                return GatewayResponse::RepairJob(Box::new(job));
            }
            Ok(None) => ctx
                .repairs
                .release(&need.bucket, &need.key, need.part, need.segment),
            Err(problem) => {
                tracing::warn!(bucket = %need.bucket, key = %need.key, part = need.part, segment = need.segment, %problem, "cannot repair segment now");
                ctx.repairs
                    .release(&need.bucket, &need.key, need.part, need.segment);
            }
        }
    }
    GatewayResponse::NoRepairWork {
        retry_after_ms: ctx.repairs.settings().interval.as_millis() as u64,
    }
}

/// What a repair works on, as an object: the object `bucket`/`key` at version `etag`, or
/// part `part` of the upload in progress `key` (in `bucket`) as uploaded with `etag`;
/// `None` once it is gone or another version.
fn repaired(
    catalog: &Catalog,
    bucket: &str,
    key: &str,
    part: Option<u32>,
    etag: &str,
) -> Result<Option<ObjectRecord>, CatalogFault> {
    let record = match part {
        None => catalog.object(bucket, key)?,
        Some(number) => match catalog.upload(key)?.filter(|u| u.bucket == bucket) {
            None => None,
            Some(upload) => catalog
                .parts(key, number.saturating_sub(1), 1)?
                .into_iter()
                .find(|(n, _)| *n == number)
                .map(|(_, part)| part.as_object(&upload)),
        },
    };
    Ok(record.filter(|o| o.etag == etag))
}

/// The job for `need` as the catalog stands now; `None` if there is nothing left to do.
fn prepare(ctx: &RpcContext, peer: PublicKey, need: &Need) -> Result<Option<RepairJob>, String> {
    let catalog = &ctx.catalog;
    let Some(object) = repaired(catalog, &need.bucket, &need.key, need.part, &need.etag)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let ObjectBody::Segments { erasure, segments } = &object.body else {
        return Ok(None);
    };
    let Some(segment) = segments.get(need.segment as usize) else {
        return Ok(None);
    };
    let bucket = catalog
        .bucket(&need.bucket)
        .map_err(|e| e.to_string())?
        .ok_or("the bucket is gone")?;
    let codec =
        Codec::new(usize::from(erasure.k), usize::from(erasure.m)).map_err(|e| e.to_string())?;
    let shard_size = codec.shard_len(segment.len);
    let nodes = catalog.nodes().map_err(|e| e.to_string())?;
    // A shard its node's inventory lacks is as lost as one on a lost node.
    let missing = ctx.repairs.missing();
    let state = |i: usize| {
        let shard = &segment.shards[i];
        if missing.contains(&shard.id) {
            return None;
        }
        nodes.iter().find(|n| n.id == shard.node).map(|n| n.state)
    };
    // Decide again from the current states: the survey may be a while old.
    let mut replace = Vec::new();
    let mut lost = false;
    for i in 0..segment.shards.len() {
        match state(i) {
            Some(s) if s.holds_data() && s != NodeState::Draining => {}
            Some(NodeState::Draining) => replace.push(i),
            _ => {
                lost = true;
                replace.push(i);
            }
        }
    }
    // Rebalancing moves shards that are healthy where they are.
    let mut rebalance = false;
    for &i in &need.moving {
        let i = i as usize;
        if i < segment.shards.len() && !replace.contains(&i) {
            replace.push(i);
            rebalance = true;
        }
    }
    replace.sort_unstable();
    if replace.is_empty() {
        return Ok(None);
    }
    // Readable shards, best first: nodes in good standing, then draining ones (still
    // serving while they leave), then suspect ones (may not answer).
    let rank = |s: NodeState| match s {
        NodeState::Active | NodeState::Vetting => 0,
        NodeState::Draining => 1,
        _ => 2,
    };
    let mut readable: Vec<(u8, usize)> = (0..segment.shards.len())
        .filter_map(|i| state(i).filter(|s| s.holds_data()).map(|s| (rank(s), i)))
        .collect();
    readable.sort();
    if readable.len() < usize::from(erasure.k) {
        return Err(format!(
            "only {} of the {} shards needed to rebuild are readable",
            readable.len(),
            erasure.k
        ));
    }
    let mut sources = Vec::with_capacity(readable.len());
    for &(_, i) in &readable {
        let shard = &segment.shards[i];
        let order = sign_get(ctx, peer, shard, shard_size).map_err(|e| e.to_string())?;
        sources.push((i as u32, address(&nodes, &shard.node), order));
    }
    // The shards that stay constrain where the new ones may go.
    let kept: Vec<_> = (0..segment.shards.len())
        .filter(|i| !replace.contains(i))
        .filter_map(|i| nodes.iter().find(|n| n.id == segment.shards[i].node))
        .map(|n: &NodeRecord| candidate(ctx, n))
        .collect();
    let request = PlacementRequest {
        failure_tolerance: usize::from(bucket.failure_tolerance),
        ..PlacementRequest::new(usize::from(erasure.k), usize::from(erasure.m), shard_size)
    };
    let seed = u64::from_le_bytes(random::<8>().map_err(|e| e.to_string())?);
    // Not back onto a node that just lost or is leaving one of these shards; a rebalancing
    // move goes only to the under-full nodes it was planned for.
    let avoid: Vec<_> = replace.iter().map(|&i| segment.shards[i].node).collect();
    let mut pool = candidates(ctx, &nodes, &avoid);
    if rebalance && !need.targets.is_empty() {
        pool.retain(|c| need.targets.contains(&c.node));
    }
    let placement = if lost {
        // Rebuilding comes first: a lost shard is replaced as well as the cluster allows
        // now, and a later survey restores the spread rule if this weakened it.
        place_replacements(&pool, &kept, &request, replace.len(), seed)
    } else {
        // A move must never leave the segment spread more weakly than it is; one restoring
        // the rule must reach it.
        let holders: Vec<_> = segment
            .shards
            .iter()
            .filter_map(|s| nodes.iter().find(|n| n.id == s.node))
            .map(|n| candidate(ctx, n))
            .collect();
        let now = guarantee_of(&holders, &request);
        let required = match rule(&request) {
            Some(rule) if need.respread => {
                if now.at_least(&rule) {
                    return Ok(None);
                }
                rule
            }
            _ => now,
        };
        place_moves(&pool, &kept, &request, replace.len(), seed, required)
    }
    .map_err(|e| e.to_string())?;
    let mut targets = Vec::with_capacity(replace.len());
    for (&i, node) in replace.iter().zip(&placement.nodes) {
        let order = sign_put(ctx, peer, *node, segment.shards[i].root, shard_size)
            .map_err(|e| e.to_string())?;
        targets.push((
            i as u32,
            PlacedShard {
                addr: address(&nodes, node),
                order,
            },
        ));
    }
    Ok(Some(RepairJob {
        ticket: RepairTicket {
            bucket: need.bucket.clone(),
            key: need.key.clone(),
            part: need.part,
            etag: need.etag.clone(),
            segment: need.segment,
            reason: if lost {
                crate::catalog::MoveReason::Repair
            } else if need.respread && need.draining.is_empty() {
                crate::catalog::MoveReason::Spread
            } else if rebalance && need.draining.is_empty() {
                crate::catalog::MoveReason::Rebalance
            } else {
                crate::catalog::MoveReason::Drain
            }
            .into(),
            replaced: replace
                .iter()
                .map(|&i| (i as u32, segment.shards[i].id))
                .collect(),
        },
        erasure: (*erasure).into(),
        len: segment.len,
        roots: segment.shards.iter().map(|s| s.root).collect(),
        sources,
        targets,
    }))
}

/// Checks a finished job's receipts and commits the new shards.
pub(super) async fn finish(
    ctx: &RpcContext,
    peer: PublicKey,
    ticket: RepairTicket,
    stored: Vec<(u32, StoredShard)>,
) -> Answer {
    let release = || {
        ctx.repairs
            .release(&ticket.bucket, &ticket.key, ticket.part, ticket.segment)
    };
    let result = check_and_commit(ctx, peer, &ticket, &stored).await;
    release();
    result
}

async fn check_and_commit(
    ctx: &RpcContext,
    peer: PublicKey,
    ticket: &RepairTicket,
    stored: &[(u32, StoredShard)],
) -> Answer {
    let changed = || {
        error(
            RpcCode::Changed,
            format!(
                "{}/{} changed while its segment {} was repaired",
                ticket.bucket, ticket.key, ticket.segment
            ),
        )
    };
    bucket_record(&ctx.catalog, &ticket.bucket)?;
    let object = repaired(
        &ctx.catalog,
        &ticket.bucket,
        &ticket.key,
        ticket.part,
        &ticket.etag,
    )
    .map_err(internal)?
    .ok_or_else(changed)?;
    let ObjectBody::Segments { erasure, segments } = &object.body else {
        return Err(changed());
    };
    let segment = segments.get(ticket.segment as usize).ok_or_else(changed)?;
    let codec = Codec::new(usize::from(erasure.k), usize::from(erasure.m)).map_err(internal)?;
    let shard_len = codec.shard_len(segment.len);
    if stored.len() != ticket.replaced.len() {
        return Err(error(
            RpcCode::InvalidRequest,
            format!(
                "{} shards stored, the job replaces {}",
                stored.len(),
                ticket.replaced.len()
            ),
        ));
    }
    let mut replacements = Vec::with_capacity(stored.len());
    for &(index, old) in &ticket.replaced {
        let Some((_, shard)) = stored.iter().find(|(i, _)| *i == index) else {
            return Err(error(
                RpcCode::InvalidRequest,
                format!("no stored copy of shard {index}"),
            ));
        };
        fresh_enough(ctx, shard)?;
        let new = verify_shard(&ctx.key.public(), &peer, shard, shard_len, |id| {
            ctx.catalog.node(id).ok().flatten()
        })
        .map_err(|problem| {
            error(
                RpcCode::InvalidRequest,
                problem
                    .at(ticket.segment as usize, index as usize)
                    .to_string(),
            )
        })?;
        let current = segment.shards.get(index as usize).ok_or_else(changed)?;
        if new.root != current.root {
            return Err(error(
                RpcCode::InvalidRequest,
                format!("the copy of shard {index} has another root than the catalog's"),
            ));
        }
        replacements.push(ShardReplacement { index, old, new });
    }
    let command = match ticket.part {
        None => Command::ReplaceShards {
            bucket: ticket.bucket.clone(),
            key: ticket.key.clone(),
            etag: ticket.etag.clone(),
            segment: ticket.segment,
            replacements,
            reason: ticket.reason.into(),
            now_ms: now_ms(),
        },
        Some(number) => Command::ReplacePartShards {
            upload: ticket.key.clone(),
            number,
            etag: ticket.etag.clone(),
            segment: ticket.segment,
            replacements,
            reason: ticket.reason.into(),
            now_ms: now_ms(),
        },
    };
    let result = commit(ctx, command).await?;
    match result {
        CommandResult::Refused(err) => Err(error(RpcCode::Changed, err.to_string())),
        _ => {
            tracing::info!(
                bucket = %ticket.bucket,
                key = %ticket.key,
                part = ticket.part,
                segment = ticket.segment,
                shards = ticket.replaced.len(),
                reason = ticket.reason.as_str(),
                "segment repaired"
            );
            Ok(GatewayResponse::Done)
        }
    }
}

/// A gateway gave up on a job: the segment goes back to the next survey's queue.
pub(super) fn failed(
    ctx: &RpcContext,
    peer: PublicKey,
    ticket: &RepairTicket,
    problem: &str,
) -> GatewayResponse {
    tracing::warn!(
        bucket = %ticket.bucket,
        key = %ticket.key,
        part = ticket.part,
        segment = ticket.segment,
        gateway = %peer,
        %problem,
        "repair job failed"
    );
    ctx.repairs
        .release(&ticket.bucket, &ticket.key, ticket.part, ticket.segment);
    GatewayResponse::Done
}
