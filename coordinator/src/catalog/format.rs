//! The on-disk format of `catalog.redb`: a format marker checked at open, a version byte
//! in front of every stored record, and the migration from the unmarked format 1.
//!
//! Format 1 (the first releases) had no marker and stored each record as its bare postcard
//! body. Format 2 adds the [`META`] table and puts [`RECORD_V1`] before every record body,
//! so that a later change of a record type can be read beside the records written before
//! it: a new version byte, decoded by its own arm of [`Record::decode_older`]. Object and
//! upload records are at [`RECORD_V3`], part records at [`RECORD_V2`]; every other record
//! is still at [`RECORD_V1`]. A
//! record is rewritten at its newest version only when it changes: the catalog holds both
//! versions side by side, with no migration pass.
//!
//! Format 3 adds the shards-by-node index ([`super::shard_index`]), which every change of
//! an object or part keeps. Records are as in format 2; opening a format-2 catalog builds
//! the index once. The marker moves so that a release which does not keep the index
//! refuses a catalog that has one, instead of letting it go stale.
//!
//! Format 4 adds the segments-by-shape counters (`segment_shapes`, kept beside the index
//! by the same code), from which the durability survey takes its totals without a walk.
//! Opening a format-2 or format-3 catalog builds the index and the counters once.
//!
//! Format 5 adds the garbage queue's index by node (`garbage_by_node`), so whether a
//! draining node still has deletions due is one range read, and the uploads' index by
//! bucket and key (`uploads_by_key`), so a listing of uploads reads only its page;
//! opening an older catalog builds both once from the queue and the uploads.

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ACCESS_KEYS, BUCKETS, CatalogFault, GARBAGE, GATEWAYS, INVITES, NODES, OBJECTS, PARTS,
    REQUESTS, UPLOADS,
};
use super::{legacy, model};

/// Facts about the database itself; `format` holds [`FORMAT`].
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The key of the format marker in [`META`].
const FORMAT_KEY: &str = "format";

/// The catalog format this build writes and reads.
pub const FORMAT: u64 = 5;

/// The version byte of records whose layout never changed since format 2, and of objects
/// and uploads written before [`RECORD_V2`].
pub const RECORD_V1: u8 = 1;

/// The version byte of object and upload records that carry a canned ACL, and for objects
/// part boundaries, a checksum and `Expires` (`catalog::legacy` holds version 1).
pub const RECORD_V2: u8 = 2;

/// The version byte of object records whose parts carry checksums, and of upload records
/// that carry a checksum algorithm (`catalog::legacy` holds version 2).
pub const RECORD_V3: u8 = 3;

/// The newest record version of any table.
const NEWEST_RECORD: u8 = RECORD_V3;

/// A type stored as a catalog record: the version this build writes it under, and how
/// bodies written under older versions of it are read.
pub trait Record: Serialize + DeserializeOwned {
    /// The version byte this build writes.
    const VERSION: u8 = RECORD_V1;

    /// Reads a body stored under `version`, older than [`Record::VERSION`].
    fn decode_older(version: u8, _body: &[u8]) -> Result<Self, CatalogFault> {
        Err(unknown_version(version, Self::VERSION))
    }
}

fn unknown_version(version: u8, reads: u8) -> CatalogFault {
    CatalogFault(format!(
        "stored record has version {version}, this build reads this record only up to \
         version {reads}"
    ))
}

/// A stored record: its type's [`Record::VERSION`], then the postcard body.
pub(crate) fn encode_record<T: Record>(value: &T) -> Result<Vec<u8>, CatalogFault> {
    let mut out = vec![T::VERSION];
    postcard::to_io(value, &mut out)?;
    Ok(out)
}

/// Reads a record written by [`encode_record`] of this build or an older one; an unknown
/// version is a fault, not a guess.
pub(crate) fn decode_record<T: Record>(bytes: &[u8]) -> Result<T, CatalogFault> {
    match bytes.split_first() {
        Some((&version, body)) if version == T::VERSION => Ok(postcard::from_bytes(body)?),
        Some((&version, body)) if (RECORD_V1..T::VERSION).contains(&version) => {
            T::decode_older(version, body)
        }
        Some((&version, _)) => Err(unknown_version(version, T::VERSION)),
        None => Err(CatalogFault("stored record is empty".into())),
    }
}

/// Whether `bytes` starts with a record version this build reads (a cheap check of rows
/// copied in from a snapshot or backup without decoding them).
pub(crate) fn is_known_record(bytes: &[u8]) -> bool {
    bytes
        .first()
        .is_some_and(|v| (RECORD_V1..=NEWEST_RECORD).contains(v))
}

/// Types whose layout is the one format 2 started with.
macro_rules! version_1_records {
    ($($t:ty),* $(,)?) => {
        $(impl Record for $t {})*
    };
}
version_1_records!(
    model::Bucket,
    model::AccessKey,
    model::NodeRecord,
    model::GarbageShard,
    model::Invite,
    model::GatewayRecord,
    (u64, super::CommandResult),
);

impl Record for model::ObjectRecord {
    const VERSION: u8 = RECORD_V3;

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, CatalogFault> {
        match version {
            RECORD_V1 => Ok(postcard::from_bytes::<legacy::ObjectRecordV1>(body)?.into()),
            RECORD_V2 => Ok(postcard::from_bytes::<legacy::ObjectRecordV2>(body)?.into()),
            _ => Err(unknown_version(version, Self::VERSION)),
        }
    }
}

impl Record for model::UploadRecord {
    const VERSION: u8 = RECORD_V3;

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, CatalogFault> {
        match version {
            RECORD_V1 => Ok(postcard::from_bytes::<legacy::UploadRecordV1>(body)?.into()),
            RECORD_V2 => Ok(postcard::from_bytes::<legacy::UploadRecordV2>(body)?.into()),
            _ => Err(unknown_version(version, Self::VERSION)),
        }
    }
}

impl Record for model::PartRecord {
    const VERSION: u8 = RECORD_V2;

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, CatalogFault> {
        match version {
            RECORD_V1 => Ok(postcard::from_bytes::<legacy::PartRecordV1>(body)?.into()),
            _ => Err(unknown_version(version, Self::VERSION)),
        }
    }
}

/// A format-1 record (bare postcard body) as format 2 stores it.
pub(crate) fn upgrade_record(bare: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bare.len());
    out.push(RECORD_V1);
    out.extend_from_slice(bare);
    out
}

/// Brings the database inside `txn` to [`FORMAT`], or refuses it.
///
/// A database with a marker must carry this build's format: a newer one was written by a
/// newer release and is refused rather than misread. A database without a marker is either
/// new (no catalog table yet: it is marked) or format 1 (its records are rewritten with
/// their version byte, then it is marked), all in `txn`, so a crash leaves it wholly old or
/// wholly new.
///
/// Returns the format the catalog had: [`FORMAT`] if it was current, 1 if it was new or
/// of format 1. What later formats derive (the shards-by-node index and shape counters
/// from format 4 on, the garbage node index from 5) is then for the caller to build in
/// `txn`.
pub(crate) fn check_or_migrate(txn: &WriteTransaction) -> Result<u64, CatalogFault> {
    let found = {
        let meta = txn.open_table(META)?;
        meta.get(FORMAT_KEY)?.map(|v| v.value())
    };
    match found {
        Some(FORMAT) => return Ok(FORMAT),
        Some(newer) if newer > FORMAT => {
            return Err(CatalogFault(format!(
                "catalog format {newer} was written by a newer release of Cairn; this one \
                 reads format {FORMAT} and older: upgrade cairn to open it"
            )));
        }
        Some(older @ (2..=4)) => {
            tracing::info!("catalog migrated from format {older} to format {FORMAT}");
        }
        Some(other) => {
            return Err(CatalogFault(format!(
                "catalog format {other} is not one this release knows (it reads 1 to {FORMAT})"
            )));
        }
        None => {
            let existing: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
            if existing.iter().any(|name| name == BUCKETS.name()) {
                migrate_from_1(txn)?;
                tracing::info!("catalog migrated from format 1 to format {FORMAT}");
            }
        }
    }
    txn.open_table(META)?.insert(FORMAT_KEY, FORMAT)?;
    Ok(found.unwrap_or(1))
}

/// Format 1 → 2: every record gets its version byte. Indexes and counters hold no records
/// and stay as they are.
fn migrate_from_1(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    upgrade_table(txn, BUCKETS, "buckets.format1")?;
    upgrade_table(txn, OBJECTS, "objects.format1")?;
    upgrade_table(txn, ACCESS_KEYS, "access_keys.format1")?;
    upgrade_table(txn, NODES, "nodes.format1")?;
    upgrade_table(txn, GARBAGE, "garbage.format1")?;
    upgrade_table(txn, INVITES, "invites.format1")?;
    upgrade_table(txn, GATEWAYS, "gateways.format1")?;
    upgrade_table(txn, UPLOADS, "uploads.format1")?;
    upgrade_table(txn, PARTS, "parts.format1")?;
    upgrade_table(txn, REQUESTS, "requests.format1")?;
    Ok(())
}

/// Moves `live` aside and copies it back with every value upgraded, in key order.
fn upgrade_table<K: redb::Key + 'static>(
    txn: &WriteTransaction,
    live: TableDefinition<K, &'static [u8]>,
    aside: &str,
) -> Result<(), CatalogFault> {
    let old: TableDefinition<K, &[u8]> = TableDefinition::new(aside);
    txn.delete_table(old)?;
    txn.rename_table(live, old)?;
    {
        let from = txn.open_table(old)?;
        let mut to = txn.open_table(live)?;
        for item in from.iter()? {
            let (k, v) = item?;
            to.insert(k.value(), upgrade_record(v.value()).as_slice())?;
        }
    }
    txn.delete_table(old)?;
    Ok(())
}
