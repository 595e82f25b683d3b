//! Framing and the messages nodes, clients and the coordinator exchange.
//!
//! Every message is one frame: a 4-byte big-endian length, then that many bytes of
//! postcard. Bulk data (shard bytes, slice proofs) is not framed: it follows its header
//! frame on the same QUIC stream as raw bytes of a length the header gives, so it streams
//! without being buffered whole.
//!
//! The protocol version lives in the ALPN, so peers on different versions fail the
//! handshake instead of misreading each other's frames. postcard encodes enum variants
//! and struct fields by position, so within one version variants and fields may only be
//! appended; reordering or removing one needs a new ALPN.

use std::fmt;
use std::io;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::identity::NodeId;
use crate::ids::ShardId;
use crate::order::{OrderError, SignedOrder, SignedReceipt};

/// ALPN for talking to a node (clients, the gateway, the coordinator's auditor).
pub const NODE_ALPN: &[u8] = b"cairn-node/1";

/// ALPN for talking to the coordinator (node heartbeats).
pub const COORDINATOR_ALPN: &[u8] = b"cairn-coordinator/1";

/// Largest frame either side sends or accepts, in bytes.
///
/// Frames carry headers and lists, never shard data, so 1 MiB is generous; the cap bounds
/// what a hostile peer can make us allocate per stream.
pub const MAX_FRAME: u32 = 1 << 20;

/// Largest [`NodeRequest`] frame a node reads, in bytes.
///
/// A node reads the request frame from any key before it can check the order inside, so
/// the frame is held to what a request can be: a signed order is at most 207 bytes
/// (two keys, two varints, the action with a shard id, a root and a size, a signature),
/// and the largest request, an audit, adds at most 64 ranges of two varints (20 bytes
/// each) that a node answers at all: about 1.5 KiB. 16 KiB leaves ten times that. A
/// shard's bytes follow a `PutShard` frame as a stream, never inside it.
pub const MAX_NODE_REQUEST: u32 = 16 << 10;

/// Buffer we reserve before a frame's bytes arrive; beyond it the buffer grows only as bytes
/// actually come in, so a peer announcing a large frame and sending nothing costs little.
const INITIAL_READ_BUF: usize = 64 * 1024;

/// Writes `msg` as one frame.
///
/// Refuses (with [`WireError::TooLarge`], before writing anything) a message whose encoding
/// exceeds [`MAX_FRAME`], since the peer would refuse it anyway.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    write_frame_within(w, msg, MAX_FRAME).await
}

/// [`write_frame`] with another size limit, for channels between trusted, authenticated
/// peers (coordinator members) whose messages are legitimately larger.
pub async fn write_frame_within<W, T>(w: &mut W, msg: &T, max: u32) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    // Length and body in one buffer and one write, so a frame never leaves as two packets.
    let buf = postcard::to_extend(msg, vec![0u8; 4])
        .map_err(|e| WireError::Malformed(format!("cannot encode message: {e}")))?;
    let len = buf.len() - 4;
    let len32 = match u32::try_from(len) {
        Ok(n) if n <= max => n,
        _ => return Err(WireError::TooLarge { len: len as u64 }),
    };
    let mut buf = buf;
    buf[..4].copy_from_slice(&len32.to_be_bytes());
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it as `T`.
///
/// A stream that ends cleanly before the frame starts gives [`WireError::Closed`], which
/// a request loop treats as the peer being done; one that ends inside a frame gives
/// [`WireError::Truncated`].
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    read_frame_within(r, MAX_FRAME).await
}

/// [`read_frame`] with another size limit (see [`write_frame_within`]).
pub async fn read_frame_within<R, T>(r: &mut R, max: u32) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]).await? {
            0 if got == 0 => return Err(WireError::Closed),
            0 => return Err(WireError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(WireError::TooLarge {
            len: u64::from(len),
        });
    }
    let len = len as usize;
    let mut body = Vec::with_capacity(len.min(INITIAL_READ_BUF));
    r.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(WireError::Truncated);
    }
    let (msg, rest) =
        postcard::take_from_bytes::<T>(&body).map_err(|e| WireError::Malformed(e.to_string()))?;
    // Trailing bytes mean the peer encoded something other than what we decoded; acting on
    // a partial reading of it would be guessing.
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The underlying stream failed.
    #[error("stream error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream between frames.
    #[error("peer closed the stream")]
    Closed,
    /// The peer closed the stream in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The frame is over the reader's (or writer's) limit: [`MAX_FRAME`] unless the
    /// channel sets another.
    #[error("frame of {len} bytes is over the size limit")]
    TooLarge {
        /// The announced (or, when sending, encoded) length.
        len: u64,
    },
    /// The frame's bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// A request on a node's stream. One request per bidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// Store a shard. The frame is followed on the stream by exactly the order's `size` raw
    /// bytes; the node answers [`NodeResponse::Stored`] once they are durable.
    PutShard {
        /// A [`crate::order::Action::Put`] order.
        order: SignedOrder,
    },
    /// Read a shard, or the byte `range` of it (`None`: all of it).
    GetShard {
        /// A [`crate::order::Action::Get`] order.
        order: SignedOrder,
        /// Byte range within the shard.
        range: Option<Range<u64>>,
    },
    /// Prove possession of byte ranges of a shard.
    Audit {
        /// A [`crate::order::Action::Audit`] order.
        order: SignedOrder,
        /// Byte ranges the auditor picked.
        ranges: Vec<Range<u64>>,
    },
    /// Delete a shard.
    DeleteShard {
        /// A [`crate::order::Action::Delete`] order.
        order: SignedOrder,
    },
    /// List the node's shards.
    Inventory {
        /// A [`crate::order::Action::Inventory`] order.
        order: SignedOrder,
    },
}

/// A node's answer to a [`NodeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeResponse {
    /// The shard is stored durably; the receipt proves the node accepted it.
    Stored {
        /// Signed by the node.
        receipt: SignedReceipt,
    },
    /// The requested bytes follow: `proof_len` raw bytes of a slice proof (the range's
    /// bytes and the hashes tying them to the root), which the reader verifies before use.
    Shard {
        /// The byte range the proof covers.
        range: Range<u64>,
        /// Length of the raw proof that follows this frame.
        proof_len: u64,
    },
    /// One slice proof per requested range, in request order.
    Audit {
        /// Encoded slice proofs.
        proofs: Vec<Vec<u8>>,
    },
    /// The shard is gone (`existed`: whether there was anything to delete).
    Deleted {
        /// Whether the node held the shard.
        existed: bool,
    },
    /// One page of the shards the node holds. A large inventory does not fit one frame, so
    /// pages follow each other on the same stream until one says there are no `more`.
    Inventory {
        /// Their ids.
        shards: Vec<ShardId>,
        /// Whether another page follows.
        more: bool,
    },
    /// The request was refused or failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail for logs; not to be parsed.
        message: String,
    },
}

/// Why a request failed, as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The order's signature does not verify against the coordinator's key.
    BadSignature,
    /// The order is for another node.
    WrongNode,
    /// The order was issued to another client.
    WrongClient,
    /// The order has expired.
    Expired,
    /// The order's serial was already used.
    Replayed,
    /// The order's action does not match the request.
    WrongAction,
    /// The received bytes do not hash to the order's root.
    RootMismatch,
    /// The received bytes are not the order's size.
    SizeMismatch,
    /// The node has no room for the shard.
    OverQuota,
    /// The node does not hold the shard.
    NotFound,
    /// The node holds the shard but its bytes fail verification.
    Damaged,
    /// A requested range is empty, reversed or past the shard's end.
    BadRange,
    /// The request could not be decoded.
    Malformed,
    /// The request frame was over the size limit.
    TooLarge,
    /// The node is overloaded; retry later or elsewhere.
    Busy,
    /// Something went wrong on the node's side.
    Internal,
    /// The caller is not allowed to do this (for example an invalid or used invitation).
    Forbidden,
}

impl ErrorCode {
    /// A short, stable snake_case name, fit for a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::WrongNode => "wrong_node",
            Self::WrongClient => "wrong_client",
            Self::Expired => "expired",
            Self::Replayed => "replayed",
            Self::WrongAction => "wrong_action",
            Self::RootMismatch => "root_mismatch",
            Self::SizeMismatch => "size_mismatch",
            Self::OverQuota => "over_quota",
            Self::NotFound => "not_found",
            Self::Damaged => "damaged",
            Self::BadRange => "bad_range",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::Internal => "internal",
            Self::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<OrderError> for ErrorCode {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::BadSignature => Self::BadSignature,
            OrderError::WrongNode => Self::WrongNode,
            OrderError::WrongClient => Self::WrongClient,
            OrderError::Expired => Self::Expired,
        }
    }
}

/// A node's periodic report to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The reporting node (must match the connection's key).
    pub node: NodeId,
    /// The node's advertised QUIC address (`host:port`).
    pub listen: String,
    /// Bytes of shard data stored.
    pub used_bytes: u64,
    /// Bytes the operator allows the node to use.
    pub capacity_bytes: u64,
    /// Number of shards held.
    pub shard_count: u64,
    /// Shards the node found damaged since its last report, for repair.
    pub damaged: Vec<ShardId>,
    /// The node software's version.
    pub version: String,
    /// The operator's organisation, for placing copies across failure domains.
    pub org: String,
    /// The node's site within the organisation, likewise.
    pub site: String,
}

/// A request to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorRequest {
    /// A node's heartbeat.
    Heartbeat(Heartbeat),
    /// A node joining with an invitation (sent from the key it will be known by).
    Join(JoinRequest),
    /// The connecting node asks to leave: it turns draining, its shards are moved off,
    /// and it is gone once nothing depends on it.
    Leave,
}

/// What a node tells the coordinator when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The invitation's one-time secret (from the join token).
    pub secret: [u8; 32],
    /// QUIC address gateways should dial.
    pub listen: String,
    /// Space offered, bytes.
    pub capacity_bytes: u64,
    /// Organisation running the node.
    pub org: String,
    /// Site or region of the node.
    pub site: String,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorResponse {
    /// Accepted.
    Ack,
    /// A heartbeat accepted, with the coordinator's clock when it answered (milliseconds
    /// since the Unix epoch): nodes check orders' expiry against it, not their own clock.
    Time {
        /// The coordinator's clock.
        now_ms: u64,
    },
    /// Refused or failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail for logs.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_names_are_snake_case_and_distinct() {
        let all = [
            ErrorCode::BadSignature,
            ErrorCode::WrongNode,
            ErrorCode::WrongClient,
            ErrorCode::Expired,
            ErrorCode::Replayed,
            ErrorCode::WrongAction,
            ErrorCode::RootMismatch,
            ErrorCode::SizeMismatch,
            ErrorCode::OverQuota,
            ErrorCode::NotFound,
            ErrorCode::Damaged,
            ErrorCode::BadRange,
            ErrorCode::Malformed,
            ErrorCode::TooLarge,
            ErrorCode::Busy,
            ErrorCode::Internal,
        ];
        let names: std::collections::HashSet<String> = all.iter().map(|c| c.to_string()).collect();
        assert_eq!(names.len(), all.len());
        for name in &names {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(ErrorCode::RootMismatch.to_string(), "root_mismatch");
    }

    #[test]
    fn order_errors_map_to_codes() {
        assert_eq!(ErrorCode::from(OrderError::Expired), ErrorCode::Expired);
        assert_eq!(
            ErrorCode::from(OrderError::BadSignature),
            ErrorCode::BadSignature
        );
    }
}
