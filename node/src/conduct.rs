//! [`Conduct`]: the few points at which a node could answer dishonestly, and [`Honest`], the
//! only conduct production nodes have.
//!
//! Why this exists: the cluster's defences (audits, verified reads, inventories) must be
//! shown to catch nodes that lie. A test-only node written from scratch would drift from the
//! real one; instead, chaos tests run the real daemon — joining, heartbeats, the store,
//! signed receipts — with a conduct that lies in one chosen way, and the node's code stays
//! one code path. `cairn node` always runs [`Honest`]; there is no flag to change that.
//!
//! Every hook has the honest behaviour as its default, so a conduct overrides only the lie
//! it tells. Asynchronous hooks return boxed futures ([`BoxFuture`]) so the trait stays
//! object-safe without a macro crate.

use std::future::Future;
use std::pin::Pin;

use cairn_erasure::ShardRoot;
use cairn_proto::ids::ShardId;
use cairn_proto::wire::ErrorCode;

/// A boxed, sendable future: what the asynchronous hooks return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which answer carries the shard bytes a conduct may tamper with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A `GetShard` answer (one slice proof for the range read).
    Get,
    /// An `Audit` answer (one slice proof per range asked for).
    Audit,
}

/// How a node behaves at the points where a dishonest node could cheat. The defaults are
/// the honest behaviour.
pub trait Conduct: Send + Sync + 'static {
    /// After a put's shard is stored and its receipt signed, before the receipt is sent:
    /// `true` deletes the shard's bytes again, though the receipt still goes out. A conduct
    /// that drops shards should keep claiming them in [`Conduct::claimed_shards`], as a
    /// node hoping to be paid for storage it does not provide would.
    fn drop_after_receipt(&self, shard: ShardId, root: ShardRoot, size: u64) -> bool {
        let _ = (shard, root, size);
        false
    }

    /// Shard ids listed in `Inventory` answers besides those the store holds: claims
    /// without bytes, which only audits can expose.
    fn claimed_shards(&self) -> Vec<ShardId> {
        Vec::new()
    }

    /// A delete order for `shard` arrived: stop claiming it, and return whether it was
    /// claimed (the node then answers that it existed, keeping the lie consistent).
    fn release_claim(&self, shard: ShardId) -> bool {
        let _ = shard;
        false
    }

    /// May change the bytes of one slice proof about to be sent, computed honestly for
    /// `shard` from what the node has. The proof's hashes are the store's; changing a byte
    /// makes the client's verification fail, which is what a tampering test wants shown.
    fn tamper(&self, answer: Answer, shard: ShardId, proof: &mut [u8]) {
        let _ = (answer, shard, proof);
    }

    /// Awaited after an audit's proofs are ready and before they are sent: a slow or
    /// stalling node answers late.
    fn delay_audit(&self, shard: ShardId) -> BoxFuture<'_, ()> {
        let _ = shard;
        Box::pin(std::future::ready(()))
    }

    /// Asked when an audit names a shard this node does not hold: bytes to prove the
    /// audit's ranges over instead (the node computes their slice outboard itself), or
    /// `None` to answer `NotFound` as an honest node does. A node that rebuilds shards from
    /// public data on demand, instead of storing them, answers audits this way.
    fn audit_bytes(
        &self,
        shard: ShardId,
        root: ShardRoot,
        size: u64,
    ) -> BoxFuture<'_, Option<Vec<u8>>> {
        let _ = (shard, root, size);
        Box::pin(std::future::ready(None))
    }

    /// Asked before a `GetShard` or `Audit` of `shard` is answered (its order checked):
    /// `Some(code)` refuses it with that code instead, as a node that keeps nothing but
    /// will not admit it might (`Busy`, or a claimed expired order, forever).
    fn refuse(&self, answer: Answer, shard: ShardId) -> Option<ErrorCode> {
        let _ = (answer, shard);
        None
    }

    /// A short description for logs.
    fn describe(&self) -> String {
        String::from("honest")
    }
}

/// The honest conduct: every default. The only one `cairn node` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Honest;

impl Conduct for Honest {}
