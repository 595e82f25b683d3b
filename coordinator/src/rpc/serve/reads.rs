//! The read requests: `Read` (an object with the read orders for the start of a range),
//! `ReadOrders` (the orders for further segments of one version), `RetiredOrders` (the
//! orders for a replaced version's shards the garbage delay still keeps), `ReadPart` (a
//! part of an upload in progress read back whole).

use cairn_client::gateway_rpc::{GatewayResponse, ObjectRead, READ_WINDOW, ReadOrders, RpcCode};
use cairn_client::records::ObjectVersion as WireObjectVersion;
use cairn_erasure::Codec;
use cairn_proto::identity::{NodeId, PublicKey};

use crate::catalog::model::{NodeState, ObjectBody, ObjectRecord, ObjectVersion};
use crate::rpc::context::{Answer, RpcContext, bucket_record, error, internal};
use crate::rpc::orders::sign_get;

/// Most shards of one segment a reader may ask orders for (a code is at most 255 wide).
const MAX_SHARDS_PER_SEGMENT: usize = 256;

/// `Read`: the object's record, its nodes and read orders for up to [`READ_WINDOW`]
/// segments from the start of `range`.
pub(super) fn read(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: &str,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Answer {
    bucket_record(&ctx.catalog, bucket)?;
    let Some(object) = ctx.catalog.object(bucket, key).map_err(internal)? else {
        return Ok(GatewayResponse::Read(None));
    };
    let window = match &range {
        Some(range) => Window::Bytes(range.clone()),
        None => Window::Nothing,
    };
    let read = object_read(ctx, peer, object, window)?;
    Ok(GatewayResponse::Read(Some(Box::new(read))))
}

/// `ReadPart`: part `number` of an upload in progress, read as an object of its own.
pub(super) fn read_part(ctx: &RpcContext, peer: PublicKey, upload: &str, number: u32) -> Answer {
    let catalog = &ctx.catalog;
    let Some(record) = catalog.upload(upload).map_err(internal)? else {
        return Err(error(RpcCode::NoSuchUpload, format!("no upload {upload}")));
    };
    let part = catalog
        .parts(upload, number.saturating_sub(1), 1)
        .map_err(internal)?
        .into_iter()
        .find(|(n, _)| *n == number)
        .map(|(_, part)| part)
        .ok_or_else(|| {
            error(
                RpcCode::InvalidPart,
                format!("upload {upload} has no part {number}"),
            )
        })?;
    // A part read as an object of its own; its orders cover every segment at once
    // (a part is at most 5 GiB, so at most a few hundred segments).
    let object = part.as_object(&record);
    let read = object_read(ctx, peer, object, Window::Everything)?;
    Ok(GatewayResponse::Read(Some(Box::new(read))))
}

/// `ReadOrders`: orders for `count` (at most [`READ_WINDOW`]) segments from `from` of
/// `bucket`/`key`, refused as changed unless it still holds `version`.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_orders(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: &str,
    key: &str,
    version: WireObjectVersion,
    from: u32,
    count: u32,
    range: Option<std::ops::Range<u64>>,
) -> Answer {
    let object = ctx.catalog.object(bucket, key).map_err(internal)?;
    let version = ObjectVersion::from(version);
    let Some(object) = object.filter(|o| o.version() == version) else {
        return Err(error(
            RpcCode::Changed,
            format!("{bucket}/{key} no longer holds version {version}"),
        ));
    };
    let count = count.min(READ_WINDOW) as usize;
    Ok(GatewayResponse::ReadOrders(
        orders_for_segments(ctx, peer, &object, from, count, range).map_err(internal)?,
    ))
}

/// Orders for the shards of a replaced version that the garbage queue still holds on the
/// node the reader names (the queue keeps them for the garbage delay so reads in progress
/// can finish); `None` for the rest.
pub(super) fn retired_orders(
    ctx: &RpcContext,
    peer: PublicKey,
    first: u32,
    segments: &[cairn_client::gateway_rpc::RetiredSegment],
) -> Answer {
    if segments.len() > READ_WINDOW as usize
        || segments
            .iter()
            .any(|s| s.shards.len() > MAX_SHARDS_PER_SEGMENT)
    {
        return Err(error(
            RpcCode::InvalidRequest,
            format!("at most {READ_WINDOW} segments of at most {MAX_SHARDS_PER_SEGMENT} shards"),
        ));
    }
    let mut out = ReadOrders {
        first,
        segments: Vec::with_capacity(segments.len()),
    };
    for segment in segments {
        let mut orders = Vec::with_capacity(segment.shards.len());
        for shard in &segment.shards {
            let queued = ctx
                .catalog
                .garbage_shard(&shard.id)
                .map_err(internal)?
                .is_some_and(|entry| entry.node == shard.node);
            orders.push(if queued {
                Some(
                    sign_get(ctx, peer, &shard.clone().into(), segment.shard_size)
                        .map_err(internal)?,
                )
            } else {
                None
            });
        }
        out.segments.push(orders);
    }
    Ok(GatewayResponse::ReadOrders(out))
}

/// Which read orders come with an [`ObjectRead`].
enum Window {
    /// None: the reader asks with `ReadOrders` once it knows what it needs.
    Nothing,
    /// The data shards holding these object bytes, in up to [`READ_WINDOW`] segments from
    /// the first the range touches.
    Bytes(std::ops::Range<u64>),
    /// Every shard of every segment (a multipart part read back whole, at most 5 GiB).
    Everything,
}

/// An object with the addresses of its nodes and the read orders `window` asks for.
fn object_read(
    ctx: &RpcContext,
    peer: PublicKey,
    object: ObjectRecord,
    window: Window,
) -> Result<ObjectRead, GatewayResponse> {
    let mut nodes: Vec<(NodeId, String, bool)> = Vec::new();
    for shard in object.body.shards() {
        if nodes.iter().any(|(id, _, _)| *id == shard.node) {
            continue;
        }
        if let Some(record) = ctx.catalog.node(&shard.node).map_err(internal)? {
            let serving = record.state.accepts_new_shards() || record.state == NodeState::Draining;
            nodes.push((record.id, record.addr, serving));
        }
    }
    let orders = match window {
        Window::Nothing => ReadOrders {
            first: 0,
            segments: Vec::new(),
        },
        Window::Bytes(range) => {
            let first = first_segment(&object, range.start);
            orders_for_segments(ctx, peer, &object, first, READ_WINDOW as usize, Some(range))
                .map_err(internal)?
        }
        Window::Everything => {
            orders_for_segments(ctx, peer, &object, 0, usize::MAX, None).map_err(internal)?
        }
    };
    Ok(ObjectRead {
        object: object.into(),
        nodes,
        orders,
    })
}

/// The index of the segment holding byte `offset` of `object` (0 for an inline body; the
/// segment count past the end).
fn first_segment(object: &ObjectRecord, offset: u64) -> u32 {
    let ObjectBody::Segments { segments, .. } = &object.body else {
        return 0;
    };
    let mut start = 0u64;
    for (index, segment) in segments.iter().enumerate() {
        start = start.saturating_add(segment.len);
        if offset < start {
            return index as u32;
        }
    }
    segments.len() as u32
}

/// Read orders for segments `from..from + window` of `object`: with `range`, only for the
/// data shards holding those object bytes (a reader with nothing lost reads nothing else;
/// `None` elsewhere), without, for every shard.
fn orders_for_segments(
    ctx: &RpcContext,
    peer: PublicKey,
    object: &ObjectRecord,
    from: u32,
    window: usize,
    range: Option<std::ops::Range<u64>>,
) -> Result<ReadOrders, String> {
    let mut out = ReadOrders {
        first: from,
        segments: Vec::new(),
    };
    let ObjectBody::Segments { erasure, segments } = &object.body else {
        return Ok(out);
    };
    let codec =
        Codec::new(usize::from(erasure.k), usize::from(erasure.m)).map_err(|e| e.to_string())?;
    let mut start: u64 = segments
        .iter()
        .take(from as usize)
        .map(|s| s.len)
        .fold(0u64, u64::saturating_add);
    for segment in segments.iter().skip(from as usize).take(window) {
        let span = start..start.saturating_add(segment.len);
        start = span.end;
        if range.as_ref().is_some_and(|r| span.start >= r.end) {
            break;
        }
        let size = codec.shard_len(segment.len);
        // The segment's own bytes wanted; data shard i holds bytes i·size..(i+1)·size.
        let wanted = range.as_ref().map(|r| {
            r.start.max(span.start) - span.start..r.end.min(span.end).max(span.start) - span.start
        });
        let mut orders = Vec::with_capacity(segment.shards.len());
        for (i, shard) in segment.shards.iter().enumerate() {
            let needed = match &wanted {
                None => true,
                Some(wanted) => {
                    let held = (i as u64).saturating_mul(size)..(i as u64 + 1).saturating_mul(size);
                    i < usize::from(erasure.k) && held.start < wanted.end && wanted.start < held.end
                }
            };
            orders.push(if needed {
                Some(sign_get(ctx, peer, shard, size).map_err(|e| e.to_string())?)
            } else {
                None
            });
        }
        out.segments.push(orders);
    }
    Ok(out)
}
