//! The bucket requests: `ListBuckets`, `Bucket`, `CreateBucket`, `SetBucketPublicRead`,
//! `DeleteBucket`.

use cairn_client::gateway_rpc::GatewayResponse;

use super::commit_once;
use crate::catalog::model::{Bucket, BucketMode};
use crate::catalog::{Command, RequestId};
use crate::rpc::context::{Answer, RpcContext, internal, now_ms};

/// `ListBuckets`.
pub(super) fn list_buckets(ctx: &RpcContext) -> Answer {
    Ok(GatewayResponse::Buckets(
        ctx.catalog
            .buckets()
            .map_err(internal)?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// `Bucket`: one bucket's record, if it exists.
pub(super) fn bucket(ctx: &RpcContext, name: &str) -> Answer {
    Ok(GatewayResponse::Bucket(
        ctx.catalog.bucket(name).map_err(internal)?.map(Into::into),
    ))
}

/// `CreateBucket`: a plain bucket with the coordinator's default code.
pub(super) async fn create_bucket(
    ctx: &RpcContext,
    name: String,
    public_read: bool,
    once: Option<RequestId>,
) -> Answer {
    let bucket = Bucket {
        name,
        created_ms: now_ms(),
        public_read,
        mode: BucketMode::Plain,
        erasure: ctx.default_erasure,
        failure_tolerance: crate::placement::DEFAULT_FAILURE_TOLERANCE as u8,
    };
    commit_once(ctx, Command::CreateBucket { bucket }, once).await?;
    Ok(GatewayResponse::Done)
}

/// `SetBucketPublicRead`.
pub(super) async fn set_bucket_public_read(
    ctx: &RpcContext,
    name: String,
    public_read: bool,
    once: Option<RequestId>,
) -> Answer {
    commit_once(
        ctx,
        Command::SetBucketPublicRead { name, public_read },
        once,
    )
    .await?;
    Ok(GatewayResponse::Done)
}

/// `DeleteBucket`.
pub(super) async fn delete_bucket(
    ctx: &RpcContext,
    name: String,
    once: Option<RequestId>,
) -> Answer {
    let now_ms = now_ms();
    commit_once(ctx, Command::DeleteBucket { name, now_ms }, once).await?;
    Ok(GatewayResponse::Done)
}
