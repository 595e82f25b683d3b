//! [`apply`]: the one place the catalog changes.

use cairn_proto::identity::NodeId;
use redb::{ReadableTable, WriteTransaction};

use super::command::{CatalogError, Command, CommandResult};
use super::model::{
    GarbageShard, Invite, NodeRecord, NodeState, ObjectRecord, validate_bucket_name,
};
use super::{
    ACCESS_KEYS, BUCKETS, COUNTERS, CatalogFault, GARBAGE, INVITES, LOGICAL_BYTES, NODES,
    OBJECT_COUNT, OBJECTS, decode, encode, object_key,
};

/// Longest object key S3 allows, in bytes.
const MAX_KEY_LEN: usize = 1024;

/// Applies one command inside `txn`. A refusal changes nothing and is returned as
/// [`CommandResult::Refused`]; only storage failures are errors.
pub fn apply(txn: &WriteTransaction, command: &Command) -> Result<CommandResult, CatalogFault> {
    let refused = |err| Ok(CommandResult::Refused(err));
    match command {
        Command::CreateBucket { bucket } => {
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
        Command::DeleteBucket { name } => {
            let mut buckets = txn.open_table(BUCKETS)?;
            if buckets.get(name.as_str())?.is_none() {
                return refused(CatalogError::NoSuchBucket(name.clone()));
            }
            let objects = txn.open_table(OBJECTS)?;
            let head = object_key(name, "");
            let first = objects.range(head.as_slice()..)?.next().transpose()?;
            if first.is_some_and(|(k, _)| k.value().starts_with(&head)) {
                return refused(CatalogError::BucketNotEmpty(name.clone()));
            }
            buckets.remove(name.as_str())?;
            Ok(CommandResult::Done)
        }
        Command::CreateAccessKey { key } => {
            let mut table = txn.open_table(ACCESS_KEYS)?;
            if table.get(key.id.as_str())?.is_some() {
                return refused(CatalogError::AccessKeyExists(key.id.clone()));
            }
            table.insert(key.id.as_str(), encode(key)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::RevokeAccessKey { id } => {
            let mut table = txn.open_table(ACCESS_KEYS)?;
            let Some(mut key) = table
                .get(id.as_str())?
                .map(|v| decode::<super::model::AccessKey>(v.value()))
                .transpose()?
            else {
                return refused(CatalogError::NoSuchAccessKey(id.clone()));
            };
            key.revoked = true;
            table.insert(id.as_str(), encode(&key)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::RegisterNode { node } => {
            let mut table = txn.open_table(NODES)?;
            let record = match read_node(&table, &node.id)? {
                // A known node re-registering keeps its history and state.
                Some(known) => rejoined(known, node),
                None => node.clone(),
            };
            table.insert(*node.id.as_bytes(), encode(&record)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::CreateInvite {
            secret_hash,
            expires_ms,
        } => {
            let invite = Invite {
                expires_ms: *expires_ms,
                used_by: None,
            };
            txn.open_table(INVITES)?
                .insert(*secret_hash, encode(&invite)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::JoinNode {
            node,
            secret_hash,
            now_ms,
        } => {
            let mut invites = txn.open_table(INVITES)?;
            let invite: Option<Invite> = invites
                .get(*secret_hash)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let Some(mut invite) = invite.filter(|i| i.used_by.is_none() && i.expires_ms > *now_ms)
            else {
                return refused(CatalogError::InvalidInvite);
            };
            invite.used_by = Some(node.id);
            invites.insert(*secret_hash, encode(&invite)?.as_slice())?;
            let mut nodes = txn.open_table(NODES)?;
            // A node that re-joins (new disk, new address) keeps its history and state.
            let record = match read_node(&nodes, &node.id)? {
                Some(known) => rejoined(known, node),
                None => NodeRecord {
                    state: NodeState::Vetting,
                    joined_ms: *now_ms,
                    state_since_ms: *now_ms,
                    ..node.clone()
                },
            };
            nodes.insert(*node.id.as_bytes(), encode(&record)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::SetNodeState {
            node,
            state,
            now_ms,
        } => {
            let mut table = txn.open_table(NODES)?;
            let Some(mut record) = read_node(&table, node)? else {
                return refused(CatalogError::NoSuchNode(node.to_string()));
            };
            if record.state != *state {
                record.state = *state;
                record.state_since_ms = *now_ms;
                table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
            }
            Ok(CommandResult::Done)
        }
        Command::PutObject {
            bucket,
            key,
            object,
            now_ms,
        } => {
            if let Some(err) = check_object_target(txn, bucket, key)? {
                return refused(err);
            }
            let nodes = txn.open_table(NODES)?;
            for shard in object.body.shards() {
                if nodes.get(*shard.node.as_bytes())?.is_none() {
                    return refused(CatalogError::UnknownNode(shard.node.to_string()));
                }
            }
            let mut objects = txn.open_table(OBJECTS)?;
            let k = object_key(bucket, key);
            let previous = objects.insert(k.as_slice(), encode(object)?.as_slice())?;
            let previous: Option<ObjectRecord> = previous.map(|v| decode(v.value())).transpose()?;
            drop(objects);
            let existed = previous.is_some();
            if let Some(previous) = &previous {
                collect(txn, previous, *now_ms)?;
            }
            let (count, bytes) = match &previous {
                Some(old) => (0, object.size as i128 - old.size as i128),
                None => (1, object.size as i128),
            };
            add_counters(txn, count, bytes)?;
            Ok(CommandResult::Object { existed })
        }
        Command::DeleteObject {
            bucket,
            key,
            now_ms,
        } => {
            if txn.open_table(BUCKETS)?.get(bucket.as_str())?.is_none() {
                return refused(CatalogError::NoSuchBucket(bucket.clone()));
            }
            let mut objects = txn.open_table(OBJECTS)?;
            let removed = objects.remove(object_key(bucket, key).as_slice())?;
            let removed: Option<ObjectRecord> = removed.map(|v| decode(v.value())).transpose()?;
            drop(objects);
            let existed = removed.is_some();
            if let Some(old) = &removed {
                collect(txn, old, *now_ms)?;
                add_counters(txn, -1, -(old.size as i128))?;
            }
            Ok(CommandResult::Object { existed })
        }
    }
}

/// A known node registering again (new address, disk or domain) keeps its history and
/// lifecycle state; only what it declares about itself changes.
fn rejoined(known: NodeRecord, node: &NodeRecord) -> NodeRecord {
    NodeRecord {
        addr: node.addr.clone(),
        org: node.org.clone(),
        site: node.site.clone(),
        capacity: node.capacity,
        ..known
    }
}

fn read_node(
    table: &redb::Table<[u8; 32], &[u8]>,
    id: &NodeId,
) -> Result<Option<NodeRecord>, CatalogFault> {
    table
        .get(*id.as_bytes())?
        .map(|v| decode(v.value()))
        .transpose()
}

/// The bucket must exist and the key be a valid S3 key.
fn check_object_target(
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

/// Queues every shard of an object that is no longer visible for deletion.
fn collect(txn: &WriteTransaction, object: &ObjectRecord, now_ms: u64) -> Result<(), CatalogFault> {
    let mut garbage = txn.open_table(GARBAGE)?;
    for shard in object.body.shards() {
        let entry = GarbageShard {
            node: shard.node,
            since_ms: now_ms,
        };
        garbage.insert(shard.id.0, encode(&entry)?.as_slice())?;
    }
    Ok(())
}

fn add_counters(txn: &WriteTransaction, objects: i128, bytes: i128) -> Result<(), CatalogFault> {
    let mut table = txn.open_table(COUNTERS)?;
    for (name, delta) in [(OBJECT_COUNT, objects), (LOGICAL_BYTES, bytes)] {
        let current = table.get(name)?.map(|v| v.value()).unwrap_or(0) as i128;
        let next = (current + delta).clamp(0, u64::MAX as i128) as u64;
        table.insert(name, next)?;
    }
    Ok(())
}
