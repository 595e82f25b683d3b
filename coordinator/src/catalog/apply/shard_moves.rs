//! The commands that move shards between nodes (repairs, drains, rebalancing, respreads):
//! [`Command::ReplaceShards`](crate::catalog::Command::ReplaceShards) for an object's segment and [`Command::ReplacePartShards`](crate::catalog::Command::ReplacePartShards)
//! for a part's. A replacement applies only to the version it was planned on, keeps the
//! shards-by-node index in step, queues the replaced shards as garbage and counts the move
//! by reason.
//!
//! [`Command::ReplaceShards`](crate::catalog::Command::ReplaceShards): crate::catalog::Command::ReplaceShards
//! [`Command::ReplacePartShards`](crate::catalog::Command::ReplacePartShards): crate::catalog::Command::ReplacePartShards

use std::collections::HashSet;

use cairn_proto::ids::ShardId;
use redb::{ReadableTable, WriteTransaction};

use super::garbage::collect_except;
use super::nodes::read_node;
use super::uploads::read_upload;
use crate::catalog::command::{CatalogError, CommandResult, MoveReason, ShardReplacement};
use crate::catalog::model::{
    ErasureProfile, ObjectBody, ObjectRecord, PartRecord, SegmentRecord, ShardRecord,
};
use crate::catalog::shard_index::{Holder, ShardIndex};
use crate::catalog::{
    COUNTERS, CatalogFault, NODES, OBJECTS, PARTS, decode, encode, moved_bytes_counter,
    moved_shards_counter, object_key, part_key,
};

/// Applies [`Command::ReplaceShards`](crate::catalog::Command::ReplaceShards): the object `bucket`/`key`, still at version `etag`,
/// gets the new shards of `segment`.
#[allow(clippy::too_many_arguments)]
pub(super) fn replace_shards(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    etag: &str,
    segment: u32,
    replacements: &[ShardReplacement],
    reason: MoveReason,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let stale = |message: String| Ok(CommandResult::Refused(CatalogError::Stale(message)));
    let mut objects = txn.open_table(OBJECTS)?;
    let object_key = object_key(bucket, key);
    let Some(mut object) = objects
        .get(object_key.as_slice())?
        .map(|v| decode::<ObjectRecord>(v.value()))
        .transpose()?
    else {
        return stale(format!("{bucket}/{key} no longer exists"));
    };
    if object.etag != etag {
        return stale(format!("{bucket}/{key} is now another version"));
    }
    let ObjectBody::Segments { erasure, segments } = &mut object.body else {
        return stale(format!("{bucket}/{key} has no segments"));
    };
    let erasure = *erasure;
    let before = segments.get(segment as usize).cloned();
    let replaced = match replace_in_segment(txn, erasure, segments, segment, replacements)? {
        Ok(Some(replaced)) => replaced,
        Ok(None) => return Ok(CommandResult::Done),
        Err(err) => return Ok(CommandResult::Refused(err)),
    };
    let after = segments.get(segment as usize).cloned();
    objects.insert(object_key.as_slice(), encode(&object)?.as_slice())?;
    drop(objects);
    reindex_segment(
        txn,
        Holder::Object,
        &object_key,
        &erasure,
        segment,
        before,
        after,
    )?;
    finish_replacement(txn, replaced, reason, now_ms)
}

/// Applies [`Command::ReplacePartShards`](crate::catalog::Command::ReplacePartShards): part `number` of the upload in progress
/// `upload`, still the part with `etag`, gets the new shards of `segment`.
#[allow(clippy::too_many_arguments)]
pub(super) fn replace_part_shards(
    txn: &WriteTransaction,
    upload: &str,
    number: u32,
    etag: &str,
    segment: u32,
    replacements: &[ShardReplacement],
    reason: MoveReason,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let stale = |message: String| Ok(CommandResult::Refused(CatalogError::Stale(message)));
    let Some(record) = read_upload(txn, upload)? else {
        return stale(format!("upload {upload} is no longer in progress"));
    };
    let mut parts = txn.open_table(PARTS)?;
    let key = part_key(upload, number);
    let Some(mut part) = parts
        .get(key.as_slice())?
        .map(|v| decode::<PartRecord>(v.value()))
        .transpose()?
    else {
        return stale(format!("upload {upload} no longer has part {number}"));
    };
    if part.etag != etag {
        return stale(format!(
            "part {number} of upload {upload} was uploaded again"
        ));
    }
    let before = part.segments.get(segment as usize).cloned();
    let replaced = match replace_in_segment(
        txn,
        record.erasure,
        &mut part.segments,
        segment,
        replacements,
    )? {
        Ok(Some(replaced)) => replaced,
        Ok(None) => return Ok(CommandResult::Done),
        Err(err) => return Ok(CommandResult::Refused(err)),
    };
    let after = part.segments.get(segment as usize).cloned();
    parts.insert(key.as_slice(), encode(&part)?.as_slice())?;
    drop(parts);
    reindex_segment(
        txn,
        Holder::Part,
        &key,
        &record.erasure,
        segment,
        before,
        after,
    )?;
    finish_replacement(txn, replaced, reason, now_ms)
}

/// Moves one segment's index entries from what it held `before` a replacement to what it
/// holds `after`.
fn reindex_segment(
    txn: &WriteTransaction,
    holder: Holder,
    key: &[u8],
    erasure: &ErasureProfile,
    segment: u32,
    before: Option<SegmentRecord>,
    after: Option<SegmentRecord>,
) -> Result<(), CatalogFault> {
    let mut index = ShardIndex::open(txn)?;
    if let Some(before) = &before {
        index.remove_segment(holder, key, erasure, segment, before)?;
    }
    if let Some(after) = &after {
        index.add_segment(holder, key, erasure, segment, after)?;
    }
    Ok(())
}

/// What a shard replacement changed in a segment: the shards it replaced, the shards the
/// segment holds now, and the length of each.
struct Replaced {
    old: Vec<ShardRecord>,
    kept: HashSet<ShardId>,
    shard_len: u64,
}

/// Puts `replacements` into segment `segment` of `segments`: `Ok(None)` if every one is in
/// place already (a retried commit), a refusal if the segment changed since the job was
/// planned or the result would be malformed.
fn replace_in_segment(
    txn: &WriteTransaction,
    erasure: ErasureProfile,
    segments: &mut [SegmentRecord],
    segment: u32,
    replacements: &[ShardReplacement],
) -> Result<Result<Option<Replaced>, CatalogError>, CatalogFault> {
    let Some(record) = segments.get_mut(segment as usize) else {
        return Ok(Err(CatalogError::Malformed(format!(
            "no segment {segment}"
        ))));
    };
    let nodes = txn.open_table(NODES)?;
    let mut old = Vec::with_capacity(replacements.len());
    for replacement in replacements {
        let Some(current) = record.shards.get_mut(replacement.index as usize) else {
            return Ok(Err(CatalogError::Malformed(format!(
                "segment {segment} has no shard {}",
                replacement.index
            ))));
        };
        if current.id == replacement.new.id && current.node == replacement.new.node {
            // Applied already (a retried commit): nothing to replace or collect.
            continue;
        }
        if current.id != replacement.old {
            return Ok(Err(CatalogError::Stale(format!(
                "shard {} of segment {segment} was replaced already",
                replacement.index
            ))));
        }
        if current.root != replacement.new.root {
            return Ok(Err(CatalogError::Malformed(format!(
                "the copy of shard {} has another root",
                replacement.index
            ))));
        }
        if read_node(&nodes, &replacement.new.node)?.is_none() {
            return Ok(Err(CatalogError::UnknownNode(
                replacement.new.node.to_string(),
            )));
        }
        old.push(std::mem::replace(current, replacement.new.clone()));
    }
    if old.is_empty() {
        return Ok(Ok(None));
    }
    let distinct: HashSet<_> = record.shards.iter().map(|s| s.node).collect();
    if distinct.len() != record.shards.len() {
        return Ok(Err(CatalogError::Malformed(format!(
            "segment {segment} would hold two shards on one node"
        ))));
    }
    let shard_len = cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m))
        .map(|codec| codec.shard_len(record.len))
        .unwrap_or(0);
    Ok(Ok(Some(Replaced {
        old,
        kept: record.shards.iter().map(|s| s.id).collect(),
        shard_len,
    })))
}

/// Queues the replaced shards for collection and counts the move.
fn finish_replacement(
    txn: &WriteTransaction,
    replaced: Replaced,
    reason: MoveReason,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let moved = replaced.old.len() as u64;
    collect_except(txn, replaced.old.iter(), &replaced.kept, now_ms)?;
    add_named(txn, &moved_shards_counter(reason), moved)?;
    add_named(
        txn,
        &moved_bytes_counter(reason),
        moved * replaced.shard_len,
    )?;
    Ok(CommandResult::Done)
}

/// Adds `delta` to the counter `name`.
fn add_named(txn: &WriteTransaction, name: &str, delta: u64) -> Result<(), CatalogFault> {
    let mut table = txn.open_table(COUNTERS)?;
    let current = table.get(name)?.map(|v| v.value()).unwrap_or(0);
    table.insert(name, current.saturating_add(delta))?;
    Ok(())
}
