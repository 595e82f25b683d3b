//! [`apply`]: the one place the catalog changes.

use std::collections::HashSet;

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use md5::Digest;
use redb::{ReadableTable, WriteTransaction};

use super::command::{
    CatalogError, Command, CommandResult, MoveReason, REQUEST_MEMORY_MS, RequestId,
    ShardReplacement, WriteCondition,
};
use super::model::{
    Bucket, ErasureProfile, GarbageShard, Invite, MAX_PART_NUMBER, MIN_PART_SIZE, NodeRecord,
    NodeState, ObjectBody, ObjectChecksum, ObjectRecord, PartRecord, PartSummary, ReputationPolicy,
    SegmentRecord, ShardRecord, UploadRecord, validate_bucket_name,
};
use super::shard_index::{Holder, ShardIndex};
use super::{
    ACCESS_KEYS, BUCKETS, COUNTERS, CatalogFault, GATEWAYS, GarbageQueue, INVITES, LOGICAL_BYTES,
    NODES, OBJECT_COUNT, OBJECTS, PARTS, REQUESTS, REQUESTS_BY_TIME, UPLOADS, UPLOADS_BY_TIME,
    decode, encode, moved_bytes_counter, moved_shards_counter, object_key, part_key,
    request_time_key, upload_time_key,
};

/// Most remembered requests forgotten per [`Command::Once`]: more than one, so the memory
/// shrinks back after a burst, and few, so no single apply does much work.
const FORGET_PER_REQUEST: usize = 4;

/// Longest object key S3 allows, in bytes.
const MAX_KEY_LEN: usize = 1024;

/// Applies one command inside `txn`. A refusal changes nothing and is returned as
/// [`CommandResult::Refused`]; only storage failures are errors.
pub fn apply(txn: &WriteTransaction, command: &Command) -> Result<CommandResult, CatalogFault> {
    let refused = |err| Ok(CommandResult::Refused(err));
    match command {
        Command::Once {
            request,
            command,
            now_ms,
        } => once(txn, request, command, *now_ms),
        Command::Refuse { reason } => refused(reason.clone()),
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
        Command::DeleteBucket { name, now_ms } => {
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
            drop(objects);
            abort_uploads_of(txn, name, *now_ms)?;
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
                // A known node re-registering keeps its history, state and organisation.
                Some(known) => rejoined(known, node),
                None => node.clone(),
            };
            table.insert(*node.id.as_bytes(), encode(&record)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::CreateInvite {
            secret_hash,
            expires_ms,
            org,
        } => {
            let invite = Invite {
                expires_ms: *expires_ms,
                used_by: None,
                org: org.clone(),
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
            // Every invitation names the organisation the operator vouches for; one that
            // does not (made before that was required) admits no one.
            let Some(invited) = invite.org.clone() else {
                return refused(CatalogError::InvalidInvite);
            };
            if invited != node.org {
                return refused(CatalogError::WrongOrg {
                    invited,
                    claimed: node.org.clone(),
                });
            }
            invite.used_by = Some(node.id);
            invites.insert(*secret_hash, encode(&invite)?.as_slice())?;
            let mut nodes = txn.open_table(NODES)?;
            // A node that re-joins (new disk, new address) keeps its history, state and
            // organisation.
            let record = match read_node(&nodes, &node.id)? {
                Some(known) if known.org != node.org => {
                    return refused(CatalogError::WrongOrg {
                        invited: known.org,
                        claimed: node.org.clone(),
                    });
                }
                Some(known) => rejoined(known, node),
                // A new node starts with nothing earned, whatever the record says.
                None => NodeRecord {
                    state: NodeState::Vetting,
                    joined_ms: *now_ms,
                    state_since_ms: *now_ms,
                    vetted: false,
                    reputation: Default::default(),
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
        } => set_node_state(txn, node, None, *state, *now_ms),
        Command::MoveNode { node, addr } => {
            let mut nodes = txn.open_table(NODES)?;
            let Some(mut record) = read_node(&nodes, node)? else {
                return refused(CatalogError::NoSuchNode(node.to_string()));
            };
            if record.addr != *addr {
                record.addr = addr.clone();
                nodes.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
            }
            Ok(CommandResult::Done)
        }
        Command::ChangeNodeState {
            node,
            from,
            to,
            now_ms,
        } => set_node_state(txn, node, Some(*from), *to, *now_ms),
        Command::ForgetGarbage { shards } => {
            let mut garbage = GarbageQueue::open(txn)?;
            for shard in shards {
                garbage.remove(*shard)?;
            }
            Ok(CommandResult::Done)
        }
        Command::PutObject {
            bucket,
            key,
            object,
            condition,
            now_ms,
        } => put_object(txn, bucket, key, object, condition.as_ref(), *now_ms),
        Command::PutObjectV1 {
            bucket,
            key,
            object,
            condition,
            now_ms,
        } => {
            let object = ObjectRecord::from(object.clone());
            put_object(txn, bucket, key, &object, condition.as_ref(), *now_ms)
        }
        Command::PutObjectV2 {
            bucket,
            key,
            object,
            condition,
            now_ms,
        } => {
            let object = ObjectRecord::from(object.clone());
            put_object(txn, bucket, key, &object, condition.as_ref(), *now_ms)
        }
        Command::SetObjectAcl { bucket, key, acl } => {
            let mut objects = txn.open_table(OBJECTS)?;
            let k = object_key(bucket, key);
            let current: Option<ObjectRecord> = objects
                .get(k.as_slice())?
                .map(|v| decode(v.value()))
                .transpose()?;
            let Some(mut object) = current else {
                return refused(CatalogError::NoSuchKey(format!("{bucket}/{key}")));
            };
            if object.acl != *acl {
                object.acl = *acl;
                objects.insert(k.as_slice(), encode(&object)?.as_slice())?;
            }
            Ok(CommandResult::Done)
        }
        Command::SetBucketPublicRead { name, public_read } => {
            let mut buckets = txn.open_table(BUCKETS)?;
            let current: Option<Bucket> = buckets
                .get(name.as_str())?
                .map(|v| decode(v.value()))
                .transpose()?;
            let Some(mut bucket) = current else {
                return refused(CatalogError::NoSuchBucket(name.clone()));
            };
            if bucket.public_read != *public_read {
                bucket.public_read = *public_read;
                buckets.insert(name.as_str(), encode(&bucket)?.as_slice())?;
            }
            Ok(CommandResult::Done)
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
                ShardIndex::open(txn)?.remove_object(&object_key(bucket, key), old)?;
                collect(txn, old, *now_ms)?;
                add_counters(txn, -1, -(old.size as i128))?;
            }
            Ok(CommandResult::Object { existed })
        }
        Command::RegisterGateway { gateway } => {
            txn.open_table(GATEWAYS)?
                .insert(*gateway.key.as_bytes(), encode(gateway)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::RemoveGateway { key } => {
            if txn.open_table(GATEWAYS)?.remove(*key.as_bytes())?.is_none() {
                return refused(CatalogError::NoSuchGateway(key.to_string()));
            }
            Ok(CommandResult::Done)
        }
        Command::CreateUpload { id, upload } => create_upload(txn, id, upload),
        Command::CreateUploadV1 { id, upload } => {
            create_upload(txn, id, &UploadRecord::from(upload.clone()))
        }
        Command::CreateUploadV2 { id, upload } => {
            create_upload(txn, id, &UploadRecord::from(upload.clone()))
        }
        Command::PutPartV1 {
            upload,
            number,
            part,
            now_ms,
        } => put_part(
            txn,
            upload,
            *number,
            &PartRecord::from(part.clone()),
            *now_ms,
        ),
        Command::PutPart {
            upload,
            number,
            part,
            now_ms,
        } => put_part(txn, upload, *number, part, *now_ms),
        Command::CompleteUploadV1 {
            upload,
            parts,
            verified,
            condition,
            now_ms,
        } => complete_upload(
            txn,
            upload,
            parts,
            verified,
            None,
            condition.as_ref(),
            *now_ms,
        ),
        Command::CompleteUpload {
            upload,
            parts,
            verified,
            checksum,
            condition,
            now_ms,
        } => complete_upload(
            txn,
            upload,
            parts,
            verified,
            checksum.as_ref(),
            condition.as_ref(),
            *now_ms,
        ),
        Command::ReportBadRead { node } => {
            let mut table = txn.open_table(NODES)?;
            let Some(mut record) = read_node(&table, node)? else {
                return refused(CatalogError::NoSuchNode(node.to_string()));
            };
            // Counted, not judged: one gateway's word is a reason to audit the shard, and
            // the audit judges the node.
            record.reputation.bad_reads += 1;
            table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
            Ok(CommandResult::Done)
        }
        Command::RecordAudits {
            results,
            policy,
            now_ms,
        } => {
            let mut table = txn.open_table(NODES)?;
            for (node, passed) in results {
                // A node removed since the round began is simply not judged.
                let Some(mut record) = read_node(&table, node)? else {
                    continue;
                };
                if *passed {
                    record.reputation.audits_passed += 1;
                } else {
                    record.reputation.audits_failed += 1;
                }
                judge(&mut record, *passed, policy, *now_ms);
                table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
            }
            Ok(CommandResult::Done)
        }
        Command::ReplaceShards {
            bucket,
            key,
            etag,
            segment,
            replacements,
            reason,
            now_ms,
        } => replace_shards(
            txn,
            bucket,
            key,
            etag,
            *segment,
            replacements,
            *reason,
            *now_ms,
        ),
        Command::ReplacePartShards {
            upload,
            number,
            etag,
            segment,
            replacements,
            reason,
            now_ms,
        } => replace_part_shards(
            txn,
            upload,
            *number,
            etag,
            *segment,
            replacements,
            *reason,
            *now_ms,
        ),
        Command::AbortUpload { upload, now_ms } => {
            let Some(record) = read_upload(txn, upload)? else {
                return refused(CatalogError::NoSuchUpload(upload.to_string()));
            };
            remove_upload(txn, upload, &record)?;
            let stored = take_parts(txn, upload, &record.erasure)?;
            collect_shards(
                txn,
                stored.iter().flat_map(|(_, p)| p.segments.iter()),
                *now_ms,
            )?;
            Ok(CommandResult::Done)
        }
    }
}

/// Applies [`Command::Once`]: the remembered result if `request` was applied before,
/// otherwise `command`'s, remembered; then forgets a few requests older than
/// [`REQUEST_MEMORY_MS`].
fn once(
    txn: &WriteTransaction,
    request: &RequestId,
    command: &Command,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    if let Some(seen) = txn.open_table(REQUESTS)?.get(request.0)? {
        let (_, result): (u64, CommandResult) = decode(seen.value())?;
        return Ok(result);
    }
    let result = match command {
        Command::Once { .. } => CommandResult::Refused(CatalogError::Malformed(
            "a request cannot wrap another request".into(),
        )),
        command => apply(txn, command)?,
    };
    let mut requests = txn.open_table(REQUESTS)?;
    let mut by_time = txn.open_table(REQUESTS_BY_TIME)?;
    requests.insert(request.0, encode(&(now_ms, result.clone()))?.as_slice())?;
    by_time.insert(request_time_key(now_ms, &request.0), ())?;
    let horizon = request_time_key(now_ms.saturating_sub(REQUEST_MEMORY_MS), &[0; 16]);
    let expired: Vec<[u8; 24]> = by_time
        .range(..horizon)?
        .take(FORGET_PER_REQUEST)
        .map(|item| item.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for key in expired {
        by_time.remove(key)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&key[8..]);
        requests.remove(id)?;
    }
    Ok(result)
}

/// [`Command::PutObject`].
fn put_object(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    object: &ObjectRecord,
    condition: Option<&WriteCondition>,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let refused = |err| Ok(CommandResult::Refused(err));
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

/// [`Command::PutPart`].
fn put_part(
    txn: &WriteTransaction,
    upload: &str,
    number: u32,
    part: &PartRecord,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let refused = |err| Ok(CommandResult::Refused(err));
    let Some(record) = read_upload(txn, upload)? else {
        return refused(CatalogError::NoSuchUpload(upload.to_string()));
    };
    if !(1..=MAX_PART_NUMBER).contains(&number) {
        return refused(CatalogError::InvalidPart(format!(
            "part numbers are 1 to {MAX_PART_NUMBER}, got {number}"
        )));
    }
    let body = ObjectBody::Segments {
        erasure: record.erasure,
        segments: part.segments.clone(),
    };
    if let Some(err) = check_segments(txn, &body, part.size)? {
        return refused(err);
    }
    let key = part_key(upload, number);
    let previous = txn
        .open_table(PARTS)?
        .insert(key.as_slice(), encode(part)?.as_slice())?
        .map(|v| decode::<PartRecord>(v.value()))
        .transpose()?;
    let mut index = ShardIndex::open(txn)?;
    if let Some(previous) = &previous {
        index.remove(Holder::Part, &key, &record.erasure, &previous.segments)?;
    }
    index.add(Holder::Part, &key, &record.erasure, &part.segments)?;
    drop(index);
    let kept: HashSet<ShardId> = part
        .segments
        .iter()
        .flat_map(|segment| segment.shards.iter().map(|s| s.id))
        .collect();
    if let Some(previous) = previous {
        let shards = previous.segments.iter().flat_map(|s| s.shards.iter());
        collect_except(txn, shards, &kept, now_ms)?;
    }
    unqueue(txn, &kept)?;
    Ok(CommandResult::Done)
}

/// [`Command::CompleteUpload`].
fn complete_upload(
    txn: &WriteTransaction,
    upload: &str,
    parts: &[(u32, String)],
    verified: &[(u32, super::model::ObjectVersion)],
    checksum: Option<&ObjectChecksum>,
    condition: Option<&WriteCondition>,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let refused = |err| Ok(CommandResult::Refused(err));
    let Some(record) = read_upload(txn, upload)? else {
        return refused(CatalogError::NoSuchUpload(upload.to_string()));
    };
    // Checked before the parts are taken: a refusal must change nothing.
    if let Some(err) = check_object_target(txn, &record.bucket, &record.key)? {
        return refused(err);
    }
    let target = (&record.bucket, &record.key);
    if let Some(err) = check_condition(txn, target.0, target.1, condition)? {
        return refused(err);
    }
    let stored = take_parts(txn, upload, &record.erasure)?;
    let assembled = match assemble(&record, &stored, parts, checksum, now_ms)
        .and_then(|object| as_checked(&record, &stored, verified).map(|()| object))
    {
        Ok(object) => readable_parts(txn, &record, &stored, parts)?.map(|()| object),
        Err(err) => Err(err),
    };
    let object = match assembled {
        Ok(object) => object,
        Err(err) => {
            // Nothing may change on a refusal: put the parts back.
            let mut table = txn.open_table(PARTS)?;
            let mut index = ShardIndex::open(txn)?;
            for (number, part) in &stored {
                let key = part_key(upload, *number);
                table.insert(key.as_slice(), encode(part)?.as_slice())?;
                index.add(Holder::Part, &key, &record.erasure, &part.segments)?;
            }
            return refused(err);
        }
    };
    let listed: std::collections::BTreeSet<u32> = parts.iter().map(|p| p.0).collect();
    let unused = stored
        .iter()
        .filter(|(number, _)| !listed.contains(number))
        .flat_map(|(_, part)| part.segments.iter());
    collect_shards(txn, unused, now_ms)?;
    remove_upload(txn, upload, &record)?;
    replace_object(txn, &record.bucket, &record.key, &object, now_ms)?;
    Ok(CommandResult::Completed {
        etag: object.etag,
        size: object.size,
    })
}

/// [`Command::CreateUpload`].
fn create_upload(
    txn: &WriteTransaction,
    id: &str,
    upload: &UploadRecord,
) -> Result<CommandResult, CatalogFault> {
    if let Some(err) = check_object_target(txn, &upload.bucket, &upload.key)? {
        return Ok(CommandResult::Refused(err));
    }
    let mut uploads = txn.open_table(UPLOADS)?;
    if uploads.get(id)?.is_some() {
        return Ok(CommandResult::Refused(CatalogError::UploadExists(
            id.to_string(),
        )));
    }
    uploads.insert(id, encode(upload)?.as_slice())?;
    txn.open_table(UPLOADS_BY_TIME)?
        .insert(upload_time_key(upload.initiated_ms, id).as_slice(), ())?;
    Ok(CommandResult::Done)
}

/// Stores `object` under `bucket`/`key`, queueing a replaced version's shards for
/// collection and keeping the counters; returns whether a version existed.
fn replace_object(
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

/// Folds one judgement into a node's score, then moves it if the score says so: below the
/// threshold a node holding or taking data is disqualified (its shards count as lost from
/// then on); a vetting node with enough passed audits becomes active. Nodes already lost,
/// gone or disqualified keep their state.
fn judge(record: &mut NodeRecord, passed: bool, policy: &ReputationPolicy, now_ms: u64) {
    record.reputation.judge(passed, policy.lambda_ppm);
    let next =
        if record.reputation.score_ppm < policy.disqualify_below_ppm && record.state.holds_data() {
            Some(NodeState::Disqualified)
        } else if record.state == NodeState::Vetting
            && record.reputation.audits_passed >= policy.vetting_audits
        {
            Some(NodeState::Active)
        } else {
            None
        };
    if let Some(state) = next {
        record.state = state;
        record.state_since_ms = now_ms;
        record.vetted = state == NodeState::Active;
    }
}

/// Moves `node` to `state`, if it is in `from` (when given).
fn set_node_state(
    txn: &WriteTransaction,
    node: &NodeId,
    from: Option<NodeState>,
    state: NodeState,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(NODES)?;
    let Some(mut record) = read_node(&table, node)? else {
        return Ok(CommandResult::Refused(CatalogError::NoSuchNode(
            node.to_string(),
        )));
    };
    if let Some(from) = from
        && record.state != from
    {
        return Ok(CommandResult::Refused(CatalogError::Stale(format!(
            "node {node} is {}, not {}",
            record.state.as_str(),
            from.as_str()
        ))));
    }
    if record.state != state {
        record.state = state;
        record.state_since_ms = now_ms;
        // Remembered so a suspect node that comes back regains the trust it had earned;
        // only failed audits take it away.
        match state {
            NodeState::Active => record.vetted = true,
            NodeState::Disqualified => record.vetted = false,
            _ => {}
        }
        table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
    }
    Ok(CommandResult::Done)
}

/// Applies [`Command::ReplaceShards`]: the object `bucket`/`key`, still at version `etag`,
/// gets the new shards of `segment`.
#[allow(clippy::too_many_arguments)]
fn replace_shards(
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

/// Applies [`Command::ReplacePartShards`]: part `number` of the upload in progress
/// `upload`, still the part with `etag`, gets the new shards of `segment`.
#[allow(clippy::too_many_arguments)]
fn replace_part_shards(
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

/// Aborts every upload still open in `bucket`, queueing its parts' shards for collection.
/// Uploads are few (they expire), so this reads them all rather than keep an index.
fn abort_uploads_of(txn: &WriteTransaction, bucket: &str, now_ms: u64) -> Result<(), CatalogFault> {
    let mut open = Vec::new();
    for item in txn.open_table(UPLOADS)?.iter()? {
        let (k, v) = item?;
        let record: UploadRecord = decode(v.value())?;
        if record.bucket == bucket {
            open.push((k.value().to_string(), record));
        }
    }
    for (id, record) in open {
        remove_upload(txn, &id, &record)?;
        let parts = take_parts(txn, &id, &record.erasure)?;
        collect_shards(
            txn,
            parts.iter().flat_map(|(_, p)| p.segments.iter()),
            now_ms,
        )?;
    }
    Ok(())
}

/// Removes an upload's record (not its parts) and its entry in the time index.
fn remove_upload(
    txn: &WriteTransaction,
    id: &str,
    record: &UploadRecord,
) -> Result<(), CatalogFault> {
    txn.open_table(UPLOADS)?.remove(id)?;
    txn.open_table(UPLOADS_BY_TIME)?
        .remove(upload_time_key(record.initiated_ms, id).as_slice())?;
    Ok(())
}

fn read_upload(txn: &WriteTransaction, id: &str) -> Result<Option<UploadRecord>, CatalogFault> {
    txn.open_table(UPLOADS)?
        .get(id)?
        .map(|v| decode(v.value()))
        .transpose()
}

/// Removes and returns every part of an upload, in number order.
fn take_parts(
    txn: &WriteTransaction,
    upload: &str,
    erasure: &ErasureProfile,
) -> Result<Vec<(u32, PartRecord)>, CatalogFault> {
    let mut table = txn.open_table(PARTS)?;
    let from = part_key(upload, 0);
    let to = part_key(upload, u32::MAX);
    let mut out: Vec<(u32, PartRecord)> = Vec::new();
    for item in table.extract_from_if(from.as_slice()..=to.as_slice(), |_, _| true)? {
        let (k, v) = item?;
        let key = k.value();
        let mut number = [0u8; 4];
        number.copy_from_slice(&key[key.len() - 4..]);
        out.push((u32::from_be_bytes(number), decode(v.value())?));
    }
    drop(table);
    let mut index = ShardIndex::open(txn)?;
    for (number, part) in &out {
        index.remove(
            Holder::Part,
            &part_key(upload, *number),
            erasure,
            &part.segments,
        )?;
    }
    Ok(out)
}

/// Each part a gateway checked must still be the version it checked.
fn as_checked(
    upload: &UploadRecord,
    stored: &[(u32, PartRecord)],
    verified: &[(u32, super::model::ObjectVersion)],
) -> Result<(), CatalogError> {
    for (number, version) in verified {
        let current = stored
            .iter()
            .find(|(n, _)| n == number)
            .map(|(_, part)| part.as_object(upload).version());
        if current != Some(*version) {
            return Err(CatalogError::InvalidPart(format!(
                "part {number} changed after it was checked: complete the upload again"
            )));
        }
    }
    Ok(())
}

/// Every listed part must still be readable: each of its segments keeps at least `k`
/// shards on nodes that hold data. A part that sat while its nodes were lost cannot become
/// an object that is acknowledged but unreadable; the client uploads that part again.
/// (Parts still readable but below full margin become an object that the survey repairs
/// like any other.)
fn readable_parts(
    txn: &WriteTransaction,
    upload: &UploadRecord,
    stored: &[(u32, PartRecord)],
    listed: &[(u32, String)],
) -> Result<Result<(), CatalogError>, CatalogFault> {
    let nodes = txn.open_table(NODES)?;
    let k = usize::from(upload.erasure.k);
    for (number, _) in listed {
        let Some((_, part)) = stored.iter().find(|(n, _)| n == number) else {
            continue;
        };
        for (index, segment) in part.segments.iter().enumerate() {
            let mut healthy = 0;
            for shard in &segment.shards {
                if read_node(&nodes, &shard.node)?.is_some_and(|n| n.state.holds_data()) {
                    healthy += 1;
                }
            }
            if healthy < k {
                return Ok(Err(CatalogError::InvalidPart(format!(
                    "part {number} lost segment {index} on failed nodes ({healthy} of the {k} \
                     shards needed remain): upload the part again"
                ))));
            }
        }
    }
    Ok(Ok(()))
}

/// The object a completed upload becomes: the listed parts' segments in order, with the
/// multipart ETag (MD5 of the parts' binary MD5s, then `-<count>`).
fn assemble(
    upload: &UploadRecord,
    stored: &[(u32, PartRecord)],
    listed: &[(u32, String)],
    checksum: Option<&ObjectChecksum>,
    now_ms: u64,
) -> Result<ObjectRecord, CatalogError> {
    if listed.is_empty() {
        return Err(CatalogError::InvalidPart(
            "a multipart upload needs at least one part".into(),
        ));
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(CatalogError::InvalidPartOrder);
    }
    let mut digests = Vec::with_capacity(listed.len() * 16);
    let mut segments = Vec::new();
    let mut summaries = Vec::with_capacity(listed.len());
    let mut size = 0u64;
    for (i, (number, etag)) in listed.iter().enumerate() {
        let Some((_, part)) = stored.iter().find(|(n, _)| n == number) else {
            return Err(CatalogError::InvalidPart(format!(
                "part {number} was not uploaded"
            )));
        };
        if normalise_etag(etag) != normalise_etag(&part.etag) {
            return Err(CatalogError::InvalidPart(format!(
                "part {number} has ETag {}, not {etag}",
                part.etag
            )));
        }
        if i + 1 < listed.len() && part.size < MIN_PART_SIZE {
            return Err(CatalogError::EntityTooSmall {
                number: *number,
                size: part.size,
                min: MIN_PART_SIZE,
            });
        }
        let digest = hex_digest(normalise_etag(&part.etag)).ok_or_else(|| {
            CatalogError::InvalidPart(format!("part {number} has a malformed ETag"))
        })?;
        digests.extend_from_slice(&digest);
        segments.extend(part.segments.iter().cloned());
        size += part.size;
        summaries.push(PartSummary {
            size: part.size,
            etag: part.etag.clone(),
            checksum: part.checksum.clone(),
        });
    }
    let etag = format!("\"{}-{}\"", hex(&md5::Md5::digest(&digests)), listed.len());
    Ok(ObjectRecord {
        size,
        etag,
        last_modified_ms: now_ms,
        headers: upload.headers.clone(),
        body: ObjectBody::Segments {
            erasure: upload.erasure,
            segments,
        },
        acl: upload.acl,
        parts: summaries,
        checksum: checksum.cloned(),
    })
}

fn normalise_etag(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

fn hex_digest(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An object body must be consistent in itself and reference only known nodes.
fn check_body(
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
fn check_segments(
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
    let mut ids = std::collections::HashSet::new();
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
        let mut seen = std::collections::HashSet::new();
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

/// A known node registering again (new address, disk or site) keeps its history,
/// lifecycle state and organisation (which only an invitation vouches for); only what it
/// declares about its machine changes.
fn rejoined(known: NodeRecord, node: &NodeRecord) -> NodeRecord {
    NodeRecord {
        addr: node.addr.clone(),
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

/// Whether the key holds what a conditional write demands.
fn check_condition(
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
    match &object.body {
        ObjectBody::Inline(_) => Ok(()),
        ObjectBody::Segments { segments, .. } => collect_shards(txn, segments.iter(), now_ms),
    }
}

/// Queues `shards` for deletion, except those in `kept`: a version that replaces another
/// may share shards with it (a retried commit of the very same record, a part uploaded
/// again from the same shards), and a shard a live record names must never be collected.
fn collect_except<'a>(
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
fn unqueue(txn: &WriteTransaction, shards: &HashSet<ShardId>) -> Result<(), CatalogFault> {
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
fn collect_shards<'a>(
    txn: &WriteTransaction,
    segments: impl Iterator<Item = &'a SegmentRecord>,
    now_ms: u64,
) -> Result<(), CatalogFault> {
    let shards = segments.flat_map(|segment| segment.shards.iter());
    collect_except(txn, shards, &HashSet::new(), now_ms)
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
