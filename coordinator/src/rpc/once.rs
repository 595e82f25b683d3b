//! How a change sent at most once ([`GatewayRequest::Once`]) is answered when a check made
//! before proposing it refuses it.
//!
//! A gateway resends a change whose answer it lost, under the same request id. The catalog
//! applies the id once and remembers the result, but the checks made before proposing
//! (the bucket exists, the put orders are fresh, the proof of storage verifies) run again
//! on every attempt and can refuse a retry whose first attempt was applied (orders that
//! were fresh then are stale now), or one whose first attempt is still on its way through
//! the log (an old leader that has not yet lost its term). Telling the client "no" in
//! either case would be a lie it acts on: S3 clients treat a 4xx as "nothing was stored".
//! So a refused check is settled through the log: the result already remembered for the id
//! answers if there is one; otherwise the refusal itself is committed under the id, and an
//! earlier attempt that commits later finds it and applies nothing.

// Handlers fail with the response to send, built once per request; its size is not a cost.
#![allow(clippy::result_large_err)]

use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse, RpcCode};

use super::context::{RpcContext, commit, internal, now_ms};
use crate::catalog::{CatalogError, Command, CommandResult, RequestId};

/// What a change answers when it was applied, by request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// PutObject and DeleteObject: whether a version existed.
    Stored,
    /// CreateMultipartUpload: the upload, named by the request id.
    UploadCreated,
    /// CompleteMultipartUpload: the new object's ETag and size.
    Completed,
    /// Everything else: done.
    Done,
}

impl ChangeKind {
    /// The kind of change `request` makes, or `None` for a request that changes nothing.
    pub(crate) fn of(request: &GatewayRequest) -> Option<Self> {
        Some(match request {
            GatewayRequest::Put { .. } | GatewayRequest::Delete { .. } => Self::Stored,
            GatewayRequest::CreateUpload { .. } => Self::UploadCreated,
            GatewayRequest::CompleteUpload { .. } => Self::Completed,
            GatewayRequest::CreateBucket { .. }
            | GatewayRequest::DeleteBucket { .. }
            | GatewayRequest::PutPart { .. }
            | GatewayRequest::AbortUpload { .. }
            | GatewayRequest::SetObjectAcl { .. }
            | GatewayRequest::SetBucketPublicRead { .. } => Self::Done,
            _ => return None,
        })
    }

    /// The answer to the request `id` of this kind, from the result it was applied with.
    pub(crate) fn answer(self, id: RequestId, result: CommandResult) -> GatewayResponse {
        match (self, result) {
            (_, CommandResult::Refused(err)) => super::context::refusal(err),
            (Self::Stored, CommandResult::Object { existed }) => {
                GatewayResponse::Stored { existed }
            }
            (Self::Stored, _) => GatewayResponse::Stored { existed: false },
            (Self::UploadCreated, _) => GatewayResponse::UploadCreated { id: id.to_string() },
            (Self::Completed, CommandResult::Completed { etag, size }) => {
                GatewayResponse::Completed { etag, size }
            }
            (Self::Completed, other) => internal(format!("unexpected result {other:?}")),
            (Self::Done, _) => GatewayResponse::Done,
        }
    }
}

/// The catalog refusal a check's refusal `code` stands for, when a client treats it as
/// final (the codes that become 4xx answers). Other codes (the coordinator's own failures,
/// no leader, not enough nodes) tell the client to try again and need no settling.
fn definite(code: RpcCode, message: &str) -> Option<CatalogError> {
    let message = message.to_string();
    Some(match code {
        RpcCode::NoSuchBucket => CatalogError::NoSuchBucket(message),
        RpcCode::NoSuchKey => CatalogError::NoSuchKey(message),
        RpcCode::NoSuchUpload => CatalogError::NoSuchUpload(message),
        RpcCode::BucketExists => CatalogError::BucketExists(message),
        RpcCode::BucketNotEmpty => CatalogError::BucketNotEmpty(message),
        RpcCode::InvalidPart => CatalogError::InvalidPart(message),
        RpcCode::PreconditionFailed => CatalogError::PreconditionFailed(message),
        RpcCode::InvalidRequest => CatalogError::Rejected(message),
        RpcCode::InvalidPartOrder
        | RpcCode::EntityTooSmall
        | RpcCode::NotEnoughNodes
        | RpcCode::Changed
        | RpcCode::Forbidden
        | RpcCode::Internal => return None,
    })
}

/// The answer to the change `id` (of `kind`) that was refused with `refusal`: the result
/// the log holds for `id` if it was applied, else `refusal`, committed under `id` first so
/// that it stays the only outcome.
pub(crate) async fn settle(
    ctx: &RpcContext,
    id: RequestId,
    kind: ChangeKind,
    refusal: GatewayResponse,
) -> GatewayResponse {
    let reason = match &refusal {
        GatewayResponse::Error { code, message } => match definite(*code, message) {
            Some(reason) => reason,
            None => return refusal,
        },
        _ => return refusal,
    };
    // The answer came from this member after a linearizable read, and a refusal from
    // applying was remembered in the same step, so a result in the catalog now is the one
    // the log holds for the id.
    match ctx.catalog.remembered(&id) {
        Ok(Some(result)) => return kind.answer(id, result),
        Ok(None) => {}
        Err(err) => return internal(err),
    }
    let command = Command::Once {
        request: id,
        command: Box::new(Command::Refuse { reason }),
        now_ms: now_ms(),
    };
    match commit(ctx, command).await {
        Ok(result) => {
            tracing::info!(request = %id, "a retried change found its first attempt applied");
            kind.answer(id, result)
        }
        Err(response) => response,
    }
}
