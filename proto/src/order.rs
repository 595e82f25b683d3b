//! Orders and receipts: the coordinator's signed permission for one client to do one thing
//! on one node, and a node's signed statement that it stored a shard.
//!
//! Nodes never trust a client's say-so: every request carries an order the coordinator
//! signed, naming the node, the client (by its TLS key) and the shard's expected root. A
//! receipt is what the coordinator keeps as proof that a node accepted a shard.

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_erasure::ShardRoot;
use serde::{Deserialize, Serialize};

use crate::identity::{NodeId, PublicKey, SecretKey, Signature};
use crate::ids::ShardId;

/// How far a node's clock may lag the coordinator's before a fresh order looks expired.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// Domain separation: an order's signature can never be replayed as a receipt's (or as
/// anything else the key signs), even if the encodings happened to collide. Signatures
/// cover the postcard encoding, which is positional: changing the shape of `Order` or
/// `Receipt` changes what old signatures mean, so it needs a new domain version.
const ORDER_DOMAIN: &[u8] = b"cairn-order-v1\0";
const RECEIPT_DOMAIN: &[u8] = b"cairn-receipt-v1\0";

/// One permission issued by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The node that must carry it out; any other node refuses it.
    pub node: NodeId,
    /// The only peer allowed to present it, matched against the QUIC connection's key, so a
    /// leaked order is useless to anyone else.
    pub client: PublicKey,
    /// Coordinator-assigned, increasing; nodes use it to refuse replays.
    pub serial: u64,
    /// Unix seconds after which the order is void (plus [`CLOCK_SKEW_SECS`]).
    pub expires_at: u64,
    /// What the client may do.
    pub action: Action,
}

/// What an order allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Store `size` bytes as `shard`; the node accepts them only if they hash to `root`.
    Put {
        /// The shard's cluster-wide id.
        shard: ShardId,
        /// BLAKE3 root the bytes must have.
        root: ShardRoot,
        /// Exact length in bytes.
        size: u64,
    },
    /// Read (part of) `shard`; the node proves what it sends against `root`.
    Get {
        /// The shard's cluster-wide id.
        shard: ShardId,
        /// The root the catalog recorded.
        root: ShardRoot,
        /// The shard's length in bytes, bounding valid ranges.
        size: u64,
    },
    /// Prove possession of sampled ranges of `shard`.
    Audit {
        /// The shard's cluster-wide id.
        shard: ShardId,
        /// The root the proofs must verify against.
        root: ShardRoot,
        /// The shard's length in bytes.
        size: u64,
    },
    /// Drop `shard`.
    Delete {
        /// The shard's cluster-wide id.
        shard: ShardId,
    },
    /// List every shard the node holds.
    Inventory,
}

/// An order with the coordinator's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrder {
    /// The order as issued.
    pub order: Order,
    /// The coordinator's signature over the domain-separated encoding of `order`.
    pub signature: Signature,
}

impl SignedOrder {
    /// Signs `order` with the coordinator's key.
    pub fn sign(order: Order, coordinator: &SecretKey) -> Self {
        let signature = coordinator.sign(&signed_bytes(ORDER_DOMAIN, &order));
        Self { order, signature }
    }

    /// Checks the signature against the coordinator's key and returns the order.
    ///
    /// Only the signature: the caller must still run [`Order::check`] for the node, client
    /// and expiry, and its own replay and action checks.
    pub fn verify(&self, coordinator: &PublicKey) -> Result<&Order, OrderError> {
        if coordinator.verify(&signed_bytes(ORDER_DOMAIN, &self.order), &self.signature) {
            Ok(&self.order)
        } else {
            Err(OrderError::BadSignature)
        }
    }
}

impl Order {
    /// Checks that this order is for node `me`, presented by `peer`, and not expired at
    /// `now_unix`.
    ///
    /// Expiry allows [`CLOCK_SKEW_SECS`] of slack because volunteers' clocks drift; an
    /// order is never valid before the check, only late.
    pub fn check(&self, me: &NodeId, peer: &PublicKey, now_unix: u64) -> Result<(), OrderError> {
        if self.node != *me {
            return Err(OrderError::WrongNode);
        }
        if self.client != *peer {
            return Err(OrderError::WrongClient);
        }
        if now_unix > self.expires_at.saturating_add(CLOCK_SKEW_SECS) {
            return Err(OrderError::Expired);
        }
        Ok(())
    }

    /// The shard the order is about, if it names one.
    pub fn shard(&self) -> Option<ShardId> {
        match &self.action {
            Action::Put { shard, .. }
            | Action::Get { shard, .. }
            | Action::Audit { shard, .. }
            | Action::Delete { shard } => Some(*shard),
            Action::Inventory => None,
        }
    }
}

/// Why an order or receipt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OrderError {
    /// The signature does not match the content and the signer's key.
    #[error("signature does not verify")]
    BadSignature,
    /// The order names a different node.
    #[error("order is addressed to another node")]
    WrongNode,
    /// The order names a different client than the connection's peer.
    #[error("order was issued to another client")]
    WrongClient,
    /// The order's expiry (plus allowed clock skew) has passed.
    #[error("order has expired")]
    Expired,
}

/// A node's statement that it stored a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The node that stored it (and signs the receipt).
    pub node: NodeId,
    /// The shard stored.
    pub shard: ShardId,
    /// The root the node computed over the bytes it received.
    pub root: ShardRoot,
    /// The number of bytes stored.
    pub size: u64,
    /// The serial of the put order, tying the receipt to one order.
    pub serial: u64,
    /// Unix seconds at which the node made the shard durable.
    pub stored_at: u64,
}

/// A receipt with the node's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The receipt as issued.
    pub receipt: Receipt,
    /// The node's signature over the domain-separated encoding of `receipt`.
    pub signature: Signature,
}

impl SignedReceipt {
    /// Signs `receipt` with the node's key (which should be `receipt.node`'s).
    pub fn sign(receipt: Receipt, node: &SecretKey) -> Self {
        let signature = node.sign(&signed_bytes(RECEIPT_DOMAIN, &receipt));
        Self { receipt, signature }
    }

    /// Checks the signature against the key the receipt names and returns the receipt.
    ///
    /// The receipt is self-certifying; the caller must still check that `receipt.node` is
    /// the node it asked.
    pub fn verify(&self) -> Result<&Receipt, OrderError> {
        let bytes = signed_bytes(RECEIPT_DOMAIN, &self.receipt);
        if self.receipt.node.verify(&bytes, &self.signature) {
            Ok(&self.receipt)
        } else {
            Err(OrderError::BadSignature)
        }
    }
}

/// The bytes a signature covers: the domain tag, then the postcard encoding.
///
/// Signing the re-encoded value rather than received bytes ties the signature to what the
/// receiver acts on, not to whatever encoding variant arrived.
#[allow(clippy::expect_used)]
fn signed_bytes<T: Serialize>(domain: &[u8], value: &T) -> Vec<u8> {
    // postcard only fails on types it cannot express (unsized sequences, `collect_str`),
    // none of which orders or receipts contain; these are our own values, not input.
    postcard::to_extend(value, domain.to_vec()).expect("orders and receipts always encode")
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The current time in unix milliseconds (0 if the clock is before 1970): the clock every
/// command a leader proposes carries, and the one the coordinator's loops compare with.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_are_domain_separated() {
        let order = Order {
            node: PublicKey::from_bytes([1; 32]),
            client: PublicKey::from_bytes([2; 32]),
            serial: 3,
            expires_at: 4,
            action: Action::Inventory,
        };
        let bytes = signed_bytes(ORDER_DOMAIN, &order);
        assert!(bytes.starts_with(b"cairn-order-v1\0"));
        assert_eq!(
            &bytes[ORDER_DOMAIN.len()..],
            postcard::to_allocvec(&order).unwrap().as_slice()
        );
    }

    #[test]
    fn unix_now_is_recent() {
        // 2024-01-01; a clock before that is broken, and so would be this function.
        assert!(unix_now() > 1_704_067_200);
    }
}
