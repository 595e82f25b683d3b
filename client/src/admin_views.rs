//! The admin API's JSON views: what the coordinator's admin API answers and takes, and what
//! `cairn admin` reads and sends, as one set of types.
//!
//! The coordinator builds them from its catalog (its `admin/convert.rs`); nothing here
//! knows the catalog. Their JSON shape is the API: a field added later is
//! `#[serde(default)]`, so an older coordinator's answers still read.

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The answering member's id.
    pub member: u64,
    /// Current leader, if known.
    pub leader: Option<u64>,
    /// The coordinator key's public half: what gateways are started with and nodes pin.
    pub coordinator_key: String,
    /// Raft term.
    pub term: u64,
    /// Last log index applied to the catalog.
    pub last_applied: Option<u64>,
    /// The group's members.
    pub members: Vec<MemberView>,
    /// Storage nodes by lifecycle state.
    pub nodes_by_state: std::collections::BTreeMap<String, u64>,
    /// Buckets.
    pub buckets: u64,
    /// Objects stored.
    pub objects: u64,
    /// Sum of object sizes.
    pub logical_bytes: u64,
    /// How close data is to loss, as the leader last surveyed it (absent on followers and
    /// before the first survey).
    #[serde(default)]
    pub durability: Option<DurabilityView>,
}

/// The durability part of the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurabilityView {
    /// Segments per margin (shards left − k; the code's `m` when nothing is lost).
    pub segments_by_margin: std::collections::BTreeMap<i64, u64>,
    /// Segments surveyed.
    pub segments: u64,
    /// Segments with fewer than k shards left: unreadable until a node returns.
    pub unreadable: u64,
    /// Segments with more shards in one organisation than their bucket's spread rule
    /// allows (placement fell back to a weaker spread, or too few organisations).
    #[serde(default)]
    pub below_spread: u64,
    /// Segments the spread check under way has read: it reads a bounded number each
    /// round, and `below_spread` is the count of its last complete pass.
    #[serde(default)]
    pub spread_checked: u64,
    /// Complete passes of the spread check since the leader was elected.
    #[serde(default)]
    pub spread_passes: u64,
    /// Segments waiting to be rebuilt or moved.
    pub repair_queue: u64,
    /// Repair jobs out with gateways now.
    pub repairs_in_progress: u64,
    /// Shards and bytes moved so far, by reason (`repair`, `drain`, `rebalance`).
    pub moved: std::collections::BTreeMap<String, MovedView>,
    /// Bytes of shards on nodes that hold data.
    pub stored_bytes: u64,
    /// Stored bytes per logical byte (the code's overhead, plus anything not yet
    /// collected); absent while nothing is stored.
    pub stored_per_logical: Option<f64>,
    /// When the survey finished, milliseconds since the Unix epoch.
    pub surveyed_ms: u64,
    /// Shards found missing from their nodes' latest inventories (being rebuilt).
    pub missing_shards: u64,
    /// Replaced and deleted shards waiting for their safety delay to end.
    pub garbage_queue: u64,
    /// Unreferenced shards seen in inventories, watched until the orphan delay ends.
    pub orphans_pending: u64,
    /// Shards deleted from nodes since this member became leader.
    pub collected_shards: u64,
    /// The modelled chance of losing data within a year, from node churn and margins.
    pub loss_model: LossModelView,
}

/// The modelled chance of losing data within a year, from node churn and current margins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossModelView {
    /// Node failures per node-year: the observed ones plus one, over the node-years
    /// observed (at least one), so a young cluster does not claim immortality.
    pub failures_per_node_year: f64,
    /// Seconds from a node failing until its shards are rebuilt: the lost timeout, a
    /// survey, and moving its share of the data at the repair bandwidth.
    pub repair_window_secs: f64,
    /// Chance that some segment loses more shards than its margin within one repair
    /// window, in a year (an upper bound: segments sharing nodes are counted separately).
    pub annual_loss_probability: f64,
    /// Segments expected to become unreadable per year.
    pub expected_segments_lost_per_year: f64,
}

/// Shards moved for one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedView {
    /// Shards moved.
    pub shards: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A coordinator member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Raft id.
    pub id: u64,
    /// QUIC address.
    pub addr: String,
    /// Admin API address.
    pub admin: String,
    /// The member's own key.
    #[serde(default)]
    pub key: String,
    /// Voter (or still a learner).
    pub voter: bool,
}

/// `POST /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMember {
    /// The new member's Raft id.
    pub id: u64,
    /// Its QUIC address.
    pub addr: String,
    /// Its admin API address.
    pub admin: String,
    /// Its own key, as it printed at start (`member key: …`): the key it speaks Raft as.
    pub key: String,
}

/// A storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id (text form of its key).
    pub id: String,
    /// QUIC address.
    pub addr: String,
    /// Organisation.
    pub org: String,
    /// Site.
    pub site: String,
    /// Lifecycle state.
    pub state: String,
    /// Space offered.
    pub capacity: u64,
    /// Space used, from the last heartbeat.
    pub used: Option<u64>,
    /// Shards held, from the last heartbeat.
    pub shards: Option<u64>,
    /// Milliseconds since the last heartbeat reached this member (leader only).
    pub last_heartbeat_ms: Option<u64>,
    /// When `state` last changed, ms since the epoch.
    #[serde(default)]
    pub state_since_ms: u64,
    /// Whether the node has been active: a suspect node that returns goes back to active
    /// if so, else to vetting.
    #[serde(default)]
    pub vetted: bool,
    /// Reads of this node's shards that failed verification, as gateways reported them.
    #[serde(default)]
    pub bad_reads: u64,
    /// Audits passed.
    #[serde(default)]
    pub audits_passed: u64,
    /// Audits failed (wrong bytes, a denied shard, or missed past every retry).
    #[serde(default)]
    pub audits_failed: u64,
    /// Audit score, 0 to 1 (1 = never failed); below the threshold a node is
    /// disqualified.
    #[serde(default)]
    pub score: f64,
    /// Shards the catalog places on the node, as of the leader's latest survey (what a
    /// drain still has to move); absent on followers and before the first survey.
    #[serde(default)]
    pub placed_shards: Option<u64>,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketView {
    /// Name.
    pub name: String,
    /// Anonymous reads allowed.
    pub public_read: bool,
    /// `plain` or `nix-cache`.
    pub mode: String,
    /// Trusted narinfo signing keys (nix-cache buckets).
    pub trusted_keys: Vec<String>,
    /// Data shards per segment.
    pub k: u16,
    /// Parity shards per segment.
    pub m: u16,
    /// Largest segment in bytes.
    pub segment_size: u64,
    /// Organisations that may be lost at once.
    pub failure_tolerance: u8,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
}

/// `POST /v1/buckets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateBucket {
    /// Name.
    pub name: String,
    /// Allow anonymous GET and HEAD.
    pub public_read: bool,
    /// Check Nix authenticity of uploads.
    pub nix_cache: bool,
    /// Trusted narinfo signing keys, `name:base64`.
    pub trusted_keys: Vec<String>,
    /// Data shards (default: the coordinator's).
    pub k: Option<u16>,
    /// Parity shards (default: the coordinator's).
    pub m: Option<u16>,
    /// Largest segment (default 64 MiB).
    pub segment_size: Option<u64>,
    /// Organisations that may be lost at once (default 2).
    pub failure_tolerance: Option<u8>,
}

/// An access key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// Access key id.
    pub id: String,
    /// Purpose given by the operator.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Refused from now on.
    pub revoked: bool,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateKey {
    /// What the key is for.
    pub name: String,
}

/// The answer to `POST /v1/keys`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// Access key id.
    pub id: String,
    /// Secret access key.
    pub secret: String,
    /// What the key is for.
    pub name: String,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// What went wrong.
    pub error: String,
    /// The leader's admin address, when the request must go there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// `POST /v1/invites`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateInvite {
    /// Hours the invitation stays valid (default 24).
    pub valid_hours: Option<u64>,
    /// The organisation the node must join as, if bound.
    #[serde(default)]
    pub org: Option<String>,
}

/// The answer to `POST /v1/invites`: the token to hand to the node's operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteView {
    /// `cairn node --join` takes this.
    pub token: String,
    /// When it stops working, ms since the epoch.
    pub expires_ms: u64,
}

/// A registered gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// The gateway's key (base32 text).
    pub key: String,
    /// What the operator calls it.
    pub name: String,
    /// Registration time, ms since the epoch.
    pub created_ms: u64,
}

/// `POST /v1/gateways`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegisterGateway {
    /// The gateway's key (base32 text, as `cairn gateway` prints it).
    pub key: String,
    /// What to call it.
    pub name: String,
}

/// `POST /v1/nodes/{id}/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNodeState {
    /// `vetting`, `active`, `draining`, `gone` or `disqualified`.
    pub state: String,
}
