//! The records the gateway RPC carries: buckets, access keys, objects, uploads, listings.
//!
//! They mirror what the coordinator's catalog stores, yet are types of their own: the
//! catalog's on-disk format and the wire may each change without the other (the coordinator
//! converts between them where it answers). Postcard encodes them by field order, so a
//! field added here changes the protocol and goes with a new ALPN.

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
    /// Who besides the owner may read it.
    pub acl: CannedAcl,
    /// The size, ETag and checksum of each part of an object completed from a multipart
    /// upload, in order; empty for an object stored in one piece (or completed before parts
    /// were kept).
    pub parts: Vec<PartSummary>,
    /// The object's checksum, if any: the full-object one a client sent with a single PUT,
    /// verified, or the composite (`-N`) or full-object one of a multipart upload.
    pub checksum: Option<ObjectChecksum>,
}

/// The canned ACLs Cairn keeps: readable by the owner only, or by anyone.
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
    /// The part's checksum, if it had one.
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

/// The checksum a multipart upload was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UploadChecksum {
    /// Which algorithm every part gets.
    pub algorithm: ChecksumAlgorithm,
    /// How the object's checksum derives from the parts'.
    pub kind: ChecksumType,
}

/// A checksum of an object's bytes, as S3 writes it (base64 of the digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChecksum {
    /// Which algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest, base64; a multipart object's composite checksum is suffixed `-N`.
    pub value: String,
}

impl ObjectChecksum {
    /// Whether this is a composite checksum (of part checksums), told by its `-N` suffix.
    pub fn is_composite(&self) -> bool {
        self.value.contains('-')
    }
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
    /// `Expires`, as the client sent it.
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
    /// The canned ACL the finished object gets.
    pub acl: CannedAcl,
    /// The checksum algorithm and type the upload was created with, if any.
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
    /// The part's verified checksum, if it has one.
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
    /// allows.
    Spread,
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

/// What one page of an object listing asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up at the first occurrence of this after the prefix.
    pub delimiter: Option<String>,
    /// Only keys (or rolled-up prefixes) sorting after this.
    pub after: Option<String>,
    /// Most objects plus common prefixes to return.
    pub max: usize,
}

/// What one page of a listing of uploads in progress asks for (S3's
/// ListMultipartUploads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up at the first occurrence of this after the prefix.
    pub delimiter: Option<String>,
    /// Start after this key (S3's key marker), or after everything under it when it is a
    /// rolled-up prefix.
    pub key_marker: Option<String>,
    /// With a key marker: start after this upload of that key (S3's upload id marker).
    pub upload_id_marker: Option<String>,
    /// Most uploads plus common prefixes to return.
    pub max: u32,
}

/// One entry of a page of uploads in progress, in S3's order (key, then start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadEntry {
    /// An upload: its id and record.
    Upload(String, UploadRecord),
    /// Keys rolled up at the delimiter.
    Prefix(String),
}

/// One page of uploads in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadListing {
    /// Uploads and rolled-up prefixes, in order.
    pub entries: Vec<UploadEntry>,
    /// Whether more entries follow.
    pub truncated: bool,
}

/// One page of an object listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Objects, in key order.
    pub objects: Vec<(String, ObjectRecord)>,
    /// Rolled-up prefixes, in order.
    pub common_prefixes: Vec<String>,
    /// Whether more entries follow.
    pub truncated: bool,
    /// The last key or prefix returned: where the next page starts after.
    pub last: Option<String>,
}
