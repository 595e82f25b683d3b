//! `cairn gateway`: run an S3 gateway.

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_gateway::config::GatewayConfig;
use clap::Args;
use serde::Serialize;

/// Options of `cairn gateway`. Every field of the config file has a flag of the same name
/// (with dashes); a flag overrides the file.
#[derive(Args, Serialize)]
pub struct GatewayArgs {
    /// TOML config file (fields as the flags below, with underscores).
    #[arg(long, short)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory for the gateway's identity key [default: cairn-gateway].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// HTTP address of the S3 API, /metrics and /health [default: 0.0.0.0:7400].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// A coordinator member's QUIC address (host:port); repeat for each member.
    #[arg(long = "coordinator")]
    #[serde(rename = "coordinators", skip_serializing_if = "Vec::is_empty")]
    coordinators: Vec<String>,
    /// The coordinator's public key (see `cairn admin status`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    coordinator_key: Option<String>,
    /// Domain for virtual-host addressing: `<bucket>.<domain>` [default: path-style only].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    /// Bodies up to this many bytes live in the catalog, not on nodes [default: 4096].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_threshold: Option<usize>,
    /// Repair jobs done at once for the coordinator (each holds about three segments in
    /// memory); 0 leaves repair to other gateways [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_workers: Option<usize>,
    /// Milliseconds a client may take to send a request head, counted from the accept or
    /// the previous answer; also how long a connection may stay idle [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    header_timeout_ms: Option<u64>,
    /// Milliseconds a request body may go without a byte arriving before the request is
    /// answered 400 RequestTimeout and its connection closed [default: 60000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    body_idle_timeout_ms: Option<u64>,
    /// Milliseconds writing an answer may make no progress (the client reads nothing)
    /// before its connection is closed [default: 60000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    send_stall_timeout_ms: Option<u64>,
    /// Anonymous requests per second one client address may make on average; past it,
    /// 503 SlowDown; 0 for no limit. Requests signed with unknown keys or failing their
    /// signature count too; those signed with real keys are not limited [default: 20].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_rate: Option<u32>,
    /// Anonymous requests one client address may make at once [default: 100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_burst: Option<u32>,
    /// A proxy (address or address/prefix) whose X-Forwarded-For names the client; repeat
    /// for each [default: none: the connection's address is the client].
    #[arg(long = "trusted-proxy")]
    #[serde(rename = "trusted_proxies", skip_serializing_if = "Vec::is_empty")]
    trusted_proxies: Vec<String>,
}

/// Runs a gateway until Ctrl-C or SIGTERM.
pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let config: GatewayConfig = super::merge_config(args.config.as_deref(), &args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let gateway = cairn_gateway::daemon::start(config)
            .await
            .map_err(|err| anyhow::anyhow!(err))?;
        // Plain lines on stdout for people and scripts; logs go to stderr.
        println!("gateway key: {}", gateway.key);
        println!(
            "(register it once: cairn admin gateway add {})",
            gateway.key
        );
        println!("S3 on http://{}", gateway.addr);
        super::shutdown_signal().await;
        tracing::info!("shutting down");
        gateway.shutdown();
        anyhow::Ok(())
    })
}
