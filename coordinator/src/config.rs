//! [`CoordinatorConfig`]: what an operator sets for one coordinator member.

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_proto::bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// One member's configuration (TOML; every field is also a flag of `cairn coordinator`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Raft log, catalog, coordinator key and admin token live here.
    pub data_dir: PathBuf,
    /// This member's Raft id: unique in the group, never reused.
    pub id: u64,
    /// The coordinator key's file, if not `coordinator.key` in the data dir. Every member
    /// needs the same key; pointing them all at one mounted secret saves copying it.
    pub key_file: Option<PathBuf>,
    /// QUIC address for members, nodes and gateways.
    pub listen: SocketAddr,
    /// QUIC address others should dial, if not `listen`.
    pub advertise: Option<String>,
    /// HTTP address of the admin API, `/metrics` and `/health`.
    pub admin_listen: SocketAddr,
    /// Admin address others should use, if not `admin_listen`.
    pub admin_advertise: Option<String>,
    /// Milliseconds between leader heartbeats to members.
    pub raft_heartbeat_ms: u64,
    /// Milliseconds without a leader before a member stands for election (the timeout is
    /// drawn between this and twice this).
    pub election_timeout_ms: u64,
    /// Log entries between snapshots (after which older entries are purged).
    pub snapshot_every: u64,
    /// Data shards per segment for new buckets that do not say otherwise.
    pub default_k: u16,
    /// Parity shards per segment for new buckets that do not say otherwise.
    pub default_m: u16,
    /// Seconds a vetting or active node may go without a heartbeat reaching the leader
    /// before it is marked suspect (a new leader gives every node this long from its
    /// election).
    pub suspect_after_secs: u64,
    /// Seconds without a heartbeat after which a suspect node is marked lost and its
    /// shards count as gone.
    pub lost_after_secs: u64,
    /// Milliseconds between durability surveys of the catalog (each one refills the repair
    /// queue).
    pub repair_interval_ms: u64,
    /// A segment with lost shards is rebuilt once its margin (shards left − k) is at most
    /// this; below `m` it lets a segment ride out a single loss without traffic.
    pub repair_threshold: u16,
    /// Repair jobs out with gateways at once.
    pub repair_concurrency: usize,
    /// Bytes per second repair may move in the whole cluster (shards read plus written);
    /// 0 means no limit.
    pub repair_bandwidth: ByteSize,
    /// Seconds a repair job stays reserved for the gateway that took it.
    pub repair_lease_secs: u64,
    /// Move shards from the fullest to the emptiest nodes when their utilisation (bytes
    /// placed ÷ capacity) differs by more than this many thousandths; 0 never rebalances.
    pub rebalance_threshold_permille: u16,
    /// Segments the durability survey's background pass reads per round to check the
    /// spread rule (and cross-check the shards-by-node index): a full pass over `S`
    /// segments takes `S ÷ this` rounds. The default takes about 8 hours over 1 M segments
    /// at the default interval; 0 never checks the spread.
    pub spread_check_segments: usize,
    /// Milliseconds between garbage collection rounds (each also checks every node's
    /// inventory against the catalog).
    pub gc_interval_ms: u64,
    /// Seconds a replaced or deleted shard stays on its node before it is deleted, so
    /// reads that started before the change can finish.
    pub gc_delay_secs: u64,
    /// Seconds a shard must be seen unreferenced in a node's inventory before it is
    /// deleted as an orphan (an upload that never committed). Commits refuse put orders
    /// older than half of this, so nothing collected can still be committed.
    pub orphan_delay_secs: u64,
    /// Seconds a multipart upload may stay open: older ones are aborted and their parts
    /// collected, as an S3 lifecycle rule would (a forgotten upload otherwise holds its
    /// shards, and a drain of their nodes, for ever).
    pub upload_expiry_secs: u64,
    /// Milliseconds between audit rounds; each round challenges every live node holding
    /// data for random slices of one random shard it signed a receipt for. 0 never audits.
    pub audit_interval_ms: u64,
    /// Milliseconds a node has to answer an audit before the audit counts as missed.
    pub audit_deadline_ms: u64,
    /// A missed audit is asked again, the same challenge, in this many later rounds
    /// before it counts as failed (containment: a slow link is not a lie).
    pub audit_retries: u32,
    /// Forgetting factor of the audit score, in thousandths: the weight the past keeps at
    /// each judgement (Storj's λ).
    pub reputation_lambda_permille: u16,
    /// A node whose audit score (0–1000) falls below this is disqualified: refused new
    /// work, its shards counted lost and rebuilt elsewhere.
    pub disqualify_below_permille: u16,
    /// Audits a new node must pass before it is active; until then it gets a small share
    /// of new shards.
    pub vetting_audits: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cairn-coordinator"),
            id: 1,
            key_file: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 7300)),
            advertise: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7301)),
            admin_advertise: None,
            raft_heartbeat_ms: 200,
            election_timeout_ms: 1_000,
            snapshot_every: 10_000,
            default_k: 10,
            default_m: 6,
            suspect_after_secs: 30,
            lost_after_secs: 600,
            repair_interval_ms: 30_000,
            repair_threshold: 2,
            repair_concurrency: 4,
            repair_bandwidth: ByteSize(64 << 20),
            repair_lease_secs: 600,
            rebalance_threshold_permille: 100,
            spread_check_segments: crate::durability::SPREAD_SEGMENTS_PER_ROUND,
            gc_interval_ms: 60_000,
            gc_delay_secs: 3_600,
            orphan_delay_secs: 86_400,
            upload_expiry_secs: 7 * 86_400,
            audit_interval_ms: 60_000,
            audit_deadline_ms: 10_000,
            audit_retries: 3,
            reputation_lambda_permille: 990,
            disqualify_below_permille: 975,
            vetting_audits: 20,
        }
    }
}

impl CoordinatorConfig {
    /// Checks what defaults cannot fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id must be at least 1".into());
        }
        if self.raft_heartbeat_ms == 0 || self.election_timeout_ms <= self.raft_heartbeat_ms * 2 {
            return Err("election_timeout_ms must exceed twice raft_heartbeat_ms".into());
        }
        if self.snapshot_every == 0 {
            return Err("snapshot_every must be at least 1".into());
        }
        if self.suspect_after_secs == 0 || self.lost_after_secs <= self.suspect_after_secs {
            return Err(
                "lost_after_secs must exceed suspect_after_secs, which must be at least 1".into(),
            );
        }
        if self.repair_interval_ms == 0 || self.repair_lease_secs == 0 {
            return Err("repair_interval_ms and repair_lease_secs must be at least 1".into());
        }
        if self.gc_interval_ms == 0 {
            return Err("gc_interval_ms must be at least 1".into());
        }
        if self.upload_expiry_secs == 0 {
            return Err("upload_expiry_secs must be at least 1".into());
        }
        if self.orphan_delay_secs < 4 {
            return Err("orphan_delay_secs must be at least 4".into());
        }
        if self.audit_deadline_ms == 0 {
            return Err("audit_deadline_ms must be at least 1".into());
        }
        if self.reputation_lambda_permille > 999 || self.disqualify_below_permille > 1000 {
            return Err(
                "reputation_lambda_permille must be below 1000 and disqualify_below_permille at most 1000"
                    .into(),
            );
        }
        if self.repair_concurrency == 0 {
            return Err("repair_concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The reputation rule this configuration sets.
    pub fn reputation_policy(&self) -> crate::catalog::model::ReputationPolicy {
        crate::catalog::model::ReputationPolicy {
            lambda_ppm: u32::from(self.reputation_lambda_permille) * 1_000,
            disqualify_below_ppm: u32::from(self.disqualify_below_permille) * 1_000,
            vetting_audits: self.vetting_audits,
        }
    }
}
