//! The gateway's data path against real nodes: bodies cut into segments, masked, encoded,
//! placed and stored; ranges read back verified, from data shards when they are healthy
//! and by decoding when a shard is corrupt or its node is gone; a corrupt node is
//! reported. What nodes hold is not the object, nor anything encoding it again gives.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_client::coordinator::CoordinatorClient;
use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse, NewBody, NewObject, ObjectRead};
use cairn_client::records::Bucket;
use cairn_erasure::{Codec, ShardRoot};
use cairn_gateway::data_path::{DataPath, ShardProblem, WriteError, read_range, write_body};
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::transport::client_endpoint;
use futures_util::StreamExt;
use support::cluster::TestCluster;
use support::coordinator::admin;

fn body(
    data: &[u8],
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    let chunks: Vec<Result<Bytes, String>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

struct Harness {
    path: Arc<DataPath>,
    bucket: Bucket,
    reports: Arc<Mutex<Vec<ShardProblem>>>,
}

impl Harness {
    async fn new(cluster: &TestCluster) -> Harness {
        admin(
            &cluster.coordinator,
            &[
                "bucket",
                "create",
                "data",
                "--k",
                "2",
                "--m",
                "1",
                "--segment-size",
                "256KiB",
            ],
        )
        .unwrap();
        let key = SecretKey::generate();
        cluster.register_gateway(&key.public());
        let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), &key).unwrap();
        let coordinator = CoordinatorClient::new(
            endpoint.clone(),
            key.clone(),
            cluster.key,
            vec![cluster.coordinator.quic.to_string()],
        );
        let path = Arc::new(DataPath::new(coordinator, endpoint, key, 4096));
        let GatewayResponse::Bucket(Some(bucket)) = path
            .coordinator
            .call(&GatewayRequest::Bucket {
                name: "data".into(),
            })
            .await
            .unwrap()
        else {
            panic!("no bucket");
        };
        Harness {
            path,
            bucket,
            reports: Arc::default(),
        }
    }

    async fn put(&self, key: &str, data: &[u8]) {
        let written = write_body(
            &self.path,
            &self.bucket,
            body(data, 10_007),
            |_| Ok(()),
            false,
        )
        .await
        .unwrap();
        assert_eq!(written.size, data.len() as u64);
        let request = GatewayRequest::Put {
            bucket: "data".into(),
            key: key.into(),
            condition: None,
            object: NewObject {
                size: written.size,
                etag: "\"x\"".into(),
                headers: Default::default(),
                body: written.body,
                acl: Default::default(),
                checksum: None,
            },
        };
        self.path.coordinator.call(&request).await.unwrap();
    }

    async fn lookup(&self, key: &str) -> ObjectRead {
        let request = GatewayRequest::Read {
            bucket: "data".into(),
            key: key.into(),
            range: Some(0..u64::MAX),
        };
        match self.path.coordinator.call(&request).await.unwrap() {
            GatewayResponse::Read(Some(read)) => *read,
            other => panic!("{other:?}"),
        }
    }

    async fn get(&self, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
        let read = self.lookup(key).await;
        let reports = self.reports.clone();
        let report = Arc::new(move |p: ShardProblem| reports.lock().unwrap().push(p));
        let mut stream = std::pin::pin!(read_range(
            self.path.clone(),
            "data".into(),
            key.into(),
            read,
            range,
            report,
        ));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_round_trip_through_nodes_and_survive_a_bad_shard_and_a_lost_node() {
    let mut cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    let h = Harness::new(&cluster).await;

    // Small bodies stay inline; a refusing observer stops the write.
    let small = write_body(&h.path, &h.bucket, body(b"tiny", 2), |_| Ok(()), false)
        .await
        .unwrap();
    assert!(matches!(small.body, NewBody::Inline(ref b) if b == b"tiny"));
    let refused = write_body(
        &h.path,
        &h.bucket,
        body(&pattern(10_000), 1000),
        |_| Err("no thanks".into()),
        false,
    )
    .await;
    assert!(matches!(refused, Err(WriteError::Refused(_))));

    // 1 MiB + a bit in 256 KiB segments: five segments of a 2+1 code.
    let data = pattern((1 << 20) + 123);
    h.put("blob", &data).await;
    let read = h.lookup("blob").await;
    let cairn_client::records::ObjectBody::Segments { segments, .. } = &read.object.body else {
        panic!("not segmented");
    };
    assert_eq!(segments.len(), 5);
    let len = data.len() as u64;
    assert_eq!(h.get("blob", 0..len).await, data);
    for range in [
        0..1,
        100..300_000,
        262_143..262_145,
        len - 5..len,
        131_000..132_000,
    ] {
        let (s, e) = (range.start as usize, range.end as usize);
        assert_eq!(h.get("blob", range).await, data[s..e], "range {s}..{e}");
    }
    assert!(h.reports.lock().unwrap().is_empty());
    nodes_hold_only_masked_bytes(&cluster, segments, &data, 262_144);
    legacy_unmasked_objects_still_read(&cluster, &h).await;

    // Corrupt data shard 0 of segment 1 on its node: reads still return the exact bytes,
    // and the node is reported.
    let victim = segments[1].shards[0].clone();
    let node = cluster.nodes.iter().find(|n| n.id == victim.node).unwrap();
    let file = node
        .shard_files()
        .into_iter()
        .find(|f| f.file_name().unwrap().to_string_lossy() == victim.id.to_hex())
        .expect("shard file on its node");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let segment1 = 262_144u64..2 * 262_144;
    assert_eq!(
        h.get("blob", segment1.clone()).await,
        data[segment1.start as usize..segment1.end as usize]
    );
    let reports = h.reports.lock().unwrap().clone();
    assert!(
        reports
            .iter()
            .any(|p| p.node == victim.node && p.shard == victim.id),
        "{reports:?}"
    );

    // The corrupt shard's node gone: every range still reads (one loss per segment is
    // within a 2+1 code's margin).
    let gone: NodeId = victim.node;
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.id == gone)
        .unwrap()
        .kill9();
    assert_eq!(h.get("blob", 0..len).await, data);
    assert_eq!(
        h.get("blob", 800_000..800_100).await,
        data[800_000..800_100]
    );
}

/// A node the gateway marked down after a failed read, and back since, is asked again
/// when a segment needs it. One node of a 2+1 code's three goes away (reads decode around
/// it and the gateway marks it down), comes back on its address (its old connection is
/// answered by a stateless reset) and then another goes away: every segment still reads
/// from the two that answer, although one of them is still marked down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_restart_is_read_again_while_another_is_gone() {
    let mut cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    let h = Harness::new(&cluster).await;
    let data = pattern((1 << 20) + 123);
    h.put("blob", &data).await;
    let read = h.lookup("blob").await;
    let cairn_client::records::ObjectBody::Segments { segments, .. } = &read.object.body else {
        panic!("not segmented");
    };
    let len = data.len() as u64;
    assert_eq!(h.get("blob", 0..len).await, data);

    let first = segments[0].shards[0].node;
    let second = segments[0].shards[1].node;
    assert_ne!(first, second, "a segment's shards are on distinct nodes");
    let node = |id: NodeId| cluster.nodes.iter().position(|n| n.id == id).unwrap();
    let (first, second) = (node(first), node(second));
    cluster.nodes[first].kill9();
    assert_eq!(h.get("blob", 0..len).await, data);
    restart_in_place(&mut cluster.nodes[first]);
    cluster.nodes[second].kill9();
    assert_eq!(h.get("blob", 0..len).await, data);
    assert_eq!(
        h.get("blob", 1000..300_000).await,
        data[1000..300_000],
        "a range starting in segment 0, whose data shard 0 is on the node marked down"
    );
    assert!(
        h.reports.lock().unwrap().is_empty(),
        "no node answered wrongly"
    );
}

/// Kills `node` and starts it again on the address it had, as a restarted daemon with a
/// fixed listen address comes back.
fn restart_in_place(node: &mut support::NodeProcess) {
    let config = std::fs::read_to_string(&node.config).unwrap();
    let pinned = config.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", node.addr),
    );
    assert_ne!(config, pinned, "the node's config names its listen address");
    std::fs::write(&node.config, pinned).unwrap();
    let addr = node.addr;
    node.restart();
    assert_eq!(node.addr, addr);
}

/// Every segment is masked with its own nonce, and nothing on the nodes gives the object
/// away: no shard file holds a 64-byte run of it, and encoding the object again with the
/// same code reproduces none of the stored shards (so a node cannot answer an audit from
/// the public object after dropping its shard).
fn nodes_hold_only_masked_bytes(
    cluster: &TestCluster,
    segments: &[cairn_client::records::SegmentRecord],
    data: &[u8],
    segment_size: usize,
) {
    let nonces: HashSet<_> = segments
        .iter()
        .map(|s| s.mask.expect("segment stored unmasked"))
        .collect();
    assert_eq!(nonces.len(), segments.len(), "a nonce was reused");

    let runs: HashSet<&[u8]> = data.windows(64).collect();
    let files: Vec<_> = cluster.nodes.iter().flat_map(|n| n.shard_files()).collect();
    assert_eq!(files.len(), segments.len() * 3, "2+1 shards per segment");
    let codec = Codec::new(2, 1).unwrap();
    let plain: HashSet<ShardRoot> = data
        .chunks(segment_size)
        .flat_map(|chunk| codec.encode_segment(0, 0, chunk.to_vec()).roots().to_vec())
        .collect();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            bytes.windows(64).all(|w| !runs.contains(w)),
            "{} holds a run of the plain object",
            file.display()
        );
        assert!(
            !plain.contains(&ShardRoot::of(&bytes)),
            "{} is reproducible from the object",
            file.display()
        );
    }
    for shard in segments.iter().flat_map(|s| &s.shards) {
        assert!(!plain.contains(&shard.root), "catalog root {}", shard.root);
    }
}

/// An object stored before masking (segments with no nonce) reads back as it was stored.
async fn legacy_unmasked_objects_still_read(cluster: &TestCluster, h: &Harness) {
    let gateway = support::rpc::RpcGateway::new(cluster);
    cluster.register_gateway(&gateway.key.public());
    let codec = Codec::new(2, 1).unwrap();
    let data = pattern(300_000);
    let mut segments = Vec::new();
    for (i, chunk) in data.chunks(262_144).enumerate() {
        let segment = codec.encode_segment(i as u64, 0, chunk.to_vec());
        let stored = gateway.store("data", &segment).await;
        assert_eq!(stored.mask, None);
        segments.push(stored);
    }
    gateway
        .call(GatewayRequest::Put {
            bucket: "data".into(),
            key: "legacy".into(),
            condition: None,
            object: NewObject {
                size: data.len() as u64,
                etag: "\"legacy\"".into(),
                headers: Default::default(),
                body: NewBody::Segments(segments),
                acl: Default::default(),
                checksum: None,
            },
        })
        .await;
    assert_eq!(h.get("legacy", 0..data.len() as u64).await, data);
    assert_eq!(
        h.get("legacy", 262_000..262_300).await,
        data[262_000..262_300]
    );
    // Its shards are the plain bytes: the first data shard starts the object.
    let found = cluster
        .nodes
        .iter()
        .flat_map(|n| n.shard_files())
        .any(|f| std::fs::read(f).unwrap().starts_with(&data[..4096]));
    assert!(
        found,
        "the unmasked object's first data shard is not on any node"
    );
    // Later checks count only the masked object's shards.
    gateway
        .call(GatewayRequest::Delete {
            bucket: "data".into(),
            key: "legacy".into(),
        })
        .await;
}
