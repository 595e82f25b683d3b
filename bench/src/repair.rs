//! `cairn-bench repair`: how long a cluster takes to restore full margin after losing the
//! node that holds the most data, against what the configured repair bandwidth allows.
//!
//! Everything runs in this process on loopback: one coordinator member with short failure
//! timers, `--nodes` storage nodes (each its own organisation, as in `cairn dev`) and one
//! gateway whose repair workers do the rebuilding. Objects are written over the gateway RPC
//! exactly as the gateway's data path writes them (encode, `Place`, every shard to its node
//! under the signed order, `Put` with the receipts), so the catalog and the nodes hold what
//! S3 uploads would have left; only the S3 front end (SigV4, MD5) is skipped, which repair
//! never touches.
//!
//! The coordinator's repair budget counts every byte a job moves: `k` shards read and each
//! rebuilt shard written. Losing one node of a `k + m` code costs one shard per segment it
//! held, so restoring `X` bytes moves about `(k + 1)·X` and cannot take less than
//! `(k + 1)·X / bandwidth` (minus the one second of budget the bucket may have saved up).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_client::admin_views::StatusView;
use cairn_client::coordinator::CoordinatorClient;
use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse, NewBody, NewObject, NewSegment};
use cairn_client::node::NodeClient;
use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, GatewayRecord, NodeState, ObjectBody,
};
use cairn_coordinator::catalog::{Catalog, Command, MoveReason};
use cairn_coordinator::config::CoordinatorConfig;
use cairn_coordinator::daemon::RunningCoordinator;
use cairn_erasure::Codec;
use cairn_gateway::config::GatewayConfig;
use cairn_node::config::NodeConfig;
use cairn_node::daemon::RunningNode;
use cairn_proto::bytesize::ByteSize;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::order::unix_now_ms;
use cairn_proto::transport::client_endpoint;
use clap::Args;

use crate::measure::pseudo_random;

/// Name of the bucket the objects go to.
const BUCKET: &str = "bench";
/// Seconds of silence before a node is suspect, and before it is lost: as short as the
/// coordinator accepts, so the measurement is about repair, not about waiting.
const SUSPECT_AFTER_SECS: u64 = 1;
const LOST_AFTER_SECS: u64 = 2;
/// Heartbeats well inside the suspect delay, so live nodes are never suspected.
const HEARTBEAT_MS: u64 = 200;
/// Survey interval: how soon a loss is noticed and a finished repair shows in the status.
const REPAIR_INTERVAL_MS: u64 = 200;
/// Objects uploaded at once: enough to keep both the encoder and the nodes busy.
const UPLOADS_IN_FLIGHT: u64 = 2;
/// How often the coordinator's state is sampled while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Options of `cairn-bench repair`.
#[derive(Args)]
pub struct RepairBenchArgs {
    /// Storage nodes to run, each its own organisation (at least k + m + 1, so a lost
    /// node's shards have somewhere to go).
    #[arg(long, default_value_t = 8)]
    nodes: u16,
    /// Data shards per segment.
    #[arg(long, default_value_t = 4)]
    k: u16,
    /// Parity shards per segment.
    #[arg(long, default_value_t = 2)]
    m: u16,
    /// Bytes of object data stored before a node is stopped.
    #[arg(long, default_value = "512MiB")]
    data: ByteSize,
    /// Size of each object (the last one takes what is left of --data).
    #[arg(long, default_value = "32MiB")]
    object_size: ByteSize,
    /// Largest segment of the bucket's code.
    #[arg(long, default_value = "8MiB")]
    segment_size: ByteSize,
    /// The coordinator's repair budget, bytes per second of shards read plus written
    /// (`repair_bandwidth`; 0 means no limit).
    #[arg(long, default_value = "64MiB")]
    bandwidth: ByteSize,
    /// Repair jobs the coordinator hands out at once (`repair_concurrency`).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Repair jobs the gateway works on at once (`repair_workers`).
    #[arg(long, default_value_t = 2)]
    repair_workers: usize,
    /// Where the cluster keeps its data [default: a fresh directory under the system temp
    /// dir, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What one run measured. Repair times count from the moment the node was marked lost.
struct Report {
    /// Wall time of the upload.
    upload: Duration,
    /// Objects and segments stored.
    objects: u64,
    segments: u64,
    /// Shards and their bytes (X) placed on the stopped node.
    node_shards: u64,
    node_bytes: u64,
    /// From stopping the node to its `Lost` state being committed.
    lost_after: Duration,
    /// To the first and the last repair commit (the catalog's `moved` counter).
    first_repair: Duration,
    rebuilt: Duration,
    /// To a survey showing every segment at full margin with nothing queued or out.
    repair: Duration,
    /// What the catalog counted as moved for repair during the run.
    moved_shards: u64,
    moved_bytes: u64,
    /// Bytes the repair budget is charged: k shards read and one written per lost shard.
    traffic_bytes: u64,
    /// Integral of jobs out with gateways over the repair, in job-seconds.
    job_seconds: f64,
}

/// Runs the benchmark: prints a table, then one JSON line.
pub fn run(args: RepairBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.k >= 1, "--k must be at least 1");
    anyhow::ensure!(
        args.m >= 1,
        "--m must be at least 1: without parity nothing can be rebuilt"
    );
    anyhow::ensure!(
        args.nodes > args.k + args.m,
        "--nodes must be more than k + m ({} + {}), so the lost node's shards have somewhere to go",
        args.k,
        args.m
    );
    anyhow::ensure!(args.data.0 > 0, "--data must be at least one byte");
    anyhow::ensure!(
        args.object_size.0 > 0,
        "--object-size must be at least one byte"
    );
    anyhow::ensure!(
        args.segment_size.0 > 0,
        "--segment-size must be at least one byte"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.repair_workers > 0,
        "--repair-workers must be at least 1"
    );
    Codec::new(usize::from(args.k), usize::from(args.m)).context("the code")?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("cairn-bench-repair-{}", std::process::id())),
    };
    let cleanup = args.dir.is_none();
    let bw = args.bandwidth.0;
    println!(
        "cairn-bench repair: {} nodes, {}+{}, {} in objects of {} ({} segments), repair \
         bandwidth {}, {} workers, {} jobs at once, data in {}",
        args.nodes,
        args.k,
        args.m,
        args.data,
        args.object_size,
        args.segment_size,
        if bw == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", args.bandwidth)
        },
        args.repair_workers,
        args.concurrency,
        dir.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(measure(&args, &dir));
    drop(runtime);
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = result?;

    let secs = |d: Duration| d.as_secs_f64();
    let round = |x: f64, places: i32| {
        let scale = 10f64.powi(places);
        (x * scale).round() / scale
    };
    // With no budget there is no ideal to compare with.
    let over_bw = |bytes: u64| (bw > 0).then(|| bytes as f64 / bw as f64);
    let ideal_x = over_bw(r.node_bytes);
    let ideal_moved = over_bw(r.traffic_bytes);
    let ratio = ideal_moved.map(|ideal| secs(r.repair) / ideal.max(1e-9));
    let ratio_x = ideal_x.map(|ideal| secs(r.repair) / ideal.max(1e-9));
    let in_flight = r.job_seconds / secs(r.rebuilt).max(1e-9);
    let per_job = r.job_seconds / r.moved_shards.max(1) as f64;
    let traffic_rate = r.traffic_bytes as f64 / secs(r.rebuilt).max(1e-9);
    let mib = |bytes: f64| bytes / (1u64 << 20) as f64;
    let show = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));

    println!("{:<52} {:>14}", "measurement", "value");
    let row = |name: &str, value: String| println!("{name:<52} {value:>14}");
    row(
        "upload through the data path (MiB/s)",
        format!("{:.1}", mib(args.data.0 as f64) / secs(r.upload).max(1e-9)),
    );
    row(
        "objects / segments stored",
        format!("{} / {}", r.objects, r.segments),
    );
    row("stopped node: shards", r.node_shards.to_string());
    row(
        "stopped node: bytes X (MiB)",
        format!("{:.1}", mib(r.node_bytes as f64)),
    );
    row(
        "marked lost after (s)",
        format!("{:.2}", secs(r.lost_after)),
    );
    row(
        "first repair committed, from lost (s)",
        format!("{:.2}", secs(r.first_repair)),
    );
    row(
        "last repair committed, from lost (s)",
        format!("{:.2}", secs(r.rebuilt)),
    );
    row(
        "full margin in the survey, from lost (s)",
        format!("{:.2}", secs(r.repair)),
    );
    row(
        "rebuilt (status moved.repair): shards / MiB",
        format!("{} / {:.1}", r.moved_shards, mib(r.moved_bytes as f64)),
    );
    row(
        "repair traffic, (k + 1)·X (MiB)",
        format!("{:.1}", mib(r.traffic_bytes as f64)),
    );
    row(
        "repair traffic ÷ time to last commit (MiB/s)",
        format!("{:.1}", mib(traffic_rate)),
    );
    row("ideal X / bandwidth (s)", show(ideal_x));
    row("ideal (k + 1)·X / bandwidth (s)", show(ideal_moved));
    row("measured ÷ ideal (k + 1)·X / bandwidth", show(ratio));
    row("measured ÷ ideal X / bandwidth", show(ratio_x));
    row("mean repair jobs out at once", format!("{in_flight:.2}"));
    row("mean time a job is out (s)", format!("{per_job:.3}"));

    let json = serde_json::json!({
        "nodes": args.nodes,
        "k": args.k,
        "m": args.m,
        "data_bytes": args.data.0,
        "object_bytes": args.object_size.0,
        "segment_bytes": args.segment_size.0,
        "segments": r.segments,
        "repair_workers": args.repair_workers,
        "repair_concurrency": args.concurrency,
        "bandwidth_bytes_s": bw,
        "upload_mib_s": round(mib(args.data.0 as f64) / secs(r.upload).max(1e-9), 1),
        "node_shards": r.node_shards,
        "node_bytes": r.node_bytes,
        "lost_after_s": round(secs(r.lost_after), 3),
        "first_repair_s": round(secs(r.first_repair), 3),
        "rebuilt_s": round(secs(r.rebuilt), 3),
        "repair_s": round(secs(r.repair), 3),
        "moved_shards": r.moved_shards,
        "moved_bytes": r.moved_bytes,
        "traffic_bytes": r.traffic_bytes,
        "traffic_mib_s": round(mib(traffic_rate), 1),
        "ideal_s_x_over_bw": ideal_x.map(|x| round(x, 3)),
        "ideal_s_moved_over_bw": ideal_moved.map(|x| round(x, 3)),
        "ratio": ratio.map(|x| round(x, 3)),
        "ratio_x": ratio_x.map(|x| round(x, 3)),
        "mean_jobs_in_flight": round(in_flight, 2),
        "mean_job_s": round(per_job, 3),
    });
    println!("{json}");
    Ok(())
}

/// Starts the cluster, fills it, stops the fullest node and times the repair.
async fn measure(args: &RepairBenchArgs, dir: &Path) -> anyhow::Result<Report> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = CoordinatorConfig {
        data_dir: dir.join("coordinator"),
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        default_k: args.k,
        default_m: args.m,
        suspect_after_secs: SUSPECT_AFTER_SECS,
        lost_after_secs: LOST_AFTER_SECS,
        repair_interval_ms: REPAIR_INTERVAL_MS,
        repair_concurrency: args.concurrency,
        repair_bandwidth: args.bandwidth,
        // Rebalancing moves would share the budget and the queue with the repair measured.
        rebalance_threshold_permille: 0,
        // Collection takes inventories and deletes replaced shards; an hour between rounds
        // keeps its traffic out of the measurement (it has nothing to do that repair needs).
        gc_interval_ms: 3_600_000,
        gc_delay_secs: 3_600,
        orphan_delay_secs: 86_400,
        ..CoordinatorConfig::default()
    };
    let coordinator = cairn_coordinator::daemon::start(config, true, None)
        .await
        .context("starting the coordinator")?;
    coordinator
        .raft
        .wait(Some(Duration::from_secs(30)))
        .current_leader(coordinator.id, "this member leads")
        .await
        .context("the coordinator did not become leader")?;
    let token = match &coordinator.new_token {
        Some(token) => token.clone(),
        None => match std::env::var("CAIRN_ADMIN_TOKEN") {
            Ok(token) => token,
            Err(_) => std::fs::read_to_string(
                dir.join("coordinator")
                    .join(cairn_coordinator::daemon::TOKEN_FILE),
            )
            .context("reading the admin token")?
            .trim()
            .to_string(),
        },
    };

    // Capacity is a quota, not disk taken. A large one keeps every node's utilisation low
    // and alike, so placement weights stay even and nothing driven by uneven utilisation
    // moves shards around the measurement.
    let capacity = ByteSize(1 << 40);
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let config = NodeConfig {
            data_dir: dir.join(format!("node-{i}")),
            listen: "127.0.0.1:0".parse()?,
            capacity,
            org: format!("bench-org-{i}"),
            site: format!("bench-site-{i}"),
            heartbeat_interval_ms: HEARTBEAT_MS,
            // The scrub would compete with repair for the disk and the two cores.
            scrub_rate: ByteSize(0),
            join: Some(
                coordinator
                    .invite(&format!("bench-org-{i}"))
                    .await
                    .map_err(anyhow::Error::msg)?,
            ),
            ..NodeConfig::default()
        };
        let node = cairn_node::daemon::start(config)
            .await
            .with_context(|| format!("starting node {i}"))?;
        nodes.push(node);
    }

    // The gateway's key is made first and registered before it starts, so its repair
    // workers are welcome from their first ask instead of backing off.
    let gateway_dir = dir.join("gateway");
    std::fs::create_dir_all(&gateway_dir)?;
    let (gateway_key, _) =
        SecretKey::load_or_create(&gateway_dir.join(cairn_gateway::daemon::KEY_FILE))
            .context("gateway key")?;
    register_gateway(&coordinator, &gateway_key, "bench-repair").await?;
    let gateway = cairn_gateway::daemon::start(GatewayConfig {
        data_dir: gateway_dir,
        listen: "127.0.0.1:0".parse()?,
        coordinators: vec![coordinator.quic_addr.to_string()],
        coordinator_key: coordinator.key.to_string(),
        repair_workers: args.repair_workers,
        ..GatewayConfig::default()
    })
    .await
    .map_err(|err| anyhow::anyhow!("starting the gateway: {err}"))?;

    commit(
        &coordinator,
        Command::CreateBucket {
            bucket: Bucket {
                name: BUCKET.into(),
                created_ms: unix_now_ms(),
                public_read: false,
                mode: BucketMode::Plain,
                erasure: ErasureProfile {
                    k: args.k,
                    m: args.m,
                    segment_size: args.segment_size.0,
                },
                // One organisation may go: the loss measured here.
                failure_tolerance: 1,
            },
        },
    )
    .await?;

    let result = fill_and_break(args, &coordinator, &mut nodes, &token).await;
    gateway.shutdown();
    for node in nodes {
        node.shutdown().await;
    }
    coordinator.shutdown().await;
    result
}

/// Uploads the objects, stops the fullest node and waits for full margin.
async fn fill_and_break(
    args: &RepairBenchArgs,
    coordinator: &RunningCoordinator,
    nodes: &mut Vec<RunningNode>,
    token: &str,
) -> anyhow::Result<Report> {
    let loader = SecretKey::generate();
    register_gateway(coordinator, &loader, "bench-loader").await?;
    let started = Instant::now();
    let objects = upload(args, coordinator, nodes, &loader).await?;
    let upload = started.elapsed();

    let status = Status::new(coordinator.admin_addr, token);
    let segments = placed_by_node(&coordinator.catalog)?.segments;
    // Start from a survey that has seen every object with no work queued or out, so the
    // placement read next is final and "full margin" later is news.
    let settled = Instant::now();
    loop {
        let view = status.fetch().await?;
        if view.durability.as_ref().is_some_and(|d| {
            d.segments == segments && d.repair_queue == 0 && d.repairs_in_progress == 0
        }) {
            break;
        }
        anyhow::ensure!(
            settled.elapsed() < Duration::from_secs(60),
            "the coordinator's survey never settled on the {segments} segments uploaded"
        );
        tokio::time::sleep(POLL).await;
    }
    let placed = placed_by_node(&coordinator.catalog)?;
    let (victim, (node_shards, node_bytes)) = placed
        .by_node
        .iter()
        .max_by_key(|(_, (_, bytes))| *bytes)
        .map(|(id, counts)| (*id, *counts))
        .context("no shard was placed")?;
    // Each segment held one shard there, so rebuilding it reads k and writes one.
    let traffic_bytes = node_bytes * (u64::from(args.k) + 1);

    let (moved_before, bytes_before) = coordinator.catalog.moved(MoveReason::Repair)?;

    let index = nodes
        .iter()
        .position(|n| n.id == victim)
        .context("the fullest node is not one of ours")?;
    let stopped = nodes.remove(index);
    eprintln!(
        "stopping node {victim}: {node_shards} shards, {}",
        ByteSize(node_bytes)
    );
    let t0 = Instant::now();
    // Its heartbeats stop at once; closing its connections may take a moment, which must
    // not delay the clock.
    let stopping = tokio::spawn(stopped.shutdown());

    let bar = indicatif::ProgressBar::new(node_shards).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} shards rebuilt, {elapsed} elapsed",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("waiting for the node to be lost");
    // Ten times the ideal is far past anything a working repair takes; without a budget,
    // ten minutes.
    let limit = Duration::from_secs(120)
        + match args.bandwidth.0 {
            0 => Duration::from_secs(600),
            bw => Duration::from_secs_f64(traffic_bytes as f64 / bw as f64 * 10.0),
        };
    let mut lost: Option<(Instant, u64)> = None;
    let mut first_repair = None;
    let mut rebuilt: Option<(Instant, u64)> = None;
    let mut job_seconds = 0.0;
    let mut last_sample = Instant::now();
    let done = loop {
        anyhow::ensure!(
            t0.elapsed() < limit,
            "repair did not finish within {limit:?} (lost: {}, rebuilt {} of {node_shards} shards)",
            lost.is_some(),
            coordinator.catalog.moved(MoveReason::Repair)?.0 - moved_before
        );
        tokio::time::sleep(POLL).await;
        let Some((lost_at, lost_ms)) = lost else {
            let state = coordinator.catalog.node(&victim)?.map(|n| n.state);
            if state == Some(NodeState::Lost) {
                lost = Some((Instant::now(), unix_now_ms()));
                last_sample = Instant::now();
                bar.set_message("rebuilding");
            }
            continue;
        };
        // The commit counter is in the catalog: read in-process, it dates each commit to
        // within one poll.
        let (moved, _) = coordinator.catalog.moved(MoveReason::Repair)?;
        let moved = moved - moved_before;
        bar.set_position(moved);
        if moved > 0 && first_repair.is_none() {
            first_repair = Some(lost_at.elapsed());
        }
        if moved >= node_shards && rebuilt.is_none() {
            rebuilt = Some((Instant::now(), unix_now_ms()));
        }
        let view = status.fetch().await?;
        let now = Instant::now();
        if let Some(d) = &view.durability
            && rebuilt.is_none()
        {
            job_seconds += d.repairs_in_progress as f64 * (now - last_sample).as_secs_f64();
        }
        last_sample = now;
        let full = view.durability.as_ref().is_some_and(|d| {
            let everything_full = d.segments_by_margin.len() == 1
                && d.segments_by_margin.get(&i64::from(args.m)) == Some(&segments);
            everything_full
                && d.repair_queue == 0
                && d.repairs_in_progress == 0
                && d.surveyed_ms > lost_ms
                && rebuilt.is_some_and(|(_, at_ms)| d.surveyed_ms >= at_ms)
        });
        if let (true, Some((rebuilt_at, _))) = (full, rebuilt) {
            break (lost_at, rebuilt_at, now);
        }
    };
    bar.finish_and_clear();
    let _ = stopping.await;
    let (lost_at, rebuilt_at, full_at) = done;
    let (moved_after, bytes_after) = coordinator.catalog.moved(MoveReason::Repair)?;
    Ok(Report {
        upload,
        objects,
        segments,
        node_shards,
        node_bytes,
        lost_after: lost_at - t0,
        first_repair: first_repair.unwrap_or_default(),
        rebuilt: rebuilt_at - lost_at,
        repair: full_at - lost_at,
        moved_shards: moved_after - moved_before,
        moved_bytes: bytes_after - bytes_before,
        traffic_bytes,
        job_seconds,
    })
}

/// Writes `--data` bytes of pseudo-random objects, `UPLOADS_IN_FLIGHT` at a time, and
/// returns how many objects it made.
async fn upload(
    args: &RepairBenchArgs,
    coordinator: &RunningCoordinator,
    nodes: &[RunningNode],
    key: &SecretKey,
) -> anyhow::Result<u64> {
    let endpoint = client_endpoint("127.0.0.1:0".parse()?, key)?;
    let client = Arc::new(CoordinatorClient::new(
        endpoint.clone(),
        key.clone(),
        coordinator.key,
        vec![coordinator.quic_addr.to_string()],
    ));
    // One client per node, kept for the whole upload so each keeps its connection.
    let node_clients: Arc<HashMap<NodeId, Arc<NodeClient>>> = Arc::new(
        nodes
            .iter()
            .map(|n| {
                let client = NodeClient::new(endpoint.clone(), key.clone(), n.quic_addr, n.id);
                (n.id, Arc::new(client))
            })
            .collect(),
    );
    let codec = Codec::new(usize::from(args.k), usize::from(args.m))?;
    let total = args.data.0;
    let object_size = args.object_size.0;
    let objects = total.div_ceil(object_size);
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bar:40} {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..UPLOADS_IN_FLIGHT.min(objects) {
        let (client, node_clients, next, bar) = (
            client.clone(),
            node_clients.clone(),
            next.clone(),
            bar.clone(),
        );
        let segment_size = args.segment_size.0;
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= objects {
                    return anyhow::Ok(());
                }
                let size = object_size.min(total - n * object_size);
                let object = Object {
                    key: format!("object-{n:06}"),
                    size,
                    seed: n + 1,
                };
                put_object(&client, &node_clients, codec, segment_size, &object, &bar).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    bar.finish_and_clear();
    Ok(objects)
}

/// One object to upload: its bytes are made from `seed` segment by segment.
struct Object {
    key: String,
    size: u64,
    seed: u64,
}

/// Stores one object segment by segment the way the gateway's `write_body` does (encode,
/// place, send every shard to its node under the coordinator's order), then commits it
/// with the receipts. Any failure fails the bench: a healthy loopback cluster has none.
async fn put_object(
    client: &CoordinatorClient,
    node_clients: &HashMap<NodeId, Arc<NodeClient>>,
    codec: Codec,
    segment_size: u64,
    object: &Object,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut hasher = blake3::Hasher::new();
    let mut segments = Vec::new();
    let mut offset = 0u64;
    let mut index = 0u64;
    while offset < object.size {
        let len = segment_size.min(object.size - offset);
        let data = pseudo_random(
            usize::try_from(len).context("segment too large")?,
            object.seed.wrapping_mul(1 << 20) + index,
        );
        hasher.update(&data);
        // Encoding is CPU work: off the async threads, as in the gateway.
        let segment =
            tokio::task::spawn_blocking(move || codec.encode_segment(index, offset, data)).await?;
        let request = GatewayRequest::Place {
            bucket: BUCKET.into(),
            shard_size: segment.shard_len() as u64,
            roots: segment.roots().to_vec(),
            avoid: Vec::new(),
        };
        let placed = match client.call(&request).await? {
            GatewayResponse::Placed(placed) if placed.len() == segment.shard_count() => placed,
            other => anyhow::bail!("coordinator answered a placement with {other:?}"),
        };
        let segment = Arc::new(segment);
        let mut sends = tokio::task::JoinSet::new();
        for (i, shard) in placed.into_iter().enumerate() {
            let node = shard.order.order.node;
            let node_client = node_clients
                .get(&node)
                .cloned()
                .with_context(|| format!("placed on an unknown node {node}"))?;
            let segment = segment.clone();
            sends.spawn(async move {
                let bytes = segment.shard(i).context("shard index out of range")?;
                let receipt = node_client
                    .put_shard(&shard.order, bytes)
                    .await
                    .with_context(|| format!("storing shard {i} on {node}"))?;
                anyhow::Ok((
                    i,
                    cairn_client::gateway_rpc::StoredShard {
                        order: shard.order,
                        receipt,
                    },
                ))
            });
        }
        let mut shards = Vec::with_capacity(segment.shard_count());
        while let Some(joined) = sends.join_next().await {
            shards.push(joined??);
        }
        shards.sort_by_key(|(i, _)| *i);
        segments.push(NewSegment {
            len,
            shards: shards.into_iter().map(|(_, stored)| stored).collect(),
            mask: segment.mask(),
        });
        offset += len;
        index += 1;
        bar.inc(len);
    }
    let request = GatewayRequest::Put {
        bucket: BUCKET.into(),
        key: object.key.clone(),
        condition: None,
        object: NewObject {
            size: object.size,
            etag: format!("\"{}\"", &hasher.finalize().to_hex()[..32]),
            headers: cairn_client::records::ObjectHeaders::default(),
            body: NewBody::Segments(segments),
            acl: Default::default(),
            checksum: None,
        },
    };
    match client.call(&request).await? {
        GatewayResponse::Stored { .. } => Ok(()),
        other => anyhow::bail!("coordinator answered a commit with {other:?}"),
    }
}

/// Shards and their bytes placed on each node, from the catalog.
struct Placed {
    segments: u64,
    by_node: BTreeMap<NodeId, (u64, u64)>,
}

/// Walks the catalog: what each node holds is what losing it costs.
fn placed_by_node(catalog: &Catalog) -> anyhow::Result<Placed> {
    let mut placed = Placed {
        segments: 0,
        by_node: BTreeMap::new(),
    };
    catalog.for_each_object(|_, _, object| {
        let ObjectBody::Segments { erasure, segments } = &object.body else {
            return true;
        };
        let Ok(codec) = Codec::new(usize::from(erasure.k), usize::from(erasure.m)) else {
            return true;
        };
        for segment in segments {
            placed.segments += 1;
            let shard_len = codec.shard_len(segment.len);
            for shard in &segment.shards {
                let entry = placed.by_node.entry(shard.node).or_default();
                entry.0 += 1;
                entry.1 += shard_len;
            }
        }
        true
    })?;
    Ok(placed)
}

/// The admin API's `/v1/status`: the survey and the repair queue as an operator sees them.
struct Status {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

impl Status {
    fn new(admin: std::net::SocketAddr, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Self {
            agent,
            url: format!("http://{admin}/v1/status"),
            auth: format!("Bearer {token}"),
        }
    }

    /// One status read; ureq blocks, so it runs on the blocking pool.
    async fn fetch(&self) -> anyhow::Result<StatusView> {
        let (agent, url, auth) = (self.agent.clone(), self.url.clone(), self.auth.clone());
        tokio::task::spawn_blocking(move || {
            let mut response = agent
                .get(&url)
                .header("Authorization", &auth)
                .call()
                .with_context(|| format!("GET {url}"))?;
            response
                .body_mut()
                .read_json::<StatusView>()
                .context("reading the status")
        })
        .await?
    }
}

/// Registers a gateway key, as `cairn admin gateway add` would.
async fn register_gateway(
    coordinator: &RunningCoordinator,
    key: &SecretKey,
    name: &str,
) -> anyhow::Result<()> {
    commit(
        coordinator,
        Command::RegisterGateway {
            gateway: GatewayRecord {
                key: key.public(),
                name: name.into(),
                created_ms: unix_now_ms(),
            },
        },
    )
    .await
}

/// Commits one command through the in-process coordinator; a refusal is an error.
async fn commit(coordinator: &RunningCoordinator, command: Command) -> anyhow::Result<()> {
    coordinator
        .commit(command)
        .await
        .map(drop)
        .map_err(anyhow::Error::msg)
}
