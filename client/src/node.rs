//! [`NodeClient`]: how gateways, the coordinator and tests talk to one node.
//!
//! Nothing a node returns is taken on trust: receipts are checked against the node's key and
//! the order, shard bytes against the root named in the order.

use std::io::Read;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;
use cairn_erasure::ShardRoot;
use cairn_erasure::slice::{ProofError, SliceProof, verify_into};
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, SignedOrder, SignedReceipt};
use cairn_proto::transport::{TransportError, connect};
use cairn_proto::wire::{
    ErrorCode, NODE_ALPN, NodeRequest, NodeResponse, WireError, read_frame, write_frame,
};
use tokio::sync::Mutex;

/// Longest a handshake may take. A live node answers within a few round trips; without
/// this, a dead one would hold the caller for QUIC's whole idle timeout.
const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most shard ids [`NodeClient::inventory`] takes from one node (256 MiB of ids): far past
/// what a node holds (16 million shards), yet a bound on what a lying node can make its
/// caller allocate. The coordinator's collector asks with a tighter bound of its own.
pub const MAX_INVENTORY: usize = 16_000_000;

/// One request's stream pair.
type Streams = (quinn::SendStream, quinn::RecvStream);

/// A connection to one storage node, pinned to its key and reopened when it drops.
pub struct NodeClient {
    endpoint: quinn::Endpoint,
    key: SecretKey,
    addr: SocketAddr,
    node: NodeId,
    conn: Mutex<Option<quinn::Connection>>,
}

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (or the node is not who it should be).
    #[error("cannot reach node: {0}")]
    Connect(#[from] TransportError),
    /// The connection or stream failed mid-request.
    #[error("stream to node failed: {0}")]
    Stream(String),
    /// The node refused the request.
    #[error("node refused ({code}): {message}")]
    Refused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
    /// The node answered something that does not fit the request.
    #[error("node broke the protocol: {0}")]
    Protocol(String),
    /// A receipt that is unsigned, signed by another key or about another shard.
    #[error("node returned a bad receipt: {0}")]
    BadReceipt(String),
    /// Shard bytes that do not verify against the order's root.
    #[error("node returned bytes that fail verification: {0}")]
    BadProof(#[from] ProofError),
}

impl From<WireError> for ClientError {
    fn from(err: WireError) -> Self {
        ClientError::Stream(err.to_string())
    }
}

/// Proof bytes allowed per byte of range: chunk-group hashes cost well under 1/64, and the
/// partial groups at either end add at most a few KiB.
fn max_proof_len(range: &Range<u64>) -> u64 {
    let len = range.end.saturating_sub(range.start);
    len + len / 32 + 64 * 1024
}

impl NodeClient {
    /// A client for the node `node` at `addr`, connecting from `endpoint` as `key`.
    pub fn new(endpoint: quinn::Endpoint, key: SecretKey, addr: SocketAddr, node: NodeId) -> Self {
        Self {
            endpoint,
            key,
            addr,
            node,
            conn: Mutex::new(None),
        }
    }

    /// A client for the same node, connecting afresh from the same endpoint as `key`: a
    /// reader the node has never seen.
    pub fn as_key(&self, key: SecretKey) -> NodeClient {
        NodeClient::new(self.endpoint.clone(), key, self.addr, self.node)
    }

    /// The node this client talks to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// A stream to the node, on the connection kept from earlier requests if it is still
    /// open (returned too, so a caller can tell what became of it), else on a new one.
    async fn open(&self) -> Result<(Streams, Option<quinn::Connection>), ClientError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.close_reason().is_none()
            && let Ok(streams) = conn.open_bi().await
        {
            return Ok((streams, Some(conn.clone())));
        }
        let connecting = connect(&self.endpoint, &self.key, self.addr, &self.node, NODE_ALPN);
        let conn = tokio::time::timeout(CONNECT_LIMIT, connecting)
            .await
            .map_err(|_| {
                ClientError::Connect(TransportError::Connect(format!(
                    "no handshake within {CONNECT_LIMIT:?}"
                )))
            })??;
        let streams = conn
            .open_bi()
            .await
            .map_err(|err| ClientError::Stream(err.to_string()))?;
        *guard = Some(conn);
        Ok((streams, None))
    }

    /// Sends `request` (and `body` after it), returns the first response frame and the
    /// stream for anything that follows.
    ///
    /// A node restarted since the kept connection was made answers it with a stateless
    /// reset: it no longer knows the connection, so nothing sent on it reached the process
    /// listening now. The request is then sent once more on a fresh connection, instead of
    /// failing the first request after every node restart. (Had the old process taken the
    /// request before it died, the node refuses the order's serial as replayed: nothing is
    /// done twice.)
    async fn exchange(
        &self,
        request: &NodeRequest,
        body: Option<&[u8]>,
    ) -> Result<(NodeResponse, quinn::RecvStream), ClientError> {
        let (streams, kept) = self.open().await?;
        match Self::exchange_on(streams, request, body).await {
            Err(ClientError::Stream(_))
                if kept.is_some_and(|conn| {
                    matches!(conn.close_reason(), Some(quinn::ConnectionError::Reset))
                }) =>
            {
                let (streams, _) = self.open().await?;
                Self::exchange_on(streams, request, body).await
            }
            answer => answer,
        }
    }

    async fn exchange_on(
        (mut send, mut recv): Streams,
        request: &NodeRequest,
        body: Option<&[u8]>,
    ) -> Result<(NodeResponse, quinn::RecvStream), ClientError> {
        write_frame(&mut send, request).await?;
        if let Some(body) = body {
            // A node that refuses the order stops reading; its answer explains why, so a
            // failed write is not the error to report.
            let _ = send.write_all(body).await;
        }
        let _ = send.finish();
        match read_frame::<_, NodeResponse>(&mut recv).await? {
            NodeResponse::Error { code, message } => Err(ClientError::Refused { code, message }),
            response => Ok((response, recv)),
        }
    }

    /// Stores `bytes` under a put order and returns the node's receipt, checked against the
    /// node's key and the order.
    pub async fn put_shard(
        &self,
        order: &SignedOrder,
        bytes: &[u8],
    ) -> Result<SignedReceipt, ClientError> {
        let request = NodeRequest::PutShard {
            order: order.clone(),
        };
        let (response, _) = self.exchange(&request, Some(bytes)).await?;
        let NodeResponse::Stored { receipt } = response else {
            return Err(ClientError::Protocol(format!(
                "expected Stored, got {response:?}"
            )));
        };
        let signed = receipt
            .verify()
            .map_err(|err| ClientError::BadReceipt(err.to_string()))?;
        let Action::Put { shard, root, size } = order.order.action else {
            return Err(ClientError::Protocol("put_shard needs a put order".into()));
        };
        if signed.node != self.node
            || signed.shard != shard
            || signed.root != root
            || signed.size != size
            || signed.serial != order.order.serial
        {
            return Err(ClientError::BadReceipt(format!(
                "receipt {signed:?} does not match the order"
            )));
        }
        Ok(receipt)
    }

    /// Reads bytes `range` (the whole shard by default) under a get order, verified against
    /// the order's root before they are returned.
    pub async fn get_shard(
        &self,
        order: &SignedOrder,
        range: Option<Range<u64>>,
    ) -> Result<Vec<u8>, ClientError> {
        self.fetch_shard(order, range).await?.verify()
    }

    /// Receives bytes `range` (the whole shard by default) under a get order, as the node
    /// sent them: the answer gives its bytes only through verification against the order's
    /// root, which the caller runs where it likes (a blocking pool, beside the network).
    /// The proof is kept as the pieces QUIC delivered, never copied into one buffer.
    pub async fn fetch_shard(
        &self,
        order: &SignedOrder,
        range: Option<Range<u64>>,
    ) -> Result<UnverifiedShard, ClientError> {
        let Action::Get { root, size, .. } = order.order.action else {
            return Err(ClientError::Protocol("get_shard needs a get order".into()));
        };
        let wanted = range.clone().unwrap_or(0..size);
        let request = NodeRequest::GetShard {
            order: order.clone(),
            range,
        };
        let (response, mut recv) = self.exchange(&request, None).await?;
        let NodeResponse::Shard {
            range: got,
            proof_len,
        } = response
        else {
            return Err(ClientError::Protocol(format!(
                "expected Shard, got {response:?}"
            )));
        };
        if got != wanted || proof_len > max_proof_len(&wanted) {
            return Err(ClientError::Protocol(format!(
                "answer for {got:?} with a {proof_len}-byte proof, asked for {wanted:?}"
            )));
        }
        let mut chunks = Vec::new();
        let mut received = 0u64;
        while let Some(chunk) = recv
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|err| ClientError::Stream(err.to_string()))?
        {
            received += chunk.bytes.len() as u64;
            if received > proof_len {
                return Err(ClientError::Protocol(format!(
                    "proof is longer than the {proof_len} bytes its header said"
                )));
            }
            chunks.push(chunk.bytes);
        }
        if received != proof_len {
            return Err(ClientError::Protocol(format!(
                "proof is {received} bytes, header said {proof_len}"
            )));
        }
        Ok(UnverifiedShard {
            root,
            size,
            range: wanted,
            chunks,
        })
    }

    /// Asks for slice proofs of `ranges` under an audit order; the caller verifies them.
    pub async fn audit(
        &self,
        order: &SignedOrder,
        ranges: Vec<Range<u64>>,
    ) -> Result<Vec<SliceProof>, ClientError> {
        let expected = ranges.len();
        let request = NodeRequest::Audit {
            order: order.clone(),
            ranges,
        };
        let (response, _) = self.exchange(&request, None).await?;
        let NodeResponse::Audit { proofs } = response else {
            return Err(ClientError::Protocol(format!(
                "expected Audit, got {response:?}"
            )));
        };
        if proofs.len() != expected {
            return Err(ClientError::Protocol(format!(
                "{} proofs for {expected} ranges",
                proofs.len()
            )));
        }
        Ok(proofs.into_iter().map(SliceProof::from_bytes).collect())
    }

    /// Deletes a shard under a delete order; returns whether the node held it.
    pub async fn delete_shard(&self, order: &SignedOrder) -> Result<bool, ClientError> {
        let request = NodeRequest::DeleteShard {
            order: order.clone(),
        };
        match self.exchange(&request, None).await? {
            (NodeResponse::Deleted { existed }, _) => Ok(existed),
            (other, _) => Err(ClientError::Protocol(format!(
                "expected Deleted, got {other:?}"
            ))),
        }
    }

    /// Every shard id the node says it holds (a claim to check, not a fact), at most
    /// [`MAX_INVENTORY`] of them (see [`Self::inventory_within`]).
    pub async fn inventory(&self, order: &SignedOrder) -> Result<Vec<ShardId>, ClientError> {
        self.inventory_within(order, MAX_INVENTORY).await
    }

    /// Every shard id the node says it holds, refused as [`ClientError::Protocol`] as soon
    /// as the pages read list more than `max`: the node sends pages until it says there
    /// are no more, so without a bound a lying node decides how much the caller holds.
    /// Each page is one frame (at most 1 MiB), so the caller holds at most `max` ids and
    /// one page.
    pub async fn inventory_within(
        &self,
        order: &SignedOrder,
        max: usize,
    ) -> Result<Vec<ShardId>, ClientError> {
        let request = NodeRequest::Inventory {
            order: order.clone(),
        };
        let (mut response, mut recv) = self.exchange(&request, None).await?;
        let mut all = Vec::new();
        loop {
            let NodeResponse::Inventory { shards, more } = response else {
                return Err(ClientError::Protocol(format!(
                    "expected Inventory, got {response:?}"
                )));
            };
            if shards.len() > max - all.len() {
                return Err(ClientError::Protocol(format!(
                    "the inventory lists over {max} shards, more than the node can hold"
                )));
            }
            all.extend(shards);
            if !more {
                return Ok(all);
            }
            response = read_frame(&mut recv).await?;
        }
    }
}

/// A shard range as a node sent it, not yet checked: its bytes are reachable only through
/// [`UnverifiedShard::verify`] and [`UnverifiedShard::verify_into`], which check every
/// one against the root named in the order it was asked under.
pub struct UnverifiedShard {
    root: ShardRoot,
    size: u64,
    range: Range<u64>,
    chunks: Vec<Bytes>,
}

impl UnverifiedShard {
    /// Bytes of the shard this answer holds once verified.
    pub fn len(&self) -> usize {
        (self.range.end - self.range.start) as usize
    }

    /// Whether the answer holds no bytes (an empty shard read whole).
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The verified bytes.
    pub fn verify(self) -> Result<Vec<u8>, ClientError> {
        let mut out = vec![0u8; self.len()];
        self.verify_into(&mut out, |_| {})?;
        Ok(out)
    }

    /// Verifies the answer into `out` (exactly [`Self::len`] bytes), handing each piece of
    /// `out` to `each` right after it was verified (see
    /// [`cairn_erasure::slice::verify_into`]). On an error, `out` must not be used.
    pub fn verify_into(
        &self,
        out: &mut [u8],
        each: impl FnMut(&mut [u8]),
    ) -> Result<(), ClientError> {
        if self.size == 0 && self.range.is_empty() {
            return if self.chunks.iter().all(Bytes::is_empty) {
                Ok(())
            } else {
                Err(ClientError::Protocol(
                    "non-empty proof for an empty shard".into(),
                ))
            };
        }
        let reader = Chunks {
            chunks: &self.chunks,
            at: 0,
        };
        verify_into(reader, &self.root, self.size, self.range.clone(), out, each)?;
        Ok(())
    }
}

/// The proof's pieces read in order as one stream of bytes.
struct Chunks<'a> {
    chunks: &'a [Bytes],
    /// Bytes of the first chunk already read.
    at: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some((first, rest)) = self.chunks.split_first() {
            let left = first.get(self.at..).unwrap_or_default();
            if left.is_empty() {
                self.chunks = rest;
                self.at = 0;
                continue;
            }
            let n = left.len().min(buf.len());
            buf[..n].copy_from_slice(&left[..n]);
            self.at += n;
            return Ok(n);
        }
        Ok(0)
    }
}
