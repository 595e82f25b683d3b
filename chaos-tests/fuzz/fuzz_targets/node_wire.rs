//! The frames nodes and clients read from each other (`cairn_proto::wire::read_frame`), the
//! coordinator's join and heartbeat frames, and the signed orders and receipts inside them.
//!
//! Every input is read as a framed `NodeRequest` under `MAX_NODE_REQUEST` (what a node
//! reads from any peer), a framed `NodeResponse` (what clients read from nodes), a framed
//! `CoordinatorRequest` under the coordinator's two limits (4 KiB for a key it does not
//! know, whose only request may be a join; 256 KiB for a registered node's heartbeats), and
//! as bare postcard `SignedOrder` and `SignedReceipt`.
//!
//! Besides "never panic", it checks the framing rules of `cairn_fuzz::check_frame` (an
//! oversized prefix refused with no allocation, short frames cheap, no allocation over
//! 2 MiB, exact consumption, lossless re-encoding), and:
//! - an order that verifies against the fixed coordinator key carries exactly the signature
//!   that key makes for it (ed25519 signing is deterministic and verification strict, so
//!   any other accepted signature would be a forgery); likewise receipts, which must name
//!   the one node key that signs any;
//! - a join's organisation and site pass the coordinator's `validate_domain` exactly when
//!   they are 1 to 64 printable ASCII characters without spaces (the caps that keep a
//!   stranger's junk out of the Raft log).

#![no_main]

use std::sync::LazyLock;

use cairn_coordinator::catalog::model::{MAX_DOMAIN_LEN, validate_domain};
use cairn_fuzz::{check_frame, client_key, coordinator_key, limit_allocations, node_key};
use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::order::{SignedOrder, SignedReceipt};
use cairn_proto::wire::{
    CoordinatorRequest, MAX_FRAME, MAX_NODE_REQUEST, NodeRequest, NodeResponse,
};
use libfuzzer_sys::fuzz_target;

/// What the coordinator reads a key it does not know under (`MAX_JOIN_FRAME` in
/// coordinator/src/node_rpc.rs): one join.
const JOIN_FRAME: u32 = 4 << 10;
/// What it reads a registered node's requests under (`MAX_NODE_FRAME` there).
const NODE_FRAME: u32 = 256 << 10;

struct Keys {
    coordinator: SecretKey,
    coordinator_public: PublicKey,
    node: SecretKey,
    node_public: PublicKey,
    client: PublicKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    coordinator: coordinator_key(),
    coordinator_public: coordinator_key().public(),
    node: node_key(),
    node_public: node_key().public(),
    client: client_key(),
});

fuzz_target!(
    init: {
        limit_allocations(16 << 20);
        LazyLock::force(&KEYS);
    },
    |data: &[u8]| {
        check_frame::<NodeRequest>(data, MAX_NODE_REQUEST, check_request);
        check_frame::<NodeResponse>(data, MAX_FRAME, check_response);
        check_frame::<CoordinatorRequest>(data, JOIN_FRAME, check_coordinator_request);
        check_frame::<CoordinatorRequest>(data, NODE_FRAME, check_coordinator_request);
        if let Ok(order) = postcard::from_bytes::<SignedOrder>(data) {
            check_order(&order);
        }
        if let Ok(receipt) = postcard::from_bytes::<SignedReceipt>(data) {
            check_receipt(&receipt);
        }
    }
);

/// What the coordinator checks of a join before it looks up the invitation.
fn check_coordinator_request(request: &CoordinatorRequest) {
    let CoordinatorRequest::Join(join) = request else {
        return;
    };
    for (what, name) in [("organisation", &join.org), ("site", &join.site)] {
        let fits = !name.is_empty()
            && name.len() <= MAX_DOMAIN_LEN
            && name.bytes().all(|b| b.is_ascii_graphic());
        assert_eq!(
            validate_domain(what, name).is_ok(),
            fits,
            "{what} {name:?} judged wrongly"
        );
    }
}

fn check_request(request: &NodeRequest) {
    let order = match request {
        NodeRequest::PutShard { order }
        | NodeRequest::GetShard { order, .. }
        | NodeRequest::Audit { order, .. }
        | NodeRequest::DeleteShard { order }
        | NodeRequest::Inventory { order } => order,
    };
    check_order(order);
}

fn check_response(response: &NodeResponse) {
    if let NodeResponse::Stored { receipt } = response {
        check_receipt(receipt);
    }
}

/// What a node does first with an order: its signature, then recipient, client and expiry.
fn check_order(signed: &SignedOrder) {
    let keys = &*KEYS;
    if let Ok(order) = signed.verify(&keys.coordinator_public) {
        let expected = SignedOrder::sign(order.clone(), &keys.coordinator);
        assert_eq!(
            expected.signature, signed.signature,
            "an order verified with a signature the coordinator key never makes: {signed:?}"
        );
    }
    let order = &signed.order;
    let _ = order.check(&keys.node_public, &keys.client, 1_750_000_000);
    let _ = order.check(&keys.node_public, &keys.client, u64::MAX);
    let _ = order.shard();
}

/// What the coordinator does with a receipt.
fn check_receipt(signed: &SignedReceipt) {
    let keys = &*KEYS;
    if let Ok(receipt) = signed.verify() {
        assert_eq!(
            receipt.node, keys.node_public,
            "a receipt verified under a key nobody here holds: {signed:?}"
        );
        let expected = SignedReceipt::sign(receipt.clone(), &keys.node);
        assert_eq!(
            expected.signature, signed.signature,
            "a receipt verified with a signature the node key never makes: {signed:?}"
        );
    }
}
