//! `cairn coordinator`: run one member of the coordinator group.

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_coordinator::config::CoordinatorConfig;
use clap::Args;
use serde::Serialize;

/// Options of `cairn coordinator`. Every field of the config file has a flag of the same
/// name (with dashes); a flag overrides the file.
#[derive(Args, Serialize)]
pub struct CoordinatorArgs {
    /// TOML config file (fields as the flags below, with underscores).
    #[arg(long, short)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Form a new group with this member as its first voter (once, on the first member);
    /// creates the coordinator key if the data dir has none.
    #[arg(long)]
    #[serde(skip)]
    init: bool,
    /// Start the new group (with --init, on an empty data dir) from a catalog backup made
    /// by `cairn admin backup`.
    #[arg(long, requires = "init")]
    #[serde(skip)]
    restore: Option<PathBuf>,
    /// Directory for the Raft log, the catalog, the coordinator key and the admin token
    /// [default: cairn-coordinator]. A joining member needs a copy of coordinator.key here.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// The coordinator key's file [default: DATA_DIR/coordinator.key]. With --init it is
    /// created if missing; every other member needs a copy of the same key.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<PathBuf>,
    /// This member's Raft id, unique in the group [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// QUIC address for members, nodes and gateways [default: 0.0.0.0:7300].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// QUIC address others should dial, if not the listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
    /// HTTP address of the admin API, /metrics and /health [default: 127.0.0.1:7301].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<SocketAddr>,
    /// Admin address others should use, if not the admin listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_advertise: Option<String>,
    /// Milliseconds between leader heartbeats [default: 200].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_heartbeat_ms: Option<u64>,
    /// Milliseconds without a leader before an election [default: 1000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    election_timeout_ms: Option<u64>,
    /// Log entries between catalog snapshots [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_every: Option<u64>,
    /// Data shards per segment for new buckets [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_k: Option<u16>,
    /// Parity shards per segment for new buckets [default: 6].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_m: Option<u16>,
    /// Seconds without a heartbeat before the leader marks a node suspect; a new leader
    /// gives every node this long from its election [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    suspect_after_secs: Option<u64>,
    /// Seconds without a heartbeat before a suspect node is marked lost and its shards
    /// count as gone; must exceed --suspect-after-secs [default: 600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_after_secs: Option<u64>,
    /// Milliseconds between durability surveys, which refill the repair queue
    /// [default: 30000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_interval_ms: Option<u64>,
    /// Rebuild a segment with lost shards once its margin (shards left − k) is at most
    /// this [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_threshold: Option<u16>,
    /// Repair jobs out with gateways at once [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_concurrency: Option<usize>,
    /// Bytes per second repair may move across the cluster, e.g. 64MiB; 0 = no limit
    /// [default: 64MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_bandwidth: Option<cairn_proto::bytesize::ByteSize>,
    /// Seconds a repair job stays reserved for the gateway that took it [default: 600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_lease_secs: Option<u64>,
    /// Rebalance when the utilisation of nodes differs by more than this many thousandths
    /// of capacity; 0 never rebalances [default: 100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rebalance_threshold_permille: Option<u16>,
    /// Segments each durability round reads to check the spread rule, a slow pass over
    /// the whole catalog; 0 never checks [default: 1000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    spread_check_segments: Option<usize>,
    /// Milliseconds between garbage collection rounds, which also check node inventories
    /// against the catalog [default: 60000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    gc_interval_ms: Option<u64>,
    /// Seconds a replaced or deleted shard stays on its node before deletion, so reads in
    /// progress can finish [default: 3600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    gc_delay_secs: Option<u64>,
    /// Seconds a shard must be seen unreferenced before it is deleted as an orphan; put
    /// orders older than half of this cannot be committed [default: 86400].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    orphan_delay_secs: Option<u64>,
    /// Seconds a multipart upload may stay open before it is aborted and its parts are
    /// collected [default: 604800, seven days].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_expiry_secs: Option<u64>,
    /// Milliseconds between audit rounds; each challenges every live node for random
    /// slices of one random shard it holds; 0 turns audits off [default: 60000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_interval_ms: Option<u64>,
    /// Milliseconds a node has to answer an audit before it counts as missed
    /// [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_deadline_ms: Option<u64>,
    /// Later rounds that ask a missed audit again before it counts as failed, so a slow
    /// link is not taken for a lie [default: 3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_retries: Option<u32>,
    /// Forgetting factor of the audit score in thousandths: how much of the past each
    /// judgement keeps [default: 990].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    reputation_lambda_permille: Option<u16>,
    /// Disqualify a node whose audit score (0–1000) falls below this: no new work, its
    /// shards rebuilt elsewhere. With the default λ, three failures in a row, or a node
    /// failing 5 % of its audits within 220 of them (99 %) [default: 975].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    disqualify_below_permille: Option<u16>,
    /// Audits a new node must pass before it is active; until then it receives a small
    /// share of new shards [default: 20].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    vetting_audits: Option<u64>,
}

/// Runs a member until Ctrl-C or SIGTERM.
pub fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    let config: CoordinatorConfig = super::merge_config(args.config.as_deref(), &args)?;
    let data_dir = config.data_dir.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let member =
            cairn_coordinator::daemon::start(config, args.init, args.restore.as_deref()).await?;
        println!("coordinator key: {}", member.key);
        println!("member key: {}", member.member_key);
        println!("member {} serving on {}", member.id, member.quic_addr);
        println!("admin API on http://{}", member.admin_addr);
        // The token itself is never printed: output ends up in journald and CI logs.
        if member.new_token.is_some() {
            println!(
                "admin token written to {} (readable by this user only)",
                data_dir
                    .join(cairn_coordinator::daemon::TOKEN_FILE)
                    .display()
            );
        }
        super::shutdown_signal().await;
        tracing::info!("shutting down");
        member.shutdown().await;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use cairn_coordinator::config::CoordinatorConfig;

    /// The annotated example operators copy must stay a valid config that sets exactly
    /// the defaults it documents.
    #[test]
    fn the_example_config_parses_and_matches_the_defaults() {
        let text = include_str!("../../ops/coordinator.example.toml");
        let config: CoordinatorConfig = toml::from_str(text).expect("example parses");
        config.validate().expect("example is valid");
        let defaults = CoordinatorConfig::default();
        assert_eq!(config.audit_interval_ms, defaults.audit_interval_ms);
        assert_eq!(config.reputation_policy(), defaults.reputation_policy());
        assert_eq!(
            config.reputation_policy().failures_to_disqualify(),
            Some(3),
            "the example's comment says three"
        );
    }
}
