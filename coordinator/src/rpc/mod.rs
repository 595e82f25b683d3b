//! The coordinator's side of the gateway RPC (the messages themselves are
//! `cairn_client::gateway_rpc`): `serve` answers them, checking proofs with
//! [`verify_segments`]; `repair` hands out repair jobs and commits their results. Both
//! build on `context` (the serving context, answers, commits, placement candidates) and
//! `orders` (the orders signed for gateways), which import neither; `once` settles a
//! refused change that must apply at most once through the log; `convert` turns the
//! catalog's records into the wire's and back.

pub(crate) mod context;
mod convert;
mod once;
mod orders;
mod receipts;
mod repair_jobs;
pub(crate) mod serve;

use cairn_erasure::MaskKey;
use cairn_proto::identity::SecretKey;

pub use cairn_client::gateway_rpc::{GATEWAY_ALPN, MAX_RPC_FRAME, MAX_RPC_REQUEST, READ_WINDOW};
pub use receipts::{ReceiptError, ShardProblem, verify_segments, verify_shard};

/// The cluster's segment mask key: derived from the coordinator key, which every member
/// holds, so all members serve the same key and none stores it.
pub fn mask_key(coordinator: &SecretKey) -> MaskKey {
    MaskKey::from_bytes(coordinator.derive_key(cairn_erasure::mask::MASK_KEY_CONTEXT))
}
