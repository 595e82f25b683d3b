//! Each conduct hook of the real node daemon does what it says, against a node started
//! with that conduct and driven over real QUIC; an honest node answers the same requests
//! correctly, so every lie seen is the conduct's.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_chaos_tests::misbehaviour::{
    DropAfterReceipt, FlipBytes, LateAudits, Misbehaviour, drops_shard,
};
use cairn_chaos_tests::refetch::PublicObjects;
use cairn_client::node::ClientError;
use cairn_erasure::{Codec, ShardRoot};
use cairn_node::conduct::{BoxFuture, Conduct, Honest};
use cairn_proto::ids::ShardId;
use cairn_proto::order::Action;
use cairn_proto::wire::ErrorCode;
use support::{Signer, bytes, refused, shard_id, start_node};

const SHARD: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_shard_is_still_claimed_but_cannot_be_read_or_audited() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let node = start_node(dir.path(), &signer, Arc::new(DropAfterReceipt::default())).await;
    let client = signer.client(node.quic_addr, node.id);
    let (data, id) = (bytes(SHARD, 1), shard_id(1));

    // The receipt is real: signed by the node, for exactly this shard.
    let receipt = client
        .put_shard(&signer.put(node.id, id, &data), &data)
        .await
        .expect("the lying node still acknowledges");
    let signed = receipt.verify().unwrap();
    assert_eq!((signed.node, signed.shard), (node.id, id));
    assert_eq!(signed.root, ShardRoot::of(&data));

    // The bytes are gone…
    assert_eq!(node.store.shard_count(), 0);
    let get = client
        .get_shard(&signer.get(node.id, id, &data), None)
        .await;
    assert_eq!(refused(get), ErrorCode::NotFound);
    let audit = client
        .audit(
            &signer.audit(node.id, id, &data),
            vec![0..4096, 100_000..101_000],
        )
        .await;
    assert_eq!(refused(audit), ErrorCode::NotFound);

    // …but the inventory still claims them: only an audit tells.
    let inventory = client
        .inventory(&signer.order(node.id, Action::Inventory))
        .await
        .unwrap();
    assert_eq!(inventory, vec![id]);

    // Told to delete it, the node says it had it, and stops claiming it.
    let existed = client
        .delete_shard(&signer.order(node.id, Action::Delete { shard: id }))
        .await
        .unwrap();
    assert!(existed);
    let inventory = client
        .inventory(&signer.order(node.id, Action::Inventory))
        .await
        .unwrap();
    assert!(inventory.is_empty(), "{inventory:?}");
    node.shutdown().await;
}

/// A node dropping a fifth of its shards loses exactly the ones `drops_shard` picks (about
/// a fifth), answers for those as a node that lost them (not found), still claims every
/// one, and serves the rest byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dropping_a_share_loses_exactly_the_picked_shards_and_serves_the_rest() {
    const SHARDS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let node = start_node(dir.path(), &signer, Misbehaviour::DropShare(0.2).conduct()).await;
    let client = signer.client(node.quic_addr, node.id);
    let mut dropped = 0;
    for n in 0..SHARDS {
        let (data, id) = (bytes(4096, n), shard_id(n));
        client
            .put_shard(&signer.put(node.id, id, &data), &data)
            .await
            .expect("every shard is acknowledged");
        let get = client
            .get_shard(&signer.get(node.id, id, &data), None)
            .await;
        let audit = client
            .audit(&signer.audit(node.id, id, &data), vec![0..1024, 2048..3072])
            .await;
        if drops_shard(&id, 0.2) {
            dropped += 1;
            assert_eq!(refused(get), ErrorCode::NotFound, "shard {n}");
            assert_eq!(refused(audit), ErrorCode::NotFound, "shard {n}");
        } else {
            assert_eq!(get.expect("a kept shard is served"), data, "shard {n}");
            assert!(audit.is_ok(), "shard {n}: {audit:?}");
        }
    }
    // The pick is a fifth of random ids: 12 of these 60 expected, never none or all.
    assert!((3..=25).contains(&dropped), "{dropped} of {SHARDS} dropped");
    assert_eq!(node.store.shard_count() as u64, SHARDS - dropped);
    let mut inventory = client
        .inventory(&signer.order(node.id, Action::Inventory))
        .await
        .unwrap();
    inventory.sort();
    let mut all: Vec<ShardId> = (0..SHARDS).map(shard_id).collect();
    all.sort();
    assert_eq!(inventory, all, "every shard is claimed, dropped or not");
    // The pick is the hash's, not the node's: none below 0, all at 1.
    assert!((0..SHARDS).all(|n| !drops_shard(&shard_id(n), 0.0)));
    assert!((0..SHARDS).all(|n| drops_shard(&shard_id(n), 1.0)));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_fail_verification_of_reads_and_audits() {
    for flip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::new();
        let conduct: Arc<dyn Conduct> = if flip {
            Arc::new(FlipBytes)
        } else {
            Arc::new(Honest)
        };
        let node = start_node(dir.path(), &signer, conduct).await;
        let client = signer.client(node.quic_addr, node.id);
        let (data, id) = (bytes(SHARD, 2), shard_id(2));
        client
            .put_shard(&signer.put(node.id, id, &data), &data)
            .await
            .unwrap();

        let whole = client
            .get_shard(&signer.get(node.id, id, &data), None)
            .await;
        let range = client
            .get_shard(&signer.get(node.id, id, &data), Some(100..5000))
            .await;
        let spot = 70_000..74_096;
        let proofs = client
            .audit(&signer.audit(node.id, id, &data), vec![spot.clone()])
            .await
            .expect("an audit is answered either way");
        let audited = proofs[0].verify(&ShardRoot::of(&data), SHARD as u64, spot.clone());

        if flip {
            assert!(matches!(whole, Err(ClientError::BadProof(_))), "{whole:?}");
            assert!(matches!(range, Err(ClientError::BadProof(_))), "{range:?}");
            assert!(audited.is_err(), "a flipped audit proof verified");
            // The node's own copy is intact: the lie is in what it sends.
            assert!(node.store.verify(id).unwrap());
        } else {
            assert!(whole.unwrap() == data);
            assert_eq!(range.unwrap(), &data[100..5000]);
            assert_eq!(
                audited.unwrap(),
                &data[spot.start as usize..spot.end as usize]
            );
        }
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_audits_arrive_no_earlier_than_the_delay() {
    let delay = Duration::from_millis(1_500);
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let node = start_node(dir.path(), &signer, Arc::new(LateAudits(delay))).await;
    let client = signer.client(node.quic_addr, node.id);
    let (data, id) = (bytes(SHARD, 3), shard_id(3));
    client
        .put_shard(&signer.put(node.id, id, &data), &data)
        .await
        .unwrap();

    // Reads are not delayed (the connection is already up, so this is loopback speed).
    let start = Instant::now();
    let read = client
        .get_shard(&signer.get(node.id, id, &data), None)
        .await
        .unwrap();
    assert!(read == data);
    assert!(start.elapsed() < delay, "a read took {:?}", start.elapsed());

    let start = Instant::now();
    let proofs = client
        .audit(
            &signer.audit(node.id, id, &data),
            vec![0..4096, 200_000..201_000],
        )
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(took >= delay, "the audit came back after {took:?}");
    // Late, but honest.
    assert_eq!(
        proofs[1]
            .verify(&ShardRoot::of(&data), SHARD as u64, 200_000..201_000)
            .unwrap(),
        &data[200_000..201_000]
    );
    node.shutdown().await;
}

/// Drops every shard and answers audits with whatever bytes the test put in its map.
#[derive(Default)]
struct Supplier {
    dropped: DropAfterReceipt,
    supply: HashMap<ShardId, Vec<u8>>,
    asked: AtomicUsize,
}

impl Conduct for Supplier {
    fn drop_after_receipt(&self, shard: ShardId, root: ShardRoot, size: u64) -> bool {
        self.dropped.drop_after_receipt(shard, root, size)
    }

    fn audit_bytes(
        &self,
        shard: ShardId,
        _root: ShardRoot,
        _size: u64,
    ) -> BoxFuture<'_, Option<Vec<u8>>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(self.supply.get(&shard).cloned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_of_missing_shards_are_answered_from_supplied_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let (right, wrong, none) = (shard_id(4), shard_id(5), shard_id(6));
    let data = |n| bytes(SHARD, n);
    let supplier = Arc::new(Supplier {
        supply: HashMap::from([
            (right, data(4)),
            // The right size, the wrong bytes.
            (wrong, data(50)),
        ]),
        ..Supplier::default()
    });
    let node = start_node(dir.path(), &signer, supplier.clone()).await;
    let client = signer.client(node.quic_addr, node.id);
    for (id, n) in [(right, 4), (wrong, 5), (none, 6)] {
        client
            .put_shard(&signer.put(node.id, id, &data(n)), &data(n))
            .await
            .unwrap();
    }
    assert_eq!(node.store.shard_count(), 0, "every shard was dropped");

    let ranges = vec![0..1000, 100_000..104_096, (SHARD as u64 - 10)..SHARD as u64];
    let proofs = client
        .audit(&signer.audit(node.id, right, &data(4)), ranges.clone())
        .await
        .unwrap();
    for (proof, range) in proofs.iter().zip(&ranges) {
        let got = proof
            .verify(&ShardRoot::of(&data(4)), SHARD as u64, range.clone())
            .expect("right bytes prove");
        assert_eq!(got, &data(4)[range.start as usize..range.end as usize]);
    }

    let proofs = client
        .audit(&signer.audit(node.id, wrong, &data(5)), ranges.clone())
        .await
        .expect("a proof is sent for the wrong bytes too");
    for (proof, range) in proofs.iter().zip(&ranges) {
        assert!(
            proof
                .verify(&ShardRoot::of(&data(5)), SHARD as u64, range.clone())
                .is_err()
        );
    }

    let nothing = client
        .audit(&signer.audit(node.id, none, &data(6)), ranges.clone())
        .await;
    assert_eq!(refused(nothing), ErrorCode::NotFound);
    assert_eq!(supplier.asked.load(Ordering::SeqCst), 3);

    // Reads are not served from supplied bytes: only audits ask the conduct.
    let read = client
        .get_shard(&signer.get(node.id, right, &data(4)), None)
        .await;
    assert_eq!(refused(read), ErrorCode::NotFound);
    assert_eq!(supplier.asked.load(Ordering::SeqCst), 3);
    node.shutdown().await;
}

/// Serves `body` at every path over plain HTTP/1.1, counting requests, until the test ends.
fn serve_http(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cache/object.nar", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the request head (small, one GET) up to its blank line.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refetching_node_rebuilds_shards_from_the_public_object() {
    let (k, m, segment_size) = (4, 2, 64 * 1024u64);
    // Three and a bit segments.
    let object = bytes(3 * segment_size as usize + 5_000, 7);
    let (url, hits) = serve_http(object.clone());

    // What a gateway encoding without a mask stores: segment 1's shards.
    let codec = Codec::new(k, m).unwrap();
    let start = segment_size as usize;
    let segment = codec.encode_segment(1, start as u64, object[start..2 * start].to_vec());
    let plain: Vec<Vec<u8>> = segment.shards().map(<[u8]>::to_vec).collect();
    // A shard of the same size nobody can rebuild (as masking makes every stored shard).
    let secret = bytes(plain[0].len(), 99);

    let objects = PublicObjects::new(vec![url], k, m, segment_size).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let conduct = Misbehaviour::RefetchAudits(Arc::new(objects)).conduct();
    let node = start_node(dir.path(), &signer, conduct).await;
    let client = signer.client(node.quic_addr, node.id);
    let (parity, hidden) = (shard_id(10), shard_id(11));
    for (id, shard) in [(parity, &plain[k]), (hidden, &secret)] {
        client
            .put_shard(&signer.put(node.id, id, shard), shard)
            .await
            .unwrap();
    }
    assert_eq!(
        node.store.shard_count(),
        0,
        "the refetching node keeps nothing"
    );
    let size = plain[k].len() as u64;
    let ranges = vec![0..512, (size / 2)..(size / 2 + 512)];

    // Against plain encoding the attack works: a parity shard, rebuilt from the object,
    // passes the audit.
    let proofs = client
        .audit(&signer.audit(node.id, parity, &plain[k]), ranges.clone())
        .await
        .unwrap();
    for (proof, range) in proofs.iter().zip(&ranges) {
        proof
            .verify(&ShardRoot::of(&plain[k]), size, range.clone())
            .expect("a rebuilt shard proves");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the object was downloaded once"
    );

    // A shard whose root no rebuild gives is answered with a same-size guess, which fails.
    let proofs = client
        .audit(&signer.audit(node.id, hidden, &secret), ranges.clone())
        .await
        .expect("the lazy node answers anyway");
    for (proof, range) in proofs.iter().zip(&ranges) {
        assert!(
            proof
                .verify(&ShardRoot::of(&secret), size, range.clone())
                .is_err()
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a miss makes the node download the object again"
    );
    node.shutdown().await;
}
