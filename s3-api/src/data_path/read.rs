//! Reading a byte range of an object: only the data shards that hold it, verified against
//! the catalog's roots as they arrive; when one fails, the same columns from any `k` other
//! shards, decoded. Bytes of a masked segment are unmasked at their segment offset once
//! verified (and decoded), just before they go out.
//!
//! A producer task keeps two segments reading at once, each in its own task, and hands
//! their verified pieces to the client through a one-slot channel: while the client takes
//! one segment, the next crosses the network and is verified and unmasked on the blocking
//! pool, one task per shard. A stream holds about three segments' worth of its range in
//! memory, whatever the object's size.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::coordinator::CallError;
use cairn_client::gateway_rpc::{ObjectRead, READ_WINDOW, ReadOrders, RetiredSegment, RpcCode};
use cairn_client::node::ClientError;
use cairn_client::records::{ObjectBody, ObjectVersion, SegmentRecord};
use cairn_erasure::{Codec, MaskKey, SegmentNonce};
use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, SignedOrder};
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::mpsc;

use super::DataPath;

/// Shard columns are 64-byte aligned (the codec works on 64-byte units).
const ALIGN: u64 = 64;

/// Reads up to this many bytes are unmasked where they are (well under a millisecond);
/// longer ones on the blocking pool.
const UNMASK_INLINE: usize = 1 << 20;

/// Why the bytes of an object could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The coordinator could not be asked for read orders.
    #[error("{0}")]
    Coordinator(#[from] CallError),
    /// Fewer than `k` shards of a segment could be fetched and verified.
    #[error("segment {segment} is unreadable: {message}")]
    Unavailable {
        /// Segment index.
        segment: usize,
        /// What failed.
        message: String,
    },
    /// Something inconsistent in the catalog record or a bug.
    #[error("{0}")]
    Internal(String),
}

/// A node that sent bytes failing verification, said its copy is damaged, or refused a
/// read for a reason of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProblem {
    /// Bucket of the object the shard belongs to.
    pub bucket: String,
    /// Key of that object.
    pub key: String,
    /// The node.
    pub node: NodeId,
    /// The shard.
    pub shard: ShardId,
    /// What was wrong.
    pub problem: String,
    /// The node refused rather than sent bad bytes: reported so the shard is audited
    /// there, not as a bad copy.
    pub refused: bool,
}

impl ShardProblem {
    /// The problem `err` shows with the copy of `shard` on `node`, if it is one the node
    /// answers for: bytes failing verification or a copy it admits is damaged, or a
    /// refusal it chose (busy, not found, a claimed bad order or range…). An expired or
    /// replayed order may be the reader's own doing, and a timeout or a broken connection
    /// says nothing about the copy.
    pub fn from_error(
        bucket: &str,
        key: &str,
        node: NodeId,
        shard: ShardId,
        err: &ClientError,
    ) -> Option<Self> {
        use cairn_proto::wire::ErrorCode;
        let refused = match err {
            ClientError::BadProof(_) => false,
            ClientError::Refused { code, .. } => match code {
                ErrorCode::Damaged => false,
                ErrorCode::Expired | ErrorCode::Replayed => return None,
                _ => true,
            },
            _ => return None,
        };
        Some(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
            node,
            shard,
            problem: err.to_string(),
            refused,
        })
    }
}

/// Streams bytes `range` of the object in `read` (`bucket`/`key`). Every byte is verified
/// before it is sent; nodes that send bad bytes are passed to `report`; a shard that fails
/// is replaced by decoding from others (counted by `degraded`).
///
/// A segment arrives as one item per data shard it spans (a degraded one as one item), and
/// only once all of its bytes are verified, so a read whose first segment is unreadable
/// fails before its first byte.
pub fn read_range(
    path: Arc<DataPath>,
    bucket: String,
    key: String,
    read: ObjectRead,
    range: Range<u64>,
    report: Arc<dyn Fn(ShardProblem) + Send + Sync>,
) -> impl Stream<Item = Result<Bytes, ReadError>> + Send + 'static {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        if let Err(err) = produce(path, bucket, key, read, range, report, &tx).await {
            let _ = tx.send(Err(err)).await;
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Segments read at once: the one about to be sent and the next. While the client takes
/// segment N, segment N + 1's shards cross the network and are verified and unmasked on
/// the blocking pool, so a stream holds about three segments of its range (the one being
/// sent and two read) whatever the object's size.
const SEGMENTS_IN_FLIGHT: usize = 2;

async fn produce(
    path: Arc<DataPath>,
    bucket: String,
    key: String,
    read: ObjectRead,
    range: Range<u64>,
    report: Arc<dyn Fn(ShardProblem) + Send + Sync>,
    tx: &mpsc::Sender<Result<Bytes, ReadError>>,
) -> Result<(), ReadError> {
    let ObjectRead {
        object,
        nodes,
        orders,
    } = read;
    let (erasure, segments) = match object.body {
        ObjectBody::Inline(ref bytes) => {
            let start = (range.start as usize).min(bytes.len());
            let end = (range.end as usize).clamp(start, bytes.len());
            let _ = tx
                .send(Ok(Bytes::copy_from_slice(&bytes[start..end])))
                .await;
            return Ok(());
        }
        ObjectBody::Segments {
            ref erasure,
            ref segments,
        } => (erasure, segments.clone()),
    };
    let codec = Codec::new(usize::from(erasure.k), usize::from(erasure.m))
        .map_err(|err| ReadError::Internal(format!("object code: {err}")))?;
    let mask = if segments.iter().any(|segment| segment.mask.is_some()) {
        Some(path.mask_key().await?.clone())
    } else {
        None
    };
    let reader = Arc::new(Reader {
        path,
        bucket,
        key,
        report,
        codec,
        version: object.version(),
        segments,
        nodes,
        mask,
    });
    let mut window = orders;
    let mut reading: VecDeque<SegmentTask> = VecDeque::with_capacity(SEGMENTS_IN_FLIGHT);
    let mut start = 0u64;
    for index in 0..reader.segments.len() {
        let len = reader.segments.get(index).map_or(0, |segment| segment.len);
        let span = start..start + len;
        start = span.end;
        if span.end <= range.start {
            continue;
        }
        if span.start >= range.end {
            break;
        }
        let wanted = range.start.max(span.start) - span.start..range.end.min(span.end) - span.start;
        // Orders are asked here, one window at a time, while the segments already started
        // go on reading.
        if !covers(&window, index) {
            window = reader
                .orders(index, READ_WINDOW, Some(range.clone()))
                .await?;
        }
        let orders = window
            .segments
            .get(index - window.first as usize)
            .ok_or_else(|| ReadError::Internal("read orders missing".into()))?
            .clone();
        if reading.len() >= SEGMENTS_IN_FLIGHT
            && let Some(first) = reading.pop_front()
            && !send(tx, first.join().await?).await
        {
            return Ok(());
        }
        reading.push_back(SegmentTask(tokio::spawn(
            reader.clone().segment(index, orders, wanted),
        )));
    }
    while let Some(first) = reading.pop_front() {
        if !send(tx, first.join().await?).await {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends a segment's pieces in order; false once the client went away.
async fn send(tx: &mpsc::Sender<Result<Bytes, ReadError>>, pieces: Vec<Bytes>) -> bool {
    for piece in pieces {
        if tx.send(Ok(piece)).await.is_err() {
            return false;
        }
    }
    true
}

/// One segment being read by its own task; dropping it (the client went away, or an
/// earlier segment failed) stops the read.
struct SegmentTask(tokio::task::JoinHandle<Result<Vec<Bytes>, ReadError>>);

impl SegmentTask {
    async fn join(mut self) -> Result<Vec<Bytes>, ReadError> {
        (&mut self.0)
            .await
            .map_err(|err| ReadError::Internal(format!("segment read task: {err}")))?
    }
}

impl Drop for SegmentTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every segment read of one object read shares.
struct Reader {
    path: Arc<DataPath>,
    bucket: String,
    key: String,
    report: Arc<dyn Fn(ShardProblem) + Send + Sync>,
    codec: Codec,
    /// The version being read, which orders are asked for.
    version: ObjectVersion,
    segments: Vec<SegmentRecord>,
    nodes: Vec<(NodeId, String, bool)>,
    /// The cluster's mask key, if any segment of the object is masked.
    mask: Option<MaskKey>,
}

impl Reader {
    /// Bytes `wanted` of segment `index`, verified and unmasked, one piece per data shard
    /// (or one decoded piece when a shard failed).
    async fn segment(
        self: Arc<Self>,
        index: usize,
        orders: Vec<Option<SignedOrder>>,
        wanted: Range<u64>,
    ) -> Result<Vec<Bytes>, ReadError> {
        let segment = self
            .segments
            .get(index)
            .ok_or_else(|| ReadError::Internal("segment index out of range".into()))?;
        let failed = match self.fast(segment, &orders, wanted.clone()).await {
            Ok(pieces) => return Ok(pieces),
            Err(failed) => failed,
        };
        self.path.degraded_read();
        // Orders are single-use, and some were spent: fetch fresh ones.
        let fresh = self.orders(index, 1, None).await?;
        let orders = fresh.segments.first().cloned().unwrap_or_default();
        let bytes = self
            .degraded(index, segment, &orders, wanted.clone(), &failed)
            .await?;
        Ok(vec![self.unmasked(segment, wanted.start, bytes).await?])
    }

    /// The object's bytes from `bytes`, read at `offset` of `segment` as stored: unmasked
    /// if the segment was masked. Large reads unmask on the blocking pool, so a 64 MiB
    /// segment does not hold an async thread for tens of milliseconds.
    async fn unmasked(
        &self,
        segment: &SegmentRecord,
        offset: u64,
        mut bytes: Vec<u8>,
    ) -> Result<Bytes, ReadError> {
        let Some(nonce) = segment.mask else {
            return Ok(Bytes::from(bytes));
        };
        let key = self
            .mask
            .clone()
            .ok_or_else(|| ReadError::Internal("a masked segment but no mask key".into()))?;
        let small = bytes.len() <= UNMASK_INLINE;
        let unmask = move || {
            key.apply(&nonce, offset, &mut bytes)
                .map(|()| Bytes::from(bytes))
                .map_err(|err| ReadError::Internal(format!("unmasking: {err}")))
        };
        if small {
            unmask()
        } else {
            tokio::task::spawn_blocking(unmask)
                .await
                .map_err(|err| ReadError::Internal(format!("unmasking task: {err}")))?
        }
    }

    /// Orders for segments from `from` on of the version being read. If the key holds
    /// another version by now (or none), the read goes on with the version it began: the
    /// shards of a replaced version stay on their nodes for the garbage delay, and the
    /// coordinator signs orders for those still there.
    ///
    /// `count` segments from `from`; with `range` (object bytes), orders only for the data
    /// shards holding those bytes, else for every shard (to decode around a failure).
    async fn orders(
        &self,
        from: usize,
        count: u32,
        range: Option<Range<u64>>,
    ) -> Result<ReadOrders, ReadError> {
        let (version, segments, codec) = (self.version, &self.segments, &self.codec);
        let coordinator = &self.path.coordinator;
        let asked = coordinator
            .read_orders(&self.bucket, &self.key, version, from as u32, count, range)
            .await;
        match asked {
            Err(CallError::Refused {
                code: RpcCode::Changed,
                ..
            }) => {
                let window = segments
                    .iter()
                    .skip(from)
                    .take(READ_WINDOW as usize)
                    .map(|segment| RetiredSegment {
                        shard_size: codec.shard_len(segment.len),
                        shards: segment.shards.clone(),
                    })
                    .collect();
                tracing::debug!(bucket = %self.bucket, key = %self.key, from, "the key changed during the read; reading on from the replaced version");
                Ok(coordinator.retired_orders(from as u32, window).await?)
            }
            answer => Ok(answer?),
        }
    }

    /// The wanted bytes from the data shards that hold them, one piece per shard, each
    /// verified and unmasked as it arrives. On failure, the indices of the shards whose
    /// nodes answered wrongly (bad bytes, a refusal of their own), which decoding leaves
    /// out. A node that was slow, unreachable or recently marked down is not among them:
    /// decoding asks it again beside the others, since one that merely restarted or
    /// stalled may be just what the segment needs when others are gone too.
    async fn fast(
        &self,
        segment: &SegmentRecord,
        orders: &[Option<SignedOrder>],
        wanted: Range<u64>,
    ) -> Result<Vec<Bytes>, Vec<usize>> {
        let shard_len = self.codec.shard_len(segment.len);
        let pieces = data_pieces(shard_len, &wanted);
        // A node that just failed is not waited for again: straight to decoding, which
        // asks every shard at once.
        let down = pieces.iter().any(|(i, _)| {
            segment
                .shards
                .get(*i)
                .is_some_and(|s| self.path.is_down(&s.node))
        });
        if down {
            return Err(Vec::new());
        }
        let fetches = pieces.iter().map(|(i, piece)| {
            // Where the piece sits in the segment, which is where its keystream starts.
            let unmask = segment
                .mask
                .map(|nonce| (nonce, *i as u64 * shard_len + piece.start));
            let fetch = self.fetch(
                segment,
                orders,
                *i,
                piece.clone(),
                hedge_limit(piece),
                unmask,
            );
            async move { (*i, fetch.await) }
        });
        let results = futures_util::future::join_all(fetches).await;
        let mut out = Vec::with_capacity(results.len());
        let mut failed = false;
        let mut blamed = Vec::new();
        for (i, result) in results {
            match result {
                Ok(bytes) => out.push(Bytes::from(bytes)),
                Err(failure) => {
                    failed = true;
                    if failure.answered {
                        blamed.push(i);
                    }
                }
            }
        }
        if failed { Err(blamed) } else { Ok(out) }
    }

    /// Fetches `range` of shard `i`, giving up on the node after `limit`, and verifies it
    /// on the blocking pool (so the shards of a segment, and the next segment's transfers,
    /// are checked side by side on every core); with `unmask` (the segment's nonce and the
    /// piece's offset in it), each verified block is unmasked while still in cache. Reports
    /// a node that sends bad bytes.
    async fn fetch(
        &self,
        segment: &SegmentRecord,
        orders: &[Option<SignedOrder>],
        i: usize,
        range: Range<u64>,
        limit: Duration,
        unmask: Option<(SegmentNonce, u64)>,
    ) -> Result<Vec<u8>, Failure> {
        let shard = segment.shards.get(i).ok_or("shard index out of range")?;
        let order = orders
            .get(i)
            .and_then(Option::as_ref)
            .ok_or("no read order for the shard")?;
        // The node proves its bytes against the root in the order; the order must be for
        // the very shard of the record being read, or bytes of another version (or of a
        // copy placed since) could pass for it.
        let matches = order.order.node == shard.node
            && matches!(&order.order.action,
                Action::Get { shard: id, root, .. } if *id == shard.id && *root == shard.root);
        if !matches {
            return Err("the read order is for another shard than the record names".into());
        }
        let (_, addr, _) = self
            .nodes
            .iter()
            .find(|(id, _, _)| *id == shard.node)
            .ok_or("the node is no longer registered")?;
        let mut keystream = match unmask {
            Some((nonce, offset)) => {
                let key = self
                    .mask
                    .as_ref()
                    .ok_or("a masked segment but no mask key")?;
                let mut keystream = key.keystream(&nonce);
                keystream
                    .seek(offset)
                    .map_err(|err| format!("unmasking: {err}"))?;
                Some(keystream)
            }
            None => None,
        };
        let client = self.path.node(shard.node, addr).await?;
        let received = tokio::time::timeout(limit, client.fetch_shard(order, Some(range))).await;
        let result = match received {
            Ok(Ok(answer)) => {
                let verify = move || {
                    let mut out = vec![0u8; answer.len()];
                    let mut unmasked = Ok(());
                    answer.verify_into(&mut out, |block| {
                        if let Some(keystream) = keystream.as_mut()
                            && unmasked.is_ok()
                        {
                            unmasked = keystream.apply(block);
                        }
                    })?;
                    Ok((out, unmasked))
                };
                match tokio::task::spawn_blocking(verify).await {
                    Ok(Ok((out, Ok(())))) => Ok(out),
                    Ok(Ok((_, Err(err)))) => return Err(format!("unmasking: {err}").into()),
                    Ok(Err(err)) => Err(err),
                    Err(err) => return Err(format!("verifying task: {err}").into()),
                }
            }
            Ok(Err(err)) => Err(err),
            Err(_) => {
                self.path.mark_down(shard.node);
                tracing::warn!(node = %shard.node, shard = %shard.id, "shard read timed out");
                return Err(format!("no answer within {limit:?}").into());
            }
        };
        result.map_err(|err| {
            let problem =
                ShardProblem::from_error(&self.bucket, &self.key, shard.node, shard.id, &err);
            let answered = problem.is_some() || matches!(err, ClientError::Protocol(_));
            if let Some(problem) = problem {
                (self.report)(problem);
            }
            if matches!(err, ClientError::Connect(_) | ClientError::Stream(_)) {
                self.path.mark_down(shard.node);
            }
            tracing::warn!(node = %shard.node, shard = %shard.id, %err, "shard read failed");
            Failure {
                message: err.to_string(),
                answered,
            }
        })
    }

    /// The wanted bytes, as stored, decoded from the same columns of any `k` shards other
    /// than those whose nodes just answered wrongly, asked all at once (nodes marked down
    /// too, whose answers are only waited for while nothing else has come); the first `k`
    /// verified answers win.
    async fn degraded(
        &self,
        index: usize,
        segment: &SegmentRecord,
        orders: &[Option<SignedOrder>],
        wanted: Range<u64>,
        failed: &[usize],
    ) -> Result<Vec<u8>, ReadError> {
        let (codec, nodes) = (&self.codec, &self.nodes);
        let k = codec.data_shards();
        let shard_len = codec.shard_len(segment.len);
        let pieces = data_pieces(shard_len, &wanted);
        let lo = pieces.iter().map(|(_, r)| r.start).min().unwrap_or(0);
        let hi = pieces.iter().map(|(_, r)| r.end).max().unwrap_or(0);
        let columns = lo / ALIGN * ALIGN..hi.div_ceil(ALIGN) * ALIGN;
        let columns = columns.start..columns.end.min(shard_len);
        // Nodes in a serving state first; the ones that just failed not at all.
        let mut candidates: Vec<usize> = (0..segment.shards.len())
            .filter(|i| !failed.contains(i))
            .collect();
        candidates.sort_by_key(|i| {
            segment.shards.get(*i).map_or((true, true), |s| {
                let serving = nodes
                    .iter()
                    .any(|(id, _, serving)| *id == s.node && *serving);
                (self.path.is_down(&s.node), !serving)
            })
        });
        let mut pending: FuturesUnordered<_> = candidates
            .iter()
            .map(|i| {
                let limit = patient_limit(&columns);
                let fetch = self.fetch(segment, orders, *i, columns.clone(), limit, None);
                async move { (*i, fetch.await) }
            })
            .collect();
        let mut got: Vec<(usize, Vec<u8>)> = Vec::with_capacity(k);
        let mut errors = Vec::new();
        while let Some((i, result)) = pending.next().await {
            match result {
                Ok(bytes) => {
                    got.push((i, bytes));
                    if got.len() == k {
                        break;
                    }
                }
                Err(failure) => errors.push(format!("shard {i}: {}", failure.message)),
            }
        }
        drop(pending);
        if got.len() < k {
            return Err(ReadError::Unavailable {
                segment: index,
                message: format!(
                    "{} of the {k} shards needed could be read ({})",
                    got.len(),
                    errors.join("; ")
                ),
            });
        }
        let shards: Vec<(usize, &[u8])> = got.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let data = codec
            .recover_columns(shard_len, columns.clone(), &shards)
            .map_err(|err| ReadError::Internal(format!("decoding segment {index}: {err}")))?;
        let width = (columns.end - columns.start) as usize;
        let mut out = Vec::with_capacity((wanted.end - wanted.start) as usize);
        for (i, piece) in pieces {
            let base = i * width;
            let from = base + (piece.start - columns.start) as usize;
            let to = base + (piece.end - columns.start) as usize;
            out.extend_from_slice(data.get(from..to).ok_or_else(|| {
                ReadError::Internal("decoded columns shorter than expected".into())
            })?);
        }
        tracing::info!(segment = index, "served a segment range by decoding");
        Ok(out)
    }
}

/// Why one shard read failed.
struct Failure {
    message: String,
    /// The node answered and its answer was the problem: bytes failing verification, a
    /// refusal of its own, or a broken protocol. Asking it again for the same segment
    /// would only get the same. (A timeout, a lost connection or an order the reader got
    /// wrong are not the node's answer.)
    answered: bool,
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure {
            message: message.to_string(),
            answered: false,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            answered: false,
        }
    }
}

/// How long the direct read of a data shard may take before the segment is decoded from
/// other shards instead: a healthy node answers within a round trip or two and streams
/// at several MiB/s; one that died without closing its connection never answers.
fn hedge_limit(range: &Range<u64>) -> Duration {
    Duration::from_secs(3) + Duration::from_millis((range.end - range.start) >> 13)
}

/// How long a read may take once decoding is the only way left: slow nodes get their time.
fn patient_limit(range: &Range<u64>) -> Duration {
    Duration::from_secs(30) + Duration::from_secs((range.end - range.start) >> 20)
}

fn covers(window: &ReadOrders, index: usize) -> bool {
    let first = window.first as usize;
    index >= first && index < first + window.segments.len()
}

/// The data shards holding bytes `wanted` of a segment, with the range within each.
fn data_pieces(shard_len: u64, wanted: &Range<u64>) -> Vec<(usize, Range<u64>)> {
    if wanted.start >= wanted.end || shard_len == 0 {
        return Vec::new();
    }
    let first = wanted.start / shard_len;
    let last = (wanted.end - 1) / shard_len;
    (first..=last)
        .map(|i| {
            let base = i * shard_len;
            let start = wanted.start.max(base) - base;
            let end = wanted.end.min(base + shard_len) - base;
            (i as usize, start..end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that refuses reads (busy, claiming a shard it signed for is not there…)
    /// is reported for an audit of the shard; an expired or replayed order, or a broken
    /// connection, is not the node's word about its copy.
    #[test]
    fn a_node_refusing_reads_is_reported_for_an_audit() {
        use cairn_proto::wire::ErrorCode;
        let node = cairn_proto::identity::SecretKey::from_seed([3; 32]).public();
        let shard = ShardId([7; 16]);
        let problem = |err: ClientError| ShardProblem::from_error("b", "k", node, shard, &err);
        let refused = |code| ClientError::Refused {
            code,
            message: "no".into(),
        };
        for code in [
            ErrorCode::Busy,
            ErrorCode::NotFound,
            ErrorCode::BadRange,
            ErrorCode::BadSignature,
            ErrorCode::Internal,
        ] {
            let found = problem(refused(code)).unwrap_or_else(|| panic!("{code:?}"));
            assert!(found.refused, "{code:?}");
            assert_eq!((found.node, found.shard), (node, shard));
        }
        assert!(!problem(refused(ErrorCode::Damaged)).unwrap().refused);
        for code in [ErrorCode::Expired, ErrorCode::Replayed] {
            assert_eq!(problem(refused(code)), None, "{code:?}");
        }
        assert_eq!(problem(ClientError::Stream("reset".into())), None);
    }

    #[test]
    fn pieces_split_a_range_over_data_shards() {
        assert_eq!(data_pieces(100, &(0..100)), vec![(0, 0..100)]);
        assert_eq!(
            data_pieces(100, &(50..250)),
            vec![(0, 50..100), (1, 0..100), (2, 0..50)]
        );
        assert_eq!(data_pieces(100, &(199..201)), vec![(1, 99..100), (2, 0..1)]);
        assert!(data_pieces(100, &(5..5)).is_empty());
    }
}
