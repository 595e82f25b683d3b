//! The multipart upload requests: `CreateUpload`, `Upload`, `PutPart`, `CompleteUpload`,
//! `AbortUpload`, `ListUploads`, `ListParts`.

use cairn_client::gateway_rpc::{GatewayResponse, NewSegment, RpcCode};
use cairn_client::records::{
    CannedAcl, ObjectChecksum, ObjectHeaders, ObjectVersion, UploadChecksum,
    UploadEntry as WireUploadEntry, UploadListing, UploadQuery as WireUploadQuery, WriteCondition,
};
use cairn_proto::identity::PublicKey;

use super::objects::checked_segments;
use super::{MAX_LIST, commit_once};
use crate::catalog::model::{PartRecord, UploadRecord};
use crate::catalog::{Command, CommandResult, RequestId, UploadEntry, UploadQuery};
use crate::rpc::context::{Answer, RpcContext, bucket_record, error, internal, now_ms};
use crate::rpc::orders::random;

/// `CreateUpload`: the upload is named by the client's request id, so a retried creation
/// names the upload the first attempt created.
pub(super) async fn create_upload(
    ctx: &RpcContext,
    bucket: String,
    key: String,
    headers: ObjectHeaders,
    acl: CannedAcl,
    checksum: Option<UploadChecksum>,
    once: Option<RequestId>,
) -> Answer {
    let record = bucket_record(&ctx.catalog, &bucket)?;
    // A retried creation must name the upload the first attempt created.
    let id = match once {
        Some(once) => once.to_string(),
        None => hex(&random::<16>().map_err(internal)?),
    };
    let upload = UploadRecord {
        bucket,
        key,
        initiated_ms: now_ms(),
        headers: headers.into(),
        erasure: record.erasure,
        acl: acl.into(),
        checksum: checksum.map(Into::into),
    };
    let command = Command::CreateUpload {
        id: id.clone(),
        upload,
    };
    commit_once(ctx, command, once).await?;
    Ok(GatewayResponse::UploadCreated { id })
}

/// `Upload`: the upload's record, if it is in progress.
pub(super) fn upload(ctx: &RpcContext, id: &str) -> Answer {
    Ok(GatewayResponse::Upload(
        ctx.catalog.upload(id).map_err(internal)?.map(Into::into),
    ))
}

/// `PutPart`: commits a part whose shards the nodes have signed receipts for.
#[allow(clippy::too_many_arguments)]
pub(super) async fn put_part(
    ctx: &RpcContext,
    peer: PublicKey,
    upload: String,
    number: u32,
    size: u64,
    etag: String,
    segments: Vec<NewSegment>,
    checksum: Option<ObjectChecksum>,
    once: Option<RequestId>,
) -> Answer {
    let Some(record) = ctx.catalog.upload(&upload).map_err(internal)? else {
        return Err(error(RpcCode::NoSuchUpload, format!("no upload {upload}")));
    };
    let segments = checked_segments(ctx, peer, record.erasure, &segments)?;
    let part = PartRecord {
        size,
        etag,
        last_modified_ms: now_ms(),
        segments,
        checksum: checksum.map(Into::into),
    };
    let now_ms = now_ms();
    let command = Command::PutPart {
        upload,
        number,
        part,
        now_ms,
    };
    commit_once(ctx, command, once).await?;
    Ok(GatewayResponse::Done)
}

/// `CompleteUpload`: the listed parts become the object.
pub(super) async fn complete_upload(
    ctx: &RpcContext,
    upload: String,
    parts: Vec<(u32, String)>,
    verified: Vec<(u32, ObjectVersion)>,
    checksum: Option<ObjectChecksum>,
    condition: Option<WriteCondition>,
    once: Option<RequestId>,
) -> Answer {
    let now_ms = now_ms();
    let command = Command::CompleteUpload {
        upload,
        parts,
        verified: verified
            .into_iter()
            .map(|(number, version)| (number, version.into()))
            .collect(),
        checksum: checksum.map(Into::into),
        condition: condition.map(Into::into),
        now_ms,
    };
    match commit_once(ctx, command, once).await? {
        CommandResult::Completed { etag, size } => Ok(GatewayResponse::Completed { etag, size }),
        other => Err(internal(format!("unexpected result {other:?}"))),
    }
}

/// `AbortUpload`.
pub(super) async fn abort_upload(
    ctx: &RpcContext,
    upload: String,
    once: Option<RequestId>,
) -> Answer {
    let now_ms = now_ms();
    commit_once(ctx, Command::AbortUpload { upload, now_ms }, once).await?;
    Ok(GatewayResponse::Done)
}

/// `ListUploads`: one page of a bucket's uploads in progress, at most [`MAX_LIST`]
/// entries.
pub(super) fn list_uploads(ctx: &RpcContext, bucket: &str, query: WireUploadQuery) -> Answer {
    bucket_record(&ctx.catalog, bucket)?;
    let query = UploadQuery {
        prefix: query.prefix,
        delimiter: query.delimiter,
        key_marker: query.key_marker,
        upload_id_marker: query.upload_id_marker,
        max: (query.max as usize).min(MAX_LIST),
    };
    let (entries, truncated) = ctx.catalog.uploads(bucket, &query).map_err(internal)?;
    Ok(GatewayResponse::Uploads(UploadListing {
        entries: entries
            .into_iter()
            .map(|entry| match entry {
                UploadEntry::Upload(id, upload) => WireUploadEntry::Upload(id, upload.into()),
                UploadEntry::Prefix(prefix) => WireUploadEntry::Prefix(prefix),
            })
            .collect(),
        truncated,
    }))
}

/// `ListParts`: an upload's parts after number `after`, at most [`MAX_LIST`].
pub(super) fn list_parts(ctx: &RpcContext, upload: &str, after: u32, max: u32) -> Answer {
    if ctx.catalog.upload(upload).map_err(internal)?.is_none() {
        return Err(error(RpcCode::NoSuchUpload, format!("no upload {upload}")));
    }
    let max = (max as usize).min(MAX_LIST);
    Ok(GatewayResponse::Parts(
        ctx.catalog
            .parts(upload, after, max)
            .map_err(internal)?
            .into_iter()
            .map(|(number, part)| (number, part.into()))
            .collect(),
    ))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
