//! The orders the coordinator signs for gateways: put orders for newly placed shards, get
//! orders for reads, and the check that a put order is still young enough to commit.

// Handlers fail with the response to send, built once per request; its size is not a cost.
#![allow(clippy::result_large_err)]

use cairn_client::gateway_rpc::{GatewayResponse, RpcCode, StoredShard};
use cairn_proto::identity::{NodeId, PublicKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, SignedOrder, unix_now};

use super::context::{RpcContext, error};
use crate::catalog::model::ShardRecord;

/// Seconds a put order stays valid: long enough to send a 64 MiB segment's shards over a
/// slow link.
pub(crate) const PUT_ORDER_SECS: u64 = 600;

/// Seconds a read order stays valid.
pub(crate) const READ_ORDER_SECS: u64 = 300;

/// Refuses a put order placed so long ago that its shard may have been collected as an
/// orphan meanwhile (see [`crate::gc`]): commits must come within half the orphan delay.
pub(crate) fn fresh_enough(ctx: &RpcContext, stored: &StoredShard) -> Result<(), GatewayResponse> {
    let issued = stored.order.order.expires_at.saturating_sub(PUT_ORDER_SECS);
    let age = unix_now().saturating_sub(issued);
    if age > ctx.commit_within.as_secs() {
        return Err(error(
            RpcCode::InvalidRequest,
            format!(
                "a put order was placed {age} s ago; shards must be committed within {} s",
                ctx.commit_within.as_secs()
            ),
        ));
    }
    Ok(())
}

/// A put order for `gateway` to store a new shard of `size` bytes hashing to `root` on
/// `node`, under a fresh random shard id.
pub(crate) fn sign_put(
    ctx: &RpcContext,
    gateway: PublicKey,
    node: NodeId,
    root: cairn_erasure::ShardRoot,
    size: u64,
) -> Result<SignedOrder, getrandom::Error> {
    let order = Order {
        node,
        client: gateway,
        serial: u64::from_le_bytes(random::<8>()?),
        expires_at: unix_now() + PUT_ORDER_SECS,
        action: Action::Put {
            shard: ShardId(random::<16>()?),
            root,
            size,
        },
    };
    Ok(SignedOrder::sign(order, &ctx.key))
}

/// A get order for `gateway` to read `shard` (of `size` bytes) whole or in part.
pub(crate) fn sign_get(
    ctx: &RpcContext,
    gateway: PublicKey,
    shard: &ShardRecord,
    size: u64,
) -> Result<SignedOrder, getrandom::Error> {
    let order = Order {
        node: shard.node,
        client: gateway,
        serial: u64::from_le_bytes(random::<8>()?),
        expires_at: unix_now() + READ_ORDER_SECS,
        action: Action::Get {
            shard: shard.id,
            root: shard.root,
            size,
        },
    };
    Ok(SignedOrder::sign(order, &ctx.key))
}

/// `N` random bytes from the operating system (shard ids, serials, upload ids).
pub(crate) fn random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}
