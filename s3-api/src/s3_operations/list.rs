//! ListObjects (v1, marker) and ListObjectsV2 (continuation token, start-after): both are
//! pages of the coordinator's listing; the delimiter roll-up happens there.

use base64::Engine as _;
use cairn_client::records::{ListQuery, Listing};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::errors::from_call;
use crate::service::{Gateway, etag, owner, timestamp};

/// Keys per page when the client does not say, and at most.
const MAX_KEYS: i32 = 1000;

/// A continuation token naming where the next page starts (after `name`): base64 of the
/// name, so it is opaque to clients as S3's are, and safe in XML and URLs whatever
/// characters a key holds. It stays valid whatever was written since.
pub(crate) fn encode_token(name: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(name)
}

/// The name a continuation token from [`encode_token`] holds.
pub(crate) fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect",
            )
        })
}

/// A delimiter as given, unless empty: S3 treats `delimiter=` as no delimiter and does
/// not echo it.
fn given_delimiter(given: Option<String>) -> Option<String> {
    given.filter(|d| !d.is_empty())
}

/// `encoding-type=url`: percent-encode everything but unreserved characters and `/`, so
/// clients can carry keys with control characters in XML. (`%20` for a space, which every
/// client's decoder reads, where S3 writes `+`.)
pub(crate) fn encode(value: &str, url: bool) -> String {
    if !url {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether a listing asked for `encoding-type=url`.
pub(crate) fn wants_url(encoding: Option<&EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str().eq_ignore_ascii_case("url"))
}

impl Gateway {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        after: Option<String>,
        max_keys: Option<i32>,
    ) -> S3Result<(Listing, i32)> {
        let max = max_keys.unwrap_or(MAX_KEYS);
        if max < 0 {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "max-keys must not be negative",
            ));
        }
        let max = max.min(MAX_KEYS);
        if max == 0 {
            self.bucket(bucket).await?;
            return Ok((Listing::default(), 0));
        }
        let query = ListQuery {
            prefix: prefix.unwrap_or_default(),
            delimiter,
            after: after.filter(|a| !a.is_empty()),
            max: max as usize,
        };
        let listing = self
            .path
            .coordinator
            .list(bucket, query)
            .await
            .map_err(from_call)?;
        Ok((listing, max))
    }

    pub(crate) async fn op_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let url = wants_url(input.encoding_type.as_ref());
        let delimiter = given_delimiter(input.delimiter);
        // The token holds the last key of the previous page; it wins over start-after.
        let after = match input.continuation_token.as_deref() {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone(),
        };
        let (listing, max) = self
            .list_page(
                &input.bucket,
                input.prefix.clone(),
                delimiter.clone(),
                after,
                input.max_keys,
            )
            .await?;
        let count = (listing.objects.len() + listing.common_prefixes.len()) as i32;
        let next = listing
            .truncated
            .then(|| listing.last.as_deref().map(encode_token))
            .flatten();
        let owner = input.fetch_owner.unwrap_or(false).then(owner);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode(&input.prefix.unwrap_or_default(), url)),
            delimiter: delimiter.map(|d| encode(&d, url)),
            max_keys: Some(max),
            key_count: Some(count),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: input.start_after.map(|s| encode(&s, url)),
            is_truncated: Some(listing.truncated),
            contents: Some(objects(&listing, url, owner)),
            common_prefixes: Some(prefixes(&listing, url)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn op_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url = wants_url(input.encoding_type.as_ref());
        let delimiter = given_delimiter(input.delimiter);
        let (listing, max) = self
            .list_page(
                &input.bucket,
                input.prefix.clone(),
                delimiter.clone(),
                input.marker.clone(),
                input.max_keys,
            )
            .await?;
        // S3 names the next marker only under a delimiter (where the last entry may be a
        // common prefix); without one, clients continue from the last key listed.
        let next = listing
            .truncated
            .then(|| listing.last.clone())
            .flatten()
            .filter(|_| delimiter.is_some());
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode(&input.prefix.unwrap_or_default(), url)),
            marker: Some(encode(&input.marker.unwrap_or_default(), url)),
            delimiter: delimiter.map(|d| encode(&d, url)),
            max_keys: Some(max),
            is_truncated: Some(listing.truncated),
            next_marker: next.map(|n| encode(&n, url)),
            // Version 1 names every object's owner.
            contents: Some(objects(&listing, url, Some(owner()))),
            common_prefixes: Some(prefixes(&listing, url)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

fn objects(listing: &Listing, url: bool, owner: Option<Owner>) -> Vec<Object> {
    listing
        .objects
        .iter()
        .map(|(key, object)| Object {
            owner: owner.clone(),
            key: Some(encode(key, url)),
            size: Some(object.size as i64),
            e_tag: Some(etag(&object.etag)),
            last_modified: Some(timestamp(object.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect()
}

fn prefixes(listing: &Listing, url: bool) -> Vec<CommonPrefix> {
    listing
        .common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(encode(p, url)),
        })
        .collect()
}
