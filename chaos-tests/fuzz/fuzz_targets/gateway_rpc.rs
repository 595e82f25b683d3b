//! The gateway RPC's frames, read as each side reads them: a `GatewayRequest` under
//! `MAX_RPC_REQUEST` (what the coordinator reads from a registered gateway) and a
//! `GatewayResponse` under `MAX_RPC_FRAME` (what a gateway reads from the coordinator), and
//! the proof of storage a commit carries.
//!
//! Besides "never panic" (a stack overflow included: a `Once` inside a `Once` must be
//! refused as it is decoded, and is asserted never to come out), it checks the framing
//! rules of `cairn_fuzz::check_frame` (an oversized prefix refused with no allocation,
//! short frames cheap, no allocation over 2 MiB or twice the frame, exact consumption,
//! lossless re-encoding), and for every decoded commit (`Put` of segments, `PutPart`,
//! either inside `Once`, and the shards of `RepairDone`) runs the coordinator's stateless
//! proof check (`verify_segments`, `verify_shard`) against a fixed coordinator key,
//! gateway key, a 2 + 1 code and three known nodes. A proof it accepts must be genuine: every order carries exactly the signature the coordinator key makes
//! for it (ed25519 signing is deterministic and verification strict, so any other
//! accepted signature is a forgery), is a put issued to this gateway, and every receipt
//! exactly the signature of the known node the order names, agreeing with the order; each
//! segment's shards are on distinct nodes and no shard id is used twice.

#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use cairn_coordinator::catalog::model::ShardRecord;
use cairn_client::gateway_rpc::{
    GatewayRequest, GatewayResponse, MAX_RPC_FRAME, MAX_RPC_REQUEST, NewBody, NewObject,
    NewSegment, StoredShard,
};
use cairn_coordinator::rpc::{verify_segments, verify_shard};
use cairn_erasure::Codec;
use cairn_fuzz::{
    FUZZ_PROFILE, SAMPLE_SEGMENT_LEN, check_frame, coordinator_key, fuzz_node_keys, gateway_key,
    limit_allocations, node_record,
};
use cairn_proto::identity::{NodeId, PublicKey, SecretKey};
use cairn_proto::order::{Action, SignedOrder, SignedReceipt};
use libfuzzer_sys::fuzz_target;

struct Keys {
    coordinator: SecretKey,
    coordinator_public: PublicKey,
    gateway: PublicKey,
    nodes: [SecretKey; 3],
    codec: Codec,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    coordinator: coordinator_key(),
    coordinator_public: coordinator_key().public(),
    gateway: gateway_key().public(),
    nodes: fuzz_node_keys(),
    codec: Codec::new(usize::from(FUZZ_PROFILE.k), usize::from(FUZZ_PROFILE.m))
        .unwrap_or_else(|err| panic!("the fuzz code is unusable: {err}")),
});

fuzz_target!(
    init: {
        limit_allocations(16 << 20);
        LazyLock::force(&KEYS);
    },
    |data: &[u8]| {
        check_frame::<GatewayRequest>(data, MAX_RPC_REQUEST, check_request);
        check_frame::<GatewayResponse>(data, MAX_RPC_FRAME, |_| {});
    }
);

fn check_request(request: &GatewayRequest) {
    assert!(!request.name().is_empty());
    match request {
        GatewayRequest::Once { request, .. } => {
            assert!(
                !matches!(**request, GatewayRequest::Once { .. }),
                "a request wrapping another wrapping request was decoded"
            );
            check_request(request);
        }
        GatewayRequest::Put {
            object:
                NewObject {
                    body: NewBody::Segments(segments),
                    ..
                },
            ..
        }
        | GatewayRequest::PutPart { segments, .. } => check_commit(segments),
        GatewayRequest::RepairDone { stored, .. } => {
            let shard_len = KEYS.codec.shard_len(SAMPLE_SEGMENT_LEN);
            for (_, shard) in stored {
                if let Ok(record) = verify_shard(
                    &KEYS.coordinator_public,
                    &KEYS.gateway,
                    shard,
                    shard_len,
                    known_node,
                ) {
                    check_accepted(&record, shard, shard_len);
                }
            }
        }
        _ => {}
    }
}

/// A catalog that knows exactly the three fuzz nodes, all active.
fn known_node(id: &NodeId) -> Option<cairn_coordinator::catalog::model::NodeRecord> {
    KEYS.nodes
        .iter()
        .any(|node| node.public() == *id)
        .then(|| node_record(*id))
}

/// What the coordinator checks before a commit, and what must then hold of it.
fn check_commit(segments: &[NewSegment]) {
    let keys = &*KEYS;
    let Ok(records) = verify_segments(
        &keys.coordinator_public,
        &keys.gateway,
        FUZZ_PROFILE,
        segments,
        known_node,
    ) else {
        return;
    };
    assert_eq!(records.len(), segments.len(), "segments lost or invented");
    let width = keys.codec.total_shards();
    let mut ids = HashSet::new();
    for (record, segment) in records.iter().zip(segments) {
        assert!(
            (1..=FUZZ_PROFILE.segment_size).contains(&record.len),
            "a segment of {} bytes accepted",
            record.len
        );
        assert_eq!((record.len, record.mask), (segment.len, segment.mask));
        assert_eq!(record.shards.len(), width, "a segment of the wrong width");
        assert_eq!(segment.shards.len(), width);
        let shard_len = keys.codec.shard_len(segment.len);
        let mut nodes = HashSet::new();
        for (shard, stored) in record.shards.iter().zip(&segment.shards) {
            check_accepted(shard, stored, shard_len);
            assert!(
                nodes.insert(shard.node),
                "two shards of a segment on one node"
            );
            assert!(ids.insert(shard.id), "one shard id used twice");
        }
    }
}

/// An accepted shard's proof is genuine and is what the catalog will record.
fn check_accepted(record: &ShardRecord, stored: &StoredShard, shard_len: u64) {
    let keys = &*KEYS;
    let order = &stored.order.order;
    let genuine = SignedOrder::sign(order.clone(), &keys.coordinator);
    assert_eq!(
        genuine.signature, stored.order.signature,
        "an order accepted with a signature the coordinator key never makes: {stored:?}"
    );
    assert_eq!(
        order.client, keys.gateway,
        "an order for another gateway accepted"
    );
    let Action::Put { shard, root, size } = order.action else {
        panic!("a commit accepted under a {:?} order", order.action);
    };
    let receipt = &stored.receipt.receipt;
    let Some(node) = keys.nodes.iter().find(|node| node.public() == order.node) else {
        panic!("a shard accepted on a node the catalog does not know: {stored:?}");
    };
    let genuine = SignedReceipt::sign(receipt.clone(), node);
    assert_eq!(
        genuine.signature, stored.receipt.signature,
        "a receipt accepted with a signature its node's key never makes: {stored:?}"
    );
    assert_eq!(
        (
            receipt.node,
            receipt.shard,
            receipt.root,
            receipt.size,
            receipt.serial
        ),
        (order.node, shard, root, size, order.serial),
        "a receipt accepted that disagrees with its order"
    );
    assert_eq!(size, shard_len, "a shard of the wrong size accepted");
    assert_eq!(
        (record.id, record.node, record.root),
        (shard, order.node, root),
        "the catalog would record another shard than the proof's"
    );
}
