//! Checking the proof a gateway hands in with an object: for every shard, an order this
//! coordinator signed and a receipt from the node it names, agreeing on shard, root and size.
//!
//! The check is stateless (any member holds the coordinator key), so a commit can land on a
//! new leader after the one that placed the segment failed.

use std::collections::HashSet;

use cairn_erasure::Codec;
use cairn_proto::identity::{NodeId, PublicKey};
use cairn_proto::order::Action;

use crate::catalog::model::{ErasureProfile, NodeRecord, SegmentRecord, ShardRecord};
use cairn_client::gateway_rpc::{NewSegment, StoredShard};

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
/// the segment's length; the node is registered. Per segment: `k + m` shards on distinct
/// nodes, at least `k` of them on nodes that still hold data. A node disqualified or lost
/// between placement and commit does not fail the upload (its shard is recorded and the
/// survey counts it lost, so repair rebuilds it); only a segment that could not be read
/// is refused. Across segments: no shard id twice. `node` looks a node up in the catalog.
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
        let mut healthy = 0;
        let mut unhealthy = None;
        for (i, stored) in segment.shards.iter().enumerate() {
            let record = verify_receipt(coordinator, gateway, stored, shard_len)
                .map_err(|problem| problem.at(si, i))?;
            match node(&record.node) {
                None => {
                    return Err(
                        ShardProblem::Node(record.node, "is not registered".into()).at(si, i)
                    );
                }
                Some(known) if known.state.holds_data() => healthy += 1,
                Some(known) => {
                    unhealthy.get_or_insert((i, record.node, known.state.as_str()));
                }
            }
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
        if healthy < usize::from(erasure.k)
            && let Some((i, node, state)) = unhealthy
        {
            return Err(ShardProblem::Node(
                node,
                format!(
                    "is {state}: only {healthy} of the segment's shards are on nodes that \
                     hold data, {} needed",
                    erasure.k
                ),
            )
            .at(si, i));
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
    let record = verify_receipt(coordinator, gateway, stored, shard_len)?;
    match node(&record.node) {
        None => Err(ShardProblem::Node(record.node, "is not registered".into())),
        Some(known) if !known.state.holds_data() => Err(ShardProblem::Node(
            record.node,
            format!("is {}", known.state.as_str()),
        )),
        Some(_) => Ok(record),
    }
}

/// The order and receipt checks of [`verify_shard`], without asking about the node.
fn verify_receipt(
    coordinator: &PublicKey,
    gateway: &PublicKey,
    stored: &StoredShard,
    shard_len: u64,
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
    Ok(ShardRecord {
        id: *shard,
        node: order.node,
        root: *root,
    })
}

#[cfg(test)]
mod tests {
    use cairn_erasure::ShardRoot;
    use cairn_proto::identity::SecretKey;
    use cairn_proto::ids::ShardId;
    use cairn_proto::order::{Action, Order, Receipt, SignedOrder, SignedReceipt};

    use super::*;
    use crate::catalog::model::NodeState;

    fn node(id: NodeId, state: NodeState) -> NodeRecord {
        NodeRecord {
            id,
            addr: "127.0.0.1:1".into(),
            org: "o".into(),
            site: "s".into(),
            capacity: 1 << 30,
            state,
            joined_ms: 0,
            state_since_ms: 0,
            vetted: true,
            reputation: Default::default(),
        }
    }

    /// A 2 + 1 segment of 100 bytes stored on three nodes, of which the first `bad` were
    /// disqualified between placement and commit: one such shard is recorded (repair
    /// rebuilds it), two leave fewer than k readable and the commit is refused.
    #[test]
    fn a_node_disqualified_before_the_commit_fails_it_only_below_k() {
        let coordinator = SecretKey::generate();
        let gateway = SecretKey::generate().public();
        let erasure = ErasureProfile {
            k: 2,
            m: 1,
            segment_size: 1 << 20,
        };
        let shard_len = Codec::new(2, 1).unwrap().shard_len(100);
        let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
        let shards = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let root = ShardRoot::of(&[i as u8]);
                let order = Order {
                    node: key.public(),
                    client: gateway,
                    serial: i as u64,
                    expires_at: u64::MAX,
                    action: Action::Put {
                        shard: ShardId([i as u8; 16]),
                        root,
                        size: shard_len,
                    },
                };
                let receipt = Receipt {
                    node: key.public(),
                    shard: ShardId([i as u8; 16]),
                    root,
                    size: shard_len,
                    serial: i as u64,
                    stored_at: 0,
                };
                StoredShard {
                    order: SignedOrder::sign(order, &coordinator),
                    receipt: SignedReceipt::sign(receipt, key),
                }
            })
            .collect();
        let segment = NewSegment {
            len: 100,
            shards,
            mask: None,
        };
        let with_bad = |bad: usize| {
            let states: Vec<(NodeId, NodeState)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let state = if i < bad {
                        NodeState::Disqualified
                    } else {
                        NodeState::Active
                    };
                    (k.public(), state)
                })
                .collect();
            verify_segments(
                &coordinator.public(),
                &gateway,
                erasure,
                std::slice::from_ref(&segment),
                |id| {
                    states
                        .iter()
                        .find(|(n, _)| n == id)
                        .map(|(n, s)| node(*n, *s))
                },
            )
        };
        assert_eq!(with_bad(0).unwrap()[0].shards.len(), 3);
        assert_eq!(
            with_bad(1).unwrap()[0].shards.len(),
            3,
            "one bad node is repaired later"
        );
        let refused = with_bad(2).unwrap_err().to_string();
        assert!(
            refused.contains("only 1 of the segment's shards"),
            "{refused}"
        );
    }
}
