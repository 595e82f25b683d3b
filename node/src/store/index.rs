//! The redb half of the store: which tables exist and how their values are encoded.
//!
//! Keeping the table layout and the record format in one place means a format change has
//! one file to touch and one version number to bump.

use cairn_erasure::ShardRoot;
use cairn_proto::ids::ShardId;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{ShardMeta, StoreError};

/// Shard id → postcard [`MetaRecord`]. A shard exists exactly when it has a row here.
pub(super) const SHARDS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("shards");

/// Shard id → raw slice-outboard hashes. Stored raw rather than through postcard because they
/// are already plain bytes and can be a few hundred KiB: a length prefix would buy nothing.
pub(super) const OUTBOARDS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("outboards");

/// Shard id → unix seconds when the shard was found not to match its root.
pub(super) const DAMAGED: TableDefinition<[u8; 16], u64> = TableDefinition::new("damaged");

/// Order serial → its expiry (unix seconds): the replay-protection set.
pub(super) const SERIALS: TableDefinition<u64, u64> = TableDefinition::new("serials");

/// (expiry, serial) → (): the same set ordered by expiry, so pruning reads only what it
/// removes instead of scanning every serial on each order.
pub(super) const SERIAL_EXPIRY: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("serial_expiry");

/// Single-row table holding the index format version.
const FORMAT: TableDefinition<&str, u32> = TableDefinition::new("format");

/// Bumped whenever a table or record encoding changes, so an old binary refuses a newer index
/// instead of misreading it.
const FORMAT_VERSION: u32 = 1;

/// The on-disk form of [`ShardMeta`], kept separate so the public type can change freely.
#[derive(Serialize, Deserialize)]
struct MetaRecord {
    root: ShardRoot,
    size: u64,
    stored_at: u64,
}

/// Encodes a shard's metadata for [`SHARDS`].
pub(super) fn encode_meta(meta: &ShardMeta) -> Result<Vec<u8>, StoreError> {
    let record = MetaRecord {
        root: meta.root,
        size: meta.size,
        stored_at: meta.stored_at,
    };
    postcard::to_stdvec(&record)
        .map_err(|err| StoreError::Db(format!("cannot encode metadata: {err}")))
}

/// Decodes a [`SHARDS`] value, naming the shard if the bytes are not a valid record.
pub(super) fn decode_meta(shard: ShardId, bytes: &[u8]) -> Result<ShardMeta, StoreError> {
    let (record, rest): (MetaRecord, _) = postcard::take_from_bytes(bytes).map_err(|err| {
        StoreError::Db(format!(
            "corrupt index entry for shard {shard}: cannot decode its metadata ({err})"
        ))
    })?;
    if !rest.is_empty() {
        return Err(StoreError::Db(format!(
            "corrupt index entry for shard {shard}: {} unexpected trailing bytes",
            rest.len()
        )));
    }
    Ok(ShardMeta {
        root: record.root,
        size: record.size,
        stored_at: record.stored_at,
    })
}

/// Creates every table (so read transactions never meet a missing one) and checks or records
/// the format version.
pub(super) fn init(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        txn.open_table(SHARDS)?;
        txn.open_table(OUTBOARDS)?;
        txn.open_table(DAMAGED)?;
        txn.open_table(SERIALS)?;
        txn.open_table(SERIAL_EXPIRY)?;
        let mut format = txn.open_table(FORMAT)?;
        let found = format.get("version")?.map(|guard| guard.value());
        match found {
            None => {
                format.insert("version", FORMAT_VERSION)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Db(format!(
                    "index format version {other} is not supported (this build reads version \
                     {FORMAT_VERSION})"
                )));
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// redb's error types all become [`StoreError::Db`]: callers can only report them, and the
/// message is what an operator needs.
macro_rules! db_error {
    ($($ty:ty),* $(,)?) => {
        $(
            impl From<$ty> for StoreError {
                fn from(err: $ty) -> Self {
                    StoreError::Db(format!("index database: {err}"))
                }
            }
        )*
    };
}

db_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);
