//! The coordinator side of the gateway RPC: [`serve_gateway`] checks each request's
//! gateway and this member's leadership, and `answer` hands the request to the function for
//! it, kept with the others of its family: [`credentials`] (access keys, the mask key),
//! [`buckets`], [`objects`] (listings, placement, commits), [`reads`] (read orders),
//! [`multipart`], [`reports`] (gateways' reports about reads); repair jobs are
//! `super::repair`'s.

// Handlers fail with the response to send, built once per request; its size is not a cost.
#![allow(clippy::result_large_err)]

mod buckets;
mod credentials;
mod multipart;
mod objects;
mod reads;
mod reports;

use std::time::Duration;

use cairn_proto::identity::PublicKey;
use cairn_proto::wire::{WireError, read_frame_within, write_frame_within};

use cairn_client::gateway_rpc::{
    GatewayRequest, GatewayResponse, MAX_RPC_FRAME, MAX_RPC_REQUEST, RpcCode,
};

use super::context::{Answer, RpcContext, commit, error, internal, now_ms};
use super::once::{ChangeKind, settle};
use crate::catalog::{Command, CommandResult, RequestId};
use crate::raft::types::Member;

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
/// Answers `request`; `once` is the client's id for it when it asked for its change to be
/// applied at most once (every change the gateway makes does).
async fn answer(
    ctx: &RpcContext,
    peer: PublicKey,
    request: GatewayRequest,
    once: Option<RequestId>,
) -> Answer {
    use GatewayRequest as R;
    match request {
        R::Ping => Ok(GatewayResponse::Done),
        R::Once { .. } => Err(error(
            RpcCode::InvalidRequest,
            "a request cannot wrap another request",
        )),
        R::AccessKey { id } => credentials::access_key(ctx, &id),
        R::MaskKey => credentials::mask_key(ctx),
        R::ListBuckets => buckets::list_buckets(ctx),
        R::Bucket { name } => buckets::bucket(ctx, &name),
        R::CreateBucket { name, public_read } => {
            buckets::create_bucket(ctx, name, public_read, once).await
        }
        R::SetBucketPublicRead { name, public_read } => {
            buckets::set_bucket_public_read(ctx, name, public_read, once).await
        }
        R::DeleteBucket { name } => buckets::delete_bucket(ctx, name, once).await,
        R::Object { bucket, key } => objects::object(ctx, &bucket, &key),
        R::List { bucket, query } => objects::list(ctx, &bucket, query),
        R::Place {
            bucket,
            shard_size,
            roots,
            avoid,
        } => objects::place_segment(ctx, peer, &bucket, shard_size, roots, &avoid),
        R::Put {
            bucket,
            key,
            object,
            condition,
        } => objects::put(ctx, peer, bucket, key, object, condition, once).await,
        R::SetObjectAcl { bucket, key, acl } => {
            objects::set_object_acl(ctx, bucket, key, acl, once).await
        }
        R::Delete { bucket, key } => objects::delete(ctx, bucket, key, once).await,
        R::Read { bucket, key, range } => reads::read(ctx, peer, &bucket, &key, range),
        R::ReadOrders {
            bucket,
            key,
            version,
            from,
            count,
            range,
        } => reads::read_orders(ctx, peer, &bucket, &key, version, from, count, range),
        R::RetiredOrders { first, segments } => reads::retired_orders(ctx, peer, first, &segments),
        R::ReadPart { upload, number } => reads::read_part(ctx, peer, &upload, number),
        R::CreateUpload {
            bucket,
            key,
            headers,
            acl,
            checksum,
        } => multipart::create_upload(ctx, bucket, key, headers, acl, checksum, once).await,
        R::Upload { id } => multipart::upload(ctx, &id),
        R::PutPart {
            upload,
            number,
            size,
            etag,
            segments,
            checksum,
        } => {
            multipart::put_part(
                ctx, peer, upload, number, size, etag, segments, checksum, once,
            )
            .await
        }
        R::CompleteUpload {
            upload,
            parts,
            verified,
            checksum,
            condition,
        } => {
            multipart::complete_upload(ctx, upload, parts, verified, checksum, condition, once)
                .await
        }
        R::AbortUpload { upload } => multipart::abort_upload(ctx, upload, once).await,
        R::ListUploads { bucket, query } => multipart::list_uploads(ctx, &bucket, query),
        R::ListParts { upload, after, max } => multipart::list_parts(ctx, &upload, after, max),
        R::ReportShard {
            bucket,
            key,
            node,
            shard,
            problem,
        } => reports::report_shard(ctx, peer, bucket, key, node, shard, &problem).await,
        R::ReportRefusal {
            bucket,
            key,
            node,
            shard,
            problem,
        } => reports::report_refusal(ctx, peer, bucket, key, node, shard, &problem),
        R::RepairJob => Ok(super::repair_jobs::next_job(ctx, peer)),
        R::RepairDone { ticket, stored } => {
            super::repair_jobs::finish(ctx, peer, ticket, stored).await
        }
        R::RepairFailed { ticket, problem } => {
            Ok(super::repair_jobs::failed(ctx, peer, &ticket, &problem))
        }
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

#[cfg(test)]
mod tests {
    use cairn_proto::identity::SecretKey;
    use cairn_proto::ids::ShardId;
    use cairn_proto::order::{Action, Order, Receipt, SignedOrder, SignedReceipt};

    use cairn_client::gateway_rpc::{NewBody, NewObject, NewSegment, StoredShard};
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
