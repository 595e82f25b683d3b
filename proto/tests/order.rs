//! Signed orders and receipts.

use cairn_erasure::ShardRoot;
use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{
    Action, CLOCK_SKEW_SECS, Order, OrderError, Receipt, SignedOrder, SignedReceipt,
};

fn keys() -> (SecretKey, SecretKey, SecretKey) {
    (
        SecretKey::from_seed([1; 32]),
        SecretKey::from_seed([2; 32]),
        SecretKey::from_seed([3; 32]),
    )
}

fn put_order(node: &SecretKey, client: &SecretKey) -> Order {
    Order {
        node: node.public(),
        client: client.public(),
        serial: 42,
        expires_at: 1_000_000,
        action: Action::Put {
            shard: ShardId([7; 16]),
            root: ShardRoot::of(b"shard bytes"),
            size: 11,
        },
    }
}

#[test]
fn order_signs_and_verifies() {
    let (coordinator, node, client) = keys();
    let order = put_order(&node, &client);
    let signed = SignedOrder::sign(order.clone(), &coordinator);
    assert_eq!(signed.verify(&coordinator.public()), Ok(&order));

    // Survives the wire.
    let bytes = postcard::to_allocvec(&signed).unwrap();
    let back: SignedOrder = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.verify(&coordinator.public()), Ok(&order));
}

#[test]
fn tampered_order_fails() {
    let (coordinator, node, client) = keys();
    let signed = SignedOrder::sign(put_order(&node, &client), &coordinator);
    let pk = coordinator.public();

    let mut t = signed.clone();
    t.order.node = client.public();
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    let mut t = signed.clone();
    t.order.client = node.public();
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    let mut t = signed.clone();
    t.order.serial += 1;
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    let mut t = signed.clone();
    t.order.expires_at += 1;
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    let mut t = signed.clone();
    t.order.action = Action::Put {
        shard: ShardId([7; 16]),
        root: ShardRoot::of(b"other bytes"),
        size: 11,
    };
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    // Same fields, different action kind.
    let mut t = signed.clone();
    t.order.action = Action::Get {
        shard: ShardId([7; 16]),
        root: ShardRoot::of(b"shard bytes"),
        size: 11,
    };
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    let mut t = signed.clone();
    let mut sig = t.signature.to_bytes();
    sig[0] ^= 1;
    t.signature = cairn_proto::identity::Signature::from_bytes(sig);
    assert_eq!(t.verify(&pk), Err(OrderError::BadSignature));

    // Signed by someone other than the coordinator.
    let forged = SignedOrder::sign(put_order(&node, &client), &client);
    assert_eq!(forged.verify(&pk), Err(OrderError::BadSignature));
    assert!(signed.verify(&client.public()).is_err());
}

#[test]
fn check_node_client_and_expiry() {
    let (_, node, client) = keys();
    let order = put_order(&node, &client);
    let (me, peer) = (node.public(), client.public());

    assert_eq!(order.check(&me, &peer, 0), Ok(()));
    assert_eq!(order.check(&me, &peer, order.expires_at), Ok(()));
    assert_eq!(
        order.check(&me, &peer, order.expires_at + CLOCK_SKEW_SECS),
        Ok(())
    );
    assert_eq!(
        order.check(&me, &peer, order.expires_at + CLOCK_SKEW_SECS + 1),
        Err(OrderError::Expired)
    );
    assert_eq!(order.check(&peer, &peer, 0), Err(OrderError::WrongNode));
    assert_eq!(order.check(&me, &me, 0), Err(OrderError::WrongClient));

    // Expiry at the end of time must not overflow into "expired".
    let forever = Order {
        expires_at: u64::MAX,
        ..order
    };
    assert_eq!(forever.check(&me, &peer, u64::MAX), Ok(()));
}

#[test]
fn order_shard_accessor() {
    let (_, node, client) = keys();
    let order = put_order(&node, &client);
    assert_eq!(order.shard(), Some(ShardId([7; 16])));
    let inventory = Order {
        action: Action::Inventory,
        ..order
    };
    assert_eq!(inventory.shard(), None);
}

#[test]
fn receipt_signs_verifies_and_detects_tampering() {
    let (coordinator, node, _) = keys();
    let receipt = Receipt {
        node: node.public(),
        shard: ShardId([9; 16]),
        root: ShardRoot::of(b"abc"),
        size: 3,
        serial: 42,
        stored_at: 1_700_000_000,
    };
    let signed = SignedReceipt::sign(receipt.clone(), &node);
    assert_eq!(signed.verify(), Ok(&receipt));
    let back: SignedReceipt =
        postcard::from_bytes(&postcard::to_allocvec(&signed).unwrap()).unwrap();
    assert_eq!(back.verify(), Ok(&receipt));

    let mut t = signed.clone();
    t.receipt.size = 4;
    assert_eq!(t.verify(), Err(OrderError::BadSignature));
    let mut t = signed.clone();
    t.receipt.root = ShardRoot::of(b"abd");
    assert_eq!(t.verify(), Err(OrderError::BadSignature));
    let mut t = signed.clone();
    t.receipt.node = coordinator.public();
    assert_eq!(t.verify(), Err(OrderError::BadSignature));

    // Signed by a key other than the node it names.
    let wrong_signer = SignedReceipt::sign(receipt, &coordinator);
    assert_eq!(wrong_signer.verify(), Err(OrderError::BadSignature));
}

#[test]
fn order_signature_is_not_a_receipt_signature() {
    // The same key signing an order and a receipt must never produce interchangeable
    // signatures: domains differ.
    let key = SecretKey::from_seed([4; 32]);
    let receipt = Receipt {
        node: key.public(),
        shard: ShardId([0; 16]),
        root: ShardRoot::from_bytes([0; 32]),
        size: 0,
        serial: 0,
        stored_at: 0,
    };
    let order = Order {
        node: key.public(),
        client: PublicKey::from_bytes([0; 32]),
        serial: 0,
        expires_at: 0,
        action: Action::Inventory,
    };
    let signed_order = SignedOrder::sign(order, &key);
    let mixed = SignedReceipt {
        receipt,
        signature: signed_order.signature,
    };
    assert_eq!(mixed.verify(), Err(OrderError::BadSignature));
}
