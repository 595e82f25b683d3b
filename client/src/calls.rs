//! Typed calls of the gateway RPC: one method of [`CoordinatorClient`] per request a gateway
//! makes, returning what that request is answered with.
//!
//! Each method sends its request through [`CoordinatorClient::call`] (reads, reports,
//! repair traffic) or [`CoordinatorClient::change`] (changes, applied at most once) and
//! takes the answer apart. An answer of another kind is [`CallError::Unexpected`], so a
//! caller handles refusals and outages only. A lookup that finds nothing is refused with
//! the code the coordinator itself uses for the missing thing
//! ([`RpcCode::NoSuchBucket`], [`RpcCode::NoSuchKey`], [`RpcCode::NoSuchUpload`],
//! [`RpcCode::InvalidPart`]), so it reads like any other request naming it.

use std::ops::Range;
use std::time::Duration;

use cairn_erasure::{MaskKey, ShardRoot};
use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;

use crate::coordinator::{CallError, CoordinatorClient};
use crate::gateway_rpc::{
    GatewayRequest, GatewayResponse, NewObject, NewSegment, ObjectRead, PlacedShard, ReadOrders,
    RepairJob, RepairTicket, RetiredSegment, RpcCode, StoredShard,
};
use crate::records::{
    AccessKey, Bucket, CannedAcl, ListQuery, Listing, ObjectChecksum, ObjectHeaders, ObjectRecord,
    ObjectVersion, PartRecord, UploadChecksum, UploadListing, UploadQuery, UploadRecord,
    WriteCondition,
};

/// What [`CoordinatorClient::repair_job`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairWork {
    /// A segment to rebuild or move.
    Job(Box<RepairJob>),
    /// Nothing to do now; ask again after this long.
    Later(Duration),
}

impl CoordinatorClient {
    /// The access key `id` with its secret; `None` for an unknown or revoked key alike.
    pub async fn access_key(&self, id: &str) -> Result<Option<AccessKey>, CallError> {
        let request = GatewayRequest::AccessKey { id: id.to_string() };
        match self.call(&request).await? {
            GatewayResponse::AccessKey(key) => Ok(key),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Every bucket.
    pub async fn buckets(&self) -> Result<Vec<Bucket>, CallError> {
        let request = GatewayRequest::ListBuckets;
        match self.call(&request).await? {
            GatewayResponse::Buckets(buckets) => Ok(buckets),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// The bucket `name`; refused with [`RpcCode::NoSuchBucket`] if there is none.
    pub async fn bucket(&self, name: &str) -> Result<Bucket, CallError> {
        let request = GatewayRequest::Bucket {
            name: name.to_string(),
        };
        match self.call(&request).await? {
            GatewayResponse::Bucket(Some(bucket)) => Ok(bucket),
            GatewayResponse::Bucket(None) => Err(missing(
                RpcCode::NoSuchBucket,
                format!("no bucket named {name}"),
            )),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Creates the plain bucket `name` with the cluster's default code, at most once.
    pub async fn create_bucket(&self, name: &str, public_read: bool) -> Result<(), CallError> {
        self.change_done(GatewayRequest::CreateBucket {
            name: name.to_string(),
            public_read,
        })
        .await
    }

    /// Deletes the empty bucket `name`, at most once.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), CallError> {
        self.change_done(GatewayRequest::DeleteBucket {
            name: name.to_string(),
        })
        .await
    }

    /// Makes the bucket `name` public-read or private, at most once.
    pub async fn set_bucket_public_read(
        &self,
        name: &str,
        public_read: bool,
    ) -> Result<(), CallError> {
        self.change_done(GatewayRequest::SetBucketPublicRead {
            name: name.to_string(),
            public_read,
        })
        .await
    }

    /// The record of `bucket`/`key`; refused with [`RpcCode::NoSuchKey`] if there is none.
    pub async fn object(&self, bucket: &str, key: &str) -> Result<ObjectRecord, CallError> {
        let request = GatewayRequest::Object {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        match self.call(&request).await? {
            GatewayResponse::Object(Some(object)) => Ok(*object),
            GatewayResponse::Object(None) => Err(no_object(bucket, key)),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// The record of `bucket`/`key` with its nodes and read orders for the object bytes
    /// `range` (see [`GatewayRequest::Read`]); refused with [`RpcCode::NoSuchKey`] if there
    /// is none.
    pub async fn read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ObjectRead, CallError> {
        let request = GatewayRequest::Read {
            bucket: bucket.to_string(),
            key: key.to_string(),
            range,
        };
        match self.call(&request).await? {
            GatewayResponse::Read(Some(read)) => Ok(*read),
            GatewayResponse::Read(None) => Err(no_object(bucket, key)),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Read orders for segments `from..from + count` of the version `version` of
    /// `bucket`/`key` (see [`GatewayRequest::ReadOrders`]); refused with
    /// [`RpcCode::Changed`] once the key holds another version.
    pub async fn read_orders(
        &self,
        bucket: &str,
        key: &str,
        version: ObjectVersion,
        from: u32,
        count: u32,
        range: Option<Range<u64>>,
    ) -> Result<ReadOrders, CallError> {
        let request = GatewayRequest::ReadOrders {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version,
            from,
            count,
            range,
        };
        self.orders(&request).await
    }

    /// Read orders for the shards of a replaced version the garbage queue still keeps (see
    /// [`GatewayRequest::RetiredOrders`]).
    pub async fn retired_orders(
        &self,
        first: u32,
        segments: Vec<RetiredSegment>,
    ) -> Result<ReadOrders, CallError> {
        self.orders(&GatewayRequest::RetiredOrders { first, segments })
            .await
    }

    /// One page of the listing of `bucket`.
    pub async fn list(&self, bucket: &str, query: ListQuery) -> Result<Listing, CallError> {
        let request = GatewayRequest::List {
            bucket: bucket.to_string(),
            query,
        };
        match self.call(&request).await? {
            GatewayResponse::Listing(listing) => Ok(listing),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Nodes and signed put orders for one encoded segment of `bucket`, one per shard in
    /// shard order (see [`GatewayRequest::Place`]).
    pub async fn place(
        &self,
        bucket: &str,
        shard_size: u64,
        roots: Vec<ShardRoot>,
        avoid: Vec<NodeId>,
    ) -> Result<Vec<PlacedShard>, CallError> {
        let request = GatewayRequest::Place {
            bucket: bucket.to_string(),
            shard_size,
            roots,
            avoid,
        };
        match self.call(&request).await? {
            GatewayResponse::Placed(placed) => Ok(placed),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Makes `object` visible as `bucket`/`key` if the key holds what `condition` demands,
    /// at most once.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        condition: Option<WriteCondition>,
    ) -> Result<(), CallError> {
        self.change_stored(GatewayRequest::Put {
            bucket: bucket.to_string(),
            key: key.to_string(),
            object,
            condition,
        })
        .await
    }

    /// Sets the canned ACL of `bucket`/`key`, at most once.
    pub async fn set_object_acl(
        &self,
        bucket: &str,
        key: &str,
        acl: CannedAcl,
    ) -> Result<(), CallError> {
        self.change_done(GatewayRequest::SetObjectAcl {
            bucket: bucket.to_string(),
            key: key.to_string(),
            acl,
        })
        .await
    }

    /// Deletes `bucket`/`key` (a missing key too, as in S3), at most once.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), CallError> {
        self.change_stored(GatewayRequest::Delete {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
        .await
    }

    /// Starts a multipart upload of `bucket`/`key`, at most once, and returns its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
        acl: CannedAcl,
        checksum: Option<UploadChecksum>,
    ) -> Result<String, CallError> {
        let request = GatewayRequest::CreateUpload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            headers,
            acl,
            checksum,
        };
        let asked = request.name();
        match self.change(request).await? {
            GatewayResponse::UploadCreated { id } => Ok(id),
            other => Err(unexpected_to(asked, &other)),
        }
    }

    /// The upload `id` in progress; refused with [`RpcCode::NoSuchUpload`] if there is none.
    pub async fn upload(&self, id: &str) -> Result<UploadRecord, CallError> {
        let request = GatewayRequest::Upload { id: id.to_string() };
        match self.call(&request).await? {
            GatewayResponse::Upload(Some(upload)) => Ok(upload),
            GatewayResponse::Upload(None) => {
                Err(missing(RpcCode::NoSuchUpload, format!("no upload {id}")))
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Stores part `number` of `upload` (its size, quoted ETag, segments and verified
    /// checksum), at most once.
    pub async fn put_part(
        &self,
        upload: &str,
        number: u32,
        size: u64,
        etag: String,
        segments: Vec<NewSegment>,
        checksum: Option<ObjectChecksum>,
    ) -> Result<(), CallError> {
        self.change_done(GatewayRequest::PutPart {
            upload: upload.to_string(),
            number,
            size,
            etag,
            segments,
            checksum,
        })
        .await
    }

    /// Completes `upload` from `parts` (see [`GatewayRequest::CompleteUpload`]), at most
    /// once, and returns the object's ETag.
    pub async fn complete_upload(
        &self,
        upload: &str,
        parts: Vec<(u32, String)>,
        verified: Vec<(u32, ObjectVersion)>,
        checksum: Option<ObjectChecksum>,
        condition: Option<WriteCondition>,
    ) -> Result<String, CallError> {
        let request = GatewayRequest::CompleteUpload {
            upload: upload.to_string(),
            parts,
            verified,
            checksum,
            condition,
        };
        let asked = request.name();
        match self.change(request).await? {
            GatewayResponse::Completed { etag, .. } => Ok(etag),
            other => Err(unexpected_to(asked, &other)),
        }
    }

    /// Abandons `upload`, at most once.
    pub async fn abort_upload(&self, upload: &str) -> Result<(), CallError> {
        self.change_done(GatewayRequest::AbortUpload {
            upload: upload.to_string(),
        })
        .await
    }

    /// One page of the uploads in progress in `bucket`, as `query` asks.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        query: UploadQuery,
    ) -> Result<UploadListing, CallError> {
        let request = GatewayRequest::ListUploads {
            bucket: bucket.to_string(),
            query,
        };
        match self.call(&request).await? {
            GatewayResponse::Uploads(page) => Ok(page),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// At most `max` parts of `upload` numbered above `after`, by number.
    pub async fn list_parts(
        &self,
        upload: &str,
        after: u32,
        max: u32,
    ) -> Result<Vec<(u32, PartRecord)>, CallError> {
        let request = GatewayRequest::ListParts {
            upload: upload.to_string(),
            after,
            max,
        };
        match self.call(&request).await? {
            GatewayResponse::Parts(parts) => Ok(parts),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Part `number` of `upload` as an object, with read orders for all its segments;
    /// refused with [`RpcCode::InvalidPart`] if the upload has no such part.
    pub async fn read_part(&self, upload: &str, number: u32) -> Result<ObjectRead, CallError> {
        let request = GatewayRequest::ReadPart {
            upload: upload.to_string(),
            number,
        };
        match self.call(&request).await? {
            GatewayResponse::Read(Some(read)) => Ok(*read),
            GatewayResponse::Read(None) => Err(missing(
                RpcCode::InvalidPart,
                format!("upload {upload} has no part {number}"),
            )),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Reports that `node` sent bytes of `shard` (of `bucket`/`key`) that fail
    /// verification (see [`GatewayRequest::ReportShard`]).
    pub async fn report_shard(
        &self,
        bucket: String,
        key: String,
        node: NodeId,
        shard: ShardId,
        problem: String,
    ) -> Result<(), CallError> {
        self.call_done(&GatewayRequest::ReportShard {
            bucket,
            key,
            node,
            shard,
            problem,
        })
        .await
    }

    /// Reports that `node` refused to read `shard` (of `bucket`/`key`) for a reason of its
    /// own (see [`GatewayRequest::ReportRefusal`]).
    pub async fn report_refusal(
        &self,
        bucket: String,
        key: String,
        node: NodeId,
        shard: ShardId,
        problem: String,
    ) -> Result<(), CallError> {
        self.call_done(&GatewayRequest::ReportRefusal {
            bucket,
            key,
            node,
            shard,
            problem,
        })
        .await
    }

    /// A segment to rebuild or move, if the leader has one for this gateway now.
    pub async fn repair_job(&self) -> Result<RepairWork, CallError> {
        let request = GatewayRequest::RepairJob;
        match self.call(&request).await? {
            GatewayResponse::RepairJob(job) => Ok(RepairWork::Job(job)),
            GatewayResponse::NoRepairWork { retry_after_ms } => {
                Ok(RepairWork::Later(Duration::from_millis(retry_after_ms)))
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Hands back a done repair job: per replaced shard index, its put order and receipt.
    pub async fn repair_done(
        &self,
        ticket: RepairTicket,
        stored: Vec<(u32, StoredShard)>,
    ) -> Result<(), CallError> {
        self.call_done(&GatewayRequest::RepairDone { ticket, stored })
            .await
    }

    /// Hands back a repair job that could not be done; its segment goes back to the queue.
    pub async fn repair_failed(
        &self,
        ticket: RepairTicket,
        problem: String,
    ) -> Result<(), CallError> {
        self.call_done(&GatewayRequest::RepairFailed { ticket, problem })
            .await
    }

    /// The cluster's segment mask key (registered gateways only).
    pub async fn mask_key(&self) -> Result<MaskKey, CallError> {
        let request = GatewayRequest::MaskKey;
        match self.call(&request).await? {
            GatewayResponse::MaskKey(key) => Ok(key),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Sends a request answered with read orders.
    async fn orders(&self, request: &GatewayRequest) -> Result<ReadOrders, CallError> {
        match self.call(request).await? {
            GatewayResponse::ReadOrders(orders) => Ok(orders),
            other => Err(unexpected(request, &other)),
        }
    }

    /// Sends a request answered `Done`.
    async fn call_done(&self, request: &GatewayRequest) -> Result<(), CallError> {
        match self.call(request).await? {
            GatewayResponse::Done => Ok(()),
            other => Err(unexpected(request, &other)),
        }
    }

    /// Sends a change answered `Done`.
    async fn change_done(&self, request: GatewayRequest) -> Result<(), CallError> {
        let asked = request.name();
        match self.change(request).await? {
            GatewayResponse::Done => Ok(()),
            other => Err(unexpected_to(asked, &other)),
        }
    }

    /// Sends a change of an object answered `Stored`.
    async fn change_stored(&self, request: GatewayRequest) -> Result<(), CallError> {
        let asked = request.name();
        match self.change(request).await? {
            GatewayResponse::Stored { .. } => Ok(()),
            other => Err(unexpected_to(asked, &other)),
        }
    }
}

/// A lookup that found nothing, refused as the coordinator refuses requests naming it.
fn missing(code: RpcCode, message: String) -> CallError {
    CallError::Refused { code, message }
}

fn no_object(bucket: &str, key: &str) -> CallError {
    missing(RpcCode::NoSuchKey, format!("no object {key} in {bucket}"))
}

fn unexpected(request: &GatewayRequest, answer: &GatewayResponse) -> CallError {
    unexpected_to(request.name(), answer)
}

/// Names the request and the kind of answer, never what it carries (an access key's
/// secret, a page of records).
fn unexpected_to(asked: &str, answer: &GatewayResponse) -> CallError {
    CallError::Unexpected(format!("{asked} answered with {}", answer.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_answer_names_the_request_and_the_answer() {
        let err = unexpected(&GatewayRequest::MaskKey, &GatewayResponse::Done);
        assert_eq!(
            err.to_string(),
            "unexpected coordinator answer: mask_key answered with done"
        );
    }
}
