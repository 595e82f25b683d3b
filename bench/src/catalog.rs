//! `cairn-bench catalog`: a catalog of N objects loaded straight into redb (no Raft), its
//! bytes on disk per object, and the time and memory of one round of each background
//! loop's catalog work against it. `survey` is the full walk (the reference the leader no
//! longer runs); the `survey round`/`pass` rows are the leader's incremental survey.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, NodeRecord, NodeState, ObjectBody, ObjectHeaders,
    ObjectRecord, SegmentRecord, ShardRecord,
};
use cairn_coordinator::catalog::{self, Catalog, Command};
use cairn_coordinator::durability::{SurveyLimits, Surveyor};
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use clap::Args;

use crate::measure::{peak_rss_bytes, pseudo_random};

/// Options of `cairn-bench catalog`.
#[derive(Args)]
pub struct CatalogBenchArgs {
    /// Objects to load: 70 % 1.5 KiB inline narinfos, 30 % one-segment NARs at 10+6.
    #[arg(long, default_value_t = 100_000)]
    objects: u64,
    /// Storage nodes the NARs' shards are spread over.
    #[arg(long, default_value_t = 24)]
    nodes: usize,
}

const NARINFO_BYTES: usize = 1536;
const NAR_BYTES: u64 = 2 << 20;
const PROFILE: ErasureProfile = ErasureProfile {
    k: 10,
    m: 6,
    segment_size: 64 << 20,
};

/// One measured loop round.
struct Round {
    name: &'static str,
    elapsed: Duration,
    /// Growth of the peak resident set over the round (the peak is reset before it).
    peak_growth: u64,
    /// What the round found, to show it did its work.
    result: String,
}

pub fn run(args: CatalogBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= 16,
        "--nodes must be at least 16 (a 10+6 segment)"
    );
    let dir = std::env::temp_dir().join(format!("cairn-bench-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, &args);
    let _ = std::fs::remove_dir_all(&dir);
    let (per_object, load, rounds) = result?;
    println!(
        "{:<44} {:>12} {:>12}  result",
        "measurement", "time", "peak Δ RSS"
    );
    println!(
        "{:<44} {:>12.1?} {:>12}",
        format!("load {} objects", args.objects),
        load,
        ""
    );
    println!(
        "{:<44} {:>12.0}",
        "catalog bytes on disk per object", per_object
    );
    let mut json = serde_json::json!({
        "objects": args.objects,
        "nodes": args.nodes,
        "bytes_per_object": per_object.round(),
        "load_s": load.as_secs_f64(),
    });
    for round in &rounds {
        println!(
            "{:<44} {:>12.1?} {:>9.1} MiB  {}",
            round.name,
            round.elapsed,
            round.peak_growth as f64 / (1u64 << 20) as f64,
            round.result
        );
        json[format!("{}_ms", round.name.replace(' ', "_"))] =
            (round.elapsed.as_secs_f64() * 1000.0).into();
        json[format!("{}_peak_growth_bytes", round.name.replace(' ', "_"))] =
            round.peak_growth.into();
    }
    println!("{json}");
    Ok(())
}

/// Resets this process's peak resident set to its current size (Linux: `clear_refs` 5), so
/// the next [`peak_rss_bytes`] is the peak since now.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn current_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn round<T>(
    name: &'static str,
    work: impl FnOnce() -> anyhow::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> anyhow::Result<Round> {
    reset_peak();
    let before = current_rss();
    let start = Instant::now();
    let out = work()?;
    let elapsed = start.elapsed();
    let peak = peak_rss_bytes().unwrap_or(0);
    Ok(Round {
        name,
        elapsed,
        peak_growth: peak.saturating_sub(before),
        result: show(&out),
    })
}

type Measured = (f64, Duration, Vec<Round>);

fn measure(dir: &std::path::Path, args: &CatalogBenchArgs) -> anyhow::Result<Measured> {
    let path = dir.join("catalog.redb");
    let db = Arc::new(redb::Database::create(&path)?);
    let catalog = Catalog::new(db.clone())?;
    let nodes: Vec<NodeId> = (0..args.nodes)
        .map(|_| SecretKey::generate().public())
        .collect();
    let txn = db.begin_write()?;
    catalog::apply(&txn, &bucket())?;
    for (i, id) in nodes.iter().enumerate() {
        catalog::apply(
            &txn,
            &Command::RegisterNode {
                node: NodeRecord {
                    id: *id,
                    addr: format!("127.0.0.1:{}", 10_000 + i),
                    org: format!("org-{}", i % 8),
                    site: "bench".into(),
                    capacity: 1 << 44,
                    state: NodeState::Active,
                    joined_ms: 0,
                    state_since_ms: 0,
                    vetted: true,
                    reputation: Default::default(),
                },
            },
        )?;
    }
    txn.commit()?;

    let body = pseudo_random(NARINFO_BYTES, 5);
    let start = Instant::now();
    let mut seed = 1u64;
    for first in (0..args.objects).step_by(10_000) {
        let txn = db.begin_write()?;
        for n in first..(first + 10_000).min(args.objects) {
            // 3 in 10 are NARs.
            let (key, object) = if n % 10 < 3 {
                (
                    format!("nar/{n:052x}.nar.xz"),
                    nar_object(&nodes, &mut seed),
                )
            } else {
                (format!("{n:032x}.narinfo"), inline_object(&body))
            };
            let command = Command::PutObject {
                bucket: "bench".into(),
                key,
                object,
                condition: None,
                now_ms: 1,
            };
            catalog::apply(&txn, &command)?;
        }
        txn.commit()?;
    }
    let load = start.elapsed();
    drop(catalog);
    drop(db);
    let bytes = {
        let db = redb::Database::open(&path)?;
        drop(db);
        std::fs::metadata(&path)?.len()
    };
    let per_object = bytes as f64 / args.objects.max(1) as f64;

    let catalog = Catalog::new(Arc::new(redb::Database::open(&path)?))?;
    let node = nodes[0];
    let states: HashMap<NodeId, NodeState> =
        nodes.iter().map(|n| (*n, NodeState::Active)).collect();
    let orgs: HashMap<NodeId, String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, format!("org-{}", i % 8)))
        .collect();
    let room: HashMap<String, usize> = (0..8).map(|i| (format!("org-{i}"), 3)).collect();
    let none = HashSet::new();
    // What the node would list: every shard placed on it.
    let inventory = inventory_of(&catalog, &node)?;
    let mut rounds = Vec::new();
    rounds.push(round(
        "placed_on",
        || Ok(cairn_coordinator::durability::placed_on(&catalog, &node)?),
        |n| format!("{n} shards"),
    )?);
    rounds.push(round(
        "audit sample",
        || {
            Ok(cairn_coordinator::audit::draw_targets(
                &catalog, &node, &none,
            )?)
        },
        |t| format!("{} challenges", t.len()),
    )?);
    rounds.push(round(
        "gc compare one node",
        || {
            let before = catalog.view()?;
            let after = catalog.view()?;
            Ok(cairn_coordinator::gc::reconcile_paged(
                &node,
                &inventory,
                &before,
                &after,
                cairn_coordinator::gc::INDEX_PAGE,
            )?)
        },
        |r| {
            format!(
                "{} missing, {} unreferenced of {}",
                r.missing.len(),
                r.unreferenced.len(),
                inventory.len()
            )
        },
    )?);
    rounds.push(round(
        "rebalance candidates",
        || {
            let shed = HashMap::from([(node, u64::MAX / 2)]);
            let receivers = vec![SecretKey::generate().public()];
            Ok(cairn_coordinator::durability::rebalance_moves(
                &catalog,
                &states,
                &shed,
                &receivers,
                64,
                ShardId([0x80; 16]),
            )?)
        },
        |moves| format!("{} moves", moves.len()),
    )?);
    rounds.push(round(
        "survey",
        || {
            Ok(cairn_coordinator::durability::survey(
                &catalog, &states, &orgs, &room, &none, 4,
            )?)
        },
        |(survey, _)| format!("{} segments", survey.segments),
    )?);
    let no_missing = HashMap::new();
    rounds.push(round(
        "survey round healthy",
        || {
            let mut surveyor = Surveyor::new(SurveyLimits::default());
            Ok(surveyor.round(&catalog, &states, &orgs, &room, &no_missing, 4)?)
        },
        |r| {
            format!(
                "{} segments, {} needs",
                r.survey.as_ref().map_or(0, |s| s.segments),
                r.needs.len()
            )
        },
    )?);
    // One node lost: the pass reads that node's range of the index and the records it
    // names, so its cost follows the node's shards, not the catalog. A threshold of m
    // queues every segment that lost a shard.
    let rebuild_at = PROFILE.m;
    let mut lost = states.clone();
    lost.insert(node, NodeState::Lost);
    let on_node = catalog.placed_totals(&node)?.shards;
    rounds.push(round(
        "survey round node lost",
        || {
            let mut surveyor = Surveyor::new(SurveyLimits::default());
            Ok(surveyor.round(&catalog, &lost, &orgs, &room, &no_missing, rebuild_at)?)
        },
        |r| {
            format!(
                "{} rebuilds of the node's {on_node} shards, pass {}",
                r.needs.iter().filter(|n| !n.missing.is_empty()).count(),
                if r.survey.is_some() {
                    "complete"
                } else {
                    "continues next round"
                }
            )
        },
    )?);
    rounds.push(round(
        "survey pass node lost",
        || {
            let mut surveyor = Surveyor::new(SurveyLimits::default());
            let mut needs = 0;
            for rounds in 1.. {
                let r = surveyor.round(&catalog, &lost, &orgs, &room, &no_missing, rebuild_at)?;
                needs += r.needs.iter().filter(|n| !n.missing.is_empty()).count();
                if r.survey.is_some() {
                    return Ok((rounds, needs));
                }
            }
            unreachable!()
        },
        |(rounds, needs)| format!("{needs} rebuilds in {rounds} rounds"),
    )?);
    Ok((per_object, load, rounds))
}

/// Every shard the catalog places on `node`, read page by page.
fn inventory_of(catalog: &Catalog, node: &NodeId) -> anyhow::Result<Vec<ShardId>> {
    let view = catalog.view()?;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = view.placed_page(node, after, 4096)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(*last);
        out.extend(page.iter().map(|(id, _)| *id));
    }
    Ok(out)
}

fn bucket() -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: "bench".into(),
            created_ms: 0,
            public_read: true,
            mode: BucketMode::Plain,
            erasure: PROFILE,
            failure_tolerance: 1,
        },
    }
}

fn inline_object(body: &[u8]) -> ObjectRecord {
    ObjectRecord {
        size: body.len() as u64,
        etag: "\"0123456789abcdef0123456789abcdef\"".into(),
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

/// xorshift: cheap, deterministic, spread over the whole range like random ids.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn nar_object(nodes: &[NodeId], seed: &mut u64) -> ObjectRecord {
    let width = usize::from(PROFILE.k + PROFILE.m);
    let first = (next(seed) % nodes.len() as u64) as usize;
    let shards = (0..width)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next(seed).to_le_bytes());
            id[8..].copy_from_slice(&next(seed).to_le_bytes());
            ShardRecord {
                id: ShardId(id),
                node: nodes[(first + i) % nodes.len()],
                root: ShardRoot::of(&id),
            }
        })
        .collect();
    ObjectRecord {
        size: NAR_BYTES,
        etag: "\"0123456789abcdef0123456789abcdef\"".into(),
        last_modified_ms: 1,
        headers: ObjectHeaders {
            content_type: Some("application/x-nix-nar".into()),
            ..ObjectHeaders::default()
        },
        body: ObjectBody::Segments {
            erasure: PROFILE,
            segments: vec![SegmentRecord {
                len: NAR_BYTES,
                shards,
                mask: Some(cairn_erasure::SegmentNonce::from_bytes([7; 16])),
            }],
        },
        acl: Default::default(),
        parts: Vec::new(),
        checksum: None,
    }
}
