//! GetObject and HeadObject: conditional requests, ranges, and the verified read stream.

use cairn_client::gateway_rpc::ObjectRead;
use cairn_client::records::ObjectRecord;
use http::HeaderMap;
use http::header::{ETAG, HeaderValue, LAST_MODIFIED};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use futures_util::StreamExt;

use crate::access::{AnonymousInPrivateBucket, check_anonymous_read};
use crate::data_path::read_range;
use crate::errors::{from_call, from_read};
use crate::service::{Gateway, etag, metadata, stored_headers, timestamp};

/// The conditional headers of a GET or HEAD.
struct Conditions {
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
    if_modified_since: Option<Timestamp>,
    if_unmodified_since: Option<Timestamp>,
}

impl Conditions {
    /// Evaluates them as RFC 9110 §13.2.2 orders it (which S3 follows): If-Match, else
    /// If-Unmodified-Since, may fail with 412; then If-None-Match, else If-Modified-Since,
    /// may answer 304.
    fn check(&self, object: &ObjectRecord) -> S3Result<()> {
        let current = etag(&object.etag);
        let modified = timestamp(object.last_modified_ms);
        let matches = |condition: &ETagCondition| match condition {
            ETagCondition::Any => true,
            ETagCondition::ETag(tag) => tag.value() == current.value(),
        };
        match (&self.if_match, &self.if_unmodified_since) {
            (Some(condition), _) if !matches(condition) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::PreconditionFailed,
                    "If-Match does not match the object's ETag",
                ));
            }
            (None, Some(since)) if modified > *since => {
                return Err(S3Error::with_message(
                    S3ErrorCode::PreconditionFailed,
                    "the object was modified after If-Unmodified-Since",
                ));
            }
            _ => {}
        }
        let not_modified = match (&self.if_none_match, &self.if_modified_since) {
            (Some(condition), _) => matches(condition),
            (None, Some(since)) => modified <= *since,
            (None, None) => false,
        };
        if not_modified {
            let mut err = S3Error::new(S3ErrorCode::NotModified);
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&object.etag) {
                headers.insert(ETAG, value);
            }
            if let Ok(value) = HeaderValue::from_str(&httpdate(object.last_modified_ms)) {
                headers.insert(LAST_MODIFIED, value);
            }
            err.set_headers(headers);
            return Err(err);
        }
        Ok(())
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate) for a catalog time.
fn httpdate(ms: u64) -> String {
    let mut out = Vec::new();
    let _ = timestamp(ms).format(s3s::dto::TimestampFormat::HttpDate, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The byte range to send and the `Content-Range` header for it, if partial.
fn resolve_range(
    range: Option<&Range>,
    size: u64,
) -> S3Result<(std::ops::Range<u64>, Option<String>)> {
    match range {
        // An empty object has no satisfiable range; S3 sends it whole.
        Some(range) if size > 0 => {
            let wanted = range.check(size).map_err(|_| {
                let mut err = S3Error::with_message(
                    S3ErrorCode::InvalidRange,
                    format!("the range is not satisfiable for a {size}-byte object"),
                );
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(http::header::CONTENT_RANGE, value);
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml"),
                );
                err.set_headers(headers);
                err
            })?;
            let header = format!("bytes {}-{}/{size}", wanted.start, wanted.end - 1);
            Ok((wanted, Some(header)))
        }
        _ => Ok((0..size, None)),
    }
}

impl Gateway {
    /// The object's record, with read orders for the object bytes `first` if given.
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        first: Option<std::ops::Range<u64>>,
    ) -> S3Result<ObjectRead> {
        self.path
            .coordinator
            .read(bucket, key, first)
            .await
            .map_err(from_call)
    }

    pub(crate) async fn op_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        both_range_and_part(input.range.as_ref(), input.part_number)?;
        let anonymous = req.extensions.get::<AnonymousInPrivateBucket>().is_some();
        // Orders only for the bytes asked (the whole object without a Range): a suffix
        // range or a part needs the record first, so their orders are asked once it is
        // known; so are those of an anonymous read the object's ACL may refuse.
        let first = match (&input.range, input.part_number) {
            _ if anonymous => None,
            (_, Some(_)) => None,
            (None, None) => Some(0..u64::MAX),
            (Some(Range::Int { first, last }), None) => {
                Some(*first..last.map_or(u64::MAX, |last| last.saturating_add(1)))
            }
            (Some(Range::Suffix { .. }), None) => None,
        };
        let read = self
            .read(&input.bucket, &input.key, first)
            .await
            .map_err(|err| hide_missing(&req.extensions, err))?;
        check_anonymous_read(&req.extensions, Some(&read.object))?;
        let object = read.object.clone();
        Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        }
        .check(&object)?;
        let (range, content_range, parts_count) = match input.part_number {
            Some(number) => {
                let part = part_range(&object, number)?;
                (part.range, part.content_range, part.count)
            }
            None => {
                let (range, content_range) = resolve_range(input.range.as_ref(), object.size)?;
                (range, content_range, None)
            }
        };
        let whole = range.start == 0 && range.end == object.size;
        let checksum = checksum_answer(
            &object,
            input.checksum_mode.as_ref(),
            whole,
            input.part_number,
        );
        let length = range.end - range.start;
        self.metrics.bytes_out.inc_by(length);
        let mut stream = Box::pin(read_range(
            self.path.clone(),
            input.bucket,
            input.key,
            read,
            range,
            self.reporter(),
        ));
        // The first segment is read before the response starts, so an object that cannot be
        // read at all gets a clean 503 instead of a response cut off after its headers.
        let first = match stream.next().await {
            Some(Ok(chunk)) => Some(Ok(chunk)),
            Some(Err(err)) => return Err(from_read(err)),
            None => None,
        };
        let stream = futures_util::stream::iter(first).chain(stream);
        let mut response = S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(length as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&object.etag)),
            last_modified: Some(timestamp(object.last_modified_ms)),
            content_type: object.headers.content_type.clone(),
            content_encoding: object.headers.content_encoding.clone(),
            cache_control: object.headers.cache_control.clone(),
            metadata: metadata(&object),
            parts_count,
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_type: checksum.checksum_type,
            ..Default::default()
        });
        response.headers = stored_headers(&object);
        Ok(response)
    }

    pub(crate) async fn op_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        both_range_and_part(input.range.as_ref(), input.part_number)?;
        let object = self
            .object_record(&input.bucket, &input.key)
            .await
            .map_err(|err| hide_missing(&req.extensions, err))?;
        check_anonymous_read(&req.extensions, Some(&object))?;
        Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        }
        .check(&object)?;
        let (range, content_range, parts_count) = match input.part_number {
            Some(number) => {
                let part = part_range(&object, number)?;
                (part.range, part.content_range, part.count)
            }
            None => {
                let (range, _) = resolve_range(input.range.as_ref(), object.size)?;
                (range, None, None)
            }
        };
        let whole = range.start == 0 && range.end == object.size;
        let checksum = checksum_answer(
            &object,
            input.checksum_mode.as_ref(),
            whole,
            input.part_number,
        );
        // The HTTP layer answers a HEAD carrying a Content-Range 206 (`daemon::handle`).
        let mut response = S3Response::new(HeadObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&object.etag)),
            last_modified: Some(timestamp(object.last_modified_ms)),
            content_type: object.headers.content_type.clone(),
            content_encoding: object.headers.content_encoding.clone(),
            cache_control: object.headers.cache_control.clone(),
            metadata: metadata(&object),
            parts_count,
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_type: checksum.checksum_type,
            ..Default::default()
        });
        response.headers = stored_headers(&object);
        Ok(response)
    }
}

/// The bytes of one part of an object (`?partNumber=`), as S3 serves them.
struct PartRead {
    range: std::ops::Range<u64>,
    content_range: Option<String>,
    /// `x-amz-mp-parts-count`: for objects completed from parts.
    count: Option<i32>,
}

/// Part `number` of `object`: of a multipart object, that part's bytes; of any other
/// object, part 1 is the whole of it. A part past the last answers 416 InvalidPartNumber.
fn part_range(object: &ObjectRecord, number: i32) -> S3Result<PartRead> {
    if !(1..=10_000).contains(&number) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive",
        ));
    }
    let index = (number - 1) as usize;
    let beyond = || {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        err.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        err
    };
    let content_range = |range: &std::ops::Range<u64>| {
        (range.end > range.start)
            .then(|| format!("bytes {}-{}/{}", range.start, range.end - 1, object.size))
    };
    if object.parts.is_empty() {
        if object.etag.contains('-') {
            // Completed from parts before their boundaries were kept (or copied, before
            // copies became objects of one part, from such an object): nothing says where
            // its parts end.
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "this object was completed from parts before Cairn kept their boundaries; \
                 read it by Range instead",
            ));
        }
        if index > 0 {
            return Err(beyond());
        }
        let range = 0..object.size;
        return Ok(PartRead {
            content_range: content_range(&range),
            range,
            count: None,
        });
    }
    let part = object.parts.get(index).ok_or_else(beyond)?;
    let start: u64 = object.parts[..index].iter().map(|p| p.size).sum();
    let range = start..start + part.size;
    Ok(PartRead {
        content_range: content_range(&range),
        range,
        count: i32::try_from(object.parts.len()).ok(),
    })
}

/// S3 refuses a `Range` together with `partNumber`.
fn both_range_and_part(range: Option<&Range>, part: Option<i32>) -> S3Result<()> {
    if range.is_some() && part.is_some() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter",
        ));
    }
    Ok(())
}

/// A missing key read anonymously in a private bucket is refused as any other object
/// there would be: an anonymous reader learns nothing about which keys exist.
fn hide_missing(extensions: &http::Extensions, err: S3Error) -> S3Error {
    if *err.code() == S3ErrorCode::NoSuchKey
        && let Err(denied) = check_anonymous_read(extensions, None)
    {
        return denied;
    }
    err
}

/// The stored checksum to answer with: only when asked (`x-amz-checksum-mode: ENABLED`),
/// and only for what it covers: the whole object, or with `partNumber` of a multipart
/// object, that part (typed as the object's checksum is). A range gets none.
fn checksum_answer(
    object: &ObjectRecord,
    mode: Option<&ChecksumMode>,
    whole: bool,
    part_number: Option<i32>,
) -> Checksum {
    let enabled = mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED));
    if !enabled {
        return Checksum::default();
    }
    let part = part_number
        .and_then(|n| usize::try_from(n).ok()?.checked_sub(1))
        .and_then(|index| object.parts.get(index));
    match (part, &object.checksum) {
        (Some(part), whole_checksum) => match &part.checksum {
            Some(stored) => {
                let mut out = crate::checksums::as_dto(stored);
                if let Some(object_checksum) = whole_checksum {
                    out.checksum_type = crate::checksums::as_dto(object_checksum).checksum_type;
                }
                out
            }
            None => Checksum::default(),
        },
        (None, Some(stored)) if whole => crate::checksums::as_dto(stored),
        _ => Checksum::default(),
    }
}
