//! Canned ACLs: `x-amz-acl` on uploads and bucket creation, PutBucketAcl / PutObjectAcl,
//! GetBucketAcl / GetObjectAcl.
//!
//! Cairn keeps two canned ACLs: `private` and `public-read`. A bucket's is its public-read
//! flag (anonymous GET and HEAD of every object in it); an object's is kept in its record
//! (anonymous GET and HEAD of that object, even in a private bucket). Every other canned
//! ACL and the `x-amz-grant-*` headers answer `NotImplemented`, naming what was asked;
//! `public-read-write` is refused, as anonymous writes never are allowed.

use cairn_client::records::CannedAcl;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::errors::from_call;
use crate::service::{Gateway, owner};

/// The headers that grant permissions one by one, which Cairn does not keep.
const GRANT_HEADERS: [&str; 5] = [
    "x-amz-grant-full-control",
    "x-amz-grant-read",
    "x-amz-grant-read-acp",
    "x-amz-grant-write",
    "x-amz-grant-write-acp",
];

/// Canned ACLs S3 knows and Cairn does not keep.
const UNSUPPORTED_CANNED: [&str; 5] = [
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
];

/// The ACL a request sets: its `x-amz-acl` (`None` without one), refused if it grants
/// one by one or names a canned ACL Cairn does not keep.
pub(crate) fn requested_acl(
    headers: &http::HeaderMap,
    canned: Option<&str>,
) -> S3Result<Option<CannedAcl>> {
    let grants: Vec<&str> = GRANT_HEADERS
        .iter()
        .copied()
        .filter(|name| headers.contains_key(*name))
        .collect();
    if !grants.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "{} not supported: Cairn keeps only the canned ACLs private and public-read \
                 (x-amz-acl)",
                grants.join(", ")
            ),
        ));
    }
    let Some(canned) = canned.map(str::trim) else {
        return Ok(None);
    };
    match canned {
        "private" => Ok(Some(CannedAcl::Private)),
        "public-read" => Ok(Some(CannedAcl::PublicRead)),
        "public-read-write" => Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "the canned ACL public-read-write is refused: anonymous writes are never allowed",
        )),
        other if UNSUPPORTED_CANNED.contains(&other) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!(
                "the canned ACL {other} is not supported: Cairn keeps only private and \
                 public-read"
            ),
        )),
        other => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("{other:?} is not a canned ACL"),
        )),
    }
}

/// An ACL given as an `AccessControlPolicy` document rather than a canned name.
fn policy_refused() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        "ACLs given as an AccessControlPolicy document are not supported: set the canned \
         ACL private or public-read with x-amz-acl",
    )
}

/// A PutBucketAcl / PutObjectAcl must say what to set, one way.
fn acl_to_set(
    headers: &http::HeaderMap,
    canned: Option<&str>,
    policy: bool,
) -> S3Result<CannedAcl> {
    match (requested_acl(headers, canned)?, policy) {
        (Some(_), true) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "give either x-amz-acl or an AccessControlPolicy, not both",
        )),
        (Some(acl), false) => Ok(acl),
        (None, true) => Err(policy_refused()),
        (None, false) => Err(S3Error::with_message(
            S3ErrorCode::MissingSecurityHeader,
            "PutAcl needs x-amz-acl (private or public-read)",
        )),
    }
}

/// The grants S3 answers for an ACL: the owner's FULL_CONTROL, and READ for the AllUsers
/// group if public.
fn grants(acl: CannedAcl) -> Vec<Grant> {
    let owner = owner();
    let mut grants = vec![Grant {
        grantee: Some(Grantee {
            display_name: owner.display_name,
            email_address: None,
            id: owner.id,
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    if acl == CannedAcl::PublicRead {
        grants.push(Grant {
            grantee: Some(Grantee {
                display_name: None,
                email_address: None,
                id: None,
                type_: Type::from_static(Type::GROUP),
                uri: Some("http://acs.amazonaws.com/groups/global/AllUsers".into()),
            }),
            permission: Some(Permission::from_static(Permission::READ)),
        });
    }
    grants
}

fn bucket_acl(public_read: bool) -> CannedAcl {
    if public_read {
        CannedAcl::PublicRead
    } else {
        CannedAcl::Private
    }
}

impl Gateway {
    pub(crate) async fn op_put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let input = req.input;
        let acl = acl_to_set(
            &req.headers,
            input.acl.as_ref().map(|a| a.as_str()),
            input.access_control_policy.is_some(),
        )?;
        self.path
            .coordinator
            .set_bucket_public_read(&input.bucket, acl == CannedAcl::PublicRead)
            .await
            .map_err(from_call)?;
        Ok(S3Response::new(PutBucketAclOutput {}))
    }

    pub(crate) async fn op_get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(grants(bucket_acl(bucket.public_read))),
            owner: Some(owner()),
        }))
    }

    pub(crate) async fn op_put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let input = req.input;
        if input.version_id.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "objects have no versions here",
            ));
        }
        let acl = acl_to_set(
            &req.headers,
            input.acl.as_ref().map(|a| a.as_str()),
            input.access_control_policy.is_some(),
        )?;
        self.path
            .coordinator
            .set_object_acl(&input.bucket, &input.key, acl)
            .await
            .map_err(from_call)?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    pub(crate) async fn op_get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let input = req.input;
        let object = self.object_record(&input.bucket, &input.key).await?;
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(grants(object.acl)),
            owner: Some(owner()),
            request_charged: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: S3Result<Option<CannedAcl>>) -> String {
        result.unwrap_err().code().as_str().to_string()
    }

    #[test]
    fn canned_names_are_kept_refused_or_unsupported() {
        let none = http::HeaderMap::new();
        assert_eq!(requested_acl(&none, None).unwrap(), None);
        assert_eq!(
            requested_acl(&none, Some("private")).unwrap(),
            Some(CannedAcl::Private)
        );
        assert_eq!(
            requested_acl(&none, Some("public-read")).unwrap(),
            Some(CannedAcl::PublicRead)
        );
        assert_eq!(
            code(requested_acl(&none, Some("public-read-write"))),
            "AccessDenied"
        );
        assert_eq!(
            code(requested_acl(&none, Some("bucket-owner-full-control"))),
            "NotImplemented"
        );
        assert_eq!(
            code(requested_acl(&none, Some("everyone"))),
            "InvalidArgument"
        );
        let mut grant = http::HeaderMap::new();
        grant.insert("x-amz-grant-read", "uri=x".parse().unwrap());
        let err = requested_acl(&grant, None).unwrap_err();
        assert_eq!(err.code().as_str(), "NotImplemented");
        assert!(err.message().unwrap().contains("x-amz-grant-read"));
    }
}
