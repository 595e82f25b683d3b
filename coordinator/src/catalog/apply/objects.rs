//! The object commands: [`Command::PutObject`](crate::catalog::Command::PutObject) (and its older layouts),
//! [`Command::SetObjectAcl`](crate::catalog::Command::SetObjectAcl), [`Command::DeleteObject`](crate::catalog::Command::DeleteObject); and what completing an upload
//! shares with them: the checks of a target, a condition and a body, and
//! [`replace_object`], which keeps the shards-by-node index, the garbage queue and the
//! counters in step with the object row.
//!
//! [`Command::PutObject`]: crate::catalog::Command::PutObject
//! [`Command::SetObjectAcl`]: crate::catalog::Command::SetObjectAcl
//! [`Command::DeleteObject`]: crate::catalog::Command::DeleteObject

use std::collections::HashSet;

use cairn_proto::ids::ShardId;
use redb::{ReadableTable, WriteTransaction};

use super::garbage::{collect, collect_except, unqueue};
use super::refused;
use crate::catalog::command::{CatalogError, CommandResult, WriteCondition};
use crate::catalog::model::{
    CannedAcl, ErasureProfile, ObjectBody, ObjectRecord, SegmentRecord, ShardRecord,
};
use crate::catalog::shard_index::ShardIndex;
use crate::catalog::{
    BUCKETS, COUNTERS, CatalogFault, LOGICAL_BYTES, NODES, OBJECT_COUNT, OBJECTS, decode, encode,
    object_key,
};

/// Longest object key S3 allows, in bytes.
const MAX_KEY_LEN: usize = 1024;

/// [`Command::PutObject`](crate::catalog::Command::PutObject).
pub(super) fn put_object(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    object: &ObjectRecord,
    condition: Option<&WriteCondition>,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    if let Some(err) = check_object_target(txn, bucket, key)? {
        return refused(err);
    }
    if let Some(err) = check_condition(txn, bucket, key, condition)? {
        return refused(err);
    }
    if let Some(err) = check_body(txn, object)? {
        return refused(err);
    }
    let existed = replace_object(txn, bucket, key, object, now_ms)?;
    Ok(CommandResult::Object { existed })
}

/// [`Command::SetObjectAcl`](crate::catalog::Command::SetObjectAcl).
pub(super) fn set_object_acl(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    acl: CannedAcl,
) -> Result<CommandResult, CatalogFault> {
    let mut objects = txn.open_table(OBJECTS)?;
    let k = object_key(bucket, key);
    let current: Option<ObjectRecord> = objects
        .get(k.as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    let Some(mut object) = current else {
        return refused(CatalogError::NoSuchKey(format!("{bucket}/{key}")));
    };
    if object.acl != acl {
        object.acl = acl;
        objects.insert(k.as_slice(), encode(&object)?.as_slice())?;
    }
    Ok(CommandResult::Done)
}

/// [`Command::DeleteObject`](crate::catalog::Command::DeleteObject): the removed version's
/// shards leave the index and are queued as garbage.
pub(super) fn delete_object(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
        return refused(CatalogError::NoSuchBucket(bucket.to_string()));
    }
    let mut objects = txn.open_table(OBJECTS)?;
    let removed = objects.remove(object_key(bucket, key).as_slice())?;
    let removed: Option<ObjectRecord> = removed.map(|v| decode(v.value())).transpose()?;
    drop(objects);
    let existed = removed.is_some();
    if let Some(old) = &removed {
        ShardIndex::open(txn)?.remove_object(&object_key(bucket, key), old)?;
        collect(txn, old, now_ms)?;
        add_counters(txn, -1, -(old.size as i128))?;
    }
    Ok(CommandResult::Object { existed })
}

/// Stores `object` under `bucket`/`key`, queueing a replaced version's shards for
/// collection and keeping the counters; returns whether a version existed.
pub(super) fn replace_object(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    object: &ObjectRecord,
    now_ms: u64,
) -> Result<bool, CatalogFault> {
    let mut objects = txn.open_table(OBJECTS)?;
    let k = object_key(bucket, key);
    let previous = objects.insert(k.as_slice(), encode(object)?.as_slice())?;
    let previous: Option<ObjectRecord> = previous.map(|v| decode(v.value())).transpose()?;
    drop(objects);
    let mut index = ShardIndex::open(txn)?;
    if let Some(previous) = &previous {
        index.remove_object(&k, previous)?;
    }
    index.add_object(&k, object)?;
    drop(index);
    let kept: HashSet<ShardId> = object.body.shards().map(|s| s.id).collect();
    if let Some(previous) = &previous {
        collect_except(txn, previous.body.shards(), &kept, now_ms)?;
    }
    unqueue(txn, &kept)?;
    let (count, bytes) = match &previous {
        Some(old) => (0, object.size as i128 - old.size as i128),
        None => (1, object.size as i128),
    };
    add_counters(txn, count, bytes)?;
    Ok(previous.is_some())
}

/// The bucket must exist and the key be a valid S3 key.
pub(super) fn check_object_target(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
) -> Result<Option<CatalogError>, CatalogFault> {
    if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
        return Ok(Some(CatalogError::NoSuchBucket(bucket.to_string())));
    }
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Ok(Some(CatalogError::InvalidKey(format!(
            "keys are 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        ))));
    }
    Ok(None)
}

/// Whether the key holds what a conditional write demands.
pub(super) fn check_condition(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    condition: Option<&WriteCondition>,
) -> Result<Option<CatalogError>, CatalogFault> {
    let Some(condition) = condition else {
        return Ok(None);
    };
    let current: Option<ObjectRecord> = txn
        .open_table(OBJECTS)?
        .get(object_key(bucket, key).as_slice())?
        .map(|v| decode(v.value()))
        .transpose()?;
    Ok(match (condition, current) {
        (WriteCondition::Absent, None) => None,
        (WriteCondition::Absent, Some(_)) => Some(CatalogError::PreconditionFailed(format!(
            "{bucket}/{key} exists (If-None-Match: *)"
        ))),
        (WriteCondition::ETag(_), None) => Some(CatalogError::NoSuchKey(format!("{bucket}/{key}"))),
        (WriteCondition::ETag(wanted), Some(object)) => {
            (normalise_etag(wanted) != normalise_etag(&object.etag)).then(|| {
                CatalogError::PreconditionFailed(format!(
                    "{bucket}/{key} has ETag {}, not {wanted} (If-Match)",
                    object.etag
                ))
            })
        }
    })
}

/// An object body must be consistent in itself and reference only known nodes.
pub(super) fn check_body(
    txn: &WriteTransaction,
    object: &ObjectRecord,
) -> Result<Option<CatalogError>, CatalogFault> {
    match &object.body {
        ObjectBody::Inline(bytes) if bytes.len() as u64 != object.size => {
            Ok(Some(CatalogError::Malformed(format!(
                "inline body is {} bytes, object size {}",
                bytes.len(),
                object.size
            ))))
        }
        ObjectBody::Inline(_) => Ok(None),
        ObjectBody::Segments { .. } => check_segments(txn, &object.body, object.size),
    }
}

/// Segments must add up to `size`, have `k + m` shards each on distinct known nodes, and
/// never repeat a shard id.
pub(super) fn check_segments(
    txn: &WriteTransaction,
    body: &ObjectBody,
    size: u64,
) -> Result<Option<CatalogError>, CatalogFault> {
    let ObjectBody::Segments { erasure, segments } = body else {
        return Ok(None);
    };
    let malformed = |m: String| Ok(Some(CatalogError::Malformed(m)));
    let ErasureProfile { k, m, .. } = *erasure;
    let width = usize::from(k) + usize::from(m);
    let total: u64 = segments.iter().map(|s| s.len).sum();
    if total != size {
        return malformed(format!("segments hold {total} bytes, object size {size}"));
    }
    let nodes = txn.open_table(NODES)?;
    let mut ids = HashSet::new();
    for (i, SegmentRecord { shards, len, .. }) in segments.iter().enumerate() {
        if *len == 0 {
            return malformed(format!("segment {i} is empty"));
        }
        if shards.len() != width {
            return malformed(format!(
                "segment {i} has {} shards, the {k}+{m} code needs {width}",
                shards.len()
            ));
        }
        let mut seen = HashSet::new();
        for ShardRecord { id, node, .. } in shards {
            if !seen.insert(*node) {
                return malformed(format!("segment {i} puts two shards on node {node}"));
            }
            if !ids.insert(*id) {
                return malformed(format!("shard id {id} is used twice"));
            }
            if nodes.get(*node.as_bytes())?.is_none() {
                return Ok(Some(CatalogError::UnknownNode(node.to_string())));
            }
        }
    }
    Ok(None)
}

/// An ETag without its quotes and surrounding space, as S3 compares them.
pub(super) fn normalise_etag(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// Adds `objects` and `bytes` to the object count and the logical bytes.
fn add_counters(txn: &WriteTransaction, objects: i128, bytes: i128) -> Result<(), CatalogFault> {
    let mut table = txn.open_table(COUNTERS)?;
    for (name, delta) in [(OBJECT_COUNT, objects), (LOGICAL_BYTES, bytes)] {
        let current = table.get(name)?.map(|v| v.value()).unwrap_or(0) as i128;
        let next = (current + delta).clamp(0, u64::MAX as i128) as u64;
        table.insert(name, next)?;
    }
    Ok(())
}
