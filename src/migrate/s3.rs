//! A small blocking S3 client for `cairn import` and `cairn admin verify`.
//!
//! rusty-s3 does the protocol (each request signed as a SigV4 presigned URL, listing and
//! multipart XML), ureq sends it, one request per call on a shared connection pool, so a
//! pool of threads (`--jobs`) is all the concurrency there is. Bodies go up from caller
//! buffers (at most one part each) and come down as readers, never whole objects.

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use instant_xml::FromXml;
use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};

/// How long a signed URL stays valid. Each request is signed just before it is sent, so this
/// only has to cover the request itself.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);

/// Largest error or XML answer read into memory.
const MAX_SMALL_BODY: u64 = 16 << 20;

/// An S3 endpoint and who to be there.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:9000` or `https://s3.eu-west-1.amazonaws.com`.
    pub url: url::Url,
    /// Region requests are signed for.
    pub region: String,
    /// Bucket in the path (`endpoint/bucket/key`, what Cairn, moto and MinIO expect) rather
    /// than in the host name (`bucket.endpoint/key`, AWS's default).
    pub path_style: bool,
    /// Access key, or `None` for anonymous requests (public buckets).
    pub credentials: Option<Credentials>,
}

impl Endpoint {
    /// Builds an endpoint from its parts; `url` must be `http://` or `https://`.
    pub fn new(
        url: &str,
        region: &str,
        path_style: bool,
        key: Option<(String, String, Option<String>)>,
    ) -> anyhow::Result<Endpoint> {
        let url = url::Url::parse(url)
            .map_err(|err| anyhow::anyhow!("invalid endpoint URL {url:?}: {err}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
            "invalid endpoint URL {url}: expected http://HOST[:PORT] or https://…"
        );
        Ok(Endpoint {
            url,
            region: region.to_string(),
            path_style,
            credentials: key.map(|(id, secret, token)| match token {
                Some(token) => Credentials::new_with_token(id, secret, token),
                None => Credentials::new(id, secret),
            }),
        })
    }
}

/// What went wrong with one request.
#[derive(Debug, Clone)]
pub struct S3Error {
    /// The HTTP status, or `None` when no answer came (connection refused, reset, timeout).
    pub status: Option<u16>,
    /// S3's error code (`AccessDenied`, `NoSuchKey`, …), or a short description.
    pub code: String,
    /// S3's message, or the transport error.
    pub message: String,
}

impl S3Error {
    fn transport(err: impl std::fmt::Display) -> S3Error {
        S3Error {
            status: None,
            code: "ConnectionFailed".into(),
            message: err.to_string(),
        }
    }

    fn protocol(message: impl Into<String>) -> S3Error {
        S3Error {
            status: None,
            code: "BadAnswer".into(),
            message: message.into(),
        }
    }

    /// Worth trying again: no answer, a server error, or S3 asking to slow down.
    pub fn is_transient(&self) -> bool {
        match self.status {
            None => self.code != "BadAnswer",
            Some(status) => {
                status >= 500
                    || status == 429
                    || matches!(
                        self.code.as_str(),
                        "RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable"
                    )
            }
        }
    }

    /// The object (or bucket) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) if self.message.is_empty() => write!(f, "{} (HTTP {status})", self.code),
            Some(status) => write!(f, "{}: {} (HTTP {status})", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for S3Error {}

/// The `<Error>` body S3 answers failures with. Unknown elements (`RequestId`, `Resource`…)
/// are skipped by instant-xml.
#[derive(FromXml)]
#[xml(rename = "Error")]
struct ErrorBody {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

/// CompleteMultipartUpload's answer under the root name moto gives it.
#[derive(FromXml)]
#[xml(
    rename = "CompleteMultipartUploadResponse",
    ns("http://s3.amazonaws.com/doc/2006-03-01/")
)]
struct CompleteAnswerElsewhere {
    #[xml(rename = "ETag")]
    etag: String,
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Full object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes, if given.
    pub etag: Option<String>,
    /// Last modification time, if given and readable.
    pub modified: Option<jiff::Timestamp>,
}

/// One page of a listing.
#[derive(Debug)]
pub struct ListPage {
    /// Objects in key order.
    pub objects: Vec<Listed>,
    /// Continuation token of the next page, if there is one.
    pub next: Option<String>,
}

/// The headers of an object that a copy keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
}

impl ObjectHeaders {
    fn from_response(headers: &ureq::http::HeaderMap) -> ObjectHeaders {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        ObjectHeaders {
            content_type: get("content-type"),
            content_encoding: get("content-encoding"),
            cache_control: get("cache-control"),
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("Content-Type", self.content_type.as_deref()),
            ("Content-Encoding", self.content_encoding.as_deref()),
            ("Cache-Control", self.cache_control.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }
}

/// What a HEAD or GET says about an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Size in bytes (`Content-Length`).
    pub size: u64,
    /// ETag without quotes.
    pub etag: Option<String>,
    /// Headers a copy keeps.
    pub headers: ObjectHeaders,
}

/// A GET in progress: what the answer said, and its body to read.
pub struct Download {
    /// Size, ETag and headers.
    pub info: ObjectInfo,
    /// The body, streamed from the connection.
    pub body: ureq::BodyReader<'static>,
}

/// A client for one bucket.
pub struct S3Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Option<Credentials>,
    label: String,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("bucket", &self.label)
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// A client for `bucket` at `endpoint`, keeping up to `connections` idle connections
    /// (one per job is enough).
    pub fn new(endpoint: &Endpoint, bucket: &str, connections: usize) -> anyhow::Result<S3Client> {
        let style = if endpoint.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let handle = Bucket::new(
            endpoint.url.clone(),
            style,
            bucket.to_string(),
            endpoint.region.clone(),
        )
        .map_err(|err| anyhow::anyhow!("bucket {bucket:?} at {}: {err}", endpoint.url))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A stalled connection is noticed within a minute, however long the body.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            // Completing a large multipart NAR upload makes Cairn read it back and hash it
            // before it answers.
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .max_idle_connections(connections.max(1) * 2)
            .max_idle_connections_per_host(connections.max(1) * 2)
            .user_agent(format!("cairn/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(S3Client {
            agent,
            bucket: handle,
            credentials: endpoint.credentials.clone(),
            label: format!("s3://{bucket} at {}", endpoint.url),
        })
    }

    /// `s3://bucket at endpoint`, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn creds(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// One page of ListObjectsV2 under `prefix`, from `token` (or the start).
    pub fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        let mut action = self.bucket.list_objects_v2(self.creds());
        if !prefix.is_empty() {
            action.with_prefix(prefix);
        }
        if let Some(delimiter) = delimiter {
            action.with_delimiter(delimiter);
        }
        if let Some(token) = token {
            action.with_continuation_token(token);
        }
        action.with_max_keys(1000);
        let url = action.sign(SIGNATURE_LIFETIME);
        let response = self.agent.get(url.as_str()).call();
        let text = small_body(checked(response)?)?;
        let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
            .map_err(|err| S3Error::protocol(format!("unreadable listing: {err}")))?;
        let objects = page
            .contents
            .into_iter()
            .map(|c| {
                Ok(Listed {
                    size: c.size.ok_or_else(|| {
                        S3Error::protocol(format!("listing gives no size for {:?}", c.key))
                    })?,
                    etag: c.etag.map(|e| unquote(&e)),
                    modified: c.last_modified.and_then(|t| t.parse().ok()),
                    key: c.key,
                })
            })
            .collect::<Result<Vec<_>, S3Error>>()?;
        Ok(ListPage {
            objects,
            next: page.next_continuation_token,
        })
    }

    /// HEAD: `None` if the object does not exist.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let url = self
            .bucket
            .head_object(self.creds(), key)
            .sign(SIGNATURE_LIFETIME);
        match checked(self.agent.head(url.as_str()).call()) {
            Ok(response) => Ok(Some(info(&response)?)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// GET: the object's headers and its body as a stream.
    pub fn get(&self, key: &str) -> Result<Download, S3Error> {
        let url = self
            .bucket
            .get_object(self.creds(), key)
            .sign(SIGNATURE_LIFETIME);
        let response = checked(self.agent.get(url.as_str()).call())?;
        let info = info(&response)?;
        let body = response.into_body().into_reader();
        Ok(Download { info, body })
    }

    /// GET of a small object (a narinfo), refused above `limit` bytes.
    pub fn get_small(&self, key: &str, limit: u64) -> Result<Vec<u8>, S3Error> {
        let url = self
            .bucket
            .get_object(self.creds(), key)
            .sign(SIGNATURE_LIFETIME);
        let mut response = checked(self.agent.get(url.as_str()).call())?;
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(S3Error::transport)
    }

    /// PutObject of `body`, with its `Content-MD5` (the receiver checks it); returns the
    /// ETag the receiver gave.
    pub fn put(
        &self,
        key: &str,
        body: &[u8],
        md5: &[u8; 16],
        headers: &ObjectHeaders,
    ) -> Result<Option<String>, S3Error> {
        let url = self
            .bucket
            .put_object(self.creds(), key)
            .sign(SIGNATURE_LIFETIME);
        let mut request = self
            .agent
            .put(url.as_str())
            .header("Content-MD5", base64_md5(md5));
        for (name, value) in headers.pairs() {
            request = request.header(name, value);
        }
        let response = checked(request.send(body))?;
        Ok(etag(&response))
    }

    /// CreateMultipartUpload: the upload id.
    pub fn create_multipart(&self, key: &str, headers: &ObjectHeaders) -> Result<String, S3Error> {
        let url = self
            .bucket
            .create_multipart_upload(self.creds(), key)
            .sign(SIGNATURE_LIFETIME);
        let mut request = self.agent.post(url.as_str());
        for (name, value) in headers.pairs() {
            request = request.header(name, value);
        }
        let text = small_body(checked(request.send_empty())?)?;
        let answer = rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map_err(|err| S3Error::protocol(format!("unreadable upload id: {err}")))?;
        Ok(answer.upload_id().to_string())
    }

    /// UploadPart number `part` (from 1) with its `Content-MD5`; returns the part's ETag.
    pub fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: u16,
        body: &[u8],
        md5: &[u8; 16],
    ) -> Result<String, S3Error> {
        let url = self
            .bucket
            .upload_part(self.creds(), key, part, upload_id)
            .sign(SIGNATURE_LIFETIME);
        let response = checked(
            self.agent
                .put(url.as_str())
                .header("Content-MD5", base64_md5(md5))
                .send(body),
        )?;
        etag(&response).ok_or_else(|| S3Error::protocol(format!("no ETag for part {part}")))
    }

    /// CompleteMultipartUpload of the parts whose ETags are given in order; returns the
    /// object's ETag. An error inside a 200 answer (S3 may answer before it finished) is an
    /// error here too.
    pub fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<String, S3Error> {
        let action = self.bucket.complete_multipart_upload(
            self.creds(),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNATURE_LIFETIME);
        let body = action.body();
        let response = checked(
            self.agent
                .post(url.as_str())
                .header("Content-Type", "application/xml")
                .send(body.as_bytes()),
        )?;
        let text = small_body(response)?;
        if let Ok(answer) = rusty_s3::actions::CompleteMultipartUploadResponse::parse(&text) {
            return Ok(unquote(answer.etag()));
        }
        if instant_xml::from_str::<ErrorBody>(text.trim_start_matches('\u{feff}')).is_ok() {
            return Err(error_from_body(200, &text));
        }
        // Some servers (moto) name the answer's root element differently; it is still a
        // success, and the ETag is read from it or asked for.
        if let Ok(answer) = instant_xml::from_str::<CompleteAnswerElsewhere>(&text) {
            return Ok(unquote(&answer.etag));
        }
        let info = self
            .head(key)?
            .ok_or_else(|| S3Error::protocol("the completed upload is not there"))?;
        info.etag
            .ok_or_else(|| S3Error::protocol("the completed upload has no ETag"))
    }

    /// AbortMultipartUpload (best effort by the caller: its parts are otherwise kept).
    pub fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .abort_multipart_upload(self.creds(), key, upload_id)
            .sign(SIGNATURE_LIFETIME);
        checked(self.agent.delete(url.as_str()).call()).map(drop)
    }
}

/// The response if it is a success, else its S3 error.
fn checked(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<ureq::http::Response<ureq::Body>, S3Error> {
    let mut response = response.map_err(S3Error::transport)?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(response);
    }
    // HEAD answers carry no body; others carry S3's <Error> document.
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    Err(error_from_body(status, &text))
}

fn error_from_body(status: u16, text: &str) -> S3Error {
    let parsed = instant_xml::from_str::<ErrorBody>(text.trim_start_matches('\u{feff}')).ok();
    let code = parsed
        .as_ref()
        .and_then(|e| e.code.clone())
        .unwrap_or_else(|| match status {
            404 => "NotFound".to_string(),
            403 => "AccessDenied".to_string(),
            _ => format!("HTTP{status}"),
        });
    // An <Error> without a <Message> says all in its code; an answer that is not S3's
    // <Error> at all is shown as it came (cut short).
    let message = match parsed {
        Some(error) => error.message.unwrap_or_default(),
        None => text.trim().chars().take(300).collect(),
    };
    S3Error {
        status: Some(status),
        code,
        message,
    }
}

fn small_body(mut response: ureq::http::Response<ureq::Body>) -> Result<String, S3Error> {
    response
        .body_mut()
        .with_config()
        .limit(MAX_SMALL_BODY)
        .read_to_string()
        .map_err(S3Error::transport)
}

fn info(response: &ureq::http::Response<ureq::Body>) -> Result<ObjectInfo, S3Error> {
    let size = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| S3Error::protocol("the answer has no Content-Length"))?;
    Ok(ObjectInfo {
        size,
        etag: etag(response),
        headers: ObjectHeaders::from_response(response.headers()),
    })
}

fn etag(response: &ureq::http::Response<ureq::Body>) -> Option<String> {
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(unquote)
}

/// An ETag without its quotes (`W/` weak prefixes are not used by S3).
pub fn unquote(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

fn base64_md5(md5: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Whether an ETag is a plain MD5 of the body (single-part uploads), which a copy can check
/// against the bytes it moved; multipart ETags (`…-N`) depend on the part sizes.
pub fn is_plain_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                   <Message>narinfo has no Sig line</Message><RequestId>1</RequestId></Error>";
        let err = error_from_body(403, xml);
        assert_eq!(err.code, "AccessDenied");
        assert_eq!(err.message, "narinfo has no Sig line");
        assert!(!err.is_transient());
        let err = error_from_body(503, "");
        assert_eq!(err.code, "HTTP503");
        assert!(err.is_transient());
        assert!(error_from_body(404, "").is_not_found());
        assert!(S3Error::transport("reset").is_transient());
        assert!(!S3Error::protocol("junk").is_transient());
    }

    #[test]
    fn etags() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert!(is_plain_md5("d41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_plain_md5("d41d8cd98f00b204e9800998ecf8427e-2"));
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
