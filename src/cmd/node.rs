//! `cairn node`: run a storage node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use cairn_node::config::NodeConfig;
use cairn_proto::bytesize::ByteSize;
use clap::Args;
use serde::Serialize;

/// Options of `cairn node`. Every field of the config file has a flag of the same name
/// (with dashes); a flag overrides the file.
#[derive(Args, Serialize)]
pub struct NodeArgs {
    /// TOML config file (fields as the flags below, with underscores).
    #[arg(long, short)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory for shards, their index and the node's identity key [default: cairn-node].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// QUIC address to serve shards on [default: 0.0.0.0:7400].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Address gateways should dial, if not the listen address (e.g. behind NAT).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
    /// A coordinator member's address for heartbeats; repeat for each member.
    #[arg(long = "coordinator")]
    #[serde(rename = "coordinators", skip_serializing_if = "Vec::is_empty")]
    coordinators: Vec<SocketAddr>,
    /// The coordinator's public key; the node obeys only orders it signed.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    coordinator_key: Option<String>,
    /// Disk space offered for shards, e.g. 500GiB [default: 100GiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<ByteSize>,
    /// Cap on bytes per second sent, e.g. 20MiB; 0 for none [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_limit: Option<ByteSize>,
    /// Cap on bytes per second received; 0 for none [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    download_limit: Option<ByteSize>,
    /// Organisation running this node: placement never puts too many shards of one object
    /// in one organisation.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<String>,
    /// Site or region of this node.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    /// Address for Prometheus metrics at /metrics and the status page at / [default: off].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    /// Milliseconds between heartbeats [default: 5000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval_ms: Option<u64>,
    /// Bytes per second the background scrub re-hashes; 0 turns it off [default: 8MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    scrub_rate: Option<ByteSize>,
    /// Milliseconds the scrub rests after each full pass [default: 600000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    scrub_pause_ms: Option<u64>,
    /// Largest shard accepted [default: 256MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_shard_size: Option<ByteSize>,
    /// Join token from `cairn admin invite`: sets the coordinators and their key, and
    /// registers this node on its first start.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    join: Option<String>,
    /// Uploads handled at once [default: 16].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_puts: Option<usize>,
    /// Milliseconds an answer may wait on a reader that stopped reading before its stream
    /// is reset and the bytes held for it let go [default: 30000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    send_stall_timeout_ms: Option<u64>,
    #[command(subcommand)]
    #[serde(skip)]
    action: Option<NodeAction>,
}

/// What to do instead of running the node.
#[derive(clap::Subcommand, Clone)]
pub enum NodeAction {
    /// Ask the cluster to let this node leave (with the same config it runs with): it
    /// turns draining, its shards are moved to other nodes while it keeps serving them,
    /// and it is gone, holding nothing, once nothing depends on it. Keep it running until
    /// then (`cairn admin nodes` shows what is still placed on it).
    Leave,
    /// Show what the running node holds and serves, how its audits and heartbeats went:
    /// read from its metrics listener (`--metrics`, or `metrics_listen` of the config it
    /// runs with). The same figures are on the listener's page at `/`.
    Status {
        /// The node's metrics listener, e.g. http://127.0.0.1:9100 [default: from the
        /// config's metrics_listen].
        #[arg(long)]
        metrics: Option<String>,
    },
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config: NodeConfig = super::merge_config(args.config.as_deref(), &args)?;
    if let Some(NodeAction::Status { metrics }) = &args.action {
        return status(metrics.as_deref(), &config);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(NodeAction::Leave) = args.action {
        return runtime.block_on(async {
            cairn_node::daemon::leave(config).await?;
            println!(
                "leaving: this node is draining; its shards are being moved elsewhere and it \
                 will be gone once nothing depends on it (keep it running until then)"
            );
            anyhow::Ok(())
        });
    }
    runtime.block_on(async {
        let node = cairn_node::daemon::start(config).await?;
        // Plain lines on stdout for people and scripts; logs go to stderr.
        println!("node id: {}", node.id);
        println!("listening on {}", node.quic_addr);
        if let Some(addr) = node.metrics_addr {
            println!("metrics on http://{addr}/metrics");
            println!("status page on http://{addr}/");
        }
        super::shutdown_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        anyhow::Ok(())
    })
}

/// `cairn node status`: fetches the node's metrics and prints them as a status.
fn status(metrics: Option<&str>, config: &NodeConfig) -> anyhow::Result<()> {
    let base = match metrics {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let addr = config.metrics_listen.with_context(|| {
                "the node serves no metrics (metrics_listen is not set): pass --metrics URL, \
                 or --config with the node's config file"
            })?;
            anyhow::ensure!(
                addr.port() != 0,
                "metrics_listen {addr} picks a free port at start: pass the address the node \
                 printed (`metrics on …`) as --metrics"
            );
            format!("http://{}", reachable(addr))
        }
    };
    let url = format!("{base}/metrics");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .new_agent();
    let text = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot read the node's metrics at {url} (is it running?)"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    let status = cairn_node::status::NodeStatus::from_metrics(&text);
    anyhow::ensure!(
        status.is_node(),
        "{url} does not serve a Cairn node's metrics"
    );
    print!("{}", status.to_text(cairn_node::metrics::unix_now()));
    Ok(())
}

/// Where to reach a listener bound to `addr` from this machine: a wildcard address is
/// reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}
