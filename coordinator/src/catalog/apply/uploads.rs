//! The multipart upload commands: [`Command::CreateUpload`](crate::catalog::Command::CreateUpload), [`Command::PutPart`](crate::catalog::Command::PutPart),
//! [`Command::CompleteUpload`](crate::catalog::Command::CompleteUpload), [`Command::AbortUpload`](crate::catalog::Command::AbortUpload) (and the older layouts of the
//! first three), and aborting a deleted bucket's uploads. Parts are indexed by node like
//! objects, and an upload's record and its entry in the by-age index change together.
//!
//! [`Command::CreateUpload`]: crate::catalog::Command::CreateUpload
//! [`Command::PutPart`]: crate::catalog::Command::PutPart
//! [`Command::CompleteUpload`]: crate::catalog::Command::CompleteUpload
//! [`Command::AbortUpload`]: crate::catalog::Command::AbortUpload

use std::collections::HashSet;

use cairn_proto::ids::ShardId;
use md5::Digest;
use redb::{ReadableTable, WriteTransaction};

use super::garbage::{collect_except, collect_shards, unqueue};
use super::nodes::read_node;
use super::objects::{
    check_condition, check_object_target, check_segments, normalise_etag, replace_object,
};
use super::refused;
use crate::catalog::command::{CatalogError, CommandResult, WriteCondition};
use crate::catalog::model::{
    ErasureProfile, MAX_PART_NUMBER, MIN_PART_SIZE, ObjectBody, ObjectChecksum, ObjectRecord,
    ObjectVersion, PartRecord, PartSummary, UploadRecord,
};
use crate::catalog::shard_index::{Holder, ShardIndex};
use crate::catalog::{
    CatalogFault, NODES, PARTS, UPLOADS, UPLOADS_BY_KEY, UploadIndexes, decode, encode, part_key,
    upload_ids_in,
};

/// [`Command::CreateUpload`](crate::catalog::Command::CreateUpload).
pub(super) fn create_upload(
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
    UploadIndexes::open(txn)?.add(id, upload)?;
    Ok(CommandResult::Done)
}

/// [`Command::PutPart`](crate::catalog::Command::PutPart).
pub(super) fn put_part(
    txn: &WriteTransaction,
    upload: &str,
    number: u32,
    part: &PartRecord,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
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

/// [`Command::CompleteUpload`](crate::catalog::Command::CompleteUpload).
pub(super) fn complete_upload(
    txn: &WriteTransaction,
    upload: &str,
    parts: &[(u32, String)],
    verified: &[(u32, ObjectVersion)],
    checksum: Option<&ObjectChecksum>,
    condition: Option<&WriteCondition>,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
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

/// [`Command::AbortUpload`](crate::catalog::Command::AbortUpload): the upload and its parts
/// go, their shards queued as garbage.
pub(super) fn abort_upload(
    txn: &WriteTransaction,
    upload: &str,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let Some(record) = read_upload(txn, upload)? else {
        return refused(CatalogError::NoSuchUpload(upload.to_string()));
    };
    remove_upload(txn, upload, &record)?;
    let stored = take_parts(txn, upload, &record.erasure)?;
    collect_shards(
        txn,
        stored.iter().flat_map(|(_, p)| p.segments.iter()),
        now_ms,
    )?;
    Ok(CommandResult::Done)
}

/// Aborts every upload still open in `bucket`, queueing its parts' shards for collection:
/// the bucket's range of the by-key index names them.
pub(super) fn abort_uploads_of(
    txn: &WriteTransaction,
    bucket: &str,
    now_ms: u64,
) -> Result<(), CatalogFault> {
    let ids = upload_ids_in(&txn.open_table(UPLOADS_BY_KEY)?, bucket, usize::MAX)?;
    let mut open = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(record) = read_upload(txn, &id)? {
            open.push((id, record));
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
    UploadIndexes::open(txn)?.remove(id, record)?;
    Ok(())
}

/// The record of upload `id`, if it is in progress.
pub(super) fn read_upload(
    txn: &WriteTransaction,
    id: &str,
) -> Result<Option<UploadRecord>, CatalogFault> {
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
    verified: &[(u32, ObjectVersion)],
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

/// The 16 bytes a 32-digit hex MD5 spells, if it is one.
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

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
