//! A flipped byte in a stored shard is caught by a read (the proof fails on the node) and by
//! the background scrub, which reports it in heartbeats and metrics.

mod support;

use std::time::Duration;

use cairn_client::node::ClientError;
use cairn_proto::wire::ErrorCode;
use support::{Cluster, FakeCoordinator, NodeProcess, bytes, shard_id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: node\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_caught_by_get_and_by_scrub() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new();
    let mut coordinator = FakeCoordinator::start(&cluster.coordinator);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &cluster.coordinator.public(),
        &format!(
            "coordinators = [\"{}\"]\nheartbeat_interval_ms = 100\nscrub_rate = \"64MiB\"\nscrub_pause_ms = 100\norg = \"uni-a\"\nsite = \"eu\"\nmetrics_listen = \"{metrics_port}\"",
            coordinator.addr
        ),
    );
    let client = cluster.client(&node);
    // Shard A will be read after it rots; shard B only the scrub can find.
    let (a, b) = (shard_id(5), shard_id(6));
    let (data_a, data_b) = (bytes(300_000, 5), bytes(100_000, 6));
    client
        .put_shard(&cluster.put(node.id, a, &data_a), &data_a)
        .await
        .unwrap();
    client
        .put_shard(&cluster.put(node.id, b, &data_b), &data_b)
        .await
        .unwrap();

    // Heartbeats come from the node's own key and describe it.
    let (peer, beat) = coordinator
        .heartbeat_where(Duration::from_secs(20), |b| b.shard_count == 2)
        .await;
    assert_eq!(peer, node.id);
    assert_eq!(beat.node, node.id);
    assert_eq!(beat.used_bytes, 400_000);
    assert_eq!((beat.org.as_str(), beat.site.as_str()), ("uni-a", "eu"));
    assert!(beat.damaged.is_empty());

    // Rot one byte of each on disk, behind the node's back.
    for (id, at) in [(a, 200_000), (b, 50_000)] {
        let file = node
            .shard_files()
            .into_iter()
            .find(|p| p.file_name().unwrap().to_string_lossy() == id.to_hex())
            .expect("shard file");
        let mut stored = std::fs::read(&file).unwrap();
        stored[at] ^= 0x40;
        std::fs::write(&file, &stored).unwrap();
    }

    // A read of the damaged region is refused by the node itself: it never sends bad bytes.
    let read = client
        .get_shard(&cluster.get(node.id, a, &data_a), Some(199_000..201_000))
        .await;
    assert!(
        matches!(
            read,
            Err(ClientError::Refused {
                code: ErrorCode::Damaged,
                ..
            })
        ),
        "{read:?}"
    );
    // The scrub finds the other one, and the coordinator hears about both.
    let (_, beat) = coordinator
        .heartbeat_where(Duration::from_secs(30), |beat| beat.damaged.contains(&b))
        .await;
    let mut damaged = beat.damaged.clone();
    damaged.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(damaged, expected);
    wait_for_metric(metrics_port, "cairn_node_damaged_shards 2").await;
    wait_for_metric(metrics_port, "cairn_node_stored_shards 2").await;
}

/// Polls the metrics page until it shows `needle`: gauges are refreshed just after the
/// event the test waited for, so allow them a moment.
async fn wait_for_metric(addr: std::net::SocketAddr, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(addr).await;
        if text.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {needle:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
