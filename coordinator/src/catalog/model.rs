//! The records the catalog keeps: buckets, access keys, objects and their segments, nodes.
//!
//! Every record is stored as a version byte and its postcard body (`catalog::format`).
//! Postcard encodes by field order and leaves no room for absent fields, so any change of a
//! stored type's layout (a field added, removed, retyped or reordered) takes a new record
//! version, decoded beside the old one: `catalog::legacy` keeps the layouts older records
//! (and older Raft log entries) were written in.

use cairn_erasure::{SegmentNonce, ShardRoot};
use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use serde::{Deserialize, Serialize};

/// A bucket and the policy its objects live under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// S3 bucket name.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Whether anonymous GET and HEAD are allowed.
    pub public_read: bool,
    /// What uploads must prove to be accepted.
    pub mode: BucketMode,
    /// How new objects are coded.
    pub erasure: ErasureProfile,
    /// Organisations that may be lost at once while every segment stays readable.
    pub failure_tolerance: u8,
}

/// Upload policy of a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketMode {
    /// Any authenticated upload is accepted.
    Plain,
    /// A Nix binary cache: narinfos must carry a signature by one of `trusted_keys`
    /// (`name:base64` public keys) and NARs must hash to their names.
    NixCache {
        /// Public keys whose narinfo signatures are accepted.
        trusted_keys: Vec<String>,
    },
}

/// Erasure code and segment size for new objects of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureProfile {
    /// Data shards per segment.
    pub k: u16,
    /// Parity shards per segment.
    pub m: u16,
    /// Largest segment, in bytes.
    pub segment_size: u64,
}

impl ErasureProfile {
    /// The production default: 10 + 6 in 64 MiB segments.
    pub const PRODUCTION: ErasureProfile = ErasureProfile {
        k: 10,
        m: 6,
        segment_size: 64 << 20,
    };
}

/// An S3 access key. The secret never leaves the coordinator except to authenticated
/// gateways, which need it to check SigV4 signatures.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Access key id (public).
    pub id: String,
    /// Secret access key.
    pub secret: String,
    /// What the key is for, as told by the operator.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Revoked keys are kept (so ids are never reused) but refused.
    pub revoked: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// One stored object version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Size in bytes.
    pub size: u64,
    /// S3 ETag, with its quotes.
    pub etag: String,
    /// Last modification, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// HTTP metadata that must round-trip byte-exact.
    pub headers: ObjectHeaders,
    /// Where the bytes are.
    pub body: ObjectBody,
    /// Who besides the owner may read it (record version 2; `Private` for older records).
    pub acl: CannedAcl,
    /// The size, ETag and checksum of each part, in order, for an object completed from a
    /// multipart upload (`partNumber` reads, `GetObjectAttributes`); empty for an object
    /// stored in one piece, and for multipart objects stored before record version 2.
    pub parts: Vec<PartSummary>,
    /// The object's checksum, if any (record version 2): for a single PUT, the full-object
    /// checksum the client sent and the gateway verified; for a multipart upload created
    /// with a checksum algorithm, the composite (value suffixed `-N`) or full-object
    /// checksum the gateway derived from the parts' (record version 3).
    pub checksum: Option<ObjectChecksum>,
}

/// The canned ACLs Cairn keeps: an object or bucket is readable by its owner only, or by
/// anyone. (Anonymous writes are never allowed, so there is no `public-read-write`.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CannedAcl {
    /// Only signed requests.
    #[default]
    Private,
    /// Anonymous GET and HEAD too.
    PublicRead,
}

/// One part of an object completed from a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSummary {
    /// Bytes in the part.
    pub size: u64,
    /// The part's ETag, with its quotes.
    pub etag: String,
    /// The part's own checksum, if it had one (record version 3; `None` before).
    pub checksum: Option<ObjectChecksum>,
}

/// A checksum algorithm of S3's `x-amz-checksum-*` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    /// CRC-32 (ISO HDLC).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// How a multipart upload's object checksum derives from its parts' (S3's
/// `x-amz-checksum-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumType {
    /// The checksum of the parts' checksums, suffixed with the part count.
    Composite,
    /// The checksum of the whole object's bytes (CRCs only: combined from the parts').
    FullObject,
}

/// The checksum a multipart upload was created with: every part gets one of this
/// algorithm, and the completed object one of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UploadChecksum {
    /// Which algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// How the object's checksum derives from the parts'.
    pub kind: ChecksumType,
}

/// A checksum of an object's bytes, as S3 writes it (base64 of the digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChecksum {
    /// Which algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest, base64; a composite checksum of a multipart object is suffixed `-N`
    /// (N parts), which is how it is told from a full-object one.
    pub value: String,
}

impl ObjectRecord {
    /// The id of this stored version: what reads ask orders for, so a read that spans an
    /// overwrite is refused instead of being handed the new version's shards. Unlike the
    /// ETag it differs between two uploads of the same bytes (each segment has its own mask
    /// nonce, hence its own roots) and, unlike shard ids, it survives repair (which keeps
    /// every root).
    pub fn version(&self) -> ObjectVersion {
        let mut hasher = blake3::Hasher::new_derive_key("cairn 2026 object version v1");
        hasher.update(&self.size.to_le_bytes());
        hasher.update(&self.last_modified_ms.to_le_bytes());
        hasher.update(&(self.etag.len() as u64).to_le_bytes());
        hasher.update(self.etag.as_bytes());
        match &self.body {
            ObjectBody::Inline(bytes) => {
                hasher.update(&[0]);
                hasher.update(blake3::hash(bytes).as_bytes());
            }
            ObjectBody::Segments { segments, .. } => {
                hasher.update(&[1]);
                for segment in segments {
                    hasher.update(&segment.len.to_le_bytes());
                    match &segment.mask {
                        Some(nonce) => hasher.update(&[1]).update(nonce.as_bytes()),
                        None => hasher.update(&[0]),
                    };
                    for shard in &segment.shards {
                        hasher.update(shard.root.as_bytes());
                    }
                }
            }
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        ObjectVersion(id)
    }
}

/// One stored version of an object (see [`ObjectRecord::version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectVersion(pub [u8; 16]);

impl std::fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The HTTP metadata stored with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding` (Nix sets it on compressed narinfos, listings and logs).
    pub content_encoding: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `x-amz-meta-*` pairs, names without the prefix, in the order given.
    pub user_metadata: Vec<(String, String)>,
    /// `Expires`, as the client sent it (record version 2).
    pub expires: Option<String>,
}

/// Where an object's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectBody {
    /// Small bodies (narinfos) live in the catalog itself, replicated by Raft.
    Inline(Vec<u8>),
    /// Larger bodies are segments of erasure-coded shards on nodes.
    Segments {
        /// The code every segment of this object uses.
        erasure: ErasureProfile,
        /// The segments in order.
        segments: Vec<SegmentRecord>,
    },
}

impl ObjectBody {
    /// Every shard this body references.
    pub fn shards(&self) -> impl Iterator<Item = &ShardRecord> {
        let segments: &[SegmentRecord] = match self {
            ObjectBody::Inline(_) => &[],
            ObjectBody::Segments { segments, .. } => segments,
        };
        segments.iter().flat_map(|segment| segment.shards.iter())
    }
}

/// One segment: its length, where each of its `k + m` shards is, and how it was masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Bytes of object data in the segment.
    pub len: u64,
    /// Shard `i` of the segment is `shards[i]`.
    pub shards: Vec<ShardRecord>,
    /// The nonce the gateway masked the segment with before coding it (with the cluster's
    /// mask key; see `cairn_erasure::mask`), so that nodes cannot recompute their shards
    /// from the public object; `None`: stored unmasked. Readers unmask with it, repair
    /// never needs it.
    pub mask: Option<SegmentNonce>,
}

/// One placed shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The shard's cluster-wide id.
    pub id: ShardId,
    /// The node holding it.
    pub node: NodeId,
    /// BLAKE3 root of its bytes.
    pub root: ShardRoot,
}

/// A storage node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's key, which is its id.
    pub id: NodeId,
    /// QUIC address gateways dial.
    pub addr: String,
    /// Organisation (failure domain).
    pub org: String,
    /// Site or region (wider failure domain).
    pub site: String,
    /// Space offered, bytes.
    pub capacity: u64,
    /// Lifecycle state.
    pub state: NodeState,
    /// When the node joined, milliseconds since the Unix epoch.
    pub joined_ms: u64,
    /// When `state` last changed.
    pub state_since_ms: u64,
    /// Whether the node has ever been `Active`: a suspect node that comes back returns to
    /// `Active` only if it had earned it, else to `Vetting`. Set when the node enters
    /// `Active`, cleared only by `Disqualified`.
    pub vetted: bool,
    /// What the node has been caught doing.
    pub reputation: Reputation,
}

/// A node's record of conduct, kept in the catalog so every member judges alike.
///
/// `score` is Storj's audit reputation with its two counters folded into one: each
/// judgement forgets a share of the past (`α ← λα + [passed]`, `β ← λβ + [failed]`) and the
/// score is `α / (α + β)`. Starting every node at `α = 1/(1−λ)`, `β = 0` keeps
/// `α + β = 1/(1−λ)` for ever, so the score is an exponentially weighted average of
/// outcomes, `score ← λ·score + (1−λ)·[passed]`, kept in millionths so that every member
/// computes exactly the same number. `n` failures in a row multiply the score by `λⁿ`,
/// whatever came before: with the defaults `λ = 0.99` and a threshold of 0.975, three.
/// What the defaults catch, and how fast, is derived in ARCHITECTURE.md ("Reputation") and
/// checked by a seeded simulation of this exact arithmetic in
/// `coordinator/tests/reputation.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// Shard reads whose bytes failed verification (or that the node said were damaged),
    /// as reported by gateways. Each also counts as a failed judgement.
    pub bad_reads: u64,
    /// Audits answered with bytes that verify against the shard's root.
    pub audits_passed: u64,
    /// Audits failed: wrong bytes or proof, the shard denied, or no answer after every
    /// containment retry.
    pub audits_failed: u64,
    /// Audit score in millionths (1 000 000 = never failed).
    pub score_ppm: u32,
}

impl Default for Reputation {
    fn default() -> Self {
        Self {
            bad_reads: 0,
            audits_passed: 0,
            audits_failed: 0,
            score_ppm: PPM,
        }
    }
}

/// One million: scores and factors are kept in millionths.
pub const PPM: u32 = 1_000_000;

impl Reputation {
    /// Folds one judgement into the score with forgetting factor `lambda_ppm`.
    pub fn judge(&mut self, passed: bool, lambda_ppm: u32) {
        let lambda = u64::from(lambda_ppm.min(PPM));
        let outcome = if passed { u64::from(PPM) } else { 0 };
        let score = (lambda * u64::from(self.score_ppm) + (u64::from(PPM) - lambda) * outcome)
            / u64::from(PPM);
        self.score_ppm = score.min(u64::from(PPM)) as u32;
    }

    /// The score as a fraction, for people.
    pub fn score(&self) -> f64 {
        f64::from(self.score_ppm) / f64::from(PPM)
    }
}

/// How conduct is judged: the leader's configuration, carried in each command that judges
/// so that every member applies the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReputationPolicy {
    /// Forgetting factor λ in millionths: the weight the past keeps at each judgement.
    pub lambda_ppm: u32,
    /// A node whose score falls below this (millionths) is disqualified.
    pub disqualify_below_ppm: u32,
    /// Audits a vetting node must pass before it becomes active.
    pub vetting_audits: u64,
}

impl Default for ReputationPolicy {
    fn default() -> Self {
        Self {
            lambda_ppm: 990_000,
            disqualify_below_ppm: 975_000,
            vetting_audits: 20,
        }
    }
}

impl ReputationPolicy {
    /// Consecutive failures that disqualify a node with a perfect score: the least `n`
    /// with `λⁿ` below the threshold (`None` if the policy never disqualifies).
    pub fn failures_to_disqualify(&self) -> Option<u32> {
        let mut score = Reputation::default();
        for n in 1..=10_000 {
            score.judge(false, self.lambda_ppm);
            if score.score_ppm < self.disqualify_below_ppm {
                return Some(n);
            }
        }
        None
    }
}

/// Where a node is in its life. Only transitions are committed to the log; liveness itself
/// is tracked in the leader's memory from heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeState {
    /// New: receives a small share of shards until it has passed enough audits.
    Vetting,
    /// Fully trusted with new shards.
    Active,
    /// Missed heartbeats past the grace period; its shards are not repaired yet.
    Suspect,
    /// Silent too long: its shards count as lost and are repaired elsewhere.
    Lost,
    /// Leaving: its shards are being moved off.
    Draining,
    /// Left; nothing depends on it any more.
    Gone,
    /// Failed audits: refused new work, its shards repaired elsewhere.
    Disqualified,
}

impl NodeState {
    /// Every state, in lifecycle order: for listings that show zeros rather than gaps.
    pub const ALL: [NodeState; 7] = [
        NodeState::Vetting,
        NodeState::Active,
        NodeState::Suspect,
        NodeState::Lost,
        NodeState::Draining,
        NodeState::Gone,
        NodeState::Disqualified,
    ];

    /// Lower-case name for status pages and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Vetting => "vetting",
            NodeState::Active => "active",
            NodeState::Suspect => "suspect",
            NodeState::Lost => "lost",
            NodeState::Draining => "draining",
            NodeState::Gone => "gone",
            NodeState::Disqualified => "disqualified",
        }
    }

    /// Whether shards on a node in this state still count toward a segment's margin.
    pub fn holds_data(self) -> bool {
        matches!(
            self,
            NodeState::Vetting | NodeState::Active | NodeState::Suspect | NodeState::Draining
        )
    }

    /// Whether new shards may be placed on a node in this state.
    pub fn accepts_new_shards(self) -> bool {
        matches!(self, NodeState::Vetting | NodeState::Active)
    }

    /// Where a heartbeat takes a node in this state, if anywhere: a `Suspect` node that is
    /// heard from again returns to `Active` if it had been `vetted`, else to `Vetting`.
    ///
    /// `Lost`, `Draining`, `Gone` and `Disqualified` nodes stay where they are: a lost node's
    /// shards are already being rebuilt elsewhere, and whether it may come back is an
    /// operator's decision, not something a heartbeat can claim.
    pub fn after_heartbeat(self, vetted: bool) -> Option<NodeState> {
        match self {
            NodeState::Suspect if vetted => Some(NodeState::Active),
            NodeState::Suspect => Some(NodeState::Vetting),
            _ => None,
        }
    }

    /// Where `silent` (time without a heartbeat) takes a node in this state, if anywhere:
    /// `Vetting` or `Active` past `suspect_after` becomes `Suspect`; `Suspect` past
    /// `lost_after` becomes `Lost`. One step at a time, so every loss is preceded by a
    /// suspicion in the log. Nodes in other states are not the failure detector's to move.
    pub fn after_silence(
        self,
        silent: std::time::Duration,
        suspect_after: std::time::Duration,
        lost_after: std::time::Duration,
    ) -> Option<NodeState> {
        match self {
            NodeState::Vetting | NodeState::Active if silent > suspect_after => {
                Some(NodeState::Suspect)
            }
            NodeState::Suspect if silent > lost_after => Some(NodeState::Lost),
            _ => None,
        }
    }
}

/// An invitation for one node to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// After this (ms since the epoch) it is refused.
    pub expires_ms: u64,
    /// The node that used it, once used.
    pub used_by: Option<NodeId>,
    /// The organisation the operator invited: the node joins as a member of it or not at
    /// all, so one organisation cannot pass as several to collect shards of a segment
    /// beyond the per-organisation limit. `None` only in invitations made before every
    /// invitation had to name one; those admit no one.
    pub org: Option<String>,
}

/// A shard no object references any more, waiting to be deleted from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageShard {
    /// The node holding it.
    pub node: NodeId,
    /// When it stopped being referenced, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// Checks an S3 bucket name: 3–63 characters of lower-case letters, digits, `-` and `.`,
/// starting and ending with a letter or digit, no `..`, not an IP address.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Err(format!(
            "bucket name {name:?} must be 3 to 63 characters long"
        ));
    }
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.';
    if !bytes.iter().all(allowed) {
        return Err(format!(
            "bucket name {name:?} may only hold lower-case letters, digits, '-' and '.'"
        ));
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return Err(format!(
            "bucket name {name:?} must start and end with a letter or digit"
        ));
    }
    if name.contains("..") {
        return Err(format!("bucket name {name:?} must not contain '..'"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("bucket name {name:?} must not be an IP address"));
    }
    Ok(())
}

/// Longest organisation or site name.
pub const MAX_DOMAIN_LEN: usize = 64;
/// Longest node address (`host:port`).
pub const MAX_ADDR_LEN: usize = 255;

/// Checks an organisation or site name (`what` says which, for the message): 1 to
/// [`MAX_DOMAIN_LEN`] printable ASCII characters, so names fit in logs, labels and status
/// pages and two spellings of one name cannot look alike.
pub fn validate_domain(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_DOMAIN_LEN {
        return Err(format!(
            "{what} name must be 1 to {MAX_DOMAIN_LEN} characters, got {}",
            name.len()
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} name {name:?} may only hold printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// A gateway allowed to use the coordinator's gateway RPC, registered by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    /// The gateway's identity key, pinned on every connection.
    pub key: cairn_proto::identity::PublicKey,
    /// What the operator calls it.
    pub name: String,
    /// Registration time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// A multipart upload in progress: created, receiving parts, not yet visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Bucket name.
    pub bucket: String,
    /// Object key the upload will become.
    pub key: String,
    /// When the upload was created, milliseconds since the Unix epoch.
    pub initiated_ms: u64,
    /// HTTP metadata given at creation; the finished object carries it.
    pub headers: ObjectHeaders,
    /// The code every part's segments use (the bucket's at creation).
    pub erasure: ErasureProfile,
    /// The canned ACL the finished object gets (record version 2).
    pub acl: CannedAcl,
    /// The checksum algorithm and type the upload was created with, if any (record
    /// version 3).
    pub checksum: Option<UploadChecksum>,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Bytes in the part.
    pub size: u64,
    /// The part's ETag (MD5 of its bytes), with its quotes.
    pub etag: String,
    /// When the part was stored, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// The part's segments, in order (empty for an empty part).
    pub segments: Vec<SegmentRecord>,
    /// The part's checksum, verified by the gateway (record version 2; `None` before):
    /// of the upload's algorithm if it has one, else the first one the client sent.
    pub checksum: Option<ObjectChecksum>,
}

impl PartRecord {
    /// The part seen as an object of its own (how a gateway reads it back to check a NAR
    /// uploaded in parts); its [`ObjectRecord::version`] names exactly these bytes.
    pub fn as_object(&self, upload: &UploadRecord) -> ObjectRecord {
        ObjectRecord {
            size: self.size,
            etag: self.etag.clone(),
            last_modified_ms: self.last_modified_ms,
            headers: upload.headers.clone(),
            body: ObjectBody::Segments {
                erasure: upload.erasure,
                segments: self.segments.clone(),
            },
            acl: upload.acl,
            parts: Vec::new(),
            checksum: self.checksum.clone(),
        }
    }
}

/// Smallest part S3 allows except the last one of an upload, in bytes.
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Highest part number S3 allows.
pub const MAX_PART_NUMBER: u32 = 10_000;
