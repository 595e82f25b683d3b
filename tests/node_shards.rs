//! A real `cairn node` process over real QUIC: shards round-trip with verified proofs, and
//! every kind of bad order is refused with its own error, leaving nothing on disk.

mod support;

use cairn_client::node::ClientError;
use cairn_erasure::ShardRoot;
use cairn_proto::identity::SecretKey;
use cairn_proto::order::{Action, Order, SignedOrder, unix_now};
use cairn_proto::wire::{ErrorCode, NODE_ALPN, NodeResponse, read_frame};
use support::{Cluster, NodeProcess, bytes, shard_id};

fn refused(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_round_trip_with_verified_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new();
    let node = NodeProcess::start(dir.path(), &cluster.coordinator.public(), "");
    let client = cluster.client(&node);

    for (n, len) in [(1u64, 0usize), (2, 1), (3, 16 << 20)] {
        let data = bytes(len, n);
        let id = shard_id(n);
        let receipt = client
            .put_shard(&cluster.put(node.id, id, &data), &data)
            .await
            .unwrap();
        let signed = receipt.verify().unwrap();
        assert_eq!(
            (signed.node, signed.shard, signed.size),
            (node.id, id, len as u64)
        );
        assert_eq!(signed.root, ShardRoot::of(&data));

        let whole = client
            .get_shard(&cluster.get(node.id, id, &data), None)
            .await
            .unwrap();
        assert!(whole == data, "whole shard of {len} bytes differs");

        if len > 0 {
            let range = (len as u64 / 3)..(len as u64 / 3 + 1 + len as u64 / 5);
            let part = client
                .get_shard(&cluster.get(node.id, id, &data), Some(range.clone()))
                .await
                .unwrap();
            assert_eq!(&part[..], &data[range.start as usize..range.end as usize]);

            let audit = cluster.order(
                node.id,
                Action::Audit {
                    shard: id,
                    root: ShardRoot::of(&data),
                    size: len as u64,
                },
            );
            // Audits are spot checks: a few small slices.
            let spot = (len as u64 / 2)..(len as u64 / 2 + 1 + (len as u64 / 2).min(4096));
            let proofs = client
                .audit(&audit, vec![0..1, spot.clone()])
                .await
                .unwrap();
            let checked = proofs[1]
                .verify(&ShardRoot::of(&data), len as u64, spot.clone())
                .unwrap();
            assert_eq!(&checked[..], &data[spot.start as usize..spot.end as usize]);
            // An audit proof does not pass for a different root.
            assert!(
                proofs[1]
                    .verify(&ShardRoot::of(b"other"), len as u64, spot)
                    .is_err()
            );
        }
    }
    let inventory = client
        .inventory(&cluster.order(node.id, Action::Inventory))
        .await
        .unwrap();
    assert_eq!(inventory.len(), 3);

    // Deleting removes it for good.
    let deleted = client
        .delete_shard(&cluster.order(node.id, Action::Delete { shard: shard_id(2) }))
        .await
        .unwrap();
    assert!(deleted);
    let data = bytes(1, 2);
    let gone = client
        .get_shard(&cluster.get(node.id, shard_id(2), &data), None)
        .await;
    assert_eq!(refused(gone), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_distinctly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new();
    let node = NodeProcess::start(
        dir.path(),
        &cluster.coordinator.public(),
        "capacity = \"1MiB\"",
    );
    let client = cluster.client(&node);
    let data = bytes(4096, 7);
    let id = shard_id(7);
    let put = |order: Order| SignedOrder::sign(order, &cluster.coordinator);
    let base = cluster.put(node.id, id, &data).order;

    // Signed by someone other than the coordinator.
    let forged = SignedOrder::sign(base.clone(), &SecretKey::generate());
    assert_eq!(
        refused(client.put_shard(&forged, &data).await),
        ErrorCode::BadSignature
    );

    // Meant for another node.
    let other = put(Order {
        node: SecretKey::generate().public(),
        ..base.clone()
    });
    assert_eq!(
        refused(client.put_shard(&other, &data).await),
        ErrorCode::WrongNode
    );

    // Issued to another client.
    let stolen = put(Order {
        client: SecretKey::generate().public(),
        ..base.clone()
    });
    assert_eq!(
        refused(client.put_shard(&stolen, &data).await),
        ErrorCode::WrongClient
    );

    // Expired an hour ago.
    let stale = put(Order {
        expires_at: unix_now() - 3600,
        serial: 900,
        ..base.clone()
    });
    assert_eq!(
        refused(client.put_shard(&stale, &data).await),
        ErrorCode::Expired
    );

    // Bytes that do not hash to the order's root.
    let mut wrong = data.clone();
    wrong[100] ^= 1;
    let order = put(Order {
        serial: 901,
        ..base.clone()
    });
    assert_eq!(
        refused(client.put_shard(&order, &wrong).await),
        ErrorCode::RootMismatch
    );

    // Fewer bytes than the order says.
    let order = put(Order {
        serial: 902,
        ..base.clone()
    });
    assert_eq!(
        refused(client.put_shard(&order, &data[..100]).await),
        ErrorCode::SizeMismatch
    );

    // More than the node offers.
    let big = bytes(2 << 20, 8);
    let order = cluster.put(node.id, shard_id(8), &big);
    assert_eq!(
        refused(client.put_shard(&order, &big).await),
        ErrorCode::OverQuota
    );

    // Nothing of any of that reached the disk.
    assert_eq!(node.shard_files(), Vec::<std::path::PathBuf>::new());
    let inventory = client
        .inventory(&cluster.order(node.id, Action::Inventory))
        .await
        .unwrap();
    assert!(inventory.is_empty());

    // A good order works once; the same order again is a replay.
    let good = put(Order {
        serial: 903,
        ..base.clone()
    });
    client.put_shard(&good, &data).await.unwrap();
    assert_eq!(
        refused(client.put_shard(&good, &data).await),
        ErrorCode::Replayed
    );

    // A get order cannot be used to store.
    let get = cluster.get(node.id, id, &data);
    assert_eq!(
        refused(client.put_shard(&get, &data).await),
        ErrorCode::WrongAction
    );
    assert_eq!(node.shard_files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_gets_an_error_and_the_node_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new();
    let node = NodeProcess::start(dir.path(), &cluster.coordinator.public(), "");
    let conn = cairn_proto::transport::connect(
        &cluster.endpoint,
        &cluster.gateway,
        node.addr,
        &node.id,
        NODE_ALPN,
    )
    .await
    .unwrap();
    for garbage in [
        &b"\x00\x00\x00\x05hello"[..],
        b"\xff\xff\xff\xff",
        b"\x00\x00",
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(garbage).await.unwrap();
        send.finish().unwrap();
        match read_frame::<_, NodeResponse>(&mut recv).await.unwrap() {
            NodeResponse::Error { code, .. } => {
                assert!(
                    matches!(code, ErrorCode::Malformed | ErrorCode::TooLarge),
                    "{code:?}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // Still serving.
    let data = bytes(10, 1);
    cluster
        .client(&node)
        .put_shard(&cluster.put(node.id, shard_id(1), &data), &data)
        .await
        .unwrap();
}
