//! `kill -9` a node at random points during a stream of uploads: after a restart every shard
//! whose receipt came back is intact, and no partial shard is visible.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::ids::ShardId;
use cairn_proto::order::Action;
use support::{Cluster, NodeProcess, bytes, shard_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_shards_survive_kill_9() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(Cluster::new());
    let mut node = NodeProcess::start(dir.path(), &cluster.coordinator.public(), "");
    // Everything acknowledged so far, across all rounds: id → bytes.
    let acked: Arc<Mutex<HashMap<ShardId, Vec<u8>>>> = Arc::default();
    let mut next = 0u64;

    for round in 0..8u64 {
        // Four writers stream shards of 1 KiB .. 2 MiB until the node dies under them.
        let mut writers = Vec::new();
        for writer in 0..4u64 {
            let (cluster, acked) = (cluster.clone(), acked.clone());
            let client = cluster.client(&node);
            let node_id = node.id;
            let first = next + writer * 10_000;
            writers.push(tokio::spawn(async move {
                for n in first.. {
                    let len = 1024 + (support::bytes(4, n ^ seed)[0] as usize) * 8 * 1024;
                    let data = bytes(len, n ^ seed);
                    let id = shard_id(n);
                    match client
                        .put_shard(&cluster.put(node_id, id, &data), &data)
                        .await
                    {
                        Ok(_) => {
                            acked.lock().unwrap().insert(id, data);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        next += 100_000;
        // Let some uploads complete, then kill at a point that varies run to run.
        let before = acked.lock().unwrap().len();
        let wait_for = 3 + (seed.rotate_left(round as u32 * 7) % 20) as usize;
        while acked.lock().unwrap().len() < before + wait_for {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(
            seed.rotate_left(round as u32 * 13) % 40,
        ))
        .await;
        node.kill9();
        // Requests in flight to the dead node would only end at the QUIC idle timeout; an
        // answer that never arrives just leaves its shard unacknowledged, which is checked
        // below like any other.
        for writer in &writers {
            writer.abort();
        }

        node.restart();
        let client = cluster.client(&node);
        let acked_now = acked.lock().unwrap().clone();
        for (id, data) in &acked_now {
            let got = client
                .get_shard(&cluster.get(node.id, *id, data), None)
                .await
                .unwrap_or_else(|err| {
                    panic!("acknowledged shard {id} lost after kill -9 (round {round}): {err}")
                });
            assert!(&got == data, "acknowledged shard {id} changed");
        }
        // Whatever else the node lists must be whole: a shard acknowledged by the store but
        // whose receipt was lost in the kill is fine, a torn one is not.
        let listed = client
            .inventory(&cluster.order(node.id, Action::Inventory))
            .await
            .unwrap();
        for id in listed.iter().filter(|id| !acked_now.contains_key(id)) {
            let n = u64::from_be_bytes(id.0[..8].try_into().unwrap());
            let len = 1024 + (support::bytes(4, n ^ seed)[0] as usize) * 8 * 1024;
            let data = bytes(len, n ^ seed);
            let got = client
                .get_shard(&cluster.get(node.id, *id, &data), None)
                .await
                .unwrap();
            assert!(got == data, "unacknowledged shard {id} is torn");
        }
        assert!(listed.len() >= acked_now.len());
        println!(
            "round {round}: {} acknowledged, {} listed",
            acked_now.len(),
            listed.len()
        );
    }
}

/// A node killed and restarted on the same address: a client still holding a connection
/// to the old process learns at once (a QUIC stateless reset, which the new process can
/// sign because its reset key derives from the node's identity), instead of waiting out
/// the 30 s idle timeout on a connection nobody answers; its next request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_learns_at_once_that_a_node_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new();
    let mut node = NodeProcess::start(dir.path(), &cluster.coordinator.public(), "");
    // Restart on the same address, as a supervised node does.
    let config = std::fs::read_to_string(&node.config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", node.addr),
    );
    std::fs::write(&node.config, config).unwrap();
    let client = cluster.client(&node);
    let data = bytes(64 << 10, 5);
    let id = shard_id(5);
    client
        .put_shard(&cluster.put(node.id, id, &data), &data)
        .await
        .unwrap();
    let before = node.addr;
    node.kill9();
    node.restart();
    assert_eq!(node.addr, before);

    let started = std::time::Instant::now();
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(25),
        client.get_shard(&cluster.get(node.id, id, &data), None),
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the client waited {waited:?} on the dead process's connection ({first:?})"
    );
    // Whether that request failed or already redialled, the next one is answered.
    let got = match first {
        Ok(Ok(got)) => got,
        _ => client
            .get_shard(&cluster.get(node.id, id, &data), None)
            .await
            .unwrap(),
    };
    assert_eq!(got, data);
}
