//! The gateway RPC: what an S3 gateway asks the coordinator, over QUIC with the gateway's
//! registered key.
//!
//! Messages are postcard frames, one request and one response per bidirectional stream.
//! Every request goes to the leader: reads are linearizable (read-index) and writes are
//! Raft commits. The coordinator answers them; [`crate::coordinator::CoordinatorClient`]
//! asks them.

use cairn_erasure::{MaskKey, SegmentNonce, ShardRoot};
use cairn_proto::identity::NodeId;
use cairn_proto::order::{SignedOrder, SignedReceipt};
use serde::{Deserialize, Serialize};

use crate::records::{
    AccessKey, Bucket, CannedAcl, ErasureProfile, ListQuery, Listing, MoveReason, ObjectChecksum,
    ObjectHeaders, ObjectRecord, ObjectVersion, PartRecord, RequestId, ShardRecord, UploadChecksum,
    UploadListing, UploadQuery, UploadRecord, WriteCondition,
};

/// ALPN of the gateway RPC. Version 2: object records carry an ACL, part boundaries, a
/// checksum and `Expires`; uploads an ACL; objects' and buckets' ACLs can be set.
/// Version 3: checksums in uploads and parts. Version 4: uploads are listed a page at a
/// time from markers, rolled up at a delimiter by the coordinator.
pub const GATEWAY_ALPN: &[u8] = b"cairn-gateway/4";

/// Largest RPC frame, and so largest response (a part's read orders, a listing page, a
/// repair job); the sender of responses is the coordinator. Requests have their own,
/// smaller limit, [`MAX_RPC_REQUEST`].
pub const MAX_RPC_FRAME: u32 = 16 << 20;

/// Largest request frame the coordinator reads from a registered gateway.
///
/// Requests are small except [`GatewayRequest::Put`] and [`GatewayRequest::PutPart`], which
/// carry a put order and a receipt per shard. Encoded, an order is at most 207 bytes and a
/// receipt at most 174, so a stored shard costs at most 381 bytes and a segment of the
/// production 10 + 6 code about 6.1 KiB (16 × 381, its length, a count and the mask
/// nonce). The largest body one S3 request carries is 5 GiB (a PUT or a part): 80 segments
/// of 64 MiB, about 490 KiB. 4 MiB holds over 680 such segments: 5 GiB in segments down
/// to 7.5 MiB, or 5 GiB in 64 MiB segments of a code up to 128 shards wide, besides the
/// key, headers and metadata (a few KiB at most).
pub const MAX_RPC_REQUEST: u32 = 4 << 20;

/// Segments whose read orders one [`GatewayResponse::Read`] carries; a gateway streaming a
/// longer object asks for the next window with [`GatewayRequest::ReadOrders`].
pub const READ_WINDOW: u32 = 16;

/// A gateway's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayRequest {
    /// An access key with its secret, to check a SigV4 signature.
    AccessKey {
        /// Access key id.
        id: String,
    },
    /// Every bucket.
    ListBuckets,
    /// One bucket.
    Bucket {
        /// Bucket name.
        name: String,
    },
    /// Creates a plain bucket with the cluster's default code.
    CreateBucket {
        /// Bucket name.
        name: String,
        /// Whether anonymous GET and HEAD of its objects are allowed (`x-amz-acl:
        /// public-read`).
        public_read: bool,
    },
    /// Deletes an empty bucket.
    DeleteBucket {
        /// Bucket name.
        name: String,
    },
    /// An object's record (HEAD, and GET of inline bodies).
    Object {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
    /// An object's record with the addresses of its nodes and read orders for the bytes
    /// `range` of it (object offsets; the end may lie past the object): for the data
    /// shards holding them, in at most [`READ_WINDOW`] segments from the first one the
    /// range touches. No orders for `None` (the reader asks once it knows what it needs):
    /// every order costs the leader a signature, and an anonymous reader can ask often.
    Read {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The bytes the reader will fetch first.
        range: Option<std::ops::Range<u64>>,
    },
    /// Read orders for segments `from..from + count` (at most [`READ_WINDOW`]) of the object
    /// version `version` (refused if the key now holds another version, even one with the
    /// same ETag): with `range`, only for the data shards holding those bytes of the object;
    /// without, for every shard (a degraded read decodes from any `k`).
    ReadOrders {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// [`ObjectRecord::version`] of the record being read.
        version: ObjectVersion,
        /// First segment.
        from: u32,
        /// Segments wanted.
        count: u32,
        /// The object bytes wanted, if only some.
        range: Option<std::ops::Range<u64>>,
    },
    /// Read orders for segments of a version that was replaced or deleted after the read
    /// began (answered with [`GatewayResponse::ReadOrders`] starting at `first`): orders
    /// only for shards still in the garbage queue on the node named, which keeps them for
    /// the garbage delay precisely so that such reads can finish.
    RetiredOrders {
        /// The first segment's index, echoed in the answer.
        first: u32,
        /// At most [`READ_WINDOW`] segments.
        segments: Vec<RetiredSegment>,
    },
    /// One page of a listing.
    List {
        /// Bucket name.
        bucket: String,
        /// What to list.
        query: ListQuery,
    },
    /// Chooses nodes for one encoded segment of `bucket` and signs put orders for them.
    Place {
        /// Bucket name (its code and failure tolerance apply).
        bucket: String,
        /// Length of every shard of the segment.
        shard_size: u64,
        /// The roots of the segment's `k + m` shards, in shard order.
        roots: Vec<ShardRoot>,
        /// Nodes not to use (they failed this segment already).
        avoid: Vec<NodeId>,
    },
    /// Makes an object visible.
    Put {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The object, with the proof of where its shards are.
        object: NewObject,
        /// What the key must hold for the write to happen (`If-None-Match: *`, `If-Match`).
        condition: Option<WriteCondition>,
    },
    /// Deletes an object (deleting a missing key succeeds, as in S3).
    Delete {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
    /// Starts a multipart upload.
    CreateUpload {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// Metadata the finished object will carry.
        headers: ObjectHeaders,
        /// The canned ACL the finished object gets.
        acl: CannedAcl,
        /// The checksum algorithm and type the upload is created with, if any.
        checksum: Option<UploadChecksum>,
    },
    /// A multipart upload in progress.
    Upload {
        /// Upload id.
        id: String,
    },
    /// Stores one part.
    PutPart {
        /// Upload id.
        upload: String,
        /// Part number.
        number: u32,
        /// Bytes in the part.
        size: u64,
        /// The part's ETag, quoted.
        etag: String,
        /// Its segments with their proof.
        segments: Vec<NewSegment>,
        /// The part's checksum, verified by the gateway, if it has one.
        checksum: Option<ObjectChecksum>,
    },
    /// Completes an upload from the listed parts.
    CompleteUpload {
        /// Upload id.
        upload: String,
        /// Part numbers and expected ETags, ascending.
        parts: Vec<(u32, String)>,
        /// Parts the gateway read back and checked (a NAR's), with the version it checked
        /// ([`PartRecord::as_object`]): completion is refused if a
        /// part is no longer that very version, so what becomes visible is what was
        /// checked, not merely something with the same MD5.
        verified: Vec<(u32, ObjectVersion)>,
        /// The object's checksum, derived from the listed parts' checksums.
        checksum: Option<ObjectChecksum>,
        /// What the key must hold for the completion to happen.
        condition: Option<WriteCondition>,
    },
    /// Abandons an upload.
    AbortUpload {
        /// Upload id.
        upload: String,
    },
    /// One page of the uploads in progress in a bucket.
    ListUploads {
        /// Bucket name.
        bucket: String,
        /// Which page.
        query: UploadQuery,
    },
    /// Parts of an upload.
    ListParts {
        /// Upload id.
        upload: String,
        /// Only parts numbered above this.
        after: u32,
        /// At most this many.
        max: u32,
    },
    /// A node sent bytes that fail verification against the catalog's root (or said its
    /// copy is damaged): if the catalog places that shard of `bucket`/`key` on the node,
    /// it is counted against the node and the shard is rebuilt elsewhere.
    ReportShard {
        /// Bucket of the object the shard belongs to.
        bucket: String,
        /// Key of that object.
        key: String,
        /// The node.
        node: NodeId,
        /// The shard.
        shard: cairn_proto::ids::ShardId,
        /// What was wrong, for the log.
        problem: String,
    },
    /// A segment to rebuild or move, if the leader has one for this gateway now.
    RepairJob,
    /// One stored part of a multipart upload, as an object with read orders for all its
    /// segments (answered with [`GatewayResponse::Read`]): how a gateway checks a NAR
    /// uploaded in parts before completing it.
    ReadPart {
        /// Upload id.
        upload: String,
        /// Part number.
        number: u32,
    },
    /// Whether the member is there at all (answered at once, by any member): a client
    /// waiting long on an answer asks this to tell a slow request from a dead member.
    Ping,
    /// A repair job is done: the rebuilt shards were stored under the job's put orders.
    RepairDone {
        /// The job as handed out.
        ticket: RepairTicket,
        /// Per replaced shard index, the put order and the node's receipt.
        stored: Vec<(u32, StoredShard)>,
    },
    /// A repair job could not be done (too few shards answered, a target failed); the
    /// segment goes back to the queue.
    RepairFailed {
        /// The job as handed out.
        ticket: RepairTicket,
        /// What went wrong, for the log.
        problem: String,
    },
    /// The cluster's segment mask key (answered with [`GatewayResponse::MaskKey`]): a
    /// gateway masks every segment it stores with it and unmasks what it reads. Only
    /// registered gateways get it; nodes never do.
    MaskKey,
    /// `request`, applied at most once under the client's id `id`: every retry of one
    /// change carries the same id, so a commit whose answer was lost is not applied again
    /// (the coordinator remembers the answer to each id for an hour). Only changes are wrapped; a wrapped read is
    /// answered as usual.
    Once {
        /// The client's id for the request, the same on every retry.
        id: RequestId,
        /// The request (never another `Once`: one is refused as it is decoded).
        #[serde(deserialize_with = "unwrapped_request")]
        request: Box<GatewayRequest>,
    },
    /// A node refused to read a shard for a reason it chose (busy, a claimed bad order or
    /// range, not found…; not an expired or replayed order, which may be the reader's
    /// doing): if the catalog places that shard of `bucket`/`key` on the node, the leader
    /// audits it there (once per gateway and shard), and the audit judges. Nothing is
    /// counted against the node for the report itself.
    ReportRefusal {
        /// Bucket of the object the shard belongs to.
        bucket: String,
        /// Key of that object.
        key: String,
        /// The node.
        node: NodeId,
        /// The shard.
        shard: cairn_proto::ids::ShardId,
        /// The refusal, for the log.
        problem: String,
    },
    /// Sets an object's canned ACL (answered `Done`, or `NoSuchKey`).
    SetObjectAcl {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The new ACL.
        acl: CannedAcl,
    },
    /// Makes a bucket public-read or private (answered `Done`, or `NoSuchBucket`).
    SetBucketPublicRead {
        /// Bucket name.
        name: String,
        /// Whether anonymous GET and HEAD of its objects are allowed.
        public_read: bool,
    },
}

/// Decodes the request a [`GatewayRequest::Once`] wraps, refusing one that is itself a
/// `Once`. Decoding recurses once per level of nesting, and a request frame holds enough
/// 17-byte levels (a few hundred thousand) to overflow the stack of the thread decoding
/// it; refused at the second level, the depth is bounded.
fn unwrapped_request<'de, D>(deserializer: D) -> Result<Box<GatewayRequest>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    thread_local! {
        static INSIDE_ONCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    /// Leaves the `Once` being decoded, however its decoding ends.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            INSIDE_ONCE.with(|inside| inside.set(false));
        }
    }
    if INSIDE_ONCE.with(|inside| inside.replace(true)) {
        return Err(serde::de::Error::custom(
            "a request cannot wrap another request",
        ));
    }
    let _leave = Leave;
    Box::<GatewayRequest>::deserialize(deserializer)
}

impl GatewayRequest {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            GatewayRequest::AccessKey { .. } => "access_key",
            GatewayRequest::ListBuckets => "list_buckets",
            GatewayRequest::Bucket { .. } => "bucket",
            GatewayRequest::CreateBucket { .. } => "create_bucket",
            GatewayRequest::DeleteBucket { .. } => "delete_bucket",
            GatewayRequest::Object { .. } => "object",
            GatewayRequest::Read { .. } => "read",
            GatewayRequest::ReadOrders { .. } => "read_orders",
            GatewayRequest::RetiredOrders { .. } => "retired_orders",
            GatewayRequest::List { .. } => "list",
            GatewayRequest::Place { .. } => "place",
            GatewayRequest::Put { .. } => "put",
            GatewayRequest::Delete { .. } => "delete",
            GatewayRequest::CreateUpload { .. } => "create_upload",
            GatewayRequest::Upload { .. } => "upload",
            GatewayRequest::PutPart { .. } => "put_part",
            GatewayRequest::CompleteUpload { .. } => "complete_upload",
            GatewayRequest::AbortUpload { .. } => "abort_upload",
            GatewayRequest::ListUploads { .. } => "list_uploads",
            GatewayRequest::ListParts { .. } => "list_parts",
            GatewayRequest::ReportShard { .. } => "report_shard",
            GatewayRequest::RepairJob => "repair_job",
            GatewayRequest::Ping => "ping",
            GatewayRequest::ReadPart { .. } => "read_part",
            GatewayRequest::RepairDone { .. } => "repair_done",
            GatewayRequest::Once { request, .. } => request.name(),
            GatewayRequest::RepairFailed { .. } => "repair_failed",
            GatewayRequest::MaskKey => "mask_key",
            GatewayRequest::ReportRefusal { .. } => "report_refusal",
            GatewayRequest::SetObjectAcl { .. } => "set_object_acl",
            GatewayRequest::SetBucketPublicRead { .. } => "set_bucket_public_read",
        }
    }
}

/// An object as a gateway hands it in for commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    /// Size in bytes.
    pub size: u64,
    /// S3 ETag, quoted.
    pub etag: String,
    /// HTTP metadata.
    pub headers: ObjectHeaders,
    /// The bytes or where they are.
    pub body: NewBody,
    /// Who besides the owner may read it.
    pub acl: CannedAcl,
    /// The full-object checksum the client sent and the gateway verified, if any.
    pub checksum: Option<ObjectChecksum>,
}

/// The body of a [`NewObject`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewBody {
    /// A small body, kept in the catalog.
    Inline(Vec<u8>),
    /// Segments stored on nodes (in the bucket's code).
    Segments(Vec<NewSegment>),
}

/// One stored segment and the proof of it: per shard, the order the coordinator signed and
/// the receipt the node signed for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSegment {
    /// Bytes of object data in the segment.
    pub len: u64,
    /// Shard `i` of the segment, in shard order.
    pub shards: Vec<StoredShard>,
    /// The nonce the segment was masked with before coding (`None`: not masked); the
    /// catalog keeps it for readers. Nothing can check it: a wrong one makes the segment
    /// unreadable, as wrong roots would.
    pub mask: Option<SegmentNonce>,
}

/// A shard a node accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredShard {
    /// The put order it was sent under.
    pub order: SignedOrder,
    /// The node's receipt for it.
    pub receipt: SignedReceipt,
}

/// Where to send one shard of a placed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedShard {
    /// The node's QUIC address.
    pub addr: String,
    /// The signed put order (it names the node, shard id, root and size).
    pub order: SignedOrder,
}

/// What a gateway needs to read an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRead {
    /// The object.
    pub object: ObjectRecord,
    /// QUIC address of every node holding one of its shards, with whether it is in a state
    /// to serve (suspect, lost and disqualified nodes are better tried last).
    pub nodes: Vec<(NodeId, String, bool)>,
    /// Read orders for segments `first..first + orders.len()`, one per shard in shard order.
    pub orders: ReadOrders,
}

/// Read orders for a window of segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOrders {
    /// The first segment covered.
    pub first: u32,
    /// Per segment, one order per shard in shard order; `None` where the coordinator has
    /// none to give (a retired shard already collected), which a reader treats like a shard
    /// that failed.
    pub segments: Vec<Vec<Option<SignedOrder>>>,
}

/// One segment of a version that is no longer current, as the reader's record has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSegment {
    /// Length of each of its shards.
    pub shard_size: u64,
    /// Its shards, in shard order.
    pub shards: Vec<ShardRecord>,
}

/// Which shards of which segment a repair job replaces; the gateway hands it back with
/// the result, so the leader can check and commit it without remembering the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTicket {
    /// Bucket name.
    pub bucket: String,
    /// Object key, or for a part the upload id.
    pub key: String,
    /// For a part of a multipart upload in progress, its number.
    pub part: Option<u32>,
    /// ETag of the object version (or part).
    pub etag: String,
    /// Segment index.
    pub segment: u32,
    /// Rebuilt because shards were lost, or moved off a draining node.
    pub reason: MoveReason,
    /// Shard indexes replaced, with the ids of the shards they replace.
    pub replaced: Vec<(u32, cairn_proto::ids::ShardId)>,
}

/// A segment to rebuild: where to read `k` of its shards and where to put the new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairJob {
    /// What the job replaces.
    pub ticket: RepairTicket,
    /// The object's code.
    pub erasure: ErasureProfile,
    /// Bytes of object data in the segment.
    pub len: u64,
    /// The root of every shard of the segment, in shard order.
    pub roots: Vec<ShardRoot>,
    /// Shards to read from, best first: index, node address, get order.
    pub sources: Vec<(u32, String, SignedOrder)>,
    /// Where each rebuilt shard goes: index and put order.
    pub targets: Vec<(u32, PlacedShard)>,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayResponse {
    /// Done, nothing to return.
    Done,
    /// See [`GatewayRequest::AccessKey`]; `None` for unknown and revoked keys alike.
    AccessKey(Option<AccessKey>),
    /// See [`GatewayRequest::ListBuckets`].
    Buckets(Vec<Bucket>),
    /// See [`GatewayRequest::Bucket`].
    Bucket(Option<Bucket>),
    /// See [`GatewayRequest::Object`].
    Object(Option<Box<ObjectRecord>>),
    /// See [`GatewayRequest::Read`].
    Read(Option<Box<ObjectRead>>),
    /// See [`GatewayRequest::ReadOrders`].
    ReadOrders(ReadOrders),
    /// See [`GatewayRequest::List`].
    Listing(Listing),
    /// See [`GatewayRequest::RepairJob`].
    RepairJob(Box<RepairJob>),
    /// No repair work for now; ask again after this long.
    NoRepairWork {
        /// Milliseconds to wait before asking again.
        retry_after_ms: u64,
    },
    /// See [`GatewayRequest::Place`]: one entry per shard, in shard order.
    Placed(Vec<PlacedShard>),
    /// An object was stored or deleted; whether a version existed before.
    Stored {
        /// Whether the key held an object before.
        existed: bool,
    },
    /// See [`GatewayRequest::CreateUpload`].
    UploadCreated {
        /// The new upload's id.
        id: String,
    },
    /// See [`GatewayRequest::Upload`].
    Upload(Option<UploadRecord>),
    /// See [`GatewayRequest::CompleteUpload`].
    Completed {
        /// The object's ETag.
        etag: String,
        /// Its size.
        size: u64,
    },
    /// See [`GatewayRequest::ListUploads`].
    Uploads(UploadListing),
    /// See [`GatewayRequest::ListParts`].
    Parts(Vec<(u32, PartRecord)>),
    /// This member is not the leader; ask `leader` (its QUIC address) if known.
    NotLeader {
        /// The leader's QUIC address, if this member knows it.
        leader: Option<String>,
    },
    /// Refused or failed.
    Error {
        /// What kind of failure (the gateway maps it to an S3 error).
        code: RpcCode,
        /// A message for the operator or the S3 client.
        message: String,
    },
    /// See [`GatewayRequest::MaskKey`].
    MaskKey(MaskKey),
}

impl GatewayResponse {
    /// Short name for logs and errors; names the answer without printing what it carries
    /// (an access key's secret, a page of records).
    pub fn name(&self) -> &'static str {
        match self {
            GatewayResponse::Done => "done",
            GatewayResponse::AccessKey(_) => "access_key",
            GatewayResponse::Buckets(_) => "buckets",
            GatewayResponse::Bucket(_) => "bucket",
            GatewayResponse::Object(_) => "object",
            GatewayResponse::Read(_) => "read",
            GatewayResponse::ReadOrders(_) => "read_orders",
            GatewayResponse::Listing(_) => "listing",
            GatewayResponse::RepairJob(_) => "repair_job",
            GatewayResponse::NoRepairWork { .. } => "no_repair_work",
            GatewayResponse::Placed(_) => "placed",
            GatewayResponse::Stored { .. } => "stored",
            GatewayResponse::UploadCreated { .. } => "upload_created",
            GatewayResponse::Upload(_) => "upload",
            GatewayResponse::Completed { .. } => "completed",
            GatewayResponse::Uploads(_) => "uploads",
            GatewayResponse::Parts(_) => "parts",
            GatewayResponse::NotLeader { .. } => "not_leader",
            GatewayResponse::Error { .. } => "error",
            GatewayResponse::MaskKey(_) => "mask_key",
        }
    }
}

/// Why a gateway request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RpcCode {
    /// The caller's key is not a registered gateway.
    Forbidden,
    /// No such bucket.
    NoSuchBucket,
    /// No such object.
    NoSuchKey,
    /// No such multipart upload.
    NoSuchUpload,
    /// The bucket exists.
    BucketExists,
    /// The bucket holds objects or uploads.
    BucketNotEmpty,
    /// A part is missing, has another ETag, or its number is out of range.
    InvalidPart,
    /// Parts out of order.
    InvalidPartOrder,
    /// A part other than the last is too small.
    EntityTooSmall,
    /// The request is malformed or its proof does not hold (bad order or receipt).
    InvalidRequest,
    /// Not enough nodes to place a segment.
    NotEnoughNodes,
    /// The object changed while it was being read.
    Changed,
    /// A conditional write's condition does not hold.
    PreconditionFailed,
    /// Something failed on the coordinator's side; retrying may help.
    Internal,
}
