//! The garbage queue's side of applying commands: [`Command::ForgetGarbage`], and what
//! every other command uses to queue the shards nothing references any more, or take back
//! out those a record names again (nothing queued is referenced).
//!
//! [`Command::ForgetGarbage`]: crate::catalog::Command::ForgetGarbage

use std::collections::HashSet;

use cairn_proto::ids::ShardId;
use redb::WriteTransaction;

use crate::catalog::command::CommandResult;
use crate::catalog::model::{GarbageShard, ObjectBody, ObjectRecord, SegmentRecord, ShardRecord};
use crate::catalog::{CatalogFault, GarbageQueue};

/// [`Command::ForgetGarbage`](crate::catalog::Command::ForgetGarbage): shards deleted from
/// their nodes leave the queue.
pub(super) fn forget_garbage(
    txn: &WriteTransaction,
    shards: &[ShardId],
) -> Result<CommandResult, CatalogFault> {
    let mut garbage = GarbageQueue::open(txn)?;
    for shard in shards {
        garbage.remove(*shard)?;
    }
    Ok(CommandResult::Done)
}

/// Queues every shard of an object that is no longer visible for deletion.
pub(super) fn collect(
    txn: &WriteTransaction,
    object: &ObjectRecord,
    now_ms: u64,
) -> Result<(), CatalogFault> {
    match &object.body {
        ObjectBody::Inline(_) => Ok(()),
        ObjectBody::Segments { segments, .. } => collect_shards(txn, segments.iter(), now_ms),
    }
}

/// Queues `shards` for deletion, except those in `kept`: a version that replaces another
/// may share shards with it (a retried commit of the very same record, a part uploaded
/// again from the same shards), and a shard a live record names must never be collected.
pub(super) fn collect_except<'a>(
    txn: &WriteTransaction,
    shards: impl Iterator<Item = &'a ShardRecord>,
    kept: &HashSet<ShardId>,
    now_ms: u64,
) -> Result<(), CatalogFault> {
    let mut garbage = GarbageQueue::open(txn)?;
    for shard in shards.filter(|shard| !kept.contains(&shard.id)) {
        let entry = GarbageShard {
            node: shard.node,
            since_ms: now_ms,
        };
        garbage.queue(shard.id, &entry)?;
    }
    Ok(())
}

/// Takes shards a record now names out of the garbage queue, keeping the invariant that
/// nothing queued is referenced: a record committed again after it was replaced (a late
/// retry) must not lose its shards to the collection its replacement queued.
pub(super) fn unqueue(
    txn: &WriteTransaction,
    shards: &HashSet<ShardId>,
) -> Result<(), CatalogFault> {
    if shards.is_empty() {
        return Ok(());
    }
    let mut garbage = GarbageQueue::open(txn)?;
    for shard in shards {
        garbage.remove(*shard)?;
    }
    Ok(())
}

/// Queues the shards of segments nothing references any more for deletion.
pub(super) fn collect_shards<'a>(
    txn: &WriteTransaction,
    segments: impl Iterator<Item = &'a SegmentRecord>,
    now_ms: u64,
) -> Result<(), CatalogFault> {
    let shards = segments.flat_map(|segment| segment.shards.iter());
    collect_except(txn, shards, &HashSet::new(), now_ms)
}
