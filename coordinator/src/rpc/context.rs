//! What every gateway request handler shares: the serving context, the shape of an answer
//! and of a refusal, committing through Raft, and the nodes placement may choose from.
//! `serve` (requests) and `repair` (repair jobs) both build on it.

// Handlers fail with the response to send, built once per request; its size is not a cost.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use cairn_client::gateway_rpc::{GatewayResponse, RpcCode};
use cairn_proto::identity::{NodeId, SecretKey};
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};

use crate::catalog::model::{Bucket, ErasureProfile, NodeRecord, NodeState};
use crate::catalog::{Catalog, CatalogError, Command, CommandResult};
use crate::liveness::Liveness;
use crate::placement::Candidate;
use crate::raft::types::TypeConfig;

/// What serving the gateway RPC needs.
#[derive(Clone)]
pub(crate) struct RpcContext {
    /// This member's Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The catalog.
    pub catalog: Catalog,
    /// Heartbeats, for free space.
    pub liveness: Arc<Liveness>,
    /// The coordinator key, to sign orders.
    pub key: SecretKey,
    /// Code of buckets created through S3.
    pub default_erasure: ErasureProfile,
    /// The repair queue (filled while this member leads).
    pub repairs: Arc<crate::repair::Repairs>,
    /// How long after placement shards may still be committed (half the orphan delay).
    pub commit_within: std::time::Duration,
    /// How long a leader may go without hearing from a majority before it stops answering
    /// as leader (the longest election timeout: by then the others may have elected
    /// another).
    pub quorum_lease: std::time::Duration,
}

/// A request's answer; handlers return the refusal as the error, to use `?`.
pub(crate) type Answer = Result<GatewayResponse, GatewayResponse>;

/// A refusal of kind `code`.
pub(crate) fn error(code: RpcCode, message: impl Into<String>) -> GatewayResponse {
    GatewayResponse::Error {
        code,
        message: message.into(),
    }
}

/// A failure on the coordinator's side (retrying may help).
pub(crate) fn internal(err: impl std::fmt::Display) -> GatewayResponse {
    error(RpcCode::Internal, err.to_string())
}

/// The bucket `name`, or the refusal a gateway gets when it does not exist.
pub(crate) fn bucket_record(catalog: &Catalog, name: &str) -> Result<Bucket, GatewayResponse> {
    match catalog.bucket(name) {
        Ok(Some(bucket)) => Ok(bucket),
        Ok(None) => Err(error(RpcCode::NoSuchBucket, format!("no bucket {name}"))),
        Err(err) => Err(internal(err)),
    }
}

/// Proposes a command; refusals become RPC errors, and a follower answers with the
/// leader to ask.
pub(crate) async fn commit(
    ctx: &RpcContext,
    command: Command,
) -> Result<CommandResult, GatewayResponse> {
    match ctx.raft.client_write(command).await {
        Ok(response) => match response.data {
            CommandResult::Refused(err) => Err(refusal(err)),
            other => Ok(other),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            Err(GatewayResponse::NotLeader {
                leader: forward.leader_node.map(|m| m.addr),
            })
        }
        Err(err) => Err(internal(err)),
    }
}

/// The RPC refusal for a catalog refusal.
pub(crate) fn refusal(err: CatalogError) -> GatewayResponse {
    let code = match &err {
        CatalogError::NoSuchBucket(_) => RpcCode::NoSuchBucket,
        CatalogError::NoSuchUpload(_) => RpcCode::NoSuchUpload,
        CatalogError::NoSuchKey(_) => RpcCode::NoSuchKey,
        CatalogError::PreconditionFailed(_) => RpcCode::PreconditionFailed,
        CatalogError::BucketExists(_) => RpcCode::BucketExists,
        CatalogError::BucketNotEmpty(_) => RpcCode::BucketNotEmpty,
        CatalogError::InvalidPart(_) => RpcCode::InvalidPart,
        CatalogError::InvalidPartOrder => RpcCode::InvalidPartOrder,
        CatalogError::EntityTooSmall { .. } => RpcCode::EntityTooSmall,
        CatalogError::Stale(_) => RpcCode::Changed,
        CatalogError::InvalidBucketName(_)
        | CatalogError::InvalidKey(_)
        | CatalogError::UnknownNode(_)
        | CatalogError::Malformed(_)
        | CatalogError::UploadExists(_)
        | CatalogError::Rejected(_) => RpcCode::InvalidRequest,
        CatalogError::AccessKeyExists(_)
        | CatalogError::NoSuchAccessKey(_)
        | CatalogError::NoSuchNode(_)
        | CatalogError::NoSuchGateway(_)
        | CatalogError::InvalidInvite
        | CatalogError::WrongOrg { .. } => RpcCode::Internal,
    };
    error(code, err.to_string())
}

/// The nodes that may take new shards, with their free space as their last heartbeat
/// told, leaving out `avoid`.
pub(crate) fn candidates(
    ctx: &RpcContext,
    nodes: &[NodeRecord],
    avoid: &[NodeId],
) -> Vec<Candidate> {
    nodes
        .iter()
        .filter(|n| n.state.accepts_new_shards() && !avoid.contains(&n.id))
        .map(|n| candidate(ctx, n))
        .collect()
}

/// A node as placement sees it. The space it may take is what it reports free, but never
/// more than it has earned ([`crate::placement::credible_room`] of what the catalog places
/// on it, from the per-node totals it keeps with every change).
pub(crate) fn candidate(ctx: &RpcContext, node: &NodeRecord) -> Candidate {
    let used = ctx
        .liveness
        .last(&node.id)
        .map_or(0, |(_, hb)| hb.used_bytes);
    let claimed = node.capacity.saturating_sub(used);
    // A catalog that cannot be read grants no more than a node with nothing placed.
    let placed = ctx
        .catalog
        .placed_totals(&node.id)
        .map_or(0, |totals| totals.bytes);
    let vetting = node.state == NodeState::Vetting;
    Candidate {
        node: node.id,
        org: node.org.clone(),
        site: node.site.clone(),
        free_bytes: claimed.min(crate::placement::credible_room(vetting, placed)),
        vetting,
    }
}

/// The address of `node` among `nodes` (empty if unknown: the send then fails and the
/// gateway places again).
pub(crate) fn address(nodes: &[NodeRecord], node: &NodeId) -> String {
    nodes
        .iter()
        .find(|n| n.id == *node)
        .map(|n| n.addr.clone())
        .unwrap_or_default()
}

/// The leader's clock, in milliseconds since the Unix epoch, for the commands it proposes.
pub(crate) use cairn_proto::order::unix_now_ms as now_ms;
