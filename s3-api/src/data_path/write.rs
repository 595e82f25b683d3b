//! Writing a body: small ones inline, larger ones cut into segments, each masked and
//! encoded, placed by the coordinator and sent shard by shard to its nodes in parallel.
//!
//! Memory stays bounded by two segments per upload: one being filled from the client while
//! the previous one is encoded and sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::coordinator::CallError;
use cairn_client::gateway_rpc::{NewBody, NewSegment, RpcCode, StoredShard};
use cairn_client::records::Bucket;
use cairn_erasure::{Codec, EncodedSegment, SegmentNonce};
use cairn_proto::identity::NodeId;
use futures_util::{Stream, StreamExt};
use tokio::task::JoinHandle;

use super::DataPath;

/// Placements tried for one segment before the upload fails.
const PLACEMENT_ATTEMPTS: usize = 3;

/// What a body became.
#[derive(Debug)]
pub struct Written {
    /// Bytes received.
    pub size: u64,
    /// Inline bytes or stored segments with their proof.
    pub body: NewBody,
}

/// Why a body could not be stored. Nothing is visible after any of them; shards already on
/// nodes are orphans that garbage collection removes.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The client's body stream failed or ended early.
    #[error("request body: {0}")]
    Body(String),
    /// The caller's check of the bytes (hash, signature policy) refused them.
    #[error("{0}")]
    Refused(String),
    /// The coordinator could not place or was unreachable.
    #[error("{0}")]
    Coordinator(#[from] CallError),
    /// Nodes kept failing.
    #[error("storage nodes failed: {0}")]
    Nodes(String),
    /// A bug or resource failure in the gateway.
    #[error("{0}")]
    Internal(String),
}

/// Reads `body` to its end and stores it under `bucket`'s code. Every chunk is shown to
/// `observe` first (for MD5 and Nix checks), which may refuse the body. Bodies of at most
/// the inline threshold stay inline unless `segments_only` (multipart parts always go to
/// nodes, since an object is assembled from their segments).
pub async fn write_body<S, E>(
    path: &Arc<DataPath>,
    bucket: &Bucket,
    mut body: S,
    mut observe: impl FnMut(&[u8]) -> Result<(), String>,
    segments_only: bool,
) -> Result<Written, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let erasure = bucket.erasure;
    let codec = Codec::new(usize::from(erasure.k), usize::from(erasure.m))
        .map_err(|err| WriteError::Internal(format!("bucket code: {err}")))?;
    let segment_size = usize::try_from(erasure.segment_size)
        .map_err(|_| WriteError::Internal("segment size does not fit memory".into()))?
        .max(1);
    let mut size = 0u64;
    let mut buffer: Vec<u8> = Vec::new();
    let mut segments: Vec<NewSegment> = Vec::new();
    let mut sending: Option<JoinHandle<Result<NewSegment, WriteError>>> = None;
    let mut index = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| WriteError::Body(err.to_string()))?;
        observe(&chunk).map_err(WriteError::Refused)?;
        size += chunk.len() as u64;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = rest.len().min(segment_size - buffer.len());
            if buffer.len() + take > path.inline_threshold && buffer.capacity() < segment_size {
                // Past what could stay inline: from here on collect into a buffer sized for
                // the whole segment and its padding, so growing it never copies the segment
                // and encoding never reallocates it.
                let mut segment = codec.segment_buffer(segment_size as u64);
                segment.extend_from_slice(&buffer);
                buffer = segment;
            }
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buffer.len() == segment_size {
                let full = std::mem::take(&mut buffer);
                if let Some(previous) = sending.take() {
                    segments.push(joined(previous).await?);
                }
                sending = Some(spawn_segment(path, bucket, &codec, index, full));
                index += 1;
            }
        }
    }
    if let Some(previous) = sending.take() {
        segments.push(joined(previous).await?);
    }
    if segments.is_empty() && !segments_only && buffer.len() <= path.inline_threshold {
        return Ok(Written {
            size,
            body: NewBody::Inline(buffer),
        });
    }
    if !buffer.is_empty() {
        let last = spawn_segment(path, bucket, &codec, index, buffer);
        segments.push(joined(last).await?);
    }
    Ok(Written {
        size,
        body: NewBody::Segments(segments),
    })
}

async fn joined(
    task: JoinHandle<Result<NewSegment, WriteError>>,
) -> Result<NewSegment, WriteError> {
    task.await
        .map_err(|err| WriteError::Internal(format!("segment task: {err}")))?
}

/// Masks, encodes and stores one segment in the background.
///
/// Every segment gets its own random nonce, recorded with it in the catalog; masked with
/// the cluster's key before coding, its shards cannot be recomputed from the object by a
/// node that did not keep them.
fn spawn_segment(
    path: &Arc<DataPath>,
    bucket: &Bucket,
    codec: &Codec,
    index: u64,
    data: Vec<u8>,
) -> JoinHandle<Result<NewSegment, WriteError>> {
    let (path, bucket, codec) = (path.clone(), bucket.name.clone(), *codec);
    tokio::spawn(async move {
        let key = path.mask_key().await?.clone();
        let nonce = SegmentNonce::random()
            .map_err(|err| WriteError::Internal(format!("segment nonce: {err}")))?;
        let segment = tokio::task::spawn_blocking(move || {
            codec.encode_masked_segment(index, 0, data, &key, nonce)
        })
        .await
        .map_err(|err| WriteError::Internal(format!("encoding: {err}")))?;
        store_segment(&path, &bucket, &segment).await
    })
}

/// Places a segment and sends its shards; a node that fails is avoided in a new placement.
async fn store_segment(
    path: &DataPath,
    bucket: &str,
    segment: &EncodedSegment,
) -> Result<NewSegment, WriteError> {
    let shard_size = segment.shard_len() as u64;
    // Generous: a volunteer's uplink may be slow, but a dead node must not hold the upload
    // for QUIC's idle timeout on every attempt.
    let limit = Duration::from_secs(30) + Duration::from_secs(shard_size >> 20);
    // Nodes that failed other requests lately are avoided too, unless the cluster is too
    // small to do without them.
    let mut recently_down = path.down_nodes();
    let mut avoid: Vec<NodeId> = Vec::new();
    let mut failures = Vec::new();
    let mut attempt = 0;
    while attempt < PLACEMENT_ATTEMPTS {
        let placing = path
            .coordinator
            .place(
                bucket,
                shard_size,
                segment.roots().to_vec(),
                avoid.iter().chain(&recently_down).copied().collect(),
            )
            .await;
        let placed = match placing {
            Err(CallError::Refused {
                code: RpcCode::NotEnoughNodes,
                ..
            }) if !recently_down.is_empty() => {
                recently_down.clear();
                continue;
            }
            answer => answer?,
        };
        attempt += 1;
        if placed.len() != segment.shard_count() {
            return Err(WriteError::Internal(format!(
                "coordinator placed {} shards of a segment of {}",
                placed.len(),
                segment.shard_count()
            )));
        }
        let sends = placed.iter().enumerate().map(|(i, shard)| async move {
            let node = shard.order.order.node;
            let bytes = segment
                .shard(i)
                .ok_or_else(|| (node, "shard index out of range".to_string()))?;
            let client = path.node(node, &shard.addr).await.map_err(|e| (node, e))?;
            match tokio::time::timeout(limit, client.put_shard(&shard.order, bytes)).await {
                Ok(Ok(receipt)) => Ok(StoredShard {
                    order: shard.order.clone(),
                    receipt,
                }),
                Ok(Err(err)) => Err((node, err.to_string())),
                Err(_) => Err((node, format!("no answer within {limit:?}"))),
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut shards = Vec::with_capacity(results.len());
        let mut failed = false;
        for result in results {
            match result {
                Ok(stored) => shards.push(stored),
                Err((node, err)) => {
                    path.mark_down(node);
                    tracing::warn!(%node, %err, "storing a shard failed; placing the segment again");
                    failures.push(format!("{node}: {err}"));
                    avoid.push(node);
                    failed = true;
                }
            }
        }
        if !failed {
            return Ok(NewSegment {
                len: segment.segment_len(),
                shards,
                mask: segment.mask(),
            });
        }
    }
    Err(WriteError::Nodes(failures.join("; ")))
}
