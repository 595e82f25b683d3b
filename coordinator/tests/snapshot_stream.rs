//! Snapshots stream: a catalog many chunks long is built into a file, sent in chunks over
//! real QUIC to a member that joins late, and installed there in batches; damaged or
//! truncated snapshot streams are refused without touching the live catalog, and an
//! install cut short leaves the catalog as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_coordinator::catalog::model::{Bucket, BucketMode, ErasureProfile};
use cairn_coordinator::catalog::stream::{self, StreamReader, StreamWriter};
use cairn_coordinator::catalog::{self, Catalog, Command, CommandResult};
use cairn_coordinator::raft::log_store::LogStore;
use cairn_coordinator::raft::network::{MemberCredential, Network, RAFT_ALPN, serve_connection};
use cairn_coordinator::raft::state_machine::StateMachine;
use cairn_coordinator::raft::types::{Member, TypeConfig};
use cairn_proto::identity::SecretKey;
use cairn_proto::transport::{PeerPolicy, server_endpoint};
use openraft::storage::RaftStateMachine;
use openraft::{Config, Raft, RaftSnapshotBuilder, SnapshotPolicy};
use redb::ReadableDatabase;

/// The stand-in for redb's single-value limit: chunks are this small, so a catalog of a
/// few hundred kilobytes is a snapshot of hundreds of chunks, the shape a multi-gigabyte
/// catalog has with the real chunk size.
const CHUNK: usize = 1024;

fn bucket(n: usize) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: format!("bucket-{n:05}"),
            created_ms: n as u64,
            public_read: n.is_multiple_of(2),
            mode: BucketMode::NixCache {
                trusted_keys: (0..4)
                    .map(|i| format!("cache-{n}-{i}.example:{}", "A".repeat(44)))
                    .collect(),
            },
            erasure: ErasureProfile {
                k: 4,
                m: 2,
                segment_size: 1 << 20,
            },
            failure_tolerance: 1,
        },
    }
}

fn dump(catalog: &Catalog) -> catalog::CatalogDump {
    catalog::export(&catalog.database().begin_read().unwrap()).unwrap()
}

fn filled(dir: &Path, buckets: usize) -> Catalog {
    let db = redb::Database::create(dir.join("source.redb")).unwrap();
    let catalog = Catalog::new(Arc::new(db)).unwrap();
    let txn = catalog.database().begin_write().unwrap();
    for n in 0..buckets {
        assert_eq!(
            catalog::apply(&txn, &bucket(n)).unwrap(),
            CommandResult::Done
        );
    }
    txn.commit().unwrap();
    catalog
}

fn streamed(catalog: &Catalog) -> (Vec<u8>, stream::StreamSummary) {
    let mut writer = StreamWriter::new(Vec::new(), CHUNK);
    stream::write_catalog(&catalog.database().begin_read().unwrap(), &mut writer).unwrap();
    writer.finish().unwrap()
}

#[test]
fn damaged_streams_are_refused_and_leave_the_catalog_alone() {
    let dir = tempfile::tempdir().unwrap();
    let source = filled(dir.path(), 300);
    let (bytes, summary) = streamed(&source);
    assert!(summary.chunks > 20, "{summary:?}");
    assert_eq!(bytes.len() as u64, summary.bytes);

    let target_db = redb::Database::create(dir.path().join("target.redb")).unwrap();
    let target = Catalog::new(Arc::new(target_db)).unwrap();
    let txn = target.database().begin_write().unwrap();
    catalog::apply(&txn, &bucket(99_999)).unwrap();
    txn.commit().unwrap();
    let before = dump(&target);

    let import = |bytes: &[u8]| {
        let mut reader = StreamReader::new(bytes);
        stream::import_stream(target.database(), &mut reader, |_| Ok(()))
    };
    // Truncated anywhere: refused, even on a frame boundary (no end frame).
    for cut in [3, bytes.len() / 2, bytes.len() - 1] {
        let err = import(&bytes[..cut]).unwrap_err().to_string();
        assert!(err.contains("ends"), "cut at {cut}: {err}");
        assert_eq!(dump(&target), before);
    }
    // One byte changed inside a row: the end frame's hash refuses it.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    assert!(import(&flipped).is_err());
    assert_eq!(dump(&target), before);
    // A frame length beyond the limit is refused before anything is read or allocated.
    let mut huge = (stream::MAX_FRAME_BYTES + 1).to_le_bytes().to_vec();
    huge.extend_from_slice(&[0; 16]);
    let err = import(&huge).unwrap_err().to_string();
    assert!(err.contains("exceeds the limit"), "{err}");
    // A length that promises more than the stream holds.
    let mut short = 1_000_000u32.to_le_bytes().to_vec();
    short.extend_from_slice(&[0; 16]);
    assert!(import(&short).is_err());
    assert_eq!(dump(&target), before);
    assert_eq!(target.buckets().unwrap().len(), 1);

    // The whole stream replaces the catalog, indexes derived.
    import(&bytes).unwrap();
    assert_eq!(dump(&target), dump(&source));
    assert_eq!(target.buckets().unwrap().len(), 300);
}

#[test]
fn an_install_cut_short_leaves_the_catalog_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let source = filled(dir.path(), 200);
    let (bytes, _) = streamed(&source);
    let path = dir.path().join("target.redb");
    {
        let target = Catalog::new(Arc::new(redb::Database::create(&path).unwrap())).unwrap();
        let txn = target.database().begin_write().unwrap();
        catalog::apply(&txn, &bucket(77_777)).unwrap();
        txn.commit().unwrap();
        // Half the chunks are staged (and committed in batches), then the import stops.
        let mut reader = StreamReader::new(bytes.as_slice());
        let mut importer = stream::Importer::begin(target.database()).unwrap();
        for _ in 0..10 {
            let (table, rows) = reader.next_chunk().unwrap().unwrap();
            importer.add(table, &rows).unwrap();
        }
        drop(importer);
        assert_eq!(target.buckets().unwrap().len(), 1);
    }
    // Reopened: the live catalog is the old one, and nothing staged is left.
    let db = Arc::new(redb::Database::create(&path).unwrap());
    let target = Catalog::new(db.clone()).unwrap();
    let names: Vec<String> = db
        .begin_write()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    for staging in stream::staging_table_names() {
        assert!(!names.iter().any(|n| n == staging), "{staging} left behind");
    }
    let names: Vec<String> = target
        .buckets()
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, vec!["bucket-77777".to_string()]);
}

#[tokio::test]
async fn a_snapshot_file_of_many_chunks_installs_and_only_the_current_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut source = StateMachine::open(&dir.path().join("a/catalog.redb"))
        .unwrap()
        .with_chunk_bytes(CHUNK);
    let db = source.catalog().database().clone();
    let txn = db.begin_write().unwrap();
    for n in 0..400 {
        catalog::apply(&txn, &bucket(n)).unwrap();
    }
    txn.commit().unwrap();
    let first = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let second = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_ne!(first.meta.snapshot_id, second.meta.snapshot_id);
    let files: Vec<_> = std::fs::read_dir(source.snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "older snapshot files are deleted: {files:?}"
    );
    let size = std::fs::metadata(source.snapshot_dir().join(&files[0]))
        .unwrap()
        .len();
    assert!(size > 100 * CHUNK as u64, "{size} bytes");

    // Received in small writes, as openraft does chunk by chunk, then installed.
    let mut target = StateMachine::open(&dir.path().join("b/catalog.redb")).unwrap();
    let mut received = target.begin_receiving_snapshot().await.unwrap();
    let mut data = second.snapshot;
    let mut piece = vec![0u8; 700];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut *data, &mut piece)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::io::AsyncWriteExt::write_all(&mut *received, &piece[..n])
            .await
            .unwrap();
    }
    target
        .install_snapshot(&second.meta, received)
        .await
        .unwrap();
    assert_eq!(dump(target.catalog()), dump(source.catalog()));
    let current = target.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, second.meta);
    let files: Vec<_> = std::fs::read_dir(target.snapshot_dir()).unwrap().collect();
    assert_eq!(files.len(), 1, "the installed file is kept, nothing else");

    // A snapshot whose file does not match the metadata sent with it is refused.
    let mut other = StateMachine::open(&dir.path().join("c/catalog.redb")).unwrap();
    let mut received = other.begin_receiving_snapshot().await.unwrap();
    let mut data = first.snapshot;
    tokio::io::copy(&mut *data, &mut *received).await.unwrap();
    assert!(
        other
            .install_snapshot(&second.meta, received)
            .await
            .is_err()
    );
    assert!(other.catalog().buckets().unwrap().is_empty());
}

struct Running {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
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
        // Snapshots only when the test asks, so it knows where the one it waits for ends.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        // Many InstallSnapshot RPCs, each one frame.
        snapshot_max_chunk_size: 4096,
        install_snapshot_timeout: 30_000,
        ..Config::default()
    };
    let log = LogStore::<TypeConfig>::open(&dir.join("raft-log.redb")).unwrap();
    let sm = StateMachine::open(&dir.join("catalog.redb"))
        .unwrap()
        .with_chunk_bytes(CHUNK);
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
    let served = raft.clone();
    let coordinator = key.public();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
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
    Running { raft, sm }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_late_catches_up_from_a_streamed_snapshot() {
    let key = SecretKey::generate();
    let root = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..2).map(|_| free_udp_port()).collect();
    let member = |i: usize| Member {
        addr: addrs[i].to_string(),
        admin: String::new(),
        key: key.public().to_string(),
    };
    let first = start(1, &root.path().join("m1"), addrs[0], &key).await;
    first
        .raft
        .initialize(BTreeMap::from([(1, member(0))]))
        .await
        .unwrap();
    first
        .raft
        .wait(Some(Duration::from_secs(20)))
        .current_leader(1, "leader")
        .await
        .unwrap();
    let mut written = None;
    for n in 0..600 {
        let response = first.raft.client_write(bucket(n)).await.unwrap();
        assert_eq!(response.data, CommandResult::Done);
        written = Some(response.log_id);
    }
    // Compact: the entries the newcomer would need are gone from the log.
    // The last write's id, from its answer (the metrics may publish it a moment later).
    let written = written.unwrap();
    first
        .raft
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(written.index), "last write applied")
        .await
        .unwrap();
    first.raft.trigger().snapshot().await.unwrap();
    let applied = first
        .raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= written.index),
            "snapshot built",
        )
        .await
        .unwrap()
        .snapshot
        .unwrap();
    first.raft.trigger().purge_log(applied.index).await.unwrap();
    first
        .raft
        .wait(Some(Duration::from_secs(30)))
        .purged(Some(applied), "log purged")
        .await
        .unwrap();
    let snapshot_file = std::fs::read_dir(first.sm.snapshot_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let size = std::fs::metadata(&snapshot_file).unwrap().len();
    assert!(size > 100 * CHUNK as u64, "snapshot of {size} bytes");

    // The late member joins; it can only catch up by the snapshot, sent in 4 KiB RPCs.
    let late = start(2, &root.path().join("m2"), addrs[1], &key).await;
    first.raft.add_learner(2, member(1), true).await.unwrap();
    let last = first
        .raft
        .change_membership(BTreeSet::from([1, 2]), false)
        .await
        .unwrap()
        .log_id;
    late.raft
        .wait(Some(Duration::from_secs(60)))
        .applied_index_at_least(Some(last.index), "late member caught up")
        .await
        .unwrap();
    assert!(
        late.raft.metrics().borrow().snapshot.is_some(),
        "the late member installed a snapshot"
    );
    assert_eq!(dump(late.sm.catalog()), dump(first.sm.catalog()));
    assert_eq!(late.sm.catalog().buckets().unwrap().len(), 600);

    // And it takes part: a write through the leader reaches it by the log.
    let last = first
        .raft
        .client_write(bucket(10_000))
        .await
        .unwrap()
        .log_id;
    late.raft
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(last.index), "replicates after the snapshot")
        .await
        .unwrap();
    assert_eq!(late.sm.catalog().buckets().unwrap().len(), 601);
}
