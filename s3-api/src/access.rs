//! Who may do what: SigV4 secrets from the coordinator, anonymous reads only of public
//! buckets and public-read objects, and virtual-host bucket names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::coordinator::CallError;
use cairn_client::gateway_rpc::RpcCode;
use prometheus::IntCounter;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::data_path::DataPath;
use crate::errors::from_call;
use crate::throttle::{ClientAddr, Throttle};

/// How long a secret or a bucket's public flag is reused before asking again: revoking a
/// key or making a bucket private takes effect within this.
const CACHE_FOR: Duration = Duration::from_secs(5);
/// How long an access key id the coordinator does not know is answered
/// `InvalidAccessKeyId` without asking again: a key created meanwhile works after this.
pub const UNKNOWN_KEY_FOR: Duration = Duration::from_secs(30);
/// Unknown access key ids remembered at most (in two generations of half as many each): a
/// flood of made-up ids turns the oldest over instead of growing memory.
pub const MAX_UNKNOWN_KEYS: usize = 16_384;
/// How long an access key id the coordinator vouched for counts as known to the throttle
/// (requests signed with it are never slowed down), counted from its last lookup.
const KNOWN_FOR: Duration = Duration::from_secs(600);
/// Longest access key id looked up; a longer one is unknown without asking.
const MAX_KEY_ID: usize = 128;

/// What the gateway knows of access key ids: secrets of real keys (reused for
/// [`CACHE_FOR`]), ids the coordinator does not know (for [`UNKNOWN_KEY_FOR`], at most
/// [`MAX_UNKNOWN_KEYS`]), and how many times it asked.
pub struct AccessKeys {
    valid: Mutex<HashMap<String, (Instant, String)>>,
    unknown: Mutex<UnknownKeys>,
    capacity: usize,
    lookups: IntCounter,
}

#[derive(Default)]
struct UnknownKeys {
    current: HashMap<String, Instant>,
    previous: HashMap<String, Instant>,
}

/// What a lookup would find now, from memory alone.
enum Remembered {
    Secret(String),
    Unknown,
    Ask,
}

impl AccessKeys {
    /// Nothing known yet; each coordinator lookup counted in `lookups`.
    pub fn new(lookups: IntCounter) -> Self {
        Self::with_capacity(MAX_UNKNOWN_KEYS, lookups)
    }

    fn with_capacity(capacity: usize, lookups: IntCounter) -> Self {
        Self {
            valid: Mutex::new(HashMap::new()),
            unknown: Mutex::new(UnknownKeys::default()),
            capacity: capacity.max(2),
            lookups,
        }
    }

    /// Whether `id` is a key the coordinator vouched for lately (within [`KNOWN_FOR`]):
    /// requests signed with it are not charged to their client's throttle.
    pub fn is_known(&self, id: &str) -> bool {
        self.valid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .is_some_and(|(at, _)| at.elapsed() < KNOWN_FOR)
    }

    fn remembered(&self, id: &str, now: Instant) -> Remembered {
        if id.len() > MAX_KEY_ID {
            return Remembered::Unknown;
        }
        let valid = self
            .valid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, secret)) = valid.get(id)
            && now.saturating_duration_since(*at) < CACHE_FOR
        {
            return Remembered::Secret(secret.clone());
        }
        drop(valid);
        let unknown = self
            .unknown
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let since = unknown.current.get(id).or_else(|| unknown.previous.get(id));
        match since {
            Some(at) if now.saturating_duration_since(*at) < UNKNOWN_KEY_FOR => Remembered::Unknown,
            _ => Remembered::Ask,
        }
    }

    fn remember(&self, id: &str, secret: Option<&str>, now: Instant) {
        let mut valid = self
            .valid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match secret {
            Some(secret) => {
                valid.retain(|_, (at, _)| now.saturating_duration_since(*at) < KNOWN_FOR);
                valid.insert(id.to_string(), (now, secret.to_string()));
            }
            None => {
                valid.remove(id);
                drop(valid);
                let mut unknown = self
                    .unknown
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if !unknown.current.contains_key(id) && unknown.current.len() >= self.capacity / 2 {
                    unknown.previous = std::mem::take(&mut unknown.current);
                }
                unknown.previous.remove(id);
                unknown.current.insert(id.to_string(), now);
            }
        }
    }

    #[cfg(test)]
    fn unknown_tracked(&self) -> usize {
        let unknown = self.unknown.lock().unwrap();
        unknown.current.len() + unknown.previous.len()
    }
}

/// SigV4 secrets, fetched from the coordinator (which gives them only to registered
/// gateways) and kept briefly in [`AccessKeys`].
pub struct Auth {
    path: Arc<DataPath>,
    keys: Arc<AccessKeys>,
}

impl Auth {
    /// Secrets from `path`'s coordinator, remembered in `keys`.
    pub fn new(path: Arc<DataPath>, keys: Arc<AccessKeys>) -> Self {
        Self { path, keys }
    }
}

fn invalid_key() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidAccessKeyId,
        "the access key does not exist or was revoked",
    )
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.remembered(access_key, Instant::now()) {
            Remembered::Secret(secret) => return Ok(SecretKey::from(secret)),
            Remembered::Unknown => return Err(invalid_key()),
            Remembered::Ask => {}
        }
        self.keys.lookups.inc();
        let secret = self
            .path
            .coordinator
            .access_key(access_key)
            .await
            .map_err(from_call)?
            .map(|key| key.secret);
        self.keys
            .remember(access_key, secret.as_deref(), Instant::now());
        secret.map(SecretKey::from).ok_or_else(invalid_key)
    }
}

/// The access key id a request is signed with (SigV4 or SigV2, in the `Authorization`
/// header or a presigned URL's query), if it claims one. Nothing is checked here.
pub(crate) fn signing_key_id<B>(req: &http::Request<B>) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256") {
            let credential = rest.split_once("Credential=")?.1;
            let end = credential.find(['/', ',']).unwrap_or(credential.len());
            return Some(credential[..end].trim().to_string());
        }
        if let Some(rest) = value.strip_prefix("AWS ") {
            return Some(
                rest.split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            );
        }
        return Some(String::new());
    }
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        match name {
            "X-Amz-Credential" => {
                let value = value.replace("%2F", "/").replace("%2f", "/");
                Some(value.split('/').next().unwrap_or_default().to_string())
            }
            "AWSAccessKeyId" => Some(value.to_string()),
            _ => None,
        }
    })
}

/// Signed requests may do anything; anonymous ones may only GET and HEAD objects of
/// public-read buckets or public-read objects (decided by the operation, which reads the
/// object's record anyway), and only as often as their client's [`Throttle`] allows (past
/// it, `503 SlowDown`). An anonymous request to a bucket that does not exist is told so
/// (`NoSuchBucket`), as S3 tells anyone.
pub struct Access {
    path: Arc<DataPath>,
    throttle: Arc<Throttle>,
    /// Per bucket name: whether it is public-read, `None` if there is no such bucket.
    public: Mutex<HashMap<String, (Instant, Option<bool>)>>,
}

impl Access {
    /// Bucket flags from `path`'s coordinator; anonymous requests limited by `throttle`.
    pub fn new(path: Arc<DataPath>, throttle: Arc<Throttle>) -> Self {
        Self {
            path,
            throttle,
            public: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `bucket` is public-read; `None` if it does not exist.
    async fn is_public(&self, bucket: &str) -> S3Result<Option<bool>> {
        let cached = self.public.lock().ok().and_then(|cache| {
            cache
                .get(bucket)
                .filter(|(at, _)| at.elapsed() < CACHE_FOR)
                .map(|(_, public)| *public)
        });
        if let Some(public) = cached {
            return Ok(public);
        }
        let public = match self.path.coordinator.bucket(bucket).await {
            Ok(bucket) => Some(bucket.public_read),
            Err(CallError::Refused {
                code: RpcCode::NoSuchBucket,
                ..
            }) => None,
            Err(err) => return Err(from_call(err)),
        };
        if let Ok(mut cache) = self.public.lock() {
            cache.insert(bucket.to_string(), (Instant::now(), public));
        }
        Ok(public)
    }
}

/// Left in a request's extensions by the access check: an anonymous GET or HEAD of an
/// object in a private bucket, allowed only if the object itself is public-read (checked
/// by the operation on the record it reads).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnonymousInPrivateBucket;

/// Refuses an anonymous read of `object` unless it is public-read (see
/// [`AnonymousInPrivateBucket`]); a missing object is refused the same way, as S3 tells an
/// anonymous reader of a private bucket nothing about which keys exist.
pub(crate) fn check_anonymous_read(
    extensions: &http::Extensions,
    object: Option<&cairn_client::records::ObjectRecord>,
) -> S3Result<()> {
    if extensions.get::<AnonymousInPrivateBucket>().is_none() {
        return Ok(());
    }
    match object {
        Some(object) if object.acl == cairn_client::records::CannedAcl::PublicRead => Ok(()),
        _ => Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "anonymous access is limited to reading public buckets and public-read objects; \
             sign the request",
        )),
    }
}

/// Where the access check leaves the name of the S3 operation a request was routed to, for
/// the request metrics (the HTTP layer around s3s sees only methods and paths).
#[derive(Debug, Clone, Default)]
pub struct OperationSlot(Arc<std::sync::OnceLock<String>>);

impl OperationSlot {
    /// The operation's name, or `unknown` for requests refused before routing.
    pub fn name(&self) -> String {
        self.0.get().cloned().unwrap_or_else(|| "unknown".into())
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_string();
        if let Some(slot) = cx.extensions_mut().get::<OperationSlot>() {
            let _ = slot.0.set(operation);
        }
        if cx.credentials().is_some() {
            return Ok(());
        }
        // Before anything that costs the coordinator (a bucket lookup, read orders).
        if let Some(ClientAddr(client)) = cx.extensions_mut().get::<ClientAddr>().copied()
            && !self.throttle.allow(client)
        {
            tracing::debug!(%client, "anonymous requests past the client's rate");
            // S3's own answer to throttling: 503, which clients retry with back-off.
            return Err(S3Error::with_message(
                S3ErrorCode::SlowDown,
                "Too many anonymous requests from your address; sign requests or slow down.",
            ));
        }
        let read = matches!(cx.s3_op().name(), "GetObject" | "HeadObject");
        let bucket = cx.s3_path().get_bucket_name().map(str::to_string);
        if let Some(bucket) = bucket {
            match self.is_public(&bucket).await? {
                None => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::NoSuchBucket,
                        format!("no bucket named {bucket}"),
                    ));
                }
                Some(true) if read => return Ok(()),
                // The object's own ACL decides, from the record the read fetches anyway.
                Some(false) if read => {
                    cx.extensions_mut().insert(AnonymousInPrivateBucket);
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "anonymous access is limited to reading public buckets and public-read objects; \
             sign the request",
        ))
    }
}

/// Virtual-host addressing under one domain (`<bucket>.<domain>`, any port); every other
/// host name is path-style.
pub struct Host {
    domain: Option<String>,
}

impl Host {
    /// Buckets as sub-domains of `domain`, if set.
    pub fn new(domain: Option<String>) -> Self {
        Self { domain }
    }
}

impl S3Host for Host {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        };
        if let Some(domain) = &self.domain
            && let Some(bucket) = name
                .strip_suffix(domain.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|b| !b.is_empty())
        {
            return Ok(VirtualHost::new(domain.as_str()).with_bucket(bucket));
        }
        Ok(VirtualHost::new(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_ids_are_remembered_briefly_and_within_a_bound() {
        let keys = AccessKeys::with_capacity(100, IntCounter::new("t", "t").unwrap());
        let now = Instant::now();
        assert!(matches!(keys.remembered("AKMADEUP", now), Remembered::Ask));
        keys.remember("AKMADEUP", None, now);
        assert!(matches!(
            keys.remembered("AKMADEUP", now),
            Remembered::Unknown
        ));
        let later = now + UNKNOWN_KEY_FOR;
        assert!(matches!(
            keys.remembered("AKMADEUP", later),
            Remembered::Ask
        ));
        for n in 0..10_000 {
            keys.remember(&format!("AK{n}"), None, now);
            assert!(keys.unknown_tracked() <= 100);
        }
        let long = "A".repeat(MAX_KEY_ID + 1);
        assert!(matches!(keys.remembered(&long, now), Remembered::Unknown));
        // A real key is known; once revoked, it is not.
        keys.remember("AKREAL", Some("secret"), now);
        assert!(keys.is_known("AKREAL"));
        assert!(matches!(keys.remembered("AKREAL", now), Remembered::Secret(s) if s == "secret"));
        keys.remember("AKREAL", None, now);
        assert!(!keys.is_known("AKREAL"));
    }

    #[test]
    fn the_signing_key_id_is_read_from_the_header_or_the_query() {
        let req = |auth: Option<&str>, uri: &str| {
            let mut builder = http::Request::builder().uri(uri);
            if let Some(auth) = auth {
                builder = builder.header("authorization", auth);
            }
            builder.body(()).unwrap()
        };
        let v4 = "AWS4-HMAC-SHA256 Credential=AKID1/20260101/us-east-1/s3/aws4_request, \
                  SignedHeaders=host, Signature=00";
        assert_eq!(
            signing_key_id(&req(Some(v4), "/b/k")).as_deref(),
            Some("AKID1")
        );
        assert_eq!(
            signing_key_id(&req(Some("AWS AKID2:c2ln"), "/b/k")).as_deref(),
            Some("AKID2")
        );
        let presigned = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID3%2F20260101%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(
            signing_key_id(&req(None, presigned)).as_deref(),
            Some("AKID3")
        );
        assert_eq!(signing_key_id(&req(None, "/b/k?list-type=2")), None);
    }
}
