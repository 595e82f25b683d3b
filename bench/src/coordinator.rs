//! `cairn-bench coordinator`: committed small-object writes per second through Raft, and
//! what each object costs in the catalog on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, ObjectBody, ObjectHeaders, ObjectRecord,
};
use cairn_coordinator::catalog::{self, Catalog, Command, CommandResult};
use cairn_coordinator::config::CoordinatorConfig;
use cairn_coordinator::daemon::{self, RunningCoordinator};
use cairn_coordinator::raft::types::Member;
use clap::Args;
use redb::ReadableDatabase;

use crate::measure::pseudo_random;

/// Options of `cairn-bench coordinator`.
#[derive(Args)]
pub struct CoordinatorBenchArgs {
    /// Members in the group (1 or 3 are the interesting cases).
    #[arg(long, default_value_t = 3)]
    members: u64,
    /// Inline object writes to commit.
    #[arg(long, default_value_t = 5_000)]
    writes: u64,
    /// Writes in flight at once (openraft batches what arrives together).
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Size of each inline body (narinfos are 1–2 KiB).
    #[arg(long, default_value_t = 1536)]
    body: usize,
    /// Objects to load into a bare catalog to measure bytes on disk per object (0 skips).
    #[arg(long, default_value_t = 1_000_000)]
    catalog_objects: u64,
}

pub fn run(args: CoordinatorBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.members >= 1, "--members must be at least 1");
    let root = std::env::temp_dir().join(format!("cairn-bench-coordinator-{}", std::process::id()));
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let commits = commit_rate(&root, &args).await?;
        let per_object = if args.catalog_objects > 0 {
            let dir = root.join("bare-catalog");
            let (objects, body) = (args.catalog_objects, args.body);
            Some(tokio::task::spawn_blocking(move || catalog_cost(&dir, objects, body)).await??)
        } else {
            None
        };
        anyhow::Ok((commits, per_object))
    });
    let _ = std::fs::remove_dir_all(&root);
    let ((elapsed, writes), per_object) = result?;
    let rate = writes as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("{:<44} {:>12}", "measurement", "value");
    println!(
        "{:<44} {rate:>12.0}",
        format!("committed inline writes/s ({} members)", args.members)
    );
    let mut json = serde_json::json!({
        "members": args.members,
        "writes": writes,
        "concurrency": args.concurrency,
        "body_bytes": args.body,
        "commits_per_s": rate.round(),
    });
    if let Some((bytes, objects)) = per_object {
        let per = bytes as f64 / objects as f64;
        println!(
            "{:<44} {per:>12.0}",
            format!("catalog bytes on disk per object ({objects})")
        );
        json["catalog_objects"] = objects.into();
        json["catalog_file_bytes"] = bytes.into();
        json["catalog_bytes_per_object"] = per.round().into();
    }
    println!("{json}");
    Ok(())
}

fn inline_object(body: &[u8]) -> ObjectRecord {
    ObjectRecord {
        size: body.len() as u64,
        etag: format!("\"{}\"", blake3::hash(body).to_hex()),
        last_modified_ms: 1,
        headers: ObjectHeaders {
            content_type: Some("text/x-nix-narinfo".into()),
            ..ObjectHeaders::default()
        },
        body: ObjectBody::Inline(body.to_vec()),
        acl: Default::default(),
        parts: Vec::new(),
        checksum: None,
    }
}

fn bucket() -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: "bench".into(),
            created_ms: 1,
            public_read: true,
            mode: BucketMode::Plain,
            erasure: ErasureProfile::PRODUCTION,
            failure_tolerance: 2,
        },
    }
}

/// Forms a group of `members` in this process and commits `writes` inline objects.
async fn commit_rate(
    root: &std::path::Path,
    args: &CoordinatorBenchArgs,
) -> anyhow::Result<(Duration, u64)> {
    let mut running: Vec<RunningCoordinator> = Vec::new();
    for id in 1..=args.members {
        let dir = root.join(format!("m{id}"));
        std::fs::create_dir_all(&dir)?;
        if id > 1 {
            std::fs::copy(
                root.join("m1").join(daemon::KEY_FILE),
                dir.join(daemon::KEY_FILE),
            )?;
        }
        let config = CoordinatorConfig {
            data_dir: dir,
            id,
            listen: "127.0.0.1:0".parse()?,
            admin_listen: "127.0.0.1:0".parse()?,
            ..CoordinatorConfig::default()
        };
        running.push(daemon::start(config, id == 1, None).await?);
    }
    let leader = running[0].raft.clone();
    leader
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader")
        .await?;
    for member in &running[1..] {
        let node = Member {
            addr: member.quic_addr.to_string(),
            admin: member.admin_addr.to_string(),
            key: member.member_key.to_string(),
        };
        leader
            .add_learner(member.id, node, true)
            .await
            .context("adding a member")?;
    }
    leader
        .change_membership(
            (1..=args.members).collect::<std::collections::BTreeSet<_>>(),
            false,
        )
        .await
        .context("making members voters")?;
    leader.client_write(bucket()).await?;

    let body = Arc::new(pseudo_random(args.body, 3));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (raft, body, next, writes) = (leader.clone(), body.clone(), next.clone(), args.writes);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= writes {
                    return anyhow::Ok(());
                }
                let command = Command::PutObject {
                    bucket: "bench".into(),
                    key: format!("{n:032x}.narinfo"),
                    object: inline_object(&body),
                    condition: None,
                    now_ms: 1,
                };
                let response = raft.client_write(command).await?;
                anyhow::ensure!(
                    !matches!(response.data, CommandResult::Refused(_)),
                    "write refused"
                );
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    for member in running {
        member.shutdown().await;
    }
    Ok((elapsed, args.writes))
}

/// Loads `objects` inline objects into a fresh catalog and returns its file size.
fn catalog_cost(dir: &std::path::Path, objects: u64, body: usize) -> anyhow::Result<(u64, u64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("catalog.redb");
    let db = Arc::new(redb::Database::create(&path)?);
    let catalog = Catalog::new(db.clone())?;
    let body = pseudo_random(body, 5);
    let txn = db.begin_write()?;
    catalog::apply(&txn, &bucket())?;
    txn.commit()?;
    let bar = indicatif::ProgressBar::new(objects).with_style(
        indicatif::ProgressStyle::with_template(
            "loading catalog {bar:40} {pos}/{len} objects, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for start in (0..objects).step_by(10_000) {
        let txn = db.begin_write()?;
        for n in start..(start + 10_000).min(objects) {
            let command = Command::PutObject {
                bucket: "bench".into(),
                key: format!("{n:032x}.narinfo"),
                object: inline_object(&body),
                condition: None,
                now_ms: 1,
            };
            catalog::apply(&txn, &command)?;
        }
        txn.commit()?;
        bar.set_position((start + 10_000).min(objects));
    }
    bar.finish_and_clear();
    drop(catalog);
    drop(db);
    let _ = db_check(&path);
    Ok((std::fs::metadata(&path)?.len(), objects))
}

/// Reopens the catalog once so the size read is of a cleanly closed file.
fn db_check(path: &std::path::Path) -> anyhow::Result<()> {
    let db = redb::Database::open(path)?;
    let _ = db.begin_read()?;
    Ok(())
}
