//! Checking the proof a gateway hands in with an object: for every shard, an order this
//! coordinator signed and a receipt from the node it names, agreeing on shard, root and size.
//!
//! The check is stateless (any member holds the coordinator key), so a commit can land on a
//! new leader after the one that placed the segment failed.

use std::collections::HashSet;

use cairn_erasure::Codec;
use cairn_proto::identity::{NodeId, PublicKey};
use cairn_proto::order::Action;

use super::NewSegment;
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
            let order_err = |message: &str| ReceiptError::Order {
                segment: si,
                shard: i,
                message: message.to_string(),
            };
            let receipt_err = |message: &str| ReceiptError::Receipt {
                segment: si,
                shard: i,
                message: message.to_string(),
            };
            let order = stored
                .order
                .verify(coordinator)
                .map_err(|_| order_err("the order is not signed by this coordinator"))?;
            if order.client != *gateway {
                return Err(order_err("the order was issued to another gateway"));
            }
            let Action::Put { shard, root, size } = &order.action else {
                return Err(order_err("the order is not a put order"));
            };
            let receipt = stored
                .receipt
                .verify()
                .map_err(|_| receipt_err("the receipt's signature does not verify"))?;
            if receipt.node != order.node {
                return Err(receipt_err(
                    "the receipt is signed by another node than the order's",
                ));
            }
            if receipt.shard != *shard || receipt.serial != order.serial {
                return Err(receipt_err("the receipt is for another shard or order"));
            }
            if receipt.root != *root || receipt.size != *size {
                return Err(receipt_err(
                    "the receipt's root or size differs from the order's",
                ));
            }
            if *size != shard_len {
                return Err(receipt_err(&format!(
                    "shard size {size}, a {}-byte segment has {shard_len}-byte shards",
                    segment.len
                )));
            }
            let node_err = |message: &str| ReceiptError::Node {
                segment: si,
                shard: i,
                node: order.node,
                message: message.to_string(),
            };
            match node(&order.node) {
                None => return Err(node_err("is not registered")),
                Some(record) if !record.state.holds_data() => {
                    return Err(node_err(&format!("is {}", record.state.as_str())));
                }
                Some(_) => {}
            }
            if !nodes.insert(order.node) {
                return Err(node_err("holds two shards of the segment"));
            }
            if !ids.insert(*shard) {
                return Err(receipt_err("the shard id is used twice"));
            }
            shards.push(ShardRecord {
                id: *shard,
                node: order.node,
                root: *root,
            });
        }
        out.push(SegmentRecord {
            len: segment.len,
            shards,
        });
    }
    Ok(out)
}
