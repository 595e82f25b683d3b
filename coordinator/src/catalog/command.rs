//! [`Command`]: every change to the catalog, as it travels through the Raft log.
//!
//! Applying a command must give the same result on every member, so commands carry
//! everything that could differ between members (the leader's clock, generated ids) instead
//! of letting `apply` look it up.

use cairn_proto::identity::NodeId;
use serde::{Deserialize, Serialize};

use super::legacy::{ObjectRecordV1, ObjectRecordV2, PartRecordV1, UploadRecordV1, UploadRecordV2};
use super::model::{
    AccessKey, Bucket, CannedAcl, GatewayRecord, NodeRecord, NodeState, ObjectRecord, PartRecord,
    ReputationPolicy, UploadRecord,
};

/// A change to the catalog. Entries of the Raft log carry one each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a bucket; fails if the name is taken or invalid.
    CreateBucket {
        /// The new bucket.
        bucket: Bucket,
    },
    /// Deletes a bucket that holds no object; multipart uploads still open in it are
    /// aborted (their parts become garbage), as S3 does.
    DeleteBucket {
        /// Bucket name.
        name: String,
        /// Leader's clock, ms since the epoch (dates the aborted parts' garbage).
        now_ms: u64,
    },
    /// Adds an access key; fails if the id exists (revoked ids are never reused).
    CreateAccessKey {
        /// The key, secret included.
        key: AccessKey,
    },
    /// Revokes an access key.
    RevokeAccessKey {
        /// Access key id.
        id: String,
    },
    /// Registers a node, or updates the address and domains of a known one.
    RegisterNode {
        /// The node as it joins.
        node: NodeRecord,
    },
    /// Records an invitation by the hash of its one-time secret.
    CreateInvite {
        /// `JoinToken::secret_hash` of the secret.
        secret_hash: [u8; 32],
        /// After this (ms since the epoch) the invitation is refused.
        expires_ms: u64,
        /// The organisation the node must belong to, if the operator bound one.
        org: Option<String>,
    },
    /// A node joins with an invitation: the invitation is used up and the node registered
    /// (as vetting) in the same step, so one invitation admits one node.
    JoinNode {
        /// The node as it joins.
        node: NodeRecord,
        /// Hash of the invitation secret it presented.
        secret_hash: [u8; 32],
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Moves a node to another lifecycle state.
    SetNodeState {
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
        /// Leader's clock when decided, ms since the epoch.
        now_ms: u64,
    },
    /// [`Command::PutObject`] as log entries written before record version 2 carry it;
    /// applied as `PutObject` of the record converted (private, no parts, no checksum).
    PutObjectV1 {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The object, in the version-1 layout.
        object: ObjectRecordV1,
        /// What the key must hold for the write to happen (S3's conditional writes).
        condition: Option<WriteCondition>,
        /// Leader's clock when committed, ms since the epoch.
        now_ms: u64,
    },
    /// Removes an object; its shards become garbage.
    DeleteObject {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// Leader's clock when committed, ms since the epoch.
        now_ms: u64,
    },
    /// Allows a gateway's key to use the gateway RPC (or renames a registered one).
    RegisterGateway {
        /// The gateway.
        gateway: GatewayRecord,
    },
    /// Withdraws a gateway's access.
    RemoveGateway {
        /// The gateway's key.
        key: NodeId,
    },
    /// [`Command::CreateUpload`] as log entries written before record version 2 carry it;
    /// applied as `CreateUpload` of the record converted (a private object).
    CreateUploadV1 {
        /// The upload id.
        id: String,
        /// The upload, in the version-1 layout.
        upload: UploadRecordV1,
    },
    /// [`Command::PutPart`] as log entries written before part record version 2 carry it;
    /// applied as `PutPart` of the part converted (no checksum).
    PutPartV1 {
        /// Upload id.
        upload: String,
        /// Part number, 1 to 10 000.
        number: u32,
        /// The part, in the version-1 layout.
        part: PartRecordV1,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// [`Command::CompleteUpload`] as log entries written before object record version 3
    /// carry it; applied as `CompleteUpload` without an object checksum.
    CompleteUploadV1 {
        /// Upload id.
        upload: String,
        /// Part numbers with the ETags the client expects them to have, ascending.
        parts: Vec<(u32, String)>,
        /// Parts that must still be the version the gateway checked.
        verified: Vec<(u32, super::model::ObjectVersion)>,
        /// What the key must hold for the completion to happen.
        condition: Option<WriteCondition>,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// A gateway caught a node serving bytes that fail verification: counted against the
    /// node (`bad_reads`) but not judged; the leader audits the shard, and that judges.
    ReportBadRead {
        /// The node.
        node: NodeId,
    },
    /// The outcome of a round of audits. Each judgement moves the node's score; a node
    /// below the policy's threshold is disqualified, a vetting node that has passed enough
    /// audits becomes active.
    RecordAudits {
        /// Node and whether it passed, one entry per audit.
        results: Vec<(NodeId, bool)>,
        /// The rule the judgements follow.
        policy: ReputationPolicy,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Drops an upload and all its parts.
    AbortUpload {
        /// Upload id.
        upload: String,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Points shards of one segment at new copies (rebuilt or moved, with receipts already
    /// checked by the leader). Refused unless the object is still the version `etag` and
    /// each replaced shard is still the one named, so a replacement made against a stale
    /// view never overwrites a newer one. The old shards become garbage.
    ReplaceShards {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// ETag of the object version repaired.
        etag: String,
        /// Segment index in the object.
        segment: u32,
        /// The shards replaced.
        replacements: Vec<ShardReplacement>,
        /// Why the shards moved (for the durability counters).
        reason: MoveReason,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Drops shards from the garbage queue: deleted from their nodes, or their nodes are
    /// gone (a node that returns has them collected as orphans from its inventory).
    ForgetGarbage {
        /// The shards.
        shards: Vec<cairn_proto::ids::ShardId>,
    },
    /// Moves a node from `from` to `to`, refused if it is no longer in `from`: how the
    /// leader's own loops (failure detection, drain) change states, so a decision made on
    /// a read never overrides an operator's change committed in between.
    ChangeNodeState {
        /// The node.
        node: NodeId,
        /// The state the decision was made in.
        from: NodeState,
        /// Its new state.
        to: NodeState,
        /// Leader's clock when decided, ms since the epoch.
        now_ms: u64,
    },
    /// A node now answers at another address (it said so in a heartbeat signed by its key,
    /// and the leader reached it there): gateways, audits and collection dial it there.
    MoveNode {
        /// The node.
        node: NodeId,
        /// Its QUIC address (`host:port`).
        addr: String,
    },
    /// Applies `command` at most once for `request`: a client that retries after a lost
    /// answer (the leader paused or died after the entry was committed) sends the same
    /// request id again and gets the first application's result, with nothing applied a
    /// second time. Results are remembered for [`REQUEST_MEMORY_MS`].
    Once {
        /// Chosen by the client, the same on every retry of one request.
        request: RequestId,
        /// The change itself (never another `Once`).
        command: Box<Command>,
        /// Leader's clock, ms since the epoch: dates the memory of the result.
        now_ms: u64,
    },
    // Variants below were added after the first release: postcard numbers variants in
    // order, so new ones go last and the ones above keep their numbers (and their fields),
    // or log entries already written would decode as something else.
    /// Like [`Command::ReplaceShards`], for a part of an upload in progress: refused
    /// unless the upload still holds part `number` as uploaded with `etag` and each
    /// replaced shard is still the one named. The old shards become garbage.
    ReplacePartShards {
        /// Upload id.
        upload: String,
        /// Part number.
        number: u32,
        /// ETag of the part repaired.
        etag: String,
        /// Segment index in the part.
        segment: u32,
        /// The shards replaced.
        replacements: Vec<ShardReplacement>,
        /// Why the shards moved (for the durability counters).
        reason: MoveReason,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Applies nothing and answers `reason`. Committed inside a [`Command::Once`] when a
    /// check made before proposing refused a change that must apply at most once: an
    /// earlier attempt of the same request, still on its way through the log, then finds
    /// the refusal remembered and applies nothing, so the client's "no" stays true.
    Refuse {
        /// Why the change was refused.
        reason: CatalogError,
    },
    /// [`Command::PutObject`] as log entries written before object record version 3 carry
    /// it; applied as `PutObject` of the record converted (parts without checksums).
    PutObjectV2 {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The object, in the version-2 layout.
        object: ObjectRecordV2,
        /// What the key must hold for the write to happen (S3's conditional writes).
        condition: Option<WriteCondition>,
        /// Leader's clock when committed, ms since the epoch.
        now_ms: u64,
    },
    /// [`Command::CreateUpload`] as log entries written before upload record version 3
    /// carry it; applied as `CreateUpload` of an upload without a checksum algorithm.
    CreateUploadV2 {
        /// The upload id.
        id: String,
        /// The upload, in the version-2 layout.
        upload: UploadRecordV2,
    },
    /// Sets the canned ACL of the object `bucket`/`key` (PutObjectAcl); nothing else of
    /// the object changes, its version included.
    SetObjectAcl {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The new ACL.
        acl: CannedAcl,
    },
    /// Makes a bucket public-read or private (PutBucketAcl, or the operator).
    SetBucketPublicRead {
        /// Bucket name.
        name: String,
        /// Whether anonymous GET and HEAD of its objects are allowed.
        public_read: bool,
    },
    /// Makes an object visible, replacing any previous version of the key atomically; the
    /// replaced version's shards become garbage.
    PutObject {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The object, with receipts already checked by the leader.
        object: ObjectRecord,
        /// What the key must hold for the write to happen (S3's conditional writes).
        condition: Option<WriteCondition>,
        /// Leader's clock when committed, ms since the epoch.
        now_ms: u64,
    },
    /// Starts a multipart upload.
    CreateUpload {
        /// The upload id (unique; chosen by the leader).
        id: String,
        /// The upload.
        upload: UploadRecord,
    },
    /// Stores one part of an upload, replacing a part with the same number; the replaced
    /// part's shards become garbage.
    PutPart {
        /// Upload id.
        upload: String,
        /// Part number, 1 to 10 000.
        number: u32,
        /// The part, with receipts already checked by the leader.
        part: PartRecord,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
    /// Makes an upload an object out of the listed parts, in order; parts not listed become
    /// garbage, as does any object the upload replaces.
    CompleteUpload {
        /// Upload id.
        upload: String,
        /// Part numbers with the ETags the client expects them to have, ascending.
        parts: Vec<(u32, String)>,
        /// Parts that must still be the version the gateway checked.
        verified: Vec<(u32, super::model::ObjectVersion)>,
        /// The object's checksum, derived by the gateway from the listed parts' (which the
        /// ETags pin: a part's checksum is computed from its bytes).
        checksum: Option<super::model::ObjectChecksum>,
        /// What the key must hold for the completion to happen.
        condition: Option<WriteCondition>,
        /// Leader's clock, ms since the epoch.
        now_ms: u64,
    },
}

/// How long the result of a [`Command::Once`] is remembered. A client gives up on a
/// request after a few minutes of retries (the gateway's coordinator client after eight
/// rounds over the members), so an hour leaves a wide margin, while the memory stays a
/// bounded number of recent requests.
pub const REQUEST_MEMORY_MS: u64 = 3_600_000;

/// A client's id for one request, the same on each of its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub [u8; 16]);

impl RequestId {
    /// A fresh random id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// S3's conditional writes: what the key must hold when the write is applied, checked in
/// the same step that writes, so two uploaders racing for one key cannot both win.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCondition {
    /// `If-None-Match: *`: only if the key holds no object (a cache uploader's way to never
    /// overwrite a NAR).
    Absent,
    /// `If-Match: <etag>`: only if the key holds an object with this ETag (quoted).
    ETag(String),
}

/// One shard of a segment pointed at a new copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReplacement {
    /// Shard index in the segment.
    pub index: u32,
    /// The id of the shard being replaced (must still be the current one).
    pub old: cairn_proto::ids::ShardId,
    /// The new copy.
    pub new: crate::catalog::model::ShardRecord,
}

/// Why shards moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MoveReason {
    /// Rebuilt because their node was lost, disqualified or lost them.
    Repair,
    /// Moved off a draining node.
    Drain,
    /// Moved to even out utilisation.
    Rebalance,
    /// Moved out of an organisation holding more of the segment than the spread rule
    /// allows. (Last, so log entries written before it decode unchanged.)
    Spread,
}

impl MoveReason {
    /// Every reason, for metrics and status that list them all.
    pub const ALL: [MoveReason; 4] = [
        MoveReason::Repair,
        MoveReason::Drain,
        MoveReason::Rebalance,
        MoveReason::Spread,
    ];
}

impl MoveReason {
    /// Lower-case name for metrics labels and status.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::Repair => "repair",
            MoveReason::Drain => "drain",
            MoveReason::Rebalance => "rebalance",
            MoveReason::Spread => "spread",
        }
    }
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateBucket { .. } => "create_bucket",
            Command::DeleteBucket { .. } => "delete_bucket",
            Command::CreateAccessKey { .. } => "create_access_key",
            Command::RevokeAccessKey { .. } => "revoke_access_key",
            Command::RegisterNode { .. } => "register_node",
            Command::CreateInvite { .. } => "create_invite",
            Command::JoinNode { .. } => "join_node",
            Command::SetNodeState { .. } => "set_node_state",
            Command::PutObject { .. }
            | Command::PutObjectV1 { .. }
            | Command::PutObjectV2 { .. } => "put_object",
            Command::DeleteObject { .. } => "delete_object",
            Command::RegisterGateway { .. } => "register_gateway",
            Command::RemoveGateway { .. } => "remove_gateway",
            Command::CreateUpload { .. }
            | Command::CreateUploadV1 { .. }
            | Command::CreateUploadV2 { .. } => "create_upload",
            Command::SetObjectAcl { .. } => "set_object_acl",
            Command::SetBucketPublicRead { .. } => "set_bucket_public_read",
            Command::PutPart { .. } | Command::PutPartV1 { .. } => "put_part",
            Command::CompleteUpload { .. } | Command::CompleteUploadV1 { .. } => "complete_upload",
            Command::AbortUpload { .. } => "abort_upload",
            Command::ReportBadRead { .. } => "report_bad_read",
            Command::RecordAudits { .. } => "record_audits",
            Command::ReplaceShards { .. } => "replace_shards",
            Command::ChangeNodeState { .. } => "change_node_state",
            Command::ForgetGarbage { .. } => "forget_garbage",
            Command::MoveNode { .. } => "move_node",
            Command::Once { command, .. } => command.name(),
            Command::Refuse { .. } => "refuse",
            Command::ReplacePartShards { .. } => "replace_part_shards",
        }
    }
}

/// What applying a command did. Logical refusals are results, not storage errors: they
/// are the same on every member and the log entry stays applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Entries that carry no command (blank and membership entries).
    #[default]
    Done,
    /// An object replaced an older version (`replaced`) or was deleted (`existed`).
    Object {
        /// Whether a previous version existed.
        existed: bool,
    },
    /// A multipart upload was completed into an object.
    Completed {
        /// The object's ETag (`"<md5 of part md5s>-<parts>"`).
        etag: String,
        /// The object's size.
        size: u64,
    },
    /// The command was refused; nothing changed.
    Refused(CatalogError),
}

/// Why the catalog refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CatalogError {
    /// The bucket does not exist.
    #[error("no such bucket: {0}")]
    NoSuchBucket(String),
    /// A bucket of that name exists.
    #[error("bucket {0} already exists")]
    BucketExists(String),
    /// The bucket still holds objects.
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    /// The bucket name breaks S3's naming rules.
    #[error("{0}")]
    InvalidBucketName(String),
    /// An access key with that id exists or existed.
    #[error("access key {0} already exists")]
    AccessKeyExists(String),
    /// No access key with that id.
    #[error("no such access key: {0}")]
    NoSuchAccessKey(String),
    /// No node with that id.
    #[error("no such node: {0}")]
    NoSuchNode(String),
    /// The object's shards name a node the catalog does not know.
    #[error("object references unknown node {0}")]
    UnknownNode(String),
    /// The invitation is unknown, already used or expired.
    #[error("invitation is unknown, already used or expired")]
    InvalidInvite,
    /// The invitation is for another organisation than the node claims.
    #[error("invitation is for organisation {invited:?}, not {claimed:?}")]
    WrongOrg {
        /// The organisation the invitation names.
        invited: String,
        /// The organisation the node claimed.
        claimed: String,
    },
    /// The object key is empty or too long.
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    /// No gateway with that key.
    #[error("no such gateway: {0}")]
    NoSuchGateway(String),
    /// No multipart upload with that id (never created, completed or aborted).
    #[error("no such upload: {0}")]
    NoSuchUpload(String),
    /// An upload with that id exists.
    #[error("upload {0} already exists")]
    UploadExists(String),
    /// A listed part was never uploaded or has another ETag, or a part number is out of
    /// range.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// The listed parts are not in ascending order.
    #[error("parts must be listed in ascending order without repeats")]
    InvalidPartOrder,
    /// A part other than the last is smaller than S3's minimum.
    #[error("part {number} is {size} bytes; every part but the last must be at least {min}")]
    EntityTooSmall {
        /// The part number.
        number: u32,
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// A conditional write's condition does not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A conditional write names an object that does not exist.
    #[error("no such key: {0}")]
    NoSuchKey(String),
    /// The object changed since the replacement was prepared (another version, or the
    /// shard was replaced already).
    #[error("stale replacement: {0}")]
    Stale(String),
    /// The object or part is inconsistent in itself (a segment with the wrong number of
    /// shards, sizes that do not add up).
    #[error("malformed object: {0}")]
    Malformed(String),
    /// A check made before proposing refused the request (a stale put order, a proof of
    /// storage that does not verify); see [`Command::Refuse`].
    #[error("{0}")]
    Rejected(String),
}
