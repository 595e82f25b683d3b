//! One place where failures below the S3 layer become S3 errors.

use cairn_client::coordinator::CallError;
use cairn_client::gateway_rpc::RpcCode;
use s3s::{S3Error, S3ErrorCode};

use crate::data_path::{ReadError, WriteError};

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
                RpcCode::PreconditionFailed => S3ErrorCode::PreconditionFailed,
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
        // A bug on one side or the other; retrying will not help.
        err @ CallError::Unexpected(_) => {
            tracing::error!(%err, "the coordinator's answer does not fit the request");
            S3Error::with_message(S3ErrorCode::InternalError, err.to_string())
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
        // S3's words for a client that stopped sending its body.
        WriteError::Body(message) if message.contains(crate::timeouts::BODY_STALLED) => {
            S3Error::with_message(
                S3ErrorCode::RequestTimeout,
                "Your socket connection to the server was not read from or written to within \
                 the timeout period.",
            )
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

/// The answer to a request refused before s3s saw it, in S3's XML error form.
pub(crate) fn respond(err: S3Error) -> http::Response<s3s::Body> {
    match err.to_http_response() {
        Ok(response) => response,
        Err(failed) => {
            tracing::error!(?failed, "an S3 error could not be written as XML");
            let mut response = http::Response::new(s3s::Body::empty());
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// Names `response` with the request's id: the `x-amz-request-id` header on every answer
/// (and `x-amz-id-2`, S3's host id, which Cairn has no other use for), and the same id as
/// `RequestId` and `HostId` in the body of an error, so the id a client reports from
/// either place finds the request in the gateway's log (which names every request's id at
/// debug level, failed ones at warn). Error bodies are small XML documents written whole
/// (by s3s or [`respond`]), so the id goes in before their closing tag.
pub(crate) fn stamp_request_id(response: &mut http::Response<s3s::Body>, id: &str) {
    if let Ok(value) = http::HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert("x-amz-request-id", value.clone());
        response.headers_mut().insert("x-amz-id-2", value);
    }
    if response.status().as_u16() < 300 {
        return;
    }
    let Some(body) = response.body().bytes() else {
        return;
    };
    const CLOSE: &[u8] = b"</Error>";
    let Some(at) = body.windows(CLOSE.len()).rposition(|w| w == CLOSE) else {
        return;
    };
    if body
        .windows(b"<RequestId>".len())
        .any(|w| w == b"<RequestId>")
    {
        return;
    }
    let mut stamped = Vec::with_capacity(body.len() + 2 * id.len() + 48);
    stamped.extend_from_slice(&body[..at]);
    stamped
        .extend_from_slice(format!("<RequestId>{id}</RequestId><HostId>{id}</HostId>").as_bytes());
    stamped.extend_from_slice(&body[at..]);
    let length = stamped.len();
    *response.body_mut() = s3s::Body::from(bytes::Bytes::from(stamped));
    if let Ok(value) = http::HeaderValue::from_str(&length.to_string()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, value);
    }
}
