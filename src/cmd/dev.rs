//! `cairn dev`: a whole cluster in one process on loopback, for trying Cairn out.
//!
//! One coordinator member, several storage nodes (each its own "organisation" so placement
//! spreads as in production), one gateway, a public bucket and an access key, with all data
//! under one folder. Ports are fixed so the cluster comes back at the same addresses (nodes'
//! addresses are in the catalog) when it is started again on the same folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_coordinator::catalog::Command;
use cairn_coordinator::catalog::model::{
    AccessKey, Bucket, BucketMode, ErasureProfile, GatewayRecord,
};
use cairn_coordinator::config::CoordinatorConfig;
use cairn_coordinator::daemon::RunningCoordinator;
use cairn_gateway::config::GatewayConfig;
use cairn_node::config::NodeConfig;
use cairn_proto::bytesize::ByteSize;
use cairn_proto::order::unix_now_ms;
use clap::Args;

/// Options of `cairn dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Folder for all of the cluster's data; a second start on it resumes the cluster.
    #[arg(long, default_value = "cairn-dev")]
    data: PathBuf,
    /// Storage nodes to run.
    #[arg(long, default_value_t = 6)]
    nodes: u16,
    /// Data shards per segment of the bucket it creates.
    #[arg(long, default_value_t = 4)]
    k: u16,
    /// Parity shards per segment of the bucket it creates.
    #[arg(long, default_value_t = 2)]
    m: u16,
    /// S3 address of the gateway.
    #[arg(long, default_value = "127.0.0.1:9000")]
    s3_listen: SocketAddr,
    /// Admin API address; the coordinator's QUIC port is the next one, node i's the one
    /// `2 + i` after it.
    #[arg(long, default_value = "127.0.0.1:9001")]
    admin_listen: SocketAddr,
    /// Name of the public-read bucket it creates.
    #[arg(long, default_value = "cache")]
    bucket: String,
    /// Shorten every interval to seconds (heartbeats 0.2 s, suspect after 2 s, lost after
    /// 5 s, durability surveys every 0.5 s, garbage deleted after 2 s, orphans after 30 s,
    /// audit rounds every 0.5 s with a 1 s deadline, nodes vetted after 5 passed audits)
    /// to watch failure, repair, collection and disqualification happen.
    #[arg(long)]
    fast_timers: bool,
}

/// Runs the cluster until Ctrl-C.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= args.k + args.m,
        "--nodes must be at least k + m ({} + {})",
        args.k,
        args.m
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(cluster(args))
}

fn port(base: SocketAddr, offset: u16) -> SocketAddr {
    SocketAddr::new(base.ip(), base.port().wrapping_add(offset))
}

async fn cluster(args: DevArgs) -> anyhow::Result<()> {
    let dir = &args.data;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let quic = port(args.admin_listen, 1);
    let config = CoordinatorConfig {
        data_dir: dir.join("coordinator"),
        listen: quic,
        admin_listen: args.admin_listen,
        default_k: args.k,
        default_m: args.m,
        // Short enough to watch a stopped node turn suspect while trying things out.
        suspect_after_secs: if args.fast_timers { 2 } else { 15 },
        lost_after_secs: if args.fast_timers { 5 } else { 120 },
        repair_interval_ms: if args.fast_timers { 500 } else { 5_000 },
        gc_interval_ms: if args.fast_timers { 1_000 } else { 30_000 },
        gc_delay_secs: if args.fast_timers { 2 } else { 300 },
        orphan_delay_secs: if args.fast_timers { 30 } else { 3_600 },
        // With fast timers a round every half second and a 1 s deadline: a node that
        // fails every audit is disqualified within 10 rounds (~5 s), one that never
        // answers in time within 10 × (1 + 3 retries) rounds.
        audit_interval_ms: if args.fast_timers { 500 } else { 10_000 },
        audit_deadline_ms: if args.fast_timers { 1_000 } else { 10_000 },
        vetting_audits: if args.fast_timers { 5 } else { 20 },
        ..CoordinatorConfig::default()
    };
    let heartbeat_interval_ms = if args.fast_timers { 200 } else { 1_000 };
    let coordinator = cairn_coordinator::daemon::start(config, true, None)
        .await
        .context("starting the coordinator")?;
    coordinator
        .raft
        .wait(Some(std::time::Duration::from_secs(30)))
        .current_leader(coordinator.id, "this member leads")
        .await
        .context("the coordinator did not become leader")?;

    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let data_dir = dir.join(format!("node-{i}"));
        let joined = data_dir.join(cairn_node::daemon::JOINED_FILE).exists();
        let org = format!("dev-org-{i}");
        let mut config = NodeConfig {
            data_dir,
            listen: port(args.admin_listen, 2 + i),
            capacity: ByteSize(10 << 30),
            org: org.clone(),
            site: format!("dev-site-{}", i % 3),
            heartbeat_interval_ms,
            // Metrics and the node's status page on any free port: nothing records it, so
            // unlike the QUIC port it need not survive a restart.
            metrics_listen: Some(SocketAddr::new(args.admin_listen.ip(), 0)),
            ..NodeConfig::default()
        };
        if joined {
            config.coordinators = vec![quic];
            config.coordinator_key = Some(coordinator.key);
        } else {
            config.join = Some(coordinator.invite(&org).await.map_err(anyhow::Error::msg)?);
        }
        let node = cairn_node::daemon::start(config)
            .await
            .with_context(|| format!("starting node {i}"))?;
        nodes.push(node);
    }
    // After a restart on other ports every node has moved: the banner waits until the
    // coordinator has reached each one where it now listens (its heartbeats say so).
    for node in &nodes {
        let addr = node.quic_addr.to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while coordinator.catalog.node(&node.id)?.map(|n| n.addr) != Some(addr.clone()) {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node {} was not found at {addr}",
                node.id
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    let gateway = cairn_gateway::daemon::start(GatewayConfig {
        data_dir: dir.join("gateway"),
        listen: args.s3_listen,
        coordinators: vec![quic.to_string()],
        coordinator_key: coordinator.key.to_string(),
        ..GatewayConfig::default()
    })
    .await
    .map_err(|err| anyhow::anyhow!("starting the gateway: {err}"))?;
    commit(
        &coordinator,
        Command::RegisterGateway {
            gateway: GatewayRecord {
                key: gateway.key,
                name: "dev".into(),
                created_ms: unix_now_ms(),
            },
        },
    )
    .await?;
    let bucket = Bucket {
        name: args.bucket.clone(),
        created_ms: unix_now_ms(),
        public_read: true,
        mode: BucketMode::Plain,
        erasure: ErasureProfile {
            k: args.k,
            m: args.m,
            segment_size: ErasureProfile::PRODUCTION.segment_size,
        },
        failure_tolerance: 2,
    };
    if coordinator.catalog.bucket(&args.bucket)?.is_none() {
        commit(&coordinator, Command::CreateBucket { bucket }).await?;
    }
    let (id, secret) = access_key(&coordinator, dir).await?;

    // Named, not shown: whoever reads the terminal (or a log of it) should not get the
    // admin token for free.
    let token_file = dir.join("coordinator").join("admin.token");
    let admin_token = if token_file.exists() {
        format!("$(cat {})", token_file.display())
    } else {
        "$CAIRN_ADMIN_TOKEN".to_string()
    };
    println!(
        "Cairn dev cluster: 1 coordinator, {} nodes, 1 gateway, data in {}",
        nodes.len(),
        dir.display()
    );
    println!();
    println!("S3 endpoint: http://{}", gateway.addr);
    println!("access key id: {id}");
    println!("secret access key: {secret}");
    println!(
        "bucket: {} (public read, {}+{})",
        args.bucket, args.k, args.m
    );
    println!(
        "admin API: http://{} (token in {}/coordinator/admin.token, or CAIRN_ADMIN_TOKEN)",
        coordinator.admin_addr,
        dir.display()
    );
    println!("status page: http://{}/", coordinator.admin_addr);
    let pages: Vec<String> = nodes
        .iter()
        .filter_map(|node| node.metrics_addr)
        .map(|addr| format!("http://{addr}/"))
        .collect();
    println!("node pages: {}", pages.join(" "));
    println!();
    println!("Try:");
    println!("  export AWS_ACCESS_KEY_ID={id} AWS_SECRET_ACCESS_KEY={secret}");
    println!(
        "  aws --endpoint-url http://{} s3 cp README.md s3://{}/",
        gateway.addr, args.bucket
    );
    println!("  curl http://{}/{}/README.md", gateway.addr, args.bucket);
    println!(
        "  CAIRN_ADMIN_TOKEN={admin_token} cairn admin --endpoint http://{} nodes",
        coordinator.admin_addr
    );
    println!();
    println!("Ctrl-C stops it; `cairn dev` on the same folder resumes it.");
    super::shutdown_signal().await;
    gateway.shutdown();
    for node in nodes {
        node.shutdown().await;
    }
    coordinator.shutdown().await;
    Ok(())
}

/// The dev access key: `CAIRN_ACCESS_KEY` / `CAIRN_SECRET_KEY` when set, else made on the
/// first start and kept (0600) in the data folder; registered with the coordinator once.
async fn access_key(
    coordinator: &RunningCoordinator,
    dir: &Path,
) -> anyhow::Result<(String, String)> {
    let (id, secret) = match (
        std::env::var("CAIRN_ACCESS_KEY"),
        std::env::var("CAIRN_SECRET_KEY"),
    ) {
        (Ok(id), Ok(secret)) => {
            anyhow::ensure!(
                !id.is_empty() && secret.len() >= 8,
                "CAIRN_ACCESS_KEY must not be empty and CAIRN_SECRET_KEY must have at least 8 characters"
            );
            (id, secret)
        }
        _ => stored_or_new_key(&dir.join("access-key"))?,
    };
    if coordinator.catalog.access_key(&id)?.is_none() {
        commit(
            coordinator,
            Command::CreateAccessKey {
                key: AccessKey {
                    id: id.clone(),
                    secret: secret.clone(),
                    name: "cairn dev".into(),
                    created_ms: unix_now_ms(),
                    revoked: false,
                },
            },
        )
        .await?;
    }
    Ok((id, secret))
}

/// The key kept in `path`, or a new random one written there first.
fn stored_or_new_key(path: &Path) -> anyhow::Result<(String, String)> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Some((id, secret)) = text.trim().split_once(' ')
    {
        return Ok((id.to_string(), secret.to_string()));
    }
    let mut bytes = [0u8; 52];
    getrandom::fill(&mut bytes).context("no randomness for the access key")?;
    // 32 and 64 symbols divide 256, so the modulo keeps every symbol equally likely.
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbols = |bytes: &[u8], alphabet: &[u8]| -> String {
        bytes
            .iter()
            .map(|b| alphabet[*b as usize % alphabet.len()] as char)
            .collect()
    };
    let id = format!("CAIRNDEV{}", symbols(&bytes[..12], ID));
    let secret = symbols(&bytes[12..], SECRET);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{id} {secret}")?;
    file.sync_all()?;
    Ok((id, secret))
}

/// Commits one command through the in-process coordinator; a refusal is an error.
async fn commit(coordinator: &RunningCoordinator, command: Command) -> anyhow::Result<()> {
    coordinator
        .commit(command)
        .await
        .map(drop)
        .map_err(anyhow::Error::msg)
}
