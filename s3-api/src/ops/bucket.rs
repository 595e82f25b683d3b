//! ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation.

use cairn_coordinator::rpc::{GatewayRequest, GatewayResponse};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::service::{Gateway, timestamp, unexpected};

impl Gateway {
    pub(crate) async fn op_list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let GatewayResponse::Buckets(buckets) = self.call(GatewayRequest::ListBuckets).await?
        else {
            return Err(s3s::s3_error!(
                InternalError,
                "unexpected coordinator answer"
            ));
        };
        let buckets = buckets
            .into_iter()
            .map(|b| s3s::dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("cairn".into()),
                id: Some("cairn".into()),
            }),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        match self
            .change(GatewayRequest::CreateBucket { name: name.clone() })
            .await?
        {
            GatewayResponse::Done => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            })),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn op_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(crate) async fn op_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        match self
            .change(GatewayRequest::DeleteBucket {
                name: req.input.bucket,
            })
            .await?
        {
            GatewayResponse::Done => Ok(S3Response::new(DeleteBucketOutput {})),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn op_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket).await?;
        // One region; the empty constraint is S3's way of saying us-east-1.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }
}
