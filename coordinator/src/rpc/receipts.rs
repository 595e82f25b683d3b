//! Checking the proof a gateway hands in with an object: for every shard, an order this
//! coordinator signed and a receipt from the node it names, agreeing on shard, root and size.
//!
//! The check is stateless (any member holds the coordinator key), so a commit can land on a
//! new leader after the one that placed the segment failed.

use std::collections::HashSet;

use cairn_erasure::Codec;
use cairn_proto::identity::{NodeId, PublicKey};
use cairn_proto::order::Action;

use super::{NewSegment, StoredShard};
use crate::catalog::model::{ErasureProfile, NodeRecord, SegmentRecord, ShardRecord};

/// Why a gateway's proof of storage was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The shape does not match the bucket's code.
    #[error("segment {segment}: {message}")]
    Shape {
        /// Segment index.
        segment: usize,
        /// What is wrong.
        message: String,
    },
    /// An order was not signed by this coordinator, or not for a put.
    #[error("segment {segment} shard {shard}: {message}")]
    Order {
        /// Segment index.
        segment: usize,
        /// Shard index.
        shard: usize,
        /// What is wrong.
        message: String,
    },
    /// A receipt is unsigned, signed by another key, or disagrees with its order.
    #[error("segment {segment} shard {shard}: {message}")]
    Receipt {
        /// Segment index.
        segment: usize,
        /// Shard index.
        shard: usize,
        /// What is wrong.
        message: String,
    },
    /// A receipt names a node the catalog does not know or no longer trusts with data.
    #[error("segment {segment} shard {shard}: node {node} {message}")]
    Node {
        /// Segment index.
        segment: usize,
        /// Shard index.
        shard: usize,
        /// The node.
        node: NodeId,
        /// What is wrong.
        message: String,
    },
}

/// Checks every shard of `segments` and returns the segment records to commit.
///
/// Per shard: the order verifies against `coordinator`, was issued to `gateway`, and is a
/// put; the receipt verifies against the key of the node it names, which is the order's
/// node; both agree on shard id, root, size and serial; the size is what the code gives for
/// the segment's length. Per segment: `k + m` shards on distinct nodes. Across segments:
/// no shard id twice. `node` looks a node up in the catalog.
pub fn verify_segments(
    coordinator: &PublicKey,
    gateway: &PublicKey,
    erasure: ErasureProfile,
    segments: &[NewSegment],
    node: impl Fn(&NodeId) -> Option<NodeRecord>,
) -> Result<Vec<SegmentRecord>, ReceiptError> {
    let codec = Codec::new(usize::from(erasure.k), usize::from(erasure.m)).map_err(|err| {
        ReceiptError::Shape {
            segment: 0,
            message: format!("the bucket's code is unusable: {err}"),
        }
    })?;
    let width = codec.total_shards();
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(segments.len());
    for (si, segment) in segments.iter().enumerate() {
        let shape = |message: String| ReceiptError::Shape {
            segment: si,
            message,
        };
        if segment.len == 0 || segment.len > erasure.segment_size {
            return Err(shape(format!(
                "length {} is not between 1 and the bucket's segment size {}",
                segment.len, erasure.segment_size
            )));
        }
        if segment.shards.len() != width {
            return Err(shape(format!(
                "{} shards, the {}+{} code needs {width}",
                segment.shards.len(),
                erasure.k,
                erasure.m
            )));
        }
        let shard_len = codec.shard_len(segment.len);
        let mut nodes = HashSet::new();
        let mut shards = Vec::with_capacity(width);
        for (i, stored) in segment.shards.iter().enumerate() {
            let record = verify_shard(coordinator, gateway, stored, shard_len, &node)
                .map_err(|problem| problem.at(si, i))?;
            if !nodes.insert(record.node) {
                return Err(ReceiptError::Node {
                    segment: si,
                    shard: i,
                    node: record.node,
                    message: "holds two shards of the segment".into(),
                });
            }
            if !ids.insert(record.id) {
                return Err(ReceiptError::Receipt {
                    segment: si,
                    shard: i,
                    message: "the shard id is used twice".into(),
                });
            }
            shards.push(record);
        }
        out.push(SegmentRecord {
            len: segment.len,
            shards,
            mask: segment.mask,
        });
    }
    Ok(out)
}

/// What is wrong with one stored shard, before it is placed in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardProblem {
    /// The order is not this coordinator's put order for this gateway.
    Order(String),
    /// The receipt does not match the order.
    Receipt(String),
    /// The node is unknown or holds no data.
    Node(NodeId, String),
}

impl ShardProblem {
    /// The problem as shard `shard` of segment `segment`.
    pub fn at(self, segment: usize, shard: usize) -> ReceiptError {
        match self {
            ShardProblem::Order(message) => ReceiptError::Order {
                segment,
                shard,
                message,
            },
            ShardProblem::Receipt(message) => ReceiptError::Receipt {
                segment,
                shard,
                message,
            },
            ShardProblem::Node(node, message) => ReceiptError::Node {
                segment,
                shard,
                node,
                message,
            },
        }
    }
}

/// Checks one stored shard: the order verifies against `coordinator`, was issued to
/// `gateway` and is a put of `shard_len` bytes; the receipt verifies against the key of the
/// order's node and agrees with the order on shard id, root, size and serial; the node is
/// registered and in a state that holds data. Returns the shard as the catalog records it.
pub fn verify_shard(
    coordinator: &PublicKey,
    gateway: &PublicKey,
    stored: &StoredShard,
    shard_len: u64,
    node: impl Fn(&NodeId) -> Option<NodeRecord>,
) -> Result<ShardRecord, ShardProblem> {
    let order = stored
        .order
        .verify(coordinator)
        .map_err(|_| ShardProblem::Order("the order is not signed by this coordinator".into()))?;
    if order.client != *gateway {
        return Err(ShardProblem::Order(
            "the order was issued to another gateway".into(),
        ));
    }
    let Action::Put { shard, root, size } = &order.action else {
        return Err(ShardProblem::Order("the order is not a put order".into()));
    };
    let receipt = stored
        .receipt
        .verify()
        .map_err(|_| ShardProblem::Receipt("the receipt's signature does not verify".into()))?;
    if receipt.node != order.node {
        return Err(ShardProblem::Receipt(
            "the receipt is signed by another node than the order's".into(),
        ));
    }
    if receipt.shard != *shard || receipt.serial != order.serial {
        return Err(ShardProblem::Receipt(
            "the receipt is for another shard or order".into(),
        ));
    }
    if receipt.root != *root || receipt.size != *size {
        return Err(ShardProblem::Receipt(
            "the receipt's root or size differs from the order's".into(),
        ));
    }
    if *size != shard_len {
        return Err(ShardProblem::Receipt(format!(
            "shard size {size}, the segment has {shard_len}-byte shards"
        )));
    }
    match node(&order.node) {
        None => return Err(ShardProblem::Node(order.node, "is not registered".into())),
        Some(record) if !record.state.holds_data() => {
            return Err(ShardProblem::Node(
                order.node,
                format!("is {}", record.state.as_str()),
            ));
        }
        Some(_) => {}
    }
    Ok(ShardRecord {
        id: *shard,
        node: order.node,
        root: *root,
    })
}
