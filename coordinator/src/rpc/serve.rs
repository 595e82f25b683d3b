//! The coordinator side of the gateway RPC.

// Handlers fail with the response to send, built once per request; its size is not a cost.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use cairn_erasure::Codec;
use cairn_proto::identity::{NodeId, PublicKey};
use cairn_proto::ids::ShardId;
use cairn_proto::wire::{WireError, read_frame_within, write_frame_within};

use cairn_client::gateway_rpc::{
    GatewayRequest, GatewayResponse, MAX_RPC_FRAME, MAX_RPC_REQUEST, NewBody, NewObject,
    NewSegment, ObjectRead, PlacedShard, READ_WINDOW, ReadOrders, RpcCode,
};

use super::context::{
    Answer, RpcContext, address, bucket_record, candidates, commit, error, internal, now_ms,
};
use super::once::{ChangeKind, settle};
use super::orders::{fresh_enough, random, sign_get, sign_put};
use super::verify_segments;
use crate::catalog::model::{
    Bucket, BucketMode, ErasureProfile, NodeState, ObjectBody, ObjectRecord, ObjectVersion,
    PartRecord, UploadRecord,
};
use crate::catalog::{Catalog, CatalogFault, Command, CommandResult, ListQuery, RequestId};
use crate::placement::{PlacementRequest, place};
use crate::raft::types::Member;

/// Largest inline body the coordinator accepts; gateways inline at most 4 KiB, the margin
/// only bounds what one log entry may carry.
const MAX_INLINE: usize = 64 << 10;
/// Most shards of one segment a reader may ask orders for (a code is at most 255 wide).
const MAX_SHARDS_PER_SEGMENT: usize = 256;
/// Most entries of one listing page.
const MAX_LIST: usize = 1_000;

/// How long a gateway may take to send one request once its stream is open. A gateway's
/// client gives up on an exchange after 10 s (`cairn_client::coordinator::CoordinatorClient`), so a
/// request still arriving after that has no one waiting for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a key that is not a registered gateway has to open the stream its refusal is
/// written on, and then to acknowledge it, before its connection is closed regardless.
const STRANGER_GRACE: Duration = Duration::from_secs(2);
/// QUIC application close code for a connection from a key that is not a registered
/// gateway.
const NOT_REGISTERED: u32 = 3;

/// Serves one gateway connection: one request per stream, until the gateway goes away.
///
/// The peer's registration is checked as the connection arrives, before any stream is
/// read: a key that is not a registered gateway gets one refusal, written without reading
/// a byte of what it sent, and its connection is closed (see [`refuse_stranger`]). A
/// registered gateway's requests are each read within [`REQUEST_TIMEOUT`] and under
/// [`MAX_RPC_REQUEST`] bytes, and each is checked against the registry again
/// ([`handle`]), so removing a gateway takes effect on its open connections too.
pub(crate) async fn serve_gateway(conn: quinn::Connection, peer: PublicKey, ctx: RpcContext) {
    match ctx.catalog.gateway(&peer) {
        Ok(Some(_)) => {}
        Ok(None) => return refuse_stranger(conn, peer).await,
        Err(err) => {
            tracing::warn!(gateway = %peer, %err, "cannot check a gateway's registration");
            conn.close(
                NOT_REGISTERED.into(),
                b"cannot check registration; try again",
            );
            return;
        }
    }
    tracing::debug!(gateway = %peer, remote = %conn.remote_address(), "gateway connected");
    cairn_proto::transport::trust_peer(&conn);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let read = read_frame_within::<_, GatewayRequest>(&mut recv, MAX_RPC_REQUEST);
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
                Ok(Ok(request)) => {
                    let op = request.name();
                    let response = handle(&ctx, peer, request).await;
                    if let GatewayResponse::Error { code, message } = &response {
                        tracing::debug!(gateway = %peer, op, ?code, message, "gateway request refused");
                    }
                    response
                }
                Ok(Err(WireError::Closed)) => return,
                Ok(Err(err)) => error(
                    RpcCode::InvalidRequest,
                    format!("unreadable request: {err}"),
                ),
                Err(_) => error(
                    RpcCode::InvalidRequest,
                    format!("no complete request within {REQUEST_TIMEOUT:?}"),
                ),
            };
            let _ = write_frame_within(&mut send, &response, MAX_RPC_FRAME).await;
            let _ = send.finish();
        });
    }
}

/// Answers a key that is not a registered gateway: its first stream gets
/// [`RpcCode::Forbidden`] (so a gateway not yet added says so in its logs) without a byte
/// of the stream being read, then the connection is closed. Whatever else it opened or
/// sent is never read: QUIC flow control bounds what is buffered meanwhile, and the close
/// frees it.
async fn refuse_stranger(conn: quinn::Connection, peer: PublicKey) {
    tracing::debug!(%peer, remote = %conn.remote_address(), "gateway RPC from a key that is not a registered gateway");
    let refusal = error(
        RpcCode::Forbidden,
        format!("{peer} is not a registered gateway (cairn admin gateway add)"),
    );
    let answered = async {
        // `recv` is held, unread, until the answer is acknowledged: dropping it would ask
        // the peer to stop sending, which may fail its write before it reads the answer.
        let (mut send, _recv) = conn.accept_bi().await.ok()?;
        write_frame_within(&mut send, &refusal, MAX_RPC_FRAME)
            .await
            .ok()?;
        send.finish().ok()?;
        send.stopped().await.ok()
    };
    let _ = tokio::time::timeout(STRANGER_GRACE, answered).await;
    conn.close(NOT_REGISTERED.into(), b"not a registered gateway");
}

/// Answers one request. Each is checked against the gateway registry first, so removing a
/// gateway takes effect on its open connections too.
async fn handle(ctx: &RpcContext, peer: PublicKey, request: GatewayRequest) -> GatewayResponse {
    match ctx.catalog.gateway(&peer) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return error(
                RpcCode::Forbidden,
                format!("{peer} is not a registered gateway (cairn admin gateway add)"),
            );
        }
        Err(err) => return internal(err),
    }
    if request == GatewayRequest::Ping {
        return GatewayResponse::Done;
    }
    // Reads (and the checks writes do before proposing) must see every committed write:
    // read-index confirms leadership and waits until this member has applied it.
    if let Err(response) = linearizable(ctx).await {
        return response;
    }
    let (once, request) = match request {
        GatewayRequest::Once { id, request } => (Some(id), *request),
        request => (None, request),
    };
    let once = once.map(RequestId::from);
    let kind = ChangeKind::of(&request);
    match answer(ctx, peer, request, once).await {
        Ok(response) => response,
        Err(refusal) => match (once, kind) {
            (Some(id), Some(kind)) => settle(ctx, id, kind, refusal).await,
            _ => refusal,
        },
    }
}

/// Confirms that this member leads and has applied every committed write.
///
/// A leader cut off from the other members keeps believing it leads (openraft has no
/// check-quorum step-down), and confirming leadership would wait for a majority that
/// cannot answer while the others elect a new leader; a gateway asking it would wait out
/// its whole attempt limit, writes stalled for the partition's length. So a leader that
/// has not heard from a majority within its lease, or cannot confirm soon after, answers
/// "not leader, leader unknown" at once, and the gateway asks the other members.
async fn linearizable(ctx: &RpcContext) -> Result<(), GatewayResponse> {
    let unknown = GatewayResponse::NotLeader { leader: None };
    let metrics = ctx.raft.metrics().borrow().clone();
    let lease_ms = ctx.quorum_lease.as_millis() as u64;
    if metrics.state == openraft::ServerState::Leader
        && metrics
            .millis_since_quorum_ack
            .is_some_and(|silent| silent > lease_ms)
    {
        // Debug: during a partition every gateway request comes here.
        tracing::debug!(
            silent_ms = metrics.millis_since_quorum_ack,
            "not answering as leader: no majority heard within the lease"
        );
        return Err(unknown);
    }
    // Twice the lease: confirming also waits for this member to apply up to the read
    // point, which a busy disk may slow without anything being wrong.
    match tokio::time::timeout(2 * ctx.quorum_lease, ctx.raft.ensure_linearizable()).await {
        Err(_) => Err(unknown),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(match err.forward_to_leader() {
            Some(forward) => GatewayResponse::NotLeader {
                leader: forward.leader_node.clone().map(|m: Member| m.addr),
            },
            None => internal(err),
        }),
    }
}

/// Answers `request`; `once` is the client's id for it when it asked for its change to be
/// applied at most once (every change the gateway makes does).
async fn answer(
    ctx: &RpcContext,
    peer: PublicKey,
    request: GatewayRequest,
    once: Option<RequestId>,
) -> Answer {
    let catalog = &ctx.catalog;
    let fault = |err: CatalogFault| internal(err);
    let change = |command: Command| commit_once(ctx, command, once);
    match request {
        GatewayRequest::AccessKey { id } => {
            let key = catalog.access_key(&id).map_err(fault)?;
            Ok(GatewayResponse::AccessKey(
                key.filter(|k| !k.revoked).map(Into::into),
            ))
        }
        GatewayRequest::ListBuckets => Ok(GatewayResponse::Buckets(
            catalog
                .buckets()
                .map_err(fault)?
                .into_iter()
                .map(Into::into)
                .collect(),
        )),
        GatewayRequest::Bucket { name } => Ok(GatewayResponse::Bucket(
            catalog.bucket(&name).map_err(fault)?.map(Into::into),
        )),
        GatewayRequest::CreateBucket { name, public_read } => {
            let bucket = Bucket {
                name,
                created_ms: now_ms(),
                public_read,
                mode: BucketMode::Plain,
                erasure: ctx.default_erasure,
                failure_tolerance: crate::placement::DEFAULT_FAILURE_TOLERANCE as u8,
            };
            change(Command::CreateBucket { bucket }).await?;
            Ok(GatewayResponse::Done)
        }
        GatewayRequest::SetBucketPublicRead { name, public_read } => {
            change(Command::SetBucketPublicRead { name, public_read }).await?;
            Ok(GatewayResponse::Done)
        }
        GatewayRequest::SetObjectAcl { bucket, key, acl } => {
            bucket_record(catalog, &bucket)?;
            change(Command::SetObjectAcl {
                bucket,
                key,
                acl: acl.into(),
            })
            .await?;
            Ok(GatewayResponse::Done)
        }
        GatewayRequest::DeleteBucket { name } => {
            let now_ms = now_ms();
            change(Command::DeleteBucket { name, now_ms }).await?;
            Ok(GatewayResponse::Done)
        }
        GatewayRequest::Object { bucket, key } => {
            bucket_record(catalog, &bucket)?;
            Ok(GatewayResponse::Object(
                catalog
                    .object(&bucket, &key)
                    .map_err(fault)?
                    .map(|object| Box::new(object.into())),
            ))
        }
        GatewayRequest::Read { bucket, key, range } => {
            bucket_record(catalog, &bucket)?;
            let Some(object) = catalog.object(&bucket, &key).map_err(fault)? else {
                return Ok(GatewayResponse::Read(None));
            };
            let window = match &range {
                Some(range) => Window::Bytes(range.clone()),
                None => Window::Nothing,
            };
            let read = object_read(ctx, peer, object, window)?;
            Ok(GatewayResponse::Read(Some(Box::new(read))))
        }
        GatewayRequest::ReadPart { upload, number } => {
            let Some(record) = catalog.upload(&upload).map_err(fault)? else {
                return Err(error(RpcCode::NoSuchUpload, format!("no upload {upload}")));
            };
            let part = catalog
                .parts(&upload, number.saturating_sub(1), 1)
                .map_err(fault)?
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
        GatewayRequest::ReadOrders {
            bucket,
            key,
            version,
            from,
            count,
            range,
        } => {
            let object = catalog.object(&bucket, &key).map_err(fault)?;
            let version = ObjectVersion::from(version);
            let Some(object) = object.filter(|o| o.version() == version) else {
                return Err(error(
                    RpcCode::Changed,
                    format!("{bucket}/{key} no longer holds version {version}"),
                ));
            };
            let count = count.min(READ_WINDOW) as usize;
            Ok(GatewayResponse::ReadOrders(
                read_orders(ctx, peer, &object, from, count, range).map_err(internal)?,
            ))
        }
        GatewayRequest::RetiredOrders { first, segments } => {
            retired_orders(ctx, peer, first, &segments)
        }
        GatewayRequest::List { bucket, query } => {
            bucket_record(catalog, &bucket)?;
            let query = ListQuery {
                max: query.max.min(MAX_LIST),
                ..query.into()
            };
            Ok(GatewayResponse::Listing(
                catalog.list(&bucket, &query).map_err(fault)?.into(),
            ))
        }
        GatewayRequest::Ping => Ok(GatewayResponse::Done),
        GatewayRequest::Once { .. } => Err(error(
            RpcCode::InvalidRequest,
            "a request cannot wrap another request",
        )),
        GatewayRequest::MaskKey => Ok(GatewayResponse::MaskKey(super::mask_key(&ctx.key))),
        GatewayRequest::RepairJob => Ok(super::repair::next_job(ctx, peer)),
        GatewayRequest::RepairDone { ticket, stored } => {
            super::repair::finish(ctx, peer, ticket, stored).await
        }
        GatewayRequest::RepairFailed { ticket, problem } => {
            Ok(super::repair::failed(ctx, peer, &ticket, &problem))
        }
        GatewayRequest::Place {
            bucket,
            shard_size,
            roots,
            avoid,
        } => {
            let bucket = bucket_record(catalog, &bucket)?;
            place_segment(ctx, peer, &bucket, shard_size, roots, &avoid)
        }
        GatewayRequest::Put {
            bucket,
            key,
            object,
            condition,
        } => {
            let record = bucket_record(catalog, &bucket)?;
            let object = new_object(ctx, peer, &record, object)?;
            let now_ms = now_ms();
            let result = change(Command::PutObject {
                bucket,
                key,
                object,
                condition: condition.map(Into::into),
                now_ms,
            })
            .await?;
            Ok(stored(result))
        }
        GatewayRequest::Delete { bucket, key } => {
            let now_ms = now_ms();
            let result = change(Command::DeleteObject {
                bucket,
                key,
                now_ms,
            })
            .await?;
            Ok(stored(result))
        }
        GatewayRequest::CreateUpload {
            bucket,
            key,
            headers,
            acl,
            checksum,
        } => {
            let record = bucket_record(catalog, &bucket)?;
            // A retried creation must name the upload the first attempt created.
            let id = match once {
                Some(once) => once.to_string(),
                None => hex(&random::<16>().map_err(internal)?),
            };
            let upload = UploadRecord {
                bucket,
                key,
                initiated_ms: now_ms(),
                headers: headers.into(),
                erasure: record.erasure,
                acl: acl.into(),
                checksum: checksum.map(Into::into),
            };
            change(Command::CreateUpload {
                id: id.clone(),
                upload,
            })
            .await?;
            Ok(GatewayResponse::UploadCreated { id })
        }
        GatewayRequest::Upload { id } => Ok(GatewayResponse::Upload(
            catalog.upload(&id).map_err(fault)?.map(Into::into),
        )),
        GatewayRequest::PutPart {
            upload,
            number,
            size,
            etag,
            segments,
            checksum,
        } => {
            let Some(record) = catalog.upload(&upload).map_err(fault)? else {
                return Err(error(RpcCode::NoSuchUpload, format!("no upload {upload}")));
            };
            let segments = checked_segments(ctx, peer, record.erasure, &segments)?;
            let part = PartRecord {
                size,
                etag,
                last_modified_ms: now_ms(),
                segments,
                checksum: checksum.map(Into::into),
            };
            let now_ms = now_ms();
            change(Command::PutPart {
                upload,
                number,
                part,
                now_ms,
            })
            .await?;
            Ok(GatewayResponse::Done)
        }
        GatewayRequest::CompleteUpload {
            upload,
            parts,
            verified,
            checksum,
            condition,
        } => {
            let now_ms = now_ms();
            match change(Command::CompleteUpload {
                upload,
                parts,
                verified: verified
                    .into_iter()
                    .map(|(number, version)| (number, version.into()))
                    .collect(),
                checksum: checksum.map(Into::into),
                condition: condition.map(Into::into),
                now_ms,
            })
            .await?
            {
                CommandResult::Completed { etag, size } => {
                    Ok(GatewayResponse::Completed { etag, size })
                }
                other => Err(internal(format!("unexpected result {other:?}"))),
            }
        }
        GatewayRequest::AbortUpload { upload } => {
            let now_ms = now_ms();
            change(Command::AbortUpload { upload, now_ms }).await?;
            Ok(GatewayResponse::Done)
        }
        GatewayRequest::ListUploads {
            bucket,
            prefix,
            max,
        } => {
            bucket_record(catalog, &bucket)?;
            let max = (max as usize).min(MAX_LIST);
            Ok(GatewayResponse::Uploads(
                catalog
                    .uploads(&bucket, &prefix, max)
                    .map_err(fault)?
                    .into_iter()
                    .map(|(id, upload)| (id, upload.into()))
                    .collect(),
            ))
        }
        GatewayRequest::ReportRefusal {
            bucket,
            key,
            node,
            shard,
            problem,
        } => {
            if !placed_on(catalog, &bucket, &key, node, shard)? {
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
        GatewayRequest::ReportShard {
            bucket,
            key,
            node,
            shard,
            problem,
        } => {
            // Judged only against the catalog: a report about a shard moved or deleted
            // since the read (or never placed there) is no evidence about the node.
            let placed = placed_on(catalog, &bucket, &key, node, shard)?;
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
        GatewayRequest::ListParts { upload, after, max } => {
            if catalog.upload(&upload).map_err(fault)?.is_none() {
                return Err(error(RpcCode::NoSuchUpload, format!("no upload {upload}")));
            }
            let max = (max as usize).min(MAX_LIST);
            Ok(GatewayResponse::Parts(
                catalog
                    .parts(&upload, after, max)
                    .map_err(fault)?
                    .into_iter()
                    .map(|(number, part)| (number, part.into()))
                    .collect(),
            ))
        }
    }
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

fn stored(result: CommandResult) -> GatewayResponse {
    match result {
        CommandResult::Object { existed } => GatewayResponse::Stored { existed },
        _ => GatewayResponse::Stored { existed: false },
    }
}

/// Commits `command` (refusals become RPC errors), at most once for the client's request id `once` when given.
async fn commit_once(
    ctx: &RpcContext,
    command: Command,
    once: Option<RequestId>,
) -> Result<CommandResult, GatewayResponse> {
    let command = match once {
        Some(request) => Command::Once {
            request,
            command: Box::new(command),
            now_ms: now_ms(),
        },
        None => command,
    };
    commit(ctx, command).await
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

fn checked_segments(
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

/// Places one segment and signs a put order per shard.
fn place_segment(
    ctx: &RpcContext,
    peer: PublicKey,
    bucket: &Bucket,
    shard_size: u64,
    roots: Vec<cairn_erasure::ShardRoot>,
    avoid: &[NodeId],
) -> Answer {
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

/// An object with the addresses of its nodes and read orders for its first `window`
/// segments.
/// Which read orders come with an [`ObjectRead`].
enum Window {
    /// None: the reader asks with [`GatewayRequest::ReadOrders`] once it knows what it needs.
    Nothing,
    /// The data shards holding these object bytes, in up to [`READ_WINDOW`] segments from
    /// the first the range touches.
    Bytes(std::ops::Range<u64>),
    /// Every shard of every segment (a multipart part read back whole, at most 5 GiB).
    Everything,
}

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
            read_orders(ctx, peer, &object, first, READ_WINDOW as usize, Some(range))
                .map_err(internal)?
        }
        Window::Everything => {
            read_orders(ctx, peer, &object, 0, usize::MAX, None).map_err(internal)?
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
fn read_orders(
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

/// Orders for the shards of a replaced version that the garbage queue still holds on the
/// node the reader names (the queue keeps them for the garbage delay so reads in progress
/// can finish); `None` for the rest.
fn retired_orders(
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use cairn_proto::identity::SecretKey;
    use cairn_proto::ids::ShardId;
    use cairn_proto::order::{Action, Order, Receipt, SignedOrder, SignedReceipt};

    use cairn_client::gateway_rpc::StoredShard;
    use cairn_client::records::{ObjectHeaders, WriteCondition};

    use super::*;

    /// The largest request a gateway sends for one S3 request, every number at its longest
    /// encoding: a 5 GiB body (S3's most for a PUT or a part) in 64 MiB segments of the
    /// 10 + 6 code, under a 1 KiB key with 2 KiB of metadata.
    #[test]
    fn the_largest_commit_fits_a_request_frame_eight_times() {
        let key = SecretKey::from_seed([1; 32]);
        let shard = StoredShard {
            order: SignedOrder::sign(
                Order {
                    node: key.public(),
                    client: key.public(),
                    serial: u64::MAX,
                    expires_at: u64::MAX,
                    action: Action::Put {
                        shard: ShardId([0xff; 16]),
                        root: cairn_erasure::ShardRoot::of(b"x"),
                        size: u64::MAX,
                    },
                },
                &key,
            ),
            receipt: SignedReceipt::sign(
                Receipt {
                    node: key.public(),
                    shard: ShardId([0xff; 16]),
                    root: cairn_erasure::ShardRoot::of(b"x"),
                    size: u64::MAX,
                    serial: u64::MAX,
                    stored_at: u64::MAX,
                },
                &key,
            ),
        };
        let order_len = postcard::to_allocvec(&shard.order).unwrap().len();
        let receipt_len = postcard::to_allocvec(&shard.receipt).unwrap().len();
        assert_eq!((order_len, receipt_len), (207, 174));
        let segment = NewSegment {
            len: u64::MAX,
            shards: vec![shard; 16],
            mask: Some(cairn_erasure::SegmentNonce::from_bytes([0xff; 16])),
        };
        let request = GatewayRequest::Put {
            bucket: "b".repeat(63),
            key: "k".repeat(1024),
            object: NewObject {
                size: u64::MAX,
                etag: format!("\"{}\"", "e".repeat(32)),
                headers: ObjectHeaders {
                    content_type: Some("t".repeat(256)),
                    content_encoding: Some("e".repeat(64)),
                    cache_control: Some("c".repeat(256)),
                    user_metadata: vec![("m".repeat(128), "v".repeat(1920))],
                    expires: Some("x".repeat(64)),
                },
                body: NewBody::Segments(vec![segment; 80]),
                acl: cairn_client::records::CannedAcl::PublicRead,
                checksum: Some(cairn_client::records::ObjectChecksum {
                    algorithm: cairn_client::records::ChecksumAlgorithm::Sha256,
                    value: "s".repeat(44),
                }),
            },
            condition: Some(WriteCondition::ETag("e".repeat(34))),
        };
        let len = postcard::to_allocvec(&request).unwrap().len();
        assert!(
            len * 8 <= MAX_RPC_REQUEST as usize,
            "{len} bytes, more than an eighth of {MAX_RPC_REQUEST}"
        );
    }
}
