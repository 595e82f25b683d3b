//! Time and peak memory of building and installing a catalog snapshot.
//!
//! Each phase runs in its own process so that its peak RSS (`VmHWM`) is its own:
//!
//! ```text
//! cargo run --release -p cairn-coordinator --example snapshot_bench -- fill DIR N
//! cargo run --release -p cairn-coordinator --example snapshot_bench -- build DIR
//! cargo run --release -p cairn-coordinator --example snapshot_bench -- install DIR TARGET
//! ```
//!
//! `fill` writes `N` objects of one 10 + 6 segment each (about 1.5 KB of catalog apiece)
//! into `DIR/catalog.redb`; `build` builds a snapshot of it; `install` streams the current
//! snapshot of `DIR` into a fresh state machine in `TARGET` and installs it there.

use std::path::Path;
use std::time::Instant;

use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, NodeRecord, NodeState, ObjectBody, ObjectHeaders,
    ObjectRecord, SegmentRecord, ShardRecord,
};
use cairn_coordinator::catalog::{self, Command};
use cairn_coordinator::raft::state_machine::StateMachine;
use cairn_erasure::{SegmentNonce, ShardRoot};
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

const PROFILE: ErasureProfile = ErasureProfile {
    k: 10,
    m: 6,
    segment_size: 64 << 20,
};

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn fill(dir: &Path, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let sm = StateMachine::open(&dir.join("catalog.redb"))?;
    let db = sm.catalog().database().clone();
    let nodes: Vec<_> = (0..16u8)
        .map(|i| SecretKey::from_seed([i + 1; 32]).public())
        .collect();
    let txn = db.begin_write()?;
    let mut setup = vec![Command::CreateBucket {
        bucket: Bucket {
            name: "cache".into(),
            created_ms: 1,
            public_read: true,
            mode: BucketMode::Plain,
            erasure: PROFILE,
            failure_tolerance: 1,
        },
    }];
    for (i, node) in nodes.iter().enumerate() {
        setup.push(Command::RegisterNode {
            node: NodeRecord {
                id: *node,
                addr: format!("127.0.0.1:{}", 7000 + i),
                org: format!("org-{i}"),
                site: "site".into(),
                capacity: 1 << 40,
                state: NodeState::Active,
                joined_ms: 1,
                state_since_ms: 1,
                vetted: true,
                reputation: Default::default(),
            },
        });
    }
    for command in &setup {
        catalog::apply(&txn, command)?;
    }
    txn.commit()?;
    let batch = 10_000;
    let mut done = 0;
    while done < n {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        for i in done..(done + batch).min(n) {
            let mut seed = [0u8; 16];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            let shards = nodes
                .iter()
                .enumerate()
                .map(|(s, node)| {
                    let mut id = seed;
                    id[15] = s as u8;
                    ShardRecord {
                        id: ShardId(id),
                        node: *node,
                        root: ShardRoot::of(&id),
                    }
                })
                .collect();
            let object = ObjectRecord {
                size: 200_000 + i,
                etag: format!("\"{:032x}\"", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
                last_modified_ms: 1_700_000_000_000 + i,
                headers: ObjectHeaders {
                    content_type: Some("application/x-nix-nar".into()),
                    ..ObjectHeaders::default()
                },
                body: ObjectBody::Segments {
                    erasure: PROFILE,
                    segments: vec![SegmentRecord {
                        len: 200_000 + i,
                        shards,
                        mask: Some(SegmentNonce::from_bytes(seed)),
                    }],
                },
                acl: Default::default(),
                parts: Vec::new(),
                checksum: None,
            };
            let command = Command::PutObject {
                bucket: "cache".into(),
                key: format!(
                    "nar/{:052x}.nar.xz",
                    u128::from(i).wrapping_mul(0x2545_f491_4f6c_dd1d)
                ),
                object,
                condition: None,
                now_ms: 1_700_000_000_000 + i,
            };
            catalog::apply(&txn, &command)?;
        }
        txn.commit()?;
        done = (done + batch).min(n);
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    println!(
        "filled {n} objects; catalog file {} bytes",
        std::fs::metadata(dir.join("catalog.redb"))?.len()
    );
    Ok(())
}

async fn build(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut sm = StateMachine::open(&dir.join("catalog.redb"))?;
    let start = Instant::now();
    let mut builder = sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await?;
    let secs = start.elapsed().as_secs_f64();
    let mut data = snapshot.snapshot;
    let bytes = tokio::io::AsyncSeekExt::seek(&mut *data, std::io::SeekFrom::End(0)).await?;
    println!(
        "{{\"phase\":\"build\",\"seconds\":{secs:.2},\"snapshot_bytes\":{bytes},\"peak_rss_mib\":{}}}",
        peak_rss_mib()
    );
    Ok(())
}

async fn install(dir: &Path, target: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut source = StateMachine::open(&dir.join("catalog.redb"))?;
    let snapshot = source
        .get_current_snapshot()
        .await?
        .ok_or("no snapshot: run build first")?;
    std::fs::create_dir_all(target)?;
    let mut sm = StateMachine::open(&target.join("catalog.redb"))?;
    let start = Instant::now();
    let mut received = sm.begin_receiving_snapshot().await?;
    let mut data = snapshot.snapshot;
    tokio::io::AsyncSeekExt::seek(&mut *data, std::io::SeekFrom::Start(0)).await?;
    tokio::io::copy(&mut *data, &mut *received).await?;
    tokio::io::AsyncWriteExt::shutdown(&mut *received).await?;
    sm.install_snapshot(&snapshot.meta, received).await?;
    let secs = start.elapsed().as_secs_f64();
    let stats = sm.catalog().stats()?;
    println!(
        "{{\"phase\":\"install\",\"seconds\":{secs:.2},\"objects\":{},\"peak_rss_mib\":{}}}",
        stats.objects,
        peak_rss_mib()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fill", dir, n] => fill(Path::new(dir), n.parse()?),
        ["build", dir] => build(Path::new(dir)).await,
        ["install", dir, target] => install(Path::new(dir), Path::new(target)).await,
        _ => Err("usage: snapshot_bench fill DIR N | build DIR | install DIR TARGET".into()),
    }
}
