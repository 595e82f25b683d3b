//! DeleteObject and DeleteObjects.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::errors::from_call;
use crate::service::Gateway;

/// Most keys one DeleteObjects request may name (S3's limit).
const MAX_DELETE: usize = 1000;

impl Gateway {
    async fn delete_key(&self, bucket: &str, key: &str) -> S3Result<()> {
        self.path
            .coordinator
            .delete(bucket, key)
            .await
            .map_err(from_call)
    }

    pub(crate) async fn op_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        // Deleting a missing key succeeds, as in S3.
        self.delete_key(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(crate) async fn op_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > MAX_DELETE {
            return Err(s3s::s3_error!(
                MalformedXML,
                "at most {MAX_DELETE} keys per request"
            ));
        }
        self.bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            match self.delete_key(&input.bucket, &object.key).await {
                Ok(()) if !quiet => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(err) => errors.push(Error {
                    code: Some(err.code().as_str().to_string()),
                    key: Some(object.key),
                    message: err.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }
}
