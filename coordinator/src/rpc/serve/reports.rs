//! Gateways' reports about reads: `ReportShard` (bytes that did not verify) and
//! `ReportRefusal` (a read the node refused for a reason of its own). Each is checked
//! against the catalog's placement and taken once per gateway and shard; it asks for an
//! audit, and only the audit judges the node.

use cairn_client::gateway_rpc::GatewayResponse;
use cairn_proto::identity::{NodeId, PublicKey};
use cairn_proto::ids::ShardId;

use crate::catalog::{Catalog, Command};
use crate::rpc::context::{Answer, RpcContext, commit, internal};

/// `ReportRefusal`: the shard is audited on that node; nothing is counted against it.
pub(super) fn report_refusal(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: String,
    key: String,
    node: NodeId,
    shard: ShardId,
    problem: &str,
) -> Answer {
    if !placed_on(&ctx.catalog, &bucket, &key, node, shard)? {
        tracing::info!(%node, %shard, gateway = %peer, problem, "ignoring a refused-read report about a shard not placed on that node");
        return Ok(GatewayResponse::Done);
    }
    let failed = crate::repair::FailedShard { node, bucket, key };
    if ctx.repairs.take_refusal(peer, shard, failed) {
        // A refusal is the node's word about itself, which a gateway could also
        // make up: the audit it asks for judges, nothing else.
        tracing::info!(%node, %shard, gateway = %peer, problem, "node refused a read; auditing the shard");
    } else {
        tracing::debug!(%node, %shard, gateway = %peer, "repeated refused-read report ignored");
    }
    Ok(GatewayResponse::Done)
}

/// `ReportShard`: the bad read is counted, the shard rebuilt elsewhere and audited on
/// that node.
pub(super) async fn report_shard(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: String,
    key: String,
    node: NodeId,
    shard: ShardId,
    problem: &str,
) -> Answer {
    // Judged only against the catalog: a report about a shard moved or deleted
    // since the read (or never placed there) is no evidence about the node.
    let placed = placed_on(&ctx.catalog, &bucket, &key, node, shard)?;
    if !placed {
        tracing::info!(%node, %shard, gateway = %peer, problem, "ignoring a bad-read report about a shard not placed on that node");
        return Ok(GatewayResponse::Done);
    }
    let failed = crate::repair::FailedShard { node, bucket, key };
    if !ctx.repairs.take_report(peer, shard, failed.clone()) {
        tracing::debug!(%node, %shard, gateway = %peer, "repeated bad-read report ignored");
        return Ok(GatewayResponse::Done);
    }
    tracing::warn!(%node, %shard, gateway = %peer, problem, "gateway reports a bad shard read; auditing it");
    commit(ctx, Command::ReportBadRead { node }).await?;
    // The copy is rebuilt elsewhere at once (a second copy costs little; a reader
    // met a bad one); the node is judged by the audit the report asked for.
    ctx.repairs.report_failed(shard, failed);
    Ok(GatewayResponse::Done)
}

/// Whether the catalog places `shard` of `bucket`/`key` on `node` now.
fn placed_on(
    catalog: &Catalog,
    bucket: &str,
    key: &str,
    node: NodeId,
    shard: ShardId,
) -> Result<bool, GatewayResponse> {
    Ok(catalog
        .object(bucket, key)
        .map_err(internal)?
        .is_some_and(|object| {
            object
                .body
                .shards()
                .any(|s| s.id == shard && s.node == node)
        }))
}
