//! The bucket commands: [`Command::CreateBucket`], [`Command::DeleteBucket`],
//! [`Command::SetBucketPublicRead`].
//!
//! [`Command::CreateBucket`]: crate::catalog::Command::CreateBucket
//! [`Command::DeleteBucket`]: crate::catalog::Command::DeleteBucket
//! [`Command::SetBucketPublicRead`]: crate::catalog::Command::SetBucketPublicRead

use redb::{ReadableTable, WriteTransaction};

use super::refused;
use super::uploads::abort_uploads_of;
use crate::catalog::command::{CatalogError, CommandResult};
use crate::catalog::model::{Bucket, validate_bucket_name};
use crate::catalog::{BUCKETS, CatalogFault, OBJECTS, decode, encode, object_key};

/// [`Command::CreateBucket`](crate::catalog::Command::CreateBucket): refused for an
/// invalid or taken name.
pub(super) fn create_bucket(
    txn: &WriteTransaction,
    bucket: &Bucket,
) -> Result<CommandResult, CatalogFault> {
    if let Err(message) = validate_bucket_name(&bucket.name) {
        return refused(CatalogError::InvalidBucketName(message));
    }
    let mut table = txn.open_table(BUCKETS)?;
    if table.get(bucket.name.as_str())?.is_some() {
        return refused(CatalogError::BucketExists(bucket.name.clone()));
    }
    table.insert(bucket.name.as_str(), encode(bucket)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// [`Command::DeleteBucket`](crate::catalog::Command::DeleteBucket): refused while the
/// bucket holds an object; its open uploads are aborted with it.
pub(super) fn delete_bucket(
    txn: &WriteTransaction,
    name: &str,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let mut buckets = txn.open_table(BUCKETS)?;
    if buckets.get(name)?.is_none() {
        return refused(CatalogError::NoSuchBucket(name.to_string()));
    }
    let objects = txn.open_table(OBJECTS)?;
    let head = object_key(name, "");
    let first = objects.range(head.as_slice()..)?.next().transpose()?;
    if first.is_some_and(|(k, _)| k.value().starts_with(&head)) {
        return refused(CatalogError::BucketNotEmpty(name.to_string()));
    }
    drop(objects);
    abort_uploads_of(txn, name, now_ms)?;
    buckets.remove(name)?;
    Ok(CommandResult::Done)
}

/// [`Command::SetBucketPublicRead`](crate::catalog::Command::SetBucketPublicRead).
pub(super) fn set_bucket_public_read(
    txn: &WriteTransaction,
    name: &str,
    public_read: bool,
) -> Result<CommandResult, CatalogFault> {
    let mut buckets = txn.open_table(BUCKETS)?;
    let current: Option<Bucket> = buckets.get(name)?.map(|v| decode(v.value())).transpose()?;
    let Some(mut bucket) = current else {
        return refused(CatalogError::NoSuchBucket(name.to_string()));
    };
    if bucket.public_read != public_read {
        bucket.public_read = public_read;
        buckets.insert(name, encode(&bucket)?.as_slice())?;
    }
    Ok(CommandResult::Done)
}
