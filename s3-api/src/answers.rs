//! What the gateway changes in the XML answers s3s writes, where s3s's writer and S3's
//! answers differ:
//!
//! - Control characters. An object key may hold any UTF-8 character, control characters
//!   included, and many answers echo a key without url encoding (listings without
//!   `encoding-type`, ListMultipartUploads, CompleteMultipartUpload, DeleteObjects
//!   results, error messages). s3s's XML writer escapes only `&`, `<`, `>`, `'` and `"`,
//!   so a key holding U+0001 went out raw and made the whole answer unreadable to every
//!   XML parser, and a key holding `\r` came back as `\n` (XML parsers normalise line
//!   ends). Each C0 control character other than tab and line feed goes out as a
//!   character reference, as S3 writes them: `&#xD;` is well-formed XML 1.0 and reads
//!   back as `\r` everywhere; XML 1.0 has no way at all to carry the others, and S3
//!   writes the same references (`&#x1;`), which lenient readers (the AWS SDK for Rust)
//!   take back exactly and strict ones (expat, so boto3; Java's SAX) refuse as they refuse
//!   S3's. Those clients list such keys with `encoding-type=url`.
//! - GetObjectAttributes' ETag. S3 answers it unquoted there, unlike every other answer;
//!   s3s writes every ETag quoted.
//!
//! Only whole XML bodies are rewritten, never an object's own bytes.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

/// Rewrites `response`, the answer to `operation` (the name s3s gives it), as S3 writes
/// it: see the module's documentation.
pub(crate) fn as_s3_writes(response: &mut Response<s3s::Body>, operation: &str) {
    // A successful GetObject's body is the object, whatever its Content-Type says.
    if operation == "GetObject" && response.status().is_success() {
        return;
    }
    let xml = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/xml"));
    if !xml {
        return;
    }
    let Some(body) = response.body().bytes() else {
        return;
    };
    let mut changed = escape_controls(&body);
    if operation == "GetObjectAttributes" && response.status() == StatusCode::OK {
        let current = changed.as_deref().unwrap_or(&body);
        if let Some(unquoted) = unquote_etag(current) {
            changed = Some(unquoted);
        }
    }
    let Some(changed) = changed else { return };
    let length = changed.len();
    *response.body_mut() = s3s::Body::from(Bytes::from(changed));
    if let Ok(value) = http::HeaderValue::from_str(&length.to_string()) {
        response.headers_mut().insert(CONTENT_LENGTH, value);
    }
}

/// Whether XML 1.0 text may hold byte `b` as itself: every byte of UTF-8 but the C0
/// controls other than tab and line feed (`\r` may appear, but is read back as `\n`).
fn literal(b: u8) -> bool {
    b >= 0x20 || b == b'\t' || b == b'\n'
}

/// `body` with every C0 control byte but tab and line feed written as a character
/// reference, or `None` if it holds none. Bytes below 0x20 are never part of a multi-byte
/// UTF-8 character, and s3s writes no line ends of its own, so each one found came from
/// a value.
fn escape_controls(body: &[u8]) -> Option<Vec<u8>> {
    let count = body.iter().filter(|&&b| !literal(b)).count();
    if count == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + count * 5);
    for &b in body {
        if literal(b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("&#x{b:X};").as_bytes());
        }
    }
    Some(out)
}

/// GetObjectAttributes' `<ETag>"…"</ETag>` without the quotes, or `None` if it has none.
fn unquote_etag(body: &[u8]) -> Option<Vec<u8>> {
    const OPEN: &[u8] = b"<ETag>\"";
    const CLOSE: &[u8] = b"\"</ETag>";
    let start = find(body, OPEN)?;
    let value = start + OPEN.len();
    let end = value + find(&body[value..], CLOSE)?;
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(b"<ETag>");
    out.extend_from_slice(&body[value..end]);
    out.extend_from_slice(b"</ETag>");
    out.extend_from_slice(&body[end + CLOSE.len()..]);
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(body: &'static [u8]) -> Response<s3s::Body> {
        let mut response = Response::new(s3s::Body::from(Bytes::from_static(body)));
        response.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml"),
        );
        response
    }

    fn body(response: &Response<s3s::Body>) -> Vec<u8> {
        response.body().bytes().expect("a whole body").to_vec()
    }

    #[test]
    fn control_characters_become_references_and_tab_and_line_feed_stay() {
        let mut response = xml(b"<Key>a\x01b\rc\td\ne\x1f\x00</Key>");
        as_s3_writes(&mut response, "ListObjectsV2");
        assert_eq!(
            body(&response),
            b"<Key>a&#x1;b&#xD;c\td\ne&#x1F;&#x0;</Key>".to_vec()
        );
        let length = body(&response).len().to_string();
        assert_eq!(response.headers()[CONTENT_LENGTH], length.as_str());
    }

    #[test]
    fn an_objects_own_bytes_are_never_rewritten() {
        let mut response = xml(b"<a>\x01</a>");
        as_s3_writes(&mut response, "GetObject");
        assert_eq!(body(&response), b"<a>\x01</a>".to_vec());
        let mut plain = Response::new(s3s::Body::from(Bytes::from_static(b"\x01\r")));
        as_s3_writes(&mut plain, "ListObjectsV2");
        assert_eq!(body(&plain), b"\x01\r".to_vec());
    }

    #[test]
    fn get_object_attributes_answers_its_etag_unquoted() {
        let mut response = xml(b"<GetObjectAttributesResponse><ETag>\"abc-2\"</ETag>\
              <ObjectSize>3</ObjectSize></GetObjectAttributesResponse>");
        as_s3_writes(&mut response, "GetObjectAttributes");
        assert_eq!(
            body(&response),
            b"<GetObjectAttributesResponse><ETag>abc-2</ETag><ObjectSize>3</ObjectSize>\
              </GetObjectAttributesResponse>"
                .to_vec()
        );
        let mut other = xml(b"<CopyObjectResult><ETag>\"abc\"</ETag></CopyObjectResult>");
        as_s3_writes(&mut other, "CopyObject");
        assert_eq!(
            body(&other),
            b"<CopyObjectResult><ETag>\"abc\"</ETag></CopyObjectResult>".to_vec()
        );
    }
}
