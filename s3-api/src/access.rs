//! Who may do what: SigV4 secrets from the coordinator, anonymous reads only of public
//! buckets and public-read objects, and virtual-host bucket names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::errors::from_call;
use crate::store::DataPath;
use crate::throttle::{ClientAddr, Throttle};

/// How long a secret or a bucket's public flag is reused before asking again: revoking a
/// key or making a bucket private takes effect within this.
const CACHE_FOR: Duration = Duration::from_secs(5);

/// SigV4 secrets, fetched from the coordinator (which gives them only to registered
/// gateways) and kept briefly.
pub struct Auth {
    path: Arc<DataPath>,
    cache: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl Auth {
    /// Secrets from `path`'s coordinator.
    pub fn new(path: Arc<DataPath>) -> Self {
        Self {
            path,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let cached = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(access_key)
                .filter(|(at, _)| at.elapsed() < CACHE_FOR)
                .map(|(_, secret)| secret.clone())
        });
        let secret = match cached {
            Some(secret) => secret,
            None => {
                let request = GatewayRequest::AccessKey {
                    id: access_key.to_string(),
                };
                let secret = match self
                    .path
                    .coordinator
                    .call(&request)
                    .await
                    .map_err(from_call)?
                {
                    GatewayResponse::AccessKey(key) => key.map(|k| k.secret),
                    other => {
                        return Err(S3Error::with_message(
                            S3ErrorCode::InternalError,
                            format!("unexpected coordinator answer: {other:?}"),
                        ));
                    }
                };
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(access_key.to_string(), (Instant::now(), secret.clone()));
                }
                secret
            }
        };
        secret.map(SecretKey::from).ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "the access key does not exist or was revoked",
            )
        })
    }
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
        let request = GatewayRequest::Bucket {
            name: bucket.to_string(),
        };
        let public = match self
            .path
            .coordinator
            .call(&request)
            .await
            .map_err(from_call)?
        {
            GatewayResponse::Bucket(bucket) => bucket.map(|b| b.public_read),
            _ => Some(false),
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
