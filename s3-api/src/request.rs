//! What the gateway does to every S3 request before s3s sees it, and to every answer after:
//! the request id S3 clients quote back, and the few places where s3s's front door differs
//! from S3's. s3s still checks every signature; these steps only put a request into the
//! shape SigV4 defines for it or refuse what S3 refuses before a signature is looked at.
//!
//! - A SigV4 request dated only by `Date` (botocore signs that way when a caller sets
//!   `Date`) gets the `x-amz-date` s3s reads the signing time from, converted from `Date`:
//!   SigV4 takes the time from `x-amz-date`, else from `Date`.
//! - A presigned URL's `X-Amz-Expires` must be 0 to 604800 seconds.
//! - A PUT of an object or part framed by `Transfer-Encoding: chunked` alone has its body
//!   set aside ([`ChunkedBody`]): s3s wants a length before it checks a signature, and the
//!   signature of such a request never covers the body's length. The operation streams
//!   the body from there, so it is never held in memory. A PUT with neither a length nor
//!   chunked framing answers `MissingContentLength`, as S3 does.
//! - An object or part PUT declaring more than 5 GiB (`Content-Length`, or the decoded
//!   length of an aws-chunked body) answers `EntityTooLarge` before a byte is read: S3's
//!   largest single PUT; bigger objects are uploaded in parts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, DATE, HOST, TRANSFER_ENCODING};
use http::{Extensions, HeaderValue, Method, Request, Version};
use s3s::dto::{StreamingBlob, Timestamp, TimestampFormat};
use s3s::host::S3Host;
use s3s::stream::ByteStream;
use s3s::{Body, S3Error, S3ErrorCode, StdError};
use sha2::{Digest, Sha256};

use crate::access::Host;

/// Largest object or part one PUT may carry, as in S3: 5 GiB.
pub const MAX_PUT_BYTES: u64 = 5 << 30;

/// Longest lifetime of a presigned URL S3 accepts: seven days, in seconds.
const MAX_PRESIGNED_EXPIRY: i64 = 604_800;

/// The query parameters of a SigV4 presigned URL; S3 wants every one of them.
const PRESIGNED_PARAMETERS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
];

/// A new request id: 16 upper-case hex digits, as S3's look. Unique within a gateway (a
/// counter under a per-process random key), which is what finding a request in its logs
/// needs.
pub(crate) fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEY: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let mut hasher = KEY.get_or_init(RandomState::new).build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016X}", hasher.finish())
}

/// Puts `req` into the shape s3s checks as S3 would; an error is S3's answer instead.
/// `host` tells virtual-host requests from path-style ones (to know whether a PUT names
/// an object).
pub(crate) fn prepare(req: &mut Request<Body>, host: &Host) -> Result<(), S3Error> {
    check_presigned_parameters(req.uri().query())?;
    date_from_date_header(req)?;
    refuse_oversized_put(req, host)?;
    set_aside_chunked_body(req, host)
}

/// `EntityTooLarge` for an object or part PUT that declares more than [`MAX_PUT_BYTES`].
fn refuse_oversized_put(req: &Request<Body>, host: &Host) -> Result<(), S3Error> {
    if req.method() != Method::PUT || !names_object_upload(req, host) {
        return Ok(());
    }
    let declared = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let streaming = req
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.starts_with("STREAMING-"));
    // An aws-chunked body's Content-Length counts its chunk framing too; the object's own
    // length is the decoded one.
    let length = if streaming {
        declared("x-amz-decoded-content-length")
    } else {
        declared(CONTENT_LENGTH.as_str())
    };
    match length {
        Some(length) if length > MAX_PUT_BYTES => Err(S3Error::with_message(
            S3ErrorCode::EntityTooLarge,
            format!(
                "Your proposed upload of {length} bytes exceeds the maximum allowed object \
                 size of {MAX_PUT_BYTES} bytes for one PUT; upload it in parts."
            ),
        )),
        _ => Ok(()),
    }
}

/// A presigned URL's parameters as S3 wants them: all present, and a lifetime of 0 to
/// 604800 seconds. s3s reads `X-Amz-Expires` as unsigned and sets no upper bound.
fn check_presigned_parameters(query: Option<&str>) -> Result<(), S3Error> {
    let Some(query) = query else { return Ok(()) };
    let params: Vec<(&str, &str)> = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if get("X-Amz-Signature").is_none() && get("X-Amz-Algorithm").is_none() {
        return Ok(());
    }
    let refuse = |message: &'static str| {
        S3Error::with_message(S3ErrorCode::AuthorizationQueryParametersError, message)
    };
    if PRESIGNED_PARAMETERS.iter().any(|name| get(name).is_none()) {
        return Err(refuse(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, \
             X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
             X-Amz-Expires parameters.",
        ));
    }
    let expires = get("X-Amz-Expires")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| refuse("X-Amz-Expires should be a number"))?;
    if expires < 0 {
        return Err(refuse("X-Amz-Expires must be non-negative"));
    }
    if expires > MAX_PRESIGNED_EXPIRY {
        return Err(refuse(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    Ok(())
}

/// For a SigV4 request carrying `Date` but no `x-amz-date`: the `x-amz-date` SigV4 would
/// have taken its time from, in SigV4's format. It is not one of the signed headers (the
/// client did not send it), so the canonical request is unchanged; only the signing time
/// s3s reads comes from `Date`, as the client signed it.
fn date_from_date_header(req: &mut Request<Body>) -> Result<(), S3Error> {
    let headers = req.headers();
    let sigv4 = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"));
    if !sigv4 || headers.contains_key("x-amz-date") {
        return Ok(());
    }
    let stamp = headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_date)
        .and_then(|t| sigv4_time(&t))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "AWS authentication requires a valid Date or x-amz-date header",
            )
        })?;
    let value = HeaderValue::from_str(&stamp)
        .map_err(|_| S3Error::with_message(S3ErrorCode::InternalError, "formatting x-amz-date"))?;
    req.headers_mut().insert("x-amz-date", value);
    Ok(())
}

/// A `Date` header: an HTTP date, or the RFC 2822 form with a zero offset that Python's
/// `email.utils.formatdate` (and so botocore) writes (`… 12:00:00 -0000`).
fn parse_date(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    let utc = ["GMT", "UTC", "UT", "+0000", "-0000", "Z"]
        .iter()
        .find_map(|zone| value.strip_suffix(zone))?;
    Timestamp::parse(TimestampFormat::HttpDate, &format!("{}GMT", utc)).ok()
}

/// `20260101T120000Z` (SigV4's ISO 8601 basic form) for a timestamp.
fn sigv4_time(time: &Timestamp) -> Option<String> {
    let mut text = Vec::new();
    time.format(TimestampFormat::DateTime, &mut text).ok()?;
    // DateTime is `YYYY-MM-DDTHH:MM:SS.mmmZ`; SigV4 keeps the digits to the second.
    let text = String::from_utf8(text).ok()?;
    let whole = text.get(..19)?;
    let mut out: String = whole.chars().filter(|c| *c != '-' && *c != ':').collect();
    out.push('Z');
    Some(out)
}

/// The body of an object or part PUT that came framed by `Transfer-Encoding: chunked`
/// alone, set aside before s3s looked at the request; taken by the operation.
#[derive(Clone, Default)]
pub(crate) struct ChunkedBody(Arc<Mutex<Option<Body>>>);

/// The body to store for an upload: the one set aside for a chunked request, else the one
/// s3s passed (none is an empty body).
pub(crate) fn upload_body(extensions: &Extensions, given: Option<StreamingBlob>) -> StreamingBlob {
    let aside = extensions
        .get::<ChunkedBody>()
        .and_then(|slot| slot.0.lock().ok().and_then(|mut body| body.take()));
    match aside {
        Some(body) => StreamingBlob::from(body),
        None => given.unwrap_or_else(|| StreamingBlob::from(Body::empty())),
    }
}

/// Sets the body of a chunked object or part PUT aside (see the module's description),
/// checked against a hex `x-amz-content-sha256` if the client signed one; refuses a PUT
/// that gives no way to know where its body ends.
fn set_aside_chunked_body(req: &mut Request<Body>, host: &Host) -> Result<(), S3Error> {
    if req.method() != Method::PUT || !names_object_upload(req, host) {
        return Ok(());
    }
    let headers = req.headers();
    if headers.contains_key(CONTENT_LENGTH) {
        return Ok(());
    }
    let payload = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // aws-chunked bodies carry their own framing and decoded length; s3s reads them.
    if payload
        .as_deref()
        .is_some_and(|p| p.starts_with("STREAMING-"))
    {
        return Ok(());
    }
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    // HTTP/2 frames bodies itself; only HTTP/1 needs one of the two headers.
    if !chunked && req.version() < Version::HTTP_2 {
        return Err(S3Error::with_message(
            S3ErrorCode::MissingContentLength,
            "You must provide the Content-Length HTTP header.",
        ));
    }
    let body = std::mem::take(req.body_mut());
    let body = match payload.as_deref().and_then(sha256_hex) {
        Some(expected) => Body::from(StreamingBlob::new(Sha256Checked {
            inner: body,
            hasher: Some(Sha256::new()),
            expected,
        })),
        None => body,
    };
    req.extensions_mut()
        .insert(ChunkedBody(Arc::new(Mutex::new(Some(body)))));
    Ok(())
}

/// Whether `req` (a PUT) is a PutObject or UploadPart: it names a key, copies nothing and
/// has no sub-resource (`?acl`, `?tagging`…) beyond a part's number and upload id and a
/// presigned URL's parameters.
fn names_object_upload(req: &Request<Body>, host: &Host) -> bool {
    if req.headers().contains_key("x-amz-copy-source") {
        return false;
    }
    let plain_query = req.uri().query().is_none_or(|query| {
        query.split('&').all(|pair| {
            let name = pair.split_once('=').map_or(pair, |(k, _)| k);
            matches!(name, "" | "partNumber" | "uploadId" | "x-id")
                || name.to_ascii_lowercase().starts_with("x-amz-")
        })
    });
    if !plain_query {
        return false;
    }
    let path = req.uri().path().trim_start_matches('/');
    let virtual_host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| host.parse_host_header(h).ok())
        .is_some_and(|vh| vh.bucket().is_some());
    if virtual_host {
        !path.is_empty()
    } else {
        path.split_once('/').is_some_and(|(_, key)| !key.is_empty())
    }
}

/// The 32 bytes of a hex SHA-256 (a signed payload hash), `None` for `UNSIGNED-PAYLOAD`.
fn sha256_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A body checked against the SHA-256 the client signed for it: s3s checks that for bodies
/// of known length, this for chunked ones. A mismatch ends the body with an error, so the
/// upload fails before anything is committed.
struct Sha256Checked {
    inner: Body,
    hasher: Option<Sha256>,
    expected: [u8; 32],
}

impl Stream for Sha256Checked {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.hasher.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(hasher) = this.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                let matches = this
                    .hasher
                    .take()
                    .is_some_and(|hasher| hasher.finalize().as_slice() == this.expected);
                if matches {
                    Poll::Ready(None)
                } else {
                    // The wording is what errors::from_write recognises.
                    Poll::Ready(Some(Err(
                        "Sha256Mismatch: the body does not match x-amz-content-sha256".into(),
                    )))
                }
            }
        }
    }
}

impl ByteStream for Sha256Checked {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_lifetimes_are_checked_as_s3_does() {
        let url = |expires: &str| {
            format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Date=20260101T000000Z\
                 &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
            )
        };
        assert!(check_presigned_parameters(Some(&url("604800"))).is_ok());
        assert!(check_presigned_parameters(Some(&url("0"))).is_ok());
        for bad in ["604801", "-1", "soon"] {
            let err = check_presigned_parameters(Some(&url(bad))).unwrap_err();
            assert_eq!(
                *err.code(),
                S3ErrorCode::AuthorizationQueryParametersError,
                "{bad}"
            );
        }
        assert!(check_presigned_parameters(Some("list-type=2&prefix=a")).is_ok());
        assert!(check_presigned_parameters(Some("X-Amz-Signature=00")).is_err());
    }

    #[test]
    fn date_headers_become_sigv4_times() {
        for date in [
            "Tue, 01 Sep 2026 07:08:09 GMT",
            "Tue, 01 Sep 2026 07:08:09 -0000",
            "Tue, 01 Sep 2026 07:08:09 +0000",
        ] {
            let time = parse_date(date).unwrap_or_else(|| panic!("{date}"));
            assert_eq!(sigv4_time(&time).as_deref(), Some("20260901T070809Z"));
        }
        assert!(parse_date("Tue, 01 Sep 2026 07:08:09 +0200").is_none());
        assert!(parse_date("yesterday").is_none());
    }

    #[test]
    fn request_ids_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
