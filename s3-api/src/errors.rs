//! One place where failures below the S3 layer become S3 errors.

use cairn_coordinator::client::CallError;
use cairn_coordinator::rpc::RpcCode;
use s3s::{S3Error, S3ErrorCode};

use crate::store::{ReadError, WriteError};

/// A coordinator failure as the S3 error a client should see.
pub(crate) fn from_call(err: CallError) -> S3Error {
    match err {
        CallError::Refused { code, message } => {
            let code = match code {
                RpcCode::NoSuchBucket => S3ErrorCode::NoSuchBucket,
                RpcCode::NoSuchKey => S3ErrorCode::NoSuchKey,
                RpcCode::NoSuchUpload => S3ErrorCode::NoSuchUpload,
                // One owner (the cache operator) holds every bucket.
                RpcCode::BucketExists => S3ErrorCode::BucketAlreadyOwnedByYou,
                RpcCode::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
                RpcCode::InvalidPart => S3ErrorCode::InvalidPart,
                RpcCode::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
                RpcCode::EntityTooSmall => S3ErrorCode::EntityTooSmall,
                RpcCode::InvalidRequest => S3ErrorCode::InvalidRequest,
                RpcCode::NotEnoughNodes | RpcCode::Changed => S3ErrorCode::ServiceUnavailable,
                RpcCode::Forbidden => {
                    tracing::error!(%message, "the coordinator does not know this gateway's key");
                    S3ErrorCode::InternalError
                }
                RpcCode::Internal => S3ErrorCode::InternalError,
            };
            S3Error::with_message(code, message)
        }
        CallError::Unavailable(message) => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, message)
        }
    }
}

/// A failed upload as an S3 error.
pub(crate) fn from_write(err: WriteError) -> S3Error {
    match err {
        WriteError::Body(message) if message.contains("Sha256Mismatch") => {
            let mut err = S3Error::with_message(
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "the body does not match x-amz-content-sha256",
            );
            err.set_status_code(http::StatusCode::BAD_REQUEST);
            err
        }
        WriteError::Body(message) => S3Error::with_message(
            S3ErrorCode::IncompleteBody,
            format!("the request body could not be read: {message}"),
        ),
        WriteError::Refused(message) => S3Error::with_message(S3ErrorCode::AccessDenied, message),
        WriteError::Coordinator(err) => from_call(err),
        WriteError::Nodes(message) => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, message)
        }
        WriteError::Internal(message) => S3Error::with_message(S3ErrorCode::InternalError, message),
    }
}

/// A failed read, before any byte was sent.
pub(crate) fn from_read(err: ReadError) -> S3Error {
    match err {
        ReadError::Coordinator(err) => from_call(err),
        ReadError::Unavailable { .. } => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, err.to_string())
        }
        ReadError::Internal(message) => S3Error::with_message(S3ErrorCode::InternalError, message),
    }
}
