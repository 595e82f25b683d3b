//! [`apply`]: the one place the catalog changes. It hands each [`Command`] to the function
//! for it, kept with the others of its family: [`buckets`], [`access_keys`], [`nodes`]
//! (registration, invitations, joins, lifecycle), [`reputation`] (audits, gateways'
//! reports), [`gateways`], [`objects`], [`uploads`] (multipart), [`shard_moves`] (repairs,
//! drains, rebalancing), [`garbage`], and [`once`] (a client's change applied at most
//! once). Every one changes the catalog only in the caller's write transaction, and keeps
//! each index and counter in step with its rows in that same transaction.

mod access_keys;
mod buckets;
mod garbage;
mod gateways;
mod nodes;
mod objects;
mod once;
mod reputation;
mod shard_moves;
mod uploads;

use redb::WriteTransaction;

use super::CatalogFault;
use super::command::{CatalogError, Command, CommandResult};
use super::model::{ObjectRecord, PartRecord, UploadRecord};

/// Applies one command inside `txn`. A refusal changes nothing and is returned as
/// [`CommandResult::Refused`]; only storage failures are errors.
pub fn apply(txn: &WriteTransaction, command: &Command) -> Result<CommandResult, CatalogFault> {
    // The `…V1`/`…V2` variants are older layouts of a command, still in logs and snapshots
    // of logs: each is converted and applied as the current one.
    match command {
        Command::Once {
            request,
            command,
            now_ms,
        } => once::once(txn, request, command, *now_ms),
        Command::Refuse { reason } => refused(reason.clone()),
        Command::CreateBucket { bucket } => buckets::create_bucket(txn, bucket),
        Command::DeleteBucket { name, now_ms } => buckets::delete_bucket(txn, name, *now_ms),
        Command::SetBucketPublicRead { name, public_read } => {
            buckets::set_bucket_public_read(txn, name, *public_read)
        }
        Command::CreateAccessKey { key } => access_keys::create_access_key(txn, key),
        Command::RevokeAccessKey { id } => access_keys::revoke_access_key(txn, id),
        Command::RegisterNode { node } => nodes::register_node(txn, node),
        Command::CreateInvite {
            secret_hash,
            expires_ms,
            org,
        } => nodes::create_invite(txn, secret_hash, *expires_ms, org.as_deref()),
        Command::JoinNode {
            node,
            secret_hash,
            now_ms,
        } => nodes::join_node(txn, node, secret_hash, *now_ms),
        Command::SetNodeState {
            node,
            state,
            now_ms,
        } => nodes::set_node_state(txn, node, None, *state, *now_ms),
        Command::ChangeNodeState {
            node,
            from,
            to,
            now_ms,
        } => nodes::set_node_state(txn, node, Some(*from), *to, *now_ms),
        Command::MoveNode { node, addr } => nodes::move_node(txn, node, addr),
        Command::ReportBadRead { node } => reputation::report_bad_read(txn, node),
        Command::RecordAudits {
            results,
            policy,
            now_ms,
        } => reputation::record_audits(txn, results, policy, *now_ms),
        Command::RegisterGateway { gateway } => gateways::register_gateway(txn, gateway),
        Command::RemoveGateway { key } => gateways::remove_gateway(txn, key),
        Command::PutObject {
            bucket,
            key,
            object,
            condition,
            now_ms,
        } => objects::put_object(txn, bucket, key, object, condition.as_ref(), *now_ms),
        Command::PutObjectV1 {
            bucket,
            key,
            object,
            condition,
            now_ms,
        } => {
            let object = ObjectRecord::from(object.clone());
            objects::put_object(txn, bucket, key, &object, condition.as_ref(), *now_ms)
        }
        Command::PutObjectV2 {
            bucket,
            key,
            object,
            condition,
            now_ms,
        } => {
            let object = ObjectRecord::from(object.clone());
            objects::put_object(txn, bucket, key, &object, condition.as_ref(), *now_ms)
        }
        Command::SetObjectAcl { bucket, key, acl } => {
            objects::set_object_acl(txn, bucket, key, *acl)
        }
        Command::DeleteObject {
            bucket,
            key,
            now_ms,
        } => objects::delete_object(txn, bucket, key, *now_ms),
        Command::CreateUpload { id, upload } => uploads::create_upload(txn, id, upload),
        Command::CreateUploadV1 { id, upload } => {
            uploads::create_upload(txn, id, &UploadRecord::from(upload.clone()))
        }
        Command::CreateUploadV2 { id, upload } => {
            uploads::create_upload(txn, id, &UploadRecord::from(upload.clone()))
        }
        Command::PutPart {
            upload,
            number,
            part,
            now_ms,
        } => uploads::put_part(txn, upload, *number, part, *now_ms),
        Command::PutPartV1 {
            upload,
            number,
            part,
            now_ms,
        } => {
            let part = PartRecord::from(part.clone());
            uploads::put_part(txn, upload, *number, &part, *now_ms)
        }
        Command::CompleteUpload {
            upload,
            parts,
            verified,
            checksum,
            condition,
            now_ms,
        } => uploads::complete_upload(
            txn,
            upload,
            parts,
            verified,
            checksum.as_ref(),
            condition.as_ref(),
            *now_ms,
        ),
        Command::CompleteUploadV1 {
            upload,
            parts,
            verified,
            condition,
            now_ms,
        } => uploads::complete_upload(
            txn,
            upload,
            parts,
            verified,
            None,
            condition.as_ref(),
            *now_ms,
        ),
        Command::AbortUpload { upload, now_ms } => uploads::abort_upload(txn, upload, *now_ms),
        Command::ReplaceShards {
            bucket,
            key,
            etag,
            segment,
            replacements,
            reason,
            now_ms,
        } => shard_moves::replace_shards(
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
        } => shard_moves::replace_part_shards(
            txn,
            upload,
            *number,
            etag,
            *segment,
            replacements,
            *reason,
            *now_ms,
        ),
        Command::ForgetGarbage { shards } => garbage::forget_garbage(txn, shards),
    }
}

/// A logical refusal: the same on every member, and nothing changed.
fn refused(err: CatalogError) -> Result<CommandResult, CatalogFault> {
    Ok(CommandResult::Refused(err))
}
