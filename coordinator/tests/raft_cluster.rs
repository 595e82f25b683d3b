//! Three Raft members over real QUIC with real files: commits survive losing the leader,
//! a restarted member comes back identical, and a member that missed a compaction catches
//! up from a snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_coordinator::catalog::model::{Bucket, BucketMode, ErasureProfile};
use cairn_coordinator::catalog::{self, Command, CommandResult};
use cairn_coordinator::raft::log_store::LogStore;
use cairn_coordinator::raft::network::{MemberCredential, Network, RAFT_ALPN, serve_connection};
use cairn_coordinator::raft::state_machine::StateMachine;
use cairn_coordinator::raft::types::{Member, TypeConfig};
use cairn_proto::identity::SecretKey;
use cairn_proto::transport::{PeerPolicy, server_endpoint};
use openraft::{Config, Raft, SnapshotPolicy};
use redb::ReadableDatabase;

struct Running {
    id: u64,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    endpoint: quinn::Endpoint,
}

fn free_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start(id: u64, dir: &Path, addr: SocketAddr, key: &SecretKey) -> Running {
    std::fs::create_dir_all(dir).unwrap();
    let cluster = key.public();
    let policy = PeerPolicy::Allow(Arc::new(move |peer| *peer == cluster));
    let endpoint = server_endpoint(addr, key, &[RAFT_ALPN], policy).unwrap();
    let config = Config {
        cluster_name: "cairn-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(50),
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 1,
        ..Config::default()
    };
    let log = LogStore::<TypeConfig>::open(&dir.join("raft-log.redb")).unwrap();
    let sm = StateMachine::open(&dir.join("catalog.redb")).unwrap();
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        Network::new(
            endpoint.clone(),
            key.clone(),
            key.public(),
            MemberCredential::issue(key, &key.public()),
        ),
        log,
        sm.clone(),
    )
    .await
    .unwrap();
    let accept = endpoint.clone();
    let served = raft.clone();
    let coordinator = key.public();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let raft = served.clone();
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await
                    && let Some(peer) = cairn_proto::transport::peer_key(&conn)
                {
                    serve_connection(conn, peer, coordinator, raft).await;
                }
            });
        }
    });
    Running {
        id,
        raft,
        sm,
        endpoint,
    }
}

async fn stop(member: Running) {
    member.raft.shutdown().await.unwrap();
    member.endpoint.close(0u32.into(), b"stop");
    // The UDP port is released only once every connection has drained, and a connection
    // attempt to a member that is already gone lasts until the 30 s idle timeout. A real
    // process frees its socket on exit; this in-process restart has to wait it out.
    tokio::time::timeout(Duration::from_secs(45), member.endpoint.wait_idle())
        .await
        .expect("endpoint drains within the idle timeout");
}

fn bucket(n: usize) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: format!("bucket-{n:04}"),
            created_ms: n as u64,
            public_read: false,
            mode: BucketMode::Plain,
            erasure: ErasureProfile {
                k: 4,
                m: 2,
                segment_size: 1 << 20,
            },
            failure_tolerance: 1,
        },
    }
}

async fn leader(members: &[&Running]) -> u64 {
    let raft = &members[0].raft;
    let metrics = raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| {
                m.current_leader
                    .is_some_and(|l| members.iter().any(|r| r.id == l))
            },
            "a leader among the running members",
        )
        .await
        .unwrap();
    metrics.current_leader.unwrap()
}

fn dump(sm: &StateMachine) -> catalog::CatalogDump {
    catalog::export(&sm.catalog().database().begin_read().unwrap()).unwrap()
}

async fn caught_up(member: &Running, index: u64) {
    member
        .raft
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(index), "caught up")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_leader_loss_restart_and_snapshot_catch_up() {
    let key = SecretKey::generate();
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.path().join(format!("m{i}"))).collect();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_udp_port()).collect();
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Some(start(i as u64 + 1, &dirs[i], addrs[i], &key).await));
    }
    let all: BTreeMap<u64, Member> = (0..3)
        .map(|i| {
            (
                i as u64 + 1,
                Member {
                    addr: addrs[i].to_string(),
                    admin: String::new(),
                    key: key.public().to_string(),
                },
            )
        })
        .collect();
    members[0]
        .as_ref()
        .unwrap()
        .raft
        .initialize(all)
        .await
        .unwrap();

    // Phase 1: commits through whoever leads; every acknowledged one is counted.
    let running: Vec<&Running> = members.iter().flatten().collect();
    let first_leader = leader(&running).await;
    let mut acknowledged = 0;
    for n in 0..40 {
        let raft = &members[(first_leader - 1) as usize].as_ref().unwrap().raft;
        let response = raft.client_write(bucket(n)).await.unwrap();
        assert_eq!(response.data, CommandResult::Done);
        acknowledged += 1;
    }

    // Phase 2: the leader dies; a new one takes over and every commit is still there.
    stop(members[(first_leader - 1) as usize].take().unwrap()).await;
    let running: Vec<&Running> = members.iter().flatten().collect();
    let second_leader = leader(&running).await;
    assert_ne!(second_leader, first_leader);
    for n in 40..80 {
        let raft = &members[(second_leader - 1) as usize].as_ref().unwrap().raft;
        raft.client_write(bucket(n)).await.unwrap();
        acknowledged += 1;
    }
    let survivor = (second_leader - 1) as usize;
    let buckets = members[survivor]
        .as_ref()
        .unwrap()
        .sm
        .catalog()
        .buckets()
        .unwrap();
    assert_eq!(buckets.len(), acknowledged);

    // Phase 3: the old leader comes back on its files, catches up, and every member ends
    // with the same catalog. By now the log was compacted past what it saw, so this
    // exercises snapshot install as well as replay.
    let i = (first_leader - 1) as usize;
    members[i] = Some(start(first_leader, &dirs[i], addrs[i], &key).await);
    let last = members[survivor]
        .as_ref()
        .unwrap()
        .raft
        .metrics()
        .borrow()
        .last_applied
        .unwrap()
        .index;
    for member in members.iter().flatten() {
        caught_up(member, last).await;
    }
    let reference = dump(&members[0].as_ref().unwrap().sm);
    assert_eq!(reference.buckets.len(), acknowledged);
    for member in members.iter().flatten() {
        assert_eq!(dump(&member.sm), reference, "member {} differs", member.id);
    }
    let snapshot = members[survivor]
        .as_ref()
        .unwrap()
        .raft
        .metrics()
        .borrow()
        .snapshot;
    assert!(
        snapshot.is_some(),
        "the log should have been compacted by now"
    );

    // Phase 4: everyone stops and starts again on the same files: identical state.
    for member in members.iter_mut() {
        stop(member.take().unwrap()).await;
    }
    for i in 0..3 {
        members[i] = Some(start(i as u64 + 1, &dirs[i], addrs[i], &key).await);
    }
    let running: Vec<&Running> = members.iter().flatten().collect();
    leader(&running).await;
    for member in members.iter().flatten() {
        caught_up(member, last).await;
        assert_eq!(
            dump(&member.sm),
            reference,
            "member {} differs after restart",
            member.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_port_refuses_strangers() {
    let key = SecretKey::generate();
    let root = tempfile::tempdir().unwrap();
    let addr = free_udp_port();
    let member = start(1, root.path(), addr, &key).await;
    let stranger = SecretKey::generate();
    let client =
        cairn_proto::transport::client_endpoint("127.0.0.1:0".parse().unwrap(), &stranger).unwrap();
    // The stranger may finish its side of the handshake, but the member closes the
    // connection before any stream is served.
    let result = async {
        let conn =
            cairn_proto::transport::connect(&client, &stranger, addr, &key.public(), RAFT_ALPN)
                .await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| cairn_proto::transport::TransportError::Connect(e.to_string()))?;
        send.write_all(b"\x00\x00\x00\x01\x00")
            .await
            .map_err(|e| cairn_proto::transport::TransportError::Connect(e.to_string()))?;
        let _ = send.finish();
        recv.read_to_end(1024)
            .await
            .map_err(|e| cairn_proto::transport::TransportError::Connect(e.to_string()))
    }
    .await;
    assert!(result.is_err(), "a stranger got an answer: {result:?}");
    stop(member).await;
}
