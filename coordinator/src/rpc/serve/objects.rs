//! The object requests: `Object`, `List`, `Place` (nodes and put orders for a segment about
//! to be written), `Put` (the commit, its proofs of storage checked first), `SetObjectAcl`,
//! `Delete`.

use cairn_client::gateway_rpc::{
    GatewayResponse, NewBody, NewObject, NewSegment, PlacedShard, RpcCode,
};
use cairn_client::records::{CannedAcl, ListQuery as WireListQuery, WriteCondition};
use cairn_erasure::Codec;
use cairn_proto::identity::{NodeId, PublicKey};

use super::{MAX_LIST, commit_once};
use crate::catalog::model::{Bucket, ErasureProfile, ObjectBody, ObjectRecord};
use crate::catalog::{Command, CommandResult, ListQuery, RequestId};
use crate::placement::{PlacementRequest, place};
use crate::rpc::context::{
    Answer, RpcContext, address, bucket_record, candidates, error, internal, now_ms,
};
use crate::rpc::orders::{fresh_enough, random, sign_put};
use crate::rpc::verify_segments;

/// Largest inline body the coordinator accepts; gateways inline at most 4 KiB, the margin
/// only bounds what one log entry may carry.
const MAX_INLINE: usize = 64 << 10;

/// `Object`: the object's record, if it exists.
pub(super) fn object(ctx: &RpcContext, bucket: &str, key: &str) -> Answer {
    bucket_record(&ctx.catalog, bucket)?;
    Ok(GatewayResponse::Object(
        ctx.catalog
            .object(bucket, key)
            .map_err(internal)?
            .map(|object| Box::new(object.into())),
    ))
}

/// `List`: one page of a bucket's listing, at most [`MAX_LIST`] entries.
pub(super) fn list(ctx: &RpcContext, bucket: &str, query: WireListQuery) -> Answer {
    bucket_record(&ctx.catalog, bucket)?;
    let query = ListQuery {
        max: query.max.min(MAX_LIST),
        ..query.into()
    };
    Ok(GatewayResponse::Listing(
        ctx.catalog.list(bucket, &query).map_err(internal)?.into(),
    ))
}

/// `Place`: places one segment of an object in `bucket` and signs a put order per shard.
pub(super) fn place_segment(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: &str,
    shard_size: u64,
    roots: Vec<cairn_erasure::ShardRoot>,
    avoid: &[NodeId],
) -> Answer {
    let bucket = bucket_record(&ctx.catalog, bucket)?;
    let ErasureProfile {
        k, m, segment_size, ..
    } = bucket.erasure;
    let codec = Codec::new(usize::from(k), usize::from(m)).map_err(internal)?;
    if roots.len() != codec.total_shards() {
        return Err(error(
            RpcCode::InvalidRequest,
            format!(
                "{} roots, the bucket's {k}+{m} code makes {} shards",
                roots.len(),
                codec.total_shards()
            ),
        ));
    }
    if shard_size == 0 || shard_size > codec.shard_len(segment_size) {
        return Err(error(
            RpcCode::InvalidRequest,
            format!(
                "shard size {shard_size} is not between 1 and {}",
                codec.shard_len(segment_size)
            ),
        ));
    }
    let nodes = ctx.catalog.nodes().map_err(internal)?;
    let candidates = candidates(ctx, &nodes, avoid);
    let request = PlacementRequest {
        failure_tolerance: usize::from(bucket.failure_tolerance),
        ..PlacementRequest::new(usize::from(k), usize::from(m), shard_size)
    };
    let seed = u64::from_le_bytes(random::<8>().map_err(internal)?);
    let placement = place(&candidates, &request, seed)
        .map_err(|err| error(RpcCode::NotEnoughNodes, err.to_string()))?;
    let mut placed = Vec::with_capacity(roots.len());
    for (node, root) in placement.nodes.iter().zip(roots) {
        placed.push(PlacedShard {
            addr: address(&nodes, node),
            order: sign_put(ctx, peer, *node, root, shard_size).map_err(internal)?,
        });
    }
    Ok(GatewayResponse::Placed(placed))
}

/// `Put`: commits an object whose shards the nodes have signed receipts for.
pub(super) async fn put(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: String,
    key: String,
    object: NewObject,
    condition: Option<WriteCondition>,
    once: Option<RequestId>,
) -> Answer {
    let record = bucket_record(&ctx.catalog, &bucket)?;
    let object = new_object(ctx, peer, &record, object)?;
    let now_ms = now_ms();
    let command = Command::PutObject {
        bucket,
        key,
        object,
        condition: condition.map(Into::into),
        now_ms,
    };
    let result = commit_once(ctx, command, once).await?;
    Ok(stored(result))
}

/// `SetObjectAcl`.
pub(super) async fn set_object_acl(
    ctx: &RpcContext,
    bucket: String,
    key: String,
    acl: CannedAcl,
    once: Option<RequestId>,
) -> Answer {
    bucket_record(&ctx.catalog, &bucket)?;
    let command = Command::SetObjectAcl {
        bucket,
        key,
        acl: acl.into(),
    };
    commit_once(ctx, command, once).await?;
    Ok(GatewayResponse::Done)
}

/// `Delete`.
pub(super) async fn delete(
    ctx: &RpcContext,
    bucket: String,
    key: String,
    once: Option<RequestId>,
) -> Answer {
    let now_ms = now_ms();
    let command = Command::DeleteObject {
        bucket,
        key,
        now_ms,
    };
    let result = commit_once(ctx, command, once).await?;
    Ok(stored(result))
}

/// What a put or delete answers: whether a version existed.
fn stored(result: CommandResult) -> GatewayResponse {
    match result {
        CommandResult::Object { existed } => GatewayResponse::Stored { existed },
        _ => GatewayResponse::Stored { existed: false },
    }
}

/// Turns a gateway's object into a catalog record, checking the proof of its shards.
fn new_object(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: &Bucket,
    object: NewObject,
) -> Result<ObjectRecord, GatewayResponse> {
    let body = match object.body {
        NewBody::Inline(bytes) => {
            if bytes.len() > MAX_INLINE {
                return Err(error(
                    RpcCode::InvalidRequest,
                    format!(
                        "inline bodies are at most {MAX_INLINE} bytes, got {}",
                        bytes.len()
                    ),
                ));
            }
            ObjectBody::Inline(bytes)
        }
        NewBody::Segments(segments) => ObjectBody::Segments {
            erasure: bucket.erasure,
            segments: checked_segments(ctx, peer, bucket.erasure, &segments)?,
        },
    };
    Ok(ObjectRecord {
        size: object.size,
        etag: object.etag,
        last_modified_ms: now_ms(),
        headers: object.headers.into(),
        body,
        acl: object.acl.into(),
        parts: Vec::new(),
        checksum: object.checksum.map(Into::into),
    })
}

/// The segments of an object or part, each shard's put order fresh enough and its
/// receipt checked against it.
pub(super) fn checked_segments(
    ctx: &RpcContext,
    peer: PublicKey,
    erasure: ErasureProfile,
    segments: &[NewSegment],
) -> Result<Vec<crate::catalog::model::SegmentRecord>, GatewayResponse> {
    let catalog = &ctx.catalog;
    for stored in segments.iter().flat_map(|s| s.shards.iter()) {
        fresh_enough(ctx, stored)?;
    }
    verify_segments(&ctx.key.public(), &peer, erasure, segments, |node| {
        catalog.node(node).ok().flatten()
    })
    .map_err(|err| {
        error(
            RpcCode::InvalidRequest,
            format!("proof of storage refused: {err}"),
        )
    })
}
