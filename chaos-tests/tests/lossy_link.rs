//! The lossy link really delays and drops datagrams, both ways, and QUIC between a real
//! client and a real node still moves a shard through it.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_chaos_tests::lossy_link::{LinkConfig, LossyLink};
use cairn_erasure::ShardRoot;
use cairn_node::conduct::Honest;
use support::{Signer, bytes, shard_id, start_node};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A UDP echo server on loopback; every datagram it receives is also handed to the test.
async fn echo_server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
            if tx.send(buf[..len].to_vec()).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_take_at_least_twice_the_delay() {
    let delay = Duration::from_millis(60);
    let (echo, _seen) = echo_server().await;
    let link = LossyLink::start(
        "127.0.0.1:0".parse().unwrap(),
        echo,
        LinkConfig::new(delay, 0.0),
    )
    .await
    .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(link.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    for n in 0u8..5 {
        let start = Instant::now();
        client.send(&[n; 32]).await.unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("echo within 5 s")
            .unwrap();
        let rtt = start.elapsed();
        assert_eq!(&buf[..len], &[n; 32], "echo carries the datagram unchanged");
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} is shorter than 2 × {delay:?}"
        );
        assert!(
            rtt < 2 * delay + Duration::from_secs(1),
            "round trip {rtt:?} is far too long"
        );
    }
    let counts = link.counts();
    assert_eq!((counts.to_node.received, counts.to_node.dropped), (5, 0));
    assert_eq!(
        (counts.to_client.received, counts.to_client.dropped),
        (5, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_the_configured_share_each_way() {
    const SENT: usize = 2_000;
    const PERCENT: f64 = 20.0;
    let (echo, mut seen) = echo_server().await;
    let link = LossyLink::start(
        "127.0.0.1:0".parse().unwrap(),
        echo,
        LinkConfig::new(Duration::ZERO, PERCENT),
    )
    .await
    .unwrap();
    let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    client.connect(link.local_addr()).await.unwrap();
    // Echoes are collected as they come so none is lost to a full socket buffer.
    let (echo_tx, mut echoes) = mpsc::unbounded_channel();
    let reader = client.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok(len) = reader.recv(&mut buf).await {
            if echo_tx.send(buf[..len].to_vec()).is_err() {
                return;
            }
        }
    });
    for n in 0..SENT {
        client.send(&(n as u64).to_be_bytes()).await.unwrap();
        // One at a time through the relay, so no socket buffer overflows and every loss
        // is the link's doing.
        link.wait_until(|c| c.to_node.received > n as u64).await;
    }
    let dropped_to_node = link.counts().to_node.dropped as usize;
    let arrived = receive(&mut seen, SENT - dropped_to_node).await;
    link.wait_until(|c| c.to_client.received == arrived.len() as u64)
        .await;
    let dropped_to_client = link.counts().to_client.dropped as usize;
    let returned = receive(&mut echoes, arrived.len() - dropped_to_client).await;

    // What the test itself saw, not only what the link says it did.
    let share = |lost: usize, of: usize| 100.0 * lost as f64 / of as f64;
    let lost_to_node = share(SENT - arrived.len(), SENT);
    let lost_to_client = share(arrived.len() - returned.len(), arrived.len());
    for lost in [lost_to_node, lost_to_client] {
        // 2000 draws at 20 %: the standard deviation is under 1 point; 5 points is ~5σ.
        assert!(
            (PERCENT - 5.0..PERCENT + 5.0).contains(&lost),
            "lost {lost:.1} % (node-bound {lost_to_node:.1} %, client-bound {lost_to_client:.1} %)"
        );
    }
    let distinct: HashSet<_> = arrived.iter().collect();
    assert_eq!(distinct.len(), arrived.len(), "no datagram arrives twice");
    assert!(returned.iter().all(|d| distinct.contains(d)));
    // Nothing else is still on its way.
    assert!(seen.try_recv().is_err() && echoes.try_recv().is_err());
}

/// Exactly `count` datagrams from `rx`, failing the test if they do not come.
async fn receive(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, count: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let datagram = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} datagrams arrived", got.len()))
            .expect("receiver open");
        got.push(datagram);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_moves_through_a_slow_lossy_link() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    let node = start_node(dir.path(), &signer, Arc::new(Honest)).await;
    let delay = Duration::from_millis(20);
    let link = LossyLink::start(
        "127.0.0.1:0".parse().unwrap(),
        node.quic_addr,
        LinkConfig::new(delay, 5.0),
    )
    .await
    .unwrap();
    let client = signer.client(link.local_addr(), node.id);
    // Small: at 5 % loss and a 40 ms round trip, QUIC's congestion control (like TCP's)
    // moves only ~150 KB/s, which is the point of the link but slow for a test.
    let data = bytes(512 << 10, 1);
    let id = shard_id(1);

    let receipt = client
        .put_shard(&signer.put(node.id, id, &data), &data)
        .await
        .expect("put through the lossy link");
    assert_eq!(receipt.verify().unwrap().root, ShardRoot::of(&data));

    let start = Instant::now();
    let back = client
        .get_shard(&signer.get(node.id, id, &data), None)
        .await
        .expect("get through the lossy link");
    assert!(back == data, "the shard came back changed");
    assert!(
        start.elapsed() >= 2 * delay,
        "the read took less than one round trip"
    );

    let spot = 300_000..304_096;
    let proofs = client
        .audit(&signer.audit(node.id, id, &data), vec![spot.clone()])
        .await
        .expect("audit through the lossy link");
    proofs[0]
        .verify(&ShardRoot::of(&data), data.len() as u64, spot)
        .expect("audit proof verifies");

    // The transfer succeeded in spite of real losses, both ways.
    let counts = link.counts();
    assert!(counts.to_node.dropped > 0, "{counts:?}");
    assert!(counts.to_client.dropped > 0, "{counts:?}");
    node.shutdown().await;
}
