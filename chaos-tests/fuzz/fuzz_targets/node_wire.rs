//! The frames nodes and clients read from each other (`cairn_proto::wire::read_frame`), and
//! the signed orders and receipts inside them.
//!
//! Every input is read as a framed `NodeRequest` (what a node reads from any peer), a framed
//! `NodeResponse` (what clients read from nodes), a framed `CoordinatorRequest` (what the
//! coordinator reads from nodes), and as bare postcard `SignedOrder` and `SignedReceipt`.
//!
//! Besides "never panic", it checks:
//! - a length prefix over `MAX_FRAME` is refused as `TooLarge` after reading only the
//!   prefix, without allocating anything;
//! - a frame shorter than its prefix says is `Truncated`, having allocated no more than
//!   64 KiB or twice the bytes actually sent;
//! - no frame costs a single allocation over 2 MiB (the body, or serde's capped
//!   preallocation); the process aborts on any over 16 MiB;
//! - a decoded frame consumed exactly its prefix and body, and re-encodes to a frame that
//!   decodes to the same message;
//! - an order that verifies against the fixed coordinator key carries exactly the signature
//!   that key makes for it (ed25519 signing is deterministic and verification strict, so
//!   any other accepted signature would be a forgery); likewise receipts, which must name
//!   the one node key that signs any.

#![no_main]

use std::fmt::Debug;
use std::sync::LazyLock;

use cairn_fuzz::{
    client_key, coordinator_key, limit_allocations, node_key, peak, reset_peak, run_ready,
};
use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::order::{SignedOrder, SignedReceipt};
use cairn_proto::wire::{
    self, CoordinatorRequest, MAX_FRAME, NodeRequest, NodeResponse, WireError,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What `read_frame` reserves before a body arrives (`INITIAL_READ_BUF` in wire.rs).
const INITIAL_READ_BUF: usize = 64 * 1024;

/// The largest single allocation one frame may cost.
const FRAME_ALLOC_CAP: usize = 2 * MAX_FRAME as usize;

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
        frame::<NodeRequest>(data, check_request);
        frame::<NodeResponse>(data, check_response);
        frame::<CoordinatorRequest>(data, |_| {});
        if let Ok(order) = postcard::from_bytes::<SignedOrder>(data) {
            check_order(&order);
        }
        if let Ok(receipt) = postcard::from_bytes::<SignedReceipt>(data) {
            check_receipt(&receipt);
        }
    }
);

/// Reads `data` as one frame of `T` and checks the framing rules; `check` sees a decoded
/// message.
fn frame<T>(data: &[u8], check: impl Fn(&T))
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let mut reader = data;
    reset_peak();
    let result = run_ready(wire::read_frame::<_, T>(&mut reader));
    let allocated = peak();
    let consumed = data.len() - reader.len();

    let Some(header) = data.first_chunk::<4>() else {
        match result {
            Err(WireError::Closed) if data.is_empty() => {}
            Err(WireError::Truncated) if !data.is_empty() => {}
            other => panic!("{} bytes, no full length prefix: {other:?}", data.len()),
        }
        return;
    };
    let len = u32::from_be_bytes(*header);
    if len > MAX_FRAME {
        assert!(
            matches!(result, Err(WireError::TooLarge { len: l }) if l == u64::from(len)),
            "prefix {len} over the limit: {result:?}"
        );
        assert_eq!(consumed, 4, "read past a refused prefix");
        assert_eq!(allocated, 0, "allocated for a frame it refuses");
        return;
    }
    let len = len as usize;
    let sent = data.len() - 4;
    if sent < len {
        assert!(
            matches!(result, Err(WireError::Truncated)),
            "{sent} of {len} bytes: {result:?}"
        );
        assert!(
            allocated <= INITIAL_READ_BUF.max(2 * sent + 64),
            "a {len}-byte prefix with {sent} bytes sent made a {allocated}-byte allocation"
        );
        return;
    }
    assert_eq!(
        consumed,
        4 + len,
        "a frame must consume its prefix and body"
    );
    assert!(
        allocated <= FRAME_ALLOC_CAP,
        "a {len}-byte frame made a {allocated}-byte allocation"
    );
    let msg = match result {
        Ok(msg) => msg,
        Err(WireError::Malformed(_)) => return,
        Err(other) => panic!("a complete {len}-byte frame failed with {other:?}"),
    };

    let mut again = Vec::new();
    run_ready(wire::write_frame(&mut again, &msg))
        .unwrap_or_else(|e| panic!("decoded {msg:?} does not re-encode: {e}"));
    assert!(again.len() <= 4 + len, "re-encoding grew the frame");
    let mut reader = &again[..];
    let decoded: T = run_ready(wire::read_frame(&mut reader))
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    assert_eq!(decoded, msg, "re-encoding changed the message");
    assert!(reader.is_empty());

    check(&msg);
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
