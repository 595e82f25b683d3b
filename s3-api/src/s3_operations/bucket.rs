//! ListBuckets, CreateBucket (with `x-amz-acl`), HeadBucket, DeleteBucket,
//! GetBucketLocation.

use cairn_client::records::CannedAcl;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::errors::from_call;
use crate::s3_operations::acl::requested_acl;
use crate::s3_operations::list::{decode_token, encode_token};
use crate::service::{Gateway, REGION, owner, timestamp};

/// Most buckets a ListBuckets page holds (and the most `max-buckets` may ask for).
const MAX_BUCKETS: i32 = 10_000;

impl Gateway {
    pub(crate) async fn op_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let input = req.input;
        let max = match input.max_buckets {
            None => None,
            Some(n) if (1..=MAX_BUCKETS).contains(&n) => usize::try_from(n).ok(),
            Some(_) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("max-buckets must be between 1 and {MAX_BUCKETS}"),
                ));
            }
        };
        let after = input
            .continuation_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(decode_token)
            .transpose()?;
        let prefix = input.prefix.clone().unwrap_or_default();
        // Every bucket is in the one region.
        let in_region = input
            .bucket_region
            .as_deref()
            .is_none_or(|region| region == REGION);
        let buckets = self.path.coordinator.buckets().await.map_err(from_call)?;
        let mut buckets: Vec<_> = buckets
            .into_iter()
            .filter(|b| in_region && b.name.starts_with(&prefix))
            .filter(|b| after.as_ref().is_none_or(|after| b.name > *after))
            .collect();
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        let truncated = max.is_some_and(|max| buckets.len() > max);
        if let Some(max) = max {
            buckets.truncate(max);
        }
        let next = buckets
            .last()
            .filter(|_| truncated)
            .map(|b| encode_token(&b.name));
        let buckets = buckets
            .into_iter()
            .map(|b| s3s::dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(REGION.into()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            prefix: input.prefix,
            continuation_token: next,
        }))
    }

    pub(crate) async fn op_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let acl = requested_acl(&req.headers, req.input.acl.as_ref().map(|a| a.as_str()))?;
        let public_read = acl == Some(CannedAcl::PublicRead);
        let name = req.input.bucket;
        let elsewhere = req
            .input
            .create_bucket_configuration
            .and_then(|c| c.location_constraint)
            .is_some_and(|l| !l.as_str().is_empty() && l.as_str() != REGION);
        let created = || {
            Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            }))
        };
        match self
            .path
            .coordinator
            .create_bucket(&name, public_read)
            .await
            .map_err(from_call)
        {
            Ok(()) => created(),
            // S3 in us-east-1, the one region here, answers 200 to creating a bucket the
            // caller already owns (for compatibility with its oldest clients) and leaves it
            // as it is; a request placing it in another region is refused. (S3 also resets
            // the bucket's ACL then; here the public-read flag is the operator's, so it
            // stays.)
            Err(err) if *err.code() == S3ErrorCode::BucketAlreadyOwnedByYou && !elsewhere => {
                created()
            }
            Err(err) => Err(err),
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
        self.path
            .coordinator
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(from_call)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(crate) async fn op_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket).await?;
        // One region (REGION); the empty constraint is S3's way of saying us-east-1.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }
}
