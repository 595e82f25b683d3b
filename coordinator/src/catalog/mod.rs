//! The catalog: the coordinator's replicated state, kept on disk in redb.
//!
//! [`Catalog`] owns the tables; [`apply`] is the only code that changes them, one
//! [`Command`] at a time inside a write transaction opened by the Raft state machine (which
//! records the applied log position in the same transaction). Reads open their own read
//! transactions and see a consistent committed state.

mod apply;
pub mod command;
pub mod model;

use std::sync::Arc;

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use apply::apply;
pub use command::{CatalogError, Command, CommandResult};
use model::{AccessKey, Bucket, GarbageShard, NodeRecord, ObjectRecord};

pub(crate) const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// Objects by [`object_key`]: all keys of a bucket are contiguous and in S3 listing order.
pub(crate) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
pub(crate) const ACCESS_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("access_keys");
pub(crate) const NODES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("nodes");
pub(crate) const GARBAGE: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("garbage");
/// Invitations by the hash of their secret.
pub(crate) const INVITES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("invites");
/// Totals kept up to date by `apply`, so status never scans the object table.
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Counter names in [`COUNTERS`].
pub(crate) const OBJECT_COUNT: &str = "objects";
pub(crate) const LOGICAL_BYTES: &str = "logical_bytes";

/// A storage-level failure under the catalog: the database or a record that does not
/// decode. Unlike a [`CatalogError`] this is not a property of the command.
#[derive(Debug, thiserror::Error)]
#[error("catalog storage: {0}")]
pub struct CatalogFault(pub String);

macro_rules! fault_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CatalogFault {
            fn from(err: $t) -> Self {
                CatalogFault(err.to_string())
            }
        }
    )*};
}
fault_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    postcard::Error
);

/// The key of an object in [`OBJECTS`]: the bucket name's length, the name, then the key.
/// Length-prefixing keeps one bucket's objects contiguous and sorted by key.
pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bucket.len() + key.len());
    // Bucket names are at most 63 bytes (checked when buckets are created).
    out.push(bucket.len() as u8);
    out.extend_from_slice(bucket.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CatalogFault> {
    Ok(postcard::to_allocvec(value)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CatalogFault> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Totals for status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogStats {
    /// Objects stored.
    pub objects: u64,
    /// Sum of object sizes.
    pub logical_bytes: u64,
}

/// The catalog's tables in one redb database.
#[derive(Clone)]
pub struct Catalog {
    db: Arc<Database>,
}

impl Catalog {
    /// Wraps an open database, creating any missing table.
    pub fn new(db: Arc<Database>) -> Result<Self, CatalogFault> {
        let txn = db.begin_write()?;
        create_tables(&txn)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// The underlying database (the Raft state machine writes through it).
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    fn read(&self) -> Result<ReadTransaction, CatalogFault> {
        Ok(self.db.begin_read()?)
    }

    /// A bucket by name.
    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(BUCKETS)?;
        table.get(name)?.map(|v| decode(v.value())).transpose()
    }

    /// Every bucket, by name.
    pub fn buckets(&self) -> Result<Vec<Bucket>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(BUCKETS)?;
        table.iter()?.map(|item| decode(item?.1.value())).collect()
    }

    /// An object by bucket and key.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS)?;
        table
            .get(object_key(bucket, key).as_slice())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Up to `max` objects of `bucket` whose keys start with `prefix` and sort after
    /// `after`, in key order: the raw material of S3 listings.
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS)?;
        let head = object_key(bucket, "");
        let start = match after {
            Some(after) if after >= prefix => {
                let mut start = object_key(bucket, after);
                start.push(0); // strictly after
                start
            }
            _ => object_key(bucket, prefix),
        };
        let mut out = Vec::new();
        for item in table.range(start.as_slice()..)? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let Some(name) = k.value().strip_prefix(head.as_slice()) else {
                break;
            };
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| CatalogFault("object key is not UTF-8".into()))?;
            if !name.starts_with(prefix) {
                break;
            }
            out.push((name, decode(v.value())?));
        }
        Ok(out)
    }

    /// An access key by id (revoked ones included: callers check `revoked`).
    pub fn access_key(&self, id: &str) -> Result<Option<AccessKey>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(ACCESS_KEYS)?;
        table.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// Every access key.
    pub fn access_keys(&self) -> Result<Vec<AccessKey>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(ACCESS_KEYS)?;
        table.iter()?.map(|item| decode(item?.1.value())).collect()
    }

    /// A node by id.
    pub fn node(&self, id: &NodeId) -> Result<Option<NodeRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        table
            .get(*id.as_bytes())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        table.iter()?.map(|item| decode(item?.1.value())).collect()
    }

    /// Up to `max` unreferenced shards waiting for deletion.
    pub fn garbage(&self, max: usize) -> Result<Vec<(ShardId, GarbageShard)>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(GARBAGE)?;
        table
            .iter()?
            .take(max)
            .map(|item| {
                let (k, v) = item?;
                Ok((ShardId(k.value()), decode(v.value())?))
            })
            .collect()
    }

    /// Object count and logical bytes.
    pub fn stats(&self) -> Result<CatalogStats, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(COUNTERS)?;
        let get = |name| -> Result<u64, CatalogFault> {
            Ok(table.get(name)?.map(|v| v.value()).unwrap_or(0))
        };
        Ok(CatalogStats {
            objects: get(OBJECT_COUNT)?,
            logical_bytes: get(LOGICAL_BYTES)?,
        })
    }
}

fn create_tables(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    txn.open_table(BUCKETS)?;
    txn.open_table(OBJECTS)?;
    txn.open_table(ACCESS_KEYS)?;
    txn.open_table(NODES)?;
    txn.open_table(GARBAGE)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(INVITES)?;
    Ok(())
}

/// Every catalog row, for Raft snapshots and backups: raw postcard records per table.
///
/// Held in memory whole; at the scale of the real cache this becomes a streamed export
/// (see the issue notes), the format stays the same rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDump {
    /// `BUCKETS` rows.
    pub buckets: Vec<(String, Vec<u8>)>,
    /// `OBJECTS` rows.
    pub objects: Vec<(Vec<u8>, Vec<u8>)>,
    /// `ACCESS_KEYS` rows.
    pub access_keys: Vec<(String, Vec<u8>)>,
    /// `NODES` rows.
    pub nodes: Vec<([u8; 32], Vec<u8>)>,
    /// `GARBAGE` rows.
    pub garbage: Vec<([u8; 16], Vec<u8>)>,
    /// `COUNTERS` rows.
    pub counters: Vec<(String, u64)>,
    /// `INVITES` rows.
    pub invites: Vec<([u8; 32], Vec<u8>)>,
}

/// Copies every catalog row out of a read transaction.
pub fn export(txn: &ReadTransaction) -> Result<CatalogDump, CatalogFault> {
    let mut dump = CatalogDump::default();
    for item in txn.open_table(BUCKETS)?.iter()? {
        let (k, v) = item?;
        dump.buckets
            .push((k.value().to_string(), v.value().to_vec()));
    }
    for item in txn.open_table(OBJECTS)?.iter()? {
        let (k, v) = item?;
        dump.objects.push((k.value().to_vec(), v.value().to_vec()));
    }
    for item in txn.open_table(ACCESS_KEYS)?.iter()? {
        let (k, v) = item?;
        dump.access_keys
            .push((k.value().to_string(), v.value().to_vec()));
    }
    for item in txn.open_table(NODES)?.iter()? {
        let (k, v) = item?;
        dump.nodes.push((k.value(), v.value().to_vec()));
    }
    for item in txn.open_table(GARBAGE)?.iter()? {
        let (k, v) = item?;
        dump.garbage.push((k.value(), v.value().to_vec()));
    }
    for item in txn.open_table(COUNTERS)?.iter()? {
        let (k, v) = item?;
        dump.counters.push((k.value().to_string(), v.value()));
    }
    for item in txn.open_table(INVITES)?.iter()? {
        let (k, v) = item?;
        dump.invites.push((k.value(), v.value().to_vec()));
    }
    Ok(dump)
}

/// Replaces every catalog row with `dump`'s inside `txn`.
pub fn import(txn: &WriteTransaction, dump: &CatalogDump) -> Result<(), CatalogFault> {
    txn.delete_table(BUCKETS)?;
    txn.delete_table(OBJECTS)?;
    txn.delete_table(ACCESS_KEYS)?;
    txn.delete_table(NODES)?;
    txn.delete_table(GARBAGE)?;
    txn.delete_table(COUNTERS)?;
    txn.delete_table(INVITES)?;
    create_tables(txn)?;
    let mut buckets = txn.open_table(BUCKETS)?;
    for (k, v) in &dump.buckets {
        buckets.insert(k.as_str(), v.as_slice())?;
    }
    let mut objects = txn.open_table(OBJECTS)?;
    for (k, v) in &dump.objects {
        objects.insert(k.as_slice(), v.as_slice())?;
    }
    let mut keys = txn.open_table(ACCESS_KEYS)?;
    for (k, v) in &dump.access_keys {
        keys.insert(k.as_str(), v.as_slice())?;
    }
    let mut nodes = txn.open_table(NODES)?;
    for (k, v) in &dump.nodes {
        nodes.insert(*k, v.as_slice())?;
    }
    let mut garbage = txn.open_table(GARBAGE)?;
    for (k, v) in &dump.garbage {
        garbage.insert(*k, v.as_slice())?;
    }
    let mut counters = txn.open_table(COUNTERS)?;
    for (k, v) in &dump.counters {
        counters.insert(k.as_str(), *v)?;
    }
    let mut invites = txn.open_table(INVITES)?;
    for (k, v) in &dump.invites {
        invites.insert(*k, v.as_slice())?;
    }
    Ok(())
}

/// First bytes of a backup file; the version is in the text.
pub const BACKUP_MAGIC: &[u8] = b"cairn-catalog-backup-1\n";

/// A consistent backup of the whole catalog: one read transaction, so one point in time.
pub fn backup(catalog: &Catalog) -> Result<Vec<u8>, CatalogFault> {
    let dump = export(&catalog.read()?)?;
    let mut out = BACKUP_MAGIC.to_vec();
    postcard::to_io(&dump, &mut out)?;
    Ok(out)
}

/// Reads a backup made by [`backup`].
pub fn read_backup(bytes: &[u8]) -> Result<CatalogDump, CatalogFault> {
    let body = bytes
        .strip_prefix(BACKUP_MAGIC)
        .ok_or_else(|| CatalogFault("not a Cairn catalog backup (wrong header)".into()))?;
    let (dump, rest) = postcard::take_from_bytes::<CatalogDump>(body)?;
    if !rest.is_empty() {
        return Err(CatalogFault(format!(
            "{} unexpected bytes after the backup",
            rest.len()
        )));
    }
    Ok(dump)
}
