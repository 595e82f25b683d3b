//! The layouts of records and commands as earlier releases wrote them, read beside the
//! current ones and converted on the way in.
//!
//! Record version 1 of an object had no ACL, part boundaries, checksum or `Expires`, and
//! an upload no ACL; version 2 added them (`catalog::format`). Raft log entries written
//! before then carry the same old layouts inside [`crate::catalog::Command::PutObjectV1`]
//! and [`crate::catalog::Command::CreateUploadV1`].
//!
//! Record version 3 of an object added each part's checksum, of an upload its checksum
//! algorithm and type; version 2 of a part record added the part's checksum. Log entries
//! written before then carry the older layouts inside `PutObjectV2`, `CreateUploadV2` and
//! `PutPartV1` (and `CompleteUploadV1`, which had no object checksum).

use serde::{Deserialize, Serialize};

use super::model::{
    CannedAcl, ErasureProfile, ObjectBody, ObjectChecksum, ObjectHeaders, ObjectRecord, PartRecord,
    PartSummary, SegmentRecord, UploadRecord,
};

/// [`ObjectHeaders`] as record version 1 stored them (no `Expires`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeadersV1 {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `x-amz-meta-*` pairs, names without the prefix.
    pub user_metadata: Vec<(String, String)>,
}

impl From<ObjectHeadersV1> for ObjectHeaders {
    fn from(old: ObjectHeadersV1) -> Self {
        ObjectHeaders {
            content_type: old.content_type,
            content_encoding: old.content_encoding,
            cache_control: old.cache_control,
            user_metadata: old.user_metadata,
            expires: None,
        }
    }
}

/// [`ObjectRecord`] as record version 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecordV1 {
    /// Size in bytes.
    pub size: u64,
    /// S3 ETag, with its quotes.
    pub etag: String,
    /// Last modification, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// HTTP metadata.
    pub headers: ObjectHeadersV1,
    /// Where the bytes are.
    pub body: ObjectBody,
}

impl From<ObjectRecordV1> for ObjectRecord {
    /// A version-1 object is private, carries no part boundaries (even if it was completed
    /// from parts: they were not kept) and no checksum.
    fn from(old: ObjectRecordV1) -> Self {
        ObjectRecord {
            size: old.size,
            etag: old.etag,
            last_modified_ms: old.last_modified_ms,
            headers: old.headers.into(),
            body: old.body,
            acl: CannedAcl::Private,
            parts: Vec::new(),
            checksum: None,
        }
    }
}

/// [`UploadRecord`] as record version 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecordV1 {
    /// Bucket name.
    pub bucket: String,
    /// Object key the upload will become.
    pub key: String,
    /// When the upload was created, milliseconds since the Unix epoch.
    pub initiated_ms: u64,
    /// HTTP metadata given at creation.
    pub headers: ObjectHeadersV1,
    /// The code every part's segments use.
    pub erasure: ErasureProfile,
}

impl From<UploadRecordV1> for UploadRecord {
    /// A version-1 upload becomes a private object.
    fn from(old: UploadRecordV1) -> Self {
        UploadRecord {
            bucket: old.bucket,
            key: old.key,
            initiated_ms: old.initiated_ms,
            headers: old.headers.into(),
            erasure: old.erasure,
            acl: CannedAcl::Private,
            checksum: None,
        }
    }
}

/// [`ObjectRecord`] as record version 2 stored it (parts without their checksums).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecordV2 {
    /// Size in bytes.
    pub size: u64,
    /// S3 ETag, with its quotes.
    pub etag: String,
    /// Last modification, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// HTTP metadata.
    pub headers: ObjectHeaders,
    /// Where the bytes are.
    pub body: ObjectBody,
    /// Who besides the owner may read it.
    pub acl: CannedAcl,
    /// Size and ETag of each part.
    pub parts: Vec<PartSummaryV1>,
    /// The verified full-object checksum, if any.
    pub checksum: Option<ObjectChecksum>,
}

/// [`PartSummary`] as record version 2 of an object stored it (no checksum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSummaryV1 {
    /// Bytes in the part.
    pub size: u64,
    /// The part's ETag, with its quotes.
    pub etag: String,
}

impl From<ObjectRecordV2> for ObjectRecord {
    /// Its parts carry no checksum: none was kept for them.
    fn from(old: ObjectRecordV2) -> Self {
        ObjectRecord {
            size: old.size,
            etag: old.etag,
            last_modified_ms: old.last_modified_ms,
            headers: old.headers,
            body: old.body,
            acl: old.acl,
            parts: old
                .parts
                .into_iter()
                .map(|p| PartSummary {
                    size: p.size,
                    etag: p.etag,
                    checksum: None,
                })
                .collect(),
            checksum: old.checksum,
        }
    }
}

/// [`UploadRecord`] as record version 2 stored it (no checksum algorithm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecordV2 {
    /// Bucket name.
    pub bucket: String,
    /// Object key the upload will become.
    pub key: String,
    /// When the upload was created, milliseconds since the Unix epoch.
    pub initiated_ms: u64,
    /// HTTP metadata given at creation.
    pub headers: ObjectHeaders,
    /// The code every part's segments use.
    pub erasure: ErasureProfile,
    /// The canned ACL the finished object gets.
    pub acl: CannedAcl,
}

impl From<UploadRecordV2> for UploadRecord {
    /// An upload created without a checksum algorithm.
    fn from(old: UploadRecordV2) -> Self {
        UploadRecord {
            bucket: old.bucket,
            key: old.key,
            initiated_ms: old.initiated_ms,
            headers: old.headers,
            erasure: old.erasure,
            acl: old.acl,
            checksum: None,
        }
    }
}

/// [`PartRecord`] as record version 1 stored it (no checksum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecordV1 {
    /// Bytes in the part.
    pub size: u64,
    /// The part's ETag, with its quotes.
    pub etag: String,
    /// When the part was stored, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// The part's segments, in order.
    pub segments: Vec<SegmentRecord>,
}

impl From<PartRecordV1> for PartRecord {
    /// A part stored without its checksum.
    fn from(old: PartRecordV1) -> Self {
        PartRecord {
            size: old.size,
            etag: old.etag,
            last_modified_ms: old.last_modified_ms,
            segments: old.segments,
            checksum: None,
        }
    }
}
