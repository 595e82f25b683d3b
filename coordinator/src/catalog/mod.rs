//! The catalog: the coordinator's replicated state, kept on disk in redb.
//!
//! [`Catalog`] owns the tables; [`apply`] is the only code that changes them, one
//! [`Command`] at a time inside a write transaction opened by the Raft state machine (which
//! records the applied log position in the same transaction). Reads open their own read
//! transactions and see a consistent committed state.

mod apply;
pub mod command;
pub mod format;
pub mod legacy;
pub mod model;
pub mod shard_index;
pub mod stream;

use std::sync::Arc;

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use apply::apply;
pub use command::{
    CatalogError, Command, CommandResult, MoveReason, REQUEST_MEMORY_MS, RequestId,
    ShardReplacement, WriteCondition,
};
use model::{
    AccessKey, Bucket, GarbageShard, GatewayRecord, Invite, NodeRecord, ObjectRecord, PartRecord,
    UploadRecord,
};
pub use shard_index::{Holder, Locator, PlacedTotals, Placement, ShapeTotals};

pub(crate) const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// Objects by [`object_key`]: all keys of a bucket are contiguous and in S3 listing order.
pub(crate) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
pub(crate) const ACCESS_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("access_keys");
pub(crate) const NODES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("nodes");
pub(crate) const GARBAGE: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("garbage");
/// Invitations by the hash of their secret.
pub(crate) const INVITES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("invites");
/// Registered gateways by key.
pub(crate) const GATEWAYS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("gateways");
/// Multipart uploads in progress by id.
pub(crate) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// Parts of uploads by [`part_key`].
pub(crate) const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
/// Totals kept up to date by `apply`, so status never scans the object table.
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// [`GARBAGE`] by when each entry was queued: the queue time (big-endian) then the shard
/// id, so the collector reads the entries that are due, oldest first, without a scan.
pub(crate) const GARBAGE_DUE: TableDefinition<[u8; 24], ()> = TableDefinition::new("garbage_due");

/// [`GARBAGE`] by node: the node's id then the shard id, so whether a node still has
/// garbage to delete is one range read, however long the queue (format 5).
pub(crate) const GARBAGE_BY_NODE: TableDefinition<[u8; 48], ()> =
    TableDefinition::new("garbage_by_node");

/// The key of a queued shard in [`GARBAGE_BY_NODE`].
pub(crate) fn garbage_node_key(node: &NodeId, shard: &[u8; 16]) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..32].copy_from_slice(node.as_bytes());
    key[32..].copy_from_slice(shard);
    key
}

/// The garbage queue and its indexes by time and by node, changed together so they never
/// disagree.
pub(crate) struct GarbageQueue<'txn> {
    shards: redb::Table<'txn, [u8; 16], &'static [u8]>,
    due: redb::Table<'txn, [u8; 24], ()>,
    by_node: redb::Table<'txn, [u8; 48], ()>,
}

impl<'txn> GarbageQueue<'txn> {
    /// The queue inside `txn`.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, CatalogFault> {
        Self::open_tables(txn, GARBAGE, GARBAGE_DUE, GARBAGE_BY_NODE)
    }

    /// The queue in the given tables of `txn` (a snapshot install fills staging copies).
    pub(crate) fn open_tables(
        txn: &'txn WriteTransaction,
        shards: TableDefinition<[u8; 16], &'static [u8]>,
        due: TableDefinition<[u8; 24], ()>,
        by_node: TableDefinition<[u8; 48], ()>,
    ) -> Result<Self, CatalogFault> {
        Ok(Self {
            shards: txn.open_table(shards)?,
            due: txn.open_table(due)?,
            by_node: txn.open_table(by_node)?,
        })
    }

    /// Queues `shard` (again, if it was: the later time counts).
    pub(crate) fn queue(
        &mut self,
        shard: ShardId,
        entry: &GarbageShard,
    ) -> Result<(), CatalogFault> {
        let previous = self
            .shards
            .insert(shard.0, encode(entry)?.as_slice())?
            .map(|v| decode::<GarbageShard>(v.value()))
            .transpose()?;
        if let Some(previous) = previous {
            self.due.remove(time_key(previous.since_ms, &shard.0))?;
            self.by_node
                .remove(garbage_node_key(&previous.node, &shard.0))?;
        }
        self.due.insert(time_key(entry.since_ms, &shard.0), ())?;
        self.by_node
            .insert(garbage_node_key(&entry.node, &shard.0), ())?;
        Ok(())
    }

    /// Queues `shard` unless it is queued already; whether it was new.
    pub(crate) fn insert_new(
        &mut self,
        shard: ShardId,
        entry: &GarbageShard,
    ) -> Result<bool, CatalogFault> {
        if self.shards.get(shard.0)?.is_some() {
            return Ok(false);
        }
        self.queue(shard, entry)?;
        Ok(true)
    }

    /// Takes `shard` out of the queue, if it is there.
    pub(crate) fn remove(&mut self, shard: ShardId) -> Result<(), CatalogFault> {
        let removed = self
            .shards
            .remove(shard.0)?
            .map(|v| decode::<GarbageShard>(v.value()))
            .transpose()?;
        if let Some(removed) = removed {
            self.due.remove(time_key(removed.since_ms, &shard.0))?;
            self.by_node
                .remove(garbage_node_key(&removed.node, &shard.0))?;
        }
        Ok(())
    }
}

/// A time (ms, big-endian, so keys sort by time) followed by an id.
pub(crate) fn time_key(ms: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&ms.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

/// Uploads in progress by when they began: [`upload_time_key`], so expiry reads the oldest
/// without a scan.
pub(crate) const UPLOADS_BY_TIME: TableDefinition<&[u8], ()> =
    TableDefinition::new("uploads_by_time");

/// The key of an upload in [`UPLOADS_BY_TIME`]: its start (big-endian ms), then its id.
pub(crate) fn upload_time_key(initiated_ms: u64, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&initiated_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Uploads in progress by bucket and key, then start and id: [`upload_key_index`], so a
/// listing reads one bucket's uploads under a prefix in S3's order (key, then start),
/// from any marker, without reading the others (format 5).
pub(crate) const UPLOADS_BY_KEY: TableDefinition<&[u8], ()> =
    TableDefinition::new("uploads_by_key");

/// The key of an upload in [`UPLOADS_BY_KEY`]: [`upload_key_head`] of its bucket and key,
/// then its start (big-endian ms) and id.
pub(crate) fn upload_key_index(bucket: &str, key: &str, initiated_ms: u64, id: &str) -> Vec<u8> {
    let mut out = upload_key_head(bucket, key);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&initiated_ms.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out
}

/// The length-prefixed bucket, then the key with every 0 byte written as 0, 0xFF: no
/// escaped key holds the pair 0, 0, which ends it in [`upload_key_index`], so index keys
/// sort by key first, whatever bytes the keys hold, and the head of a prefix is a byte
/// prefix of the index keys of every key under it.
fn upload_key_head(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bucket.len() + key.len() + 12);
    // Bucket names are at most 63 bytes (checked when buckets are created).
    out.push(bucket.len() as u8);
    out.extend_from_slice(bucket.as_bytes());
    for &byte in key.as_bytes() {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out
}

/// The two indexes of the uploads in progress, changed together with the uploads table.
pub(crate) struct UploadIndexes<'txn> {
    by_time: redb::Table<'txn, &'static [u8], ()>,
    by_key: redb::Table<'txn, &'static [u8], ()>,
}

impl<'txn> UploadIndexes<'txn> {
    /// The live indexes inside `txn`.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, CatalogFault> {
        Self::open_tables(txn, UPLOADS_BY_TIME, UPLOADS_BY_KEY)
    }

    /// The indexes in the given tables of `txn` (a snapshot install fills staging copies).
    pub(crate) fn open_tables(
        txn: &'txn WriteTransaction,
        by_time: TableDefinition<&'static [u8], ()>,
        by_key: TableDefinition<&'static [u8], ()>,
    ) -> Result<Self, CatalogFault> {
        Ok(Self {
            by_time: txn.open_table(by_time)?,
            by_key: txn.open_table(by_key)?,
        })
    }

    /// Indexes upload `id`.
    pub(crate) fn add(&mut self, id: &str, upload: &UploadRecord) -> Result<(), CatalogFault> {
        self.by_time
            .insert(upload_time_key(upload.initiated_ms, id).as_slice(), ())?;
        self.by_key.insert(
            upload_key_index(&upload.bucket, &upload.key, upload.initiated_ms, id).as_slice(),
            (),
        )?;
        Ok(())
    }

    /// Takes upload `id` out of both indexes.
    pub(crate) fn remove(&mut self, id: &str, upload: &UploadRecord) -> Result<(), CatalogFault> {
        self.by_time
            .remove(upload_time_key(upload.initiated_ms, id).as_slice())?;
        self.by_key.remove(
            upload_key_index(&upload.bucket, &upload.key, upload.initiated_ms, id).as_slice(),
        )?;
        Ok(())
    }
}

/// What one page of a listing of uploads in progress asks for (S3's ListMultipartUploads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up at the first occurrence of this after the prefix.
    pub delimiter: Option<String>,
    /// Start after this key (S3's key marker), or after everything under it when it is a
    /// rolled-up prefix.
    pub key_marker: Option<String>,
    /// With a key marker: start after this upload of that key (S3's upload id marker).
    pub upload_id_marker: Option<String>,
    /// Most uploads plus common prefixes to return.
    pub max: usize,
}

/// One entry of a page of uploads in progress, in S3's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEntry {
    /// An upload: its id and record.
    Upload(String, UploadRecord),
    /// Keys rolled up at the delimiter.
    Prefix(String),
}

/// Results of recent [`Command::Once`] requests by request id: `(now_ms, CommandResult)`.
pub(crate) const REQUESTS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("requests");
/// [`REQUESTS`] by age: the leader's clock (big-endian) then the request id, so the oldest
/// are forgotten first without a scan.
pub(crate) const REQUESTS_BY_TIME: TableDefinition<[u8; 24], ()> =
    TableDefinition::new("requests_by_time");

/// The key of a request in [`REQUESTS_BY_TIME`].
pub(crate) fn request_time_key(now_ms: u64, request: &[u8; 16]) -> [u8; 24] {
    time_key(now_ms, request)
}

/// Counter names in [`COUNTERS`].
pub(crate) const OBJECT_COUNT: &str = "objects";
pub(crate) const LOGICAL_BYTES: &str = "logical_bytes";

/// The counter of shards moved for `reason`.
pub(crate) fn moved_shards_counter(reason: MoveReason) -> String {
    format!("moved_shards.{}", reason.as_str())
}

/// The counter of shard bytes moved for `reason`.
pub(crate) fn moved_bytes_counter(reason: MoveReason) -> String {
    format!("moved_bytes.{}", reason.as_str())
}

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

/// The key of a part in [`PARTS`]: the upload id's length, the id, then the part number
/// big-endian, so one upload's parts are contiguous and in number order.
pub fn part_key(upload: &str, number: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + upload.len() + 4);
    // Upload ids are chosen by the leader and short.
    out.push(upload.len().min(255) as u8);
    out.extend_from_slice(upload.as_bytes());
    out.extend_from_slice(&number.to_be_bytes());
    out
}

/// Shard ids by node, as [`Catalog::shard_map`] found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    /// Shards objects and parts refer to.
    pub referenced: std::collections::HashMap<NodeId, std::collections::HashSet<ShardId>>,
    /// Shards queued for deletion.
    pub garbage: std::collections::HashMap<NodeId, std::collections::HashSet<ShardId>>,
}

/// What one page of an object listing asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up at the first occurrence of this after the prefix.
    pub delimiter: Option<String>,
    /// Only keys (or rolled-up prefixes) sorting after this.
    pub after: Option<String>,
    /// Most objects plus common prefixes to return.
    pub max: usize,
}

/// One page of an object listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Objects, in key order.
    pub objects: Vec<(String, ObjectRecord)>,
    /// Rolled-up prefixes, in order.
    pub common_prefixes: Vec<String>,
    /// Whether more entries follow.
    pub truncated: bool,
    /// The last key or prefix returned: where the next page starts after.
    pub last: Option<String>,
}

/// A record as stored: its version byte, then its postcard body (see [`format`]).
pub(crate) fn encode<T: format::Record>(value: &T) -> Result<Vec<u8>, CatalogFault> {
    format::encode_record(value)
}

/// A stored record read back, by its version byte.
pub(crate) fn decode<T: format::Record>(bytes: &[u8]) -> Result<T, CatalogFault> {
    format::decode_record(bytes)
}

/// One read snapshot of the catalog, for reads of one node's placed shards page by page.
pub struct CatalogView {
    txn: ReadTransaction,
}

impl CatalogView {
    /// Up to `max` shards placed on `node` whose ids sort after `after` (from the first when
    /// `None`), in id order, with where each is placed.
    pub fn placed_page(
        &self,
        node: &NodeId,
        after: Option<ShardId>,
        max: usize,
    ) -> Result<Vec<(ShardId, Placement)>, CatalogFault> {
        let table = self.txn.open_table(shard_index::SHARDS_BY_NODE)?;
        let end = shard_index::index_key(node, &ShardId([0xFF; 16]));
        let mut out = Vec::new();
        let mut push = |k: [u8; 48], v: &[u8]| -> Result<(), CatalogFault> {
            out.push((shard_index::split_index_key(&k).1, decode(v)?));
            Ok(())
        };
        match after {
            Some(after) => {
                let start = shard_index::index_key(node, &after);
                for item in table
                    .range((
                        std::ops::Bound::Excluded(start),
                        std::ops::Bound::Included(end),
                    ))?
                    .take(max)
                {
                    let (k, v) = item?;
                    push(k.value(), v.value())?;
                }
            }
            None => {
                let start = shard_index::index_key(node, &ShardId([0; 16]));
                for item in table.range(start..=end)?.take(max) {
                    let (k, v) = item?;
                    push(k.value(), v.value())?;
                }
            }
        }
        Ok(out)
    }

    /// Up to `max` shards placed on `node`, starting at the first whose id is at least
    /// `from` and going on from the node's first shard past its last (a random `from`
    /// gives a random run of the node's shards in O(`max`) reads).
    pub fn placed_from(
        &self,
        node: &NodeId,
        from: ShardId,
        max: usize,
    ) -> Result<Vec<(ShardId, Placement)>, CatalogFault> {
        let table = self.txn.open_table(shard_index::SHARDS_BY_NODE)?;
        let first = shard_index::index_key(node, &ShardId([0; 16]));
        let start = shard_index::index_key(node, &from);
        let end = shard_index::index_key(node, &ShardId([0xFF; 16]));
        let mut out = Vec::new();
        let upper = table.range(start..=end)?;
        let lower = table.range(first..start)?;
        for item in upper.chain(lower).take(max) {
            let (k, v) = item?;
            out.push((
                shard_index::split_index_key(&k.value()).1,
                decode(v.value())?,
            ));
        }
        Ok(out)
    }

    /// Whether the catalog places `shard` on `node`.
    pub fn is_placed(&self, node: &NodeId, shard: &ShardId) -> Result<bool, CatalogFault> {
        let table = self.txn.open_table(shard_index::SHARDS_BY_NODE)?;
        Ok(table.get(shard_index::index_key(node, shard))?.is_some())
    }

    /// Whether `shard` is queued as garbage on `node`.
    pub fn is_garbage_on(&self, node: &NodeId, shard: &ShardId) -> Result<bool, CatalogFault> {
        let table = self.txn.open_table(GARBAGE)?;
        match table.get(shard.0)? {
            Some(v) => Ok(decode::<GarbageShard>(v.value())?.node == *node),
            None => Ok(false),
        }
    }

    /// The shards and bytes placed on `node` in this view.
    pub fn placed_totals(&self, node: &NodeId) -> Result<PlacedTotals, CatalogFault> {
        let table = self.txn.open_table(shard_index::PLACED_BY_NODE)?;
        Ok(table
            .get(*node.as_bytes())?
            .map(|v| {
                let (shards, bytes) = v.value();
                PlacedTotals { shards, bytes }
            })
            .unwrap_or_default())
    }

    /// Shards queued as garbage, on every node.
    pub fn garbage_count(&self) -> Result<u64, CatalogFault> {
        Ok(self.txn.open_table(GARBAGE)?.len()?)
    }

    /// Segments and their shard bytes per shape, (`k`, shards in the segment), in this
    /// view: counters `apply` keeps, one row per erasure width in use.
    pub fn segment_shapes(
        &self,
    ) -> Result<std::collections::BTreeMap<(u16, u16), ShapeTotals>, CatalogFault> {
        shard_index::shapes_of(&self.txn)
    }

    /// [`Catalog::placed_totals_by_node`] in this view.
    pub fn placed_totals_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<NodeId, PlacedTotals>, CatalogFault> {
        placed_totals_by_node(&self.txn)
    }

    /// The record of a part of an upload in progress by its key in the parts table (a
    /// [`Placement`]'s key), with its upload's id and record; `None` if either is gone.
    pub fn part_at(
        &self,
        raw: &[u8],
    ) -> Result<Option<(String, u32, UploadRecord, PartRecord)>, CatalogFault> {
        let Some((id, number)) = split_part_key(raw) else {
            return Ok(None);
        };
        let Some(upload) = self
            .txn
            .open_table(UPLOADS)?
            .get(id)?
            .map(|v| decode::<UploadRecord>(v.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        let Some(v) = self.txn.open_table(PARTS)?.get(raw)? else {
            return Ok(None);
        };
        Ok(Some((id.to_string(), number, upload, decode(v.value())?)))
    }

    /// Up to `max` objects whose keys sort after `after` (from the first when `None`), in
    /// key order, with their raw keys: a bounded step of a pass over every object.
    pub fn objects_after(
        &self,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Vec<(Vec<u8>, ObjectRecord)>, CatalogFault> {
        let table = self.txn.open_table(OBJECTS)?;
        let range = match after {
            Some(after) => table
                .range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
            None => table.range::<&[u8]>(..)?,
        };
        let mut out = Vec::new();
        for item in range.take(max) {
            let (k, v) = item?;
            out.push((k.value().to_vec(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Up to `max` keys of parts whose keys sort after `after` (from the first when
    /// `None`), in key order.
    pub fn part_keys_after(
        &self,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Vec<Vec<u8>>, CatalogFault> {
        let table = self.txn.open_table(PARTS)?;
        let range = match after {
            Some(after) => table
                .range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
            None => table.range::<&[u8]>(..)?,
        };
        let mut out = Vec::new();
        for item in range.take(max) {
            out.push(item?.0.value().to_vec());
        }
        Ok(out)
    }

    /// Where the catalog places `shard` on `node`, if it does.
    pub fn placement(
        &self,
        node: &NodeId,
        shard: &ShardId,
    ) -> Result<Option<Placement>, CatalogFault> {
        let table = self.txn.open_table(shard_index::SHARDS_BY_NODE)?;
        table
            .get(shard_index::index_key(node, shard))?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// A bucket by name, in this view.
    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, CatalogFault> {
        let table = self.txn.open_table(BUCKETS)?;
        table.get(name)?.map(|v| decode(v.value())).transpose()
    }

    /// An object record by its key in the objects table (a [`Placement`]'s key), with its
    /// bucket and key.
    pub fn object_at(
        &self,
        raw: &[u8],
    ) -> Result<Option<(String, String, ObjectRecord)>, CatalogFault> {
        let Some((bucket, key)) = split_object_key(raw) else {
            return Ok(None);
        };
        let table = self.txn.open_table(OBJECTS)?;
        let Some(v) = table.get(raw)? else {
            return Ok(None);
        };
        Ok(Some((
            bucket.to_string(),
            key.to_string(),
            decode(v.value())?,
        )))
    }
}

/// The upload id and part number a [`part_key`] names (`None` if it is not one).
pub fn split_part_key(raw: &[u8]) -> Option<(&str, u32)> {
    let (&len, rest) = raw.split_first()?;
    let (id, number) = rest.split_at_checked(usize::from(len))?;
    Some((
        std::str::from_utf8(id).ok()?,
        u32::from_be_bytes(number.try_into().ok()?),
    ))
}

/// Every row of the per-node placed totals in `txn`.
fn placed_totals_by_node(
    txn: &ReadTransaction,
) -> Result<std::collections::BTreeMap<NodeId, PlacedTotals>, CatalogFault> {
    let table = txn.open_table(shard_index::PLACED_BY_NODE)?;
    let mut out = std::collections::BTreeMap::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let (shards, bytes) = v.value();
        out.insert(
            NodeId::from_bytes(k.value()),
            PlacedTotals { shards, bytes },
        );
    }
    Ok(out)
}

/// The bucket and key an [`object_key`] names (`None` if it is not one).
pub fn split_object_key(raw: &[u8]) -> Option<(&str, &str)> {
    let (&len, rest) = raw.split_first()?;
    let (bucket, key) = rest.split_at_checked(usize::from(len))?;
    Some((
        std::str::from_utf8(bucket).ok()?,
        std::str::from_utf8(key).ok()?,
    ))
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
    /// Wraps an open database, creating any missing table. The database's format is
    /// checked first: a newer one is refused, format 1 is migrated (see [`format`]), and
    /// what an interrupted snapshot install left is dropped.
    pub fn new(db: Arc<Database>) -> Result<Self, CatalogFault> {
        let txn = db.begin_write()?;
        let found = format::check_or_migrate(&txn)?;
        stream::drop_staging(&txn)?;
        // Builds the garbage queue's indexes where missing (format 5 added one).
        create_tables(&txn)?;
        // The shards-by-node index and the shape counters came with formats 3 and 4: a
        // walk of every record, once, only for catalogs from before them.
        if found < 4 {
            shard_index::rebuild(&txn)?;
        }
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

    /// One page of an S3 listing of `bucket`: objects whose keys start with
    /// `query.prefix` and sort after `query.after`, with keys that hold `query.delimiter`
    /// past the prefix rolled up into common prefixes (each counted once against `max`).
    ///
    /// A rolled-up prefix is skipped in one seek, so a listing of `a/` over millions of
    /// keys under `a/x/` costs one step, not millions.
    pub fn list(&self, bucket: &str, query: &ListQuery) -> Result<Listing, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS)?;
        let head = object_key(bucket, "");
        let prefix = query.prefix.as_str();
        let delimiter = query.delimiter.as_deref().filter(|d| !d.is_empty());
        // Where to start: strictly after `after` (and after everything under it when it
        // is itself a rolled-up prefix), but never before the prefix.
        let mut start = object_key(bucket, prefix);
        if let Some(after) = query.after.as_deref().filter(|a| *a >= prefix) {
            start = object_key(bucket, after);
            let rolled = delimiter
                .is_some_and(|d| after.starts_with(prefix) && after[prefix.len()..].ends_with(d));
            start.push(if rolled { 0xFF } else { 0 });
        }
        let mut listing = Listing::default();
        let mut count = 0;
        'seek: loop {
            for item in table.range(start.as_slice()..)? {
                let (k, v) = item?;
                let Some(name) = k.value().strip_prefix(head.as_slice()) else {
                    break 'seek;
                };
                let name = std::str::from_utf8(name)
                    .map_err(|_| CatalogFault("object key is not UTF-8".into()))?;
                if !name.starts_with(prefix) {
                    break 'seek;
                }
                if count == query.max {
                    listing.truncated = true;
                    break 'seek;
                }
                count += 1;
                let rest = &name[prefix.len()..];
                if let Some(at) = delimiter.and_then(|d| rest.find(d).map(|at| at + d.len())) {
                    let rolled = &name[..prefix.len() + at];
                    listing.common_prefixes.push(rolled.to_string());
                    listing.last = Some(rolled.to_string());
                    // No valid UTF-8 key holds the byte 0xFF, so this sorts after every
                    // key under the rolled-up prefix.
                    start = object_key(bucket, rolled);
                    start.push(0xFF);
                    continue 'seek;
                }
                listing.last = Some(name.to_string());
                listing.objects.push((name.to_string(), decode(v.value())?));
            }
            break;
        }
        Ok(listing)
    }

    /// Up to `max` uploads begun before `before_ms`, oldest first.
    pub fn stale_uploads(&self, before_ms: u64, max: usize) -> Result<Vec<String>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(UPLOADS_BY_TIME)?;
        let end = before_ms.to_be_bytes();
        let mut out = Vec::new();
        for item in table.range(..end.as_slice())?.take(max) {
            let key = item?.0.value().to_vec();
            let id = std::str::from_utf8(&key[8..])
                .map_err(|_| CatalogFault("upload id is not UTF-8".into()))?;
            out.push(id.to_string());
        }
        Ok(out)
    }

    /// A registered gateway by key.
    pub fn gateway(&self, key: &NodeId) -> Result<Option<GatewayRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(GATEWAYS)?;
        table
            .get(*key.as_bytes())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Every registered gateway.
    pub fn gateways(&self) -> Result<Vec<GatewayRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(GATEWAYS)?;
        table.iter()?.map(|item| decode(item?.1.value())).collect()
    }

    /// What a [`Command::Once`] with `request` answered when it was applied, if it was
    /// and is still remembered (see [`REQUEST_MEMORY_MS`]).
    pub fn remembered(&self, request: &RequestId) -> Result<Option<CommandResult>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(REQUESTS)?;
        table
            .get(request.0)?
            .map(|v| decode::<(u64, CommandResult)>(v.value()).map(|(_, result)| result))
            .transpose()
    }

    /// A multipart upload in progress, by id.
    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(UPLOADS)?;
        table.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// One page of the uploads in progress in `bucket`, as `query` asks, and whether more
    /// follow: one range read of the by-key index from the marker on, however many
    /// uploads the cluster holds; a rolled-up prefix is skipped in one seek.
    pub fn uploads(
        &self,
        bucket: &str,
        query: &UploadQuery,
    ) -> Result<(Vec<UploadEntry>, bool), CatalogFault> {
        let txn = self.read()?;
        let index = txn.open_table(UPLOADS_BY_KEY)?;
        let uploads = txn.open_table(UPLOADS)?;
        let prefix = query.prefix.as_str();
        let delimiter = query.delimiter.as_deref().filter(|d| !d.is_empty());
        let head = upload_key_head(bucket, "");
        let under = upload_key_head(bucket, prefix);
        let mut start = under.clone();
        if let Some(marker) = query.key_marker.as_deref().filter(|m| *m >= prefix) {
            let rolled = delimiter
                .is_some_and(|d| marker.starts_with(prefix) && marker[prefix.len()..].ends_with(d));
            start = upload_key_head(bucket, marker);
            let resume = query
                .upload_id_marker
                .as_deref()
                .filter(|_| !rolled)
                .map(|id| -> Result<_, CatalogFault> {
                    let found = uploads.get(id)?.map(|v| decode::<UploadRecord>(v.value()));
                    Ok(match found.transpose()? {
                        Some(u) if u.bucket == bucket && u.key == marker => {
                            Some(upload_key_index(bucket, marker, u.initiated_ms, id))
                        }
                        _ => None,
                    })
                })
                .transpose()?
                .flatten();
            match resume {
                // Just after that upload of the key (the range below starts inclusive).
                Some(mut at) => {
                    at.push(0);
                    start = at;
                }
                // After everything under the rolled-up prefix: no key holds 0xFF.
                None if rolled => start.push(0xFF),
                // After every upload of the key (an upload marker naming no upload of it
                // is taken as the end of the key), before any longer key.
                None => start.extend_from_slice(&[0, 1]),
            }
        }
        let mut entries = Vec::new();
        let mut truncated = false;
        'seek: loop {
            for item in index.range(start.as_slice()..)? {
                let raw = item?.0.value().to_vec();
                if !raw.starts_with(&under) {
                    break 'seek;
                }
                let (key, id) = split_upload_key_index(&raw[head.len()..])
                    .ok_or_else(|| CatalogFault("malformed uploads_by_key entry".into()))?;
                if entries.len() == query.max {
                    truncated = true;
                    break 'seek;
                }
                let rest = &key[prefix.len()..];
                if let Some(at) = delimiter.and_then(|d| rest.find(d).map(|at| at + d.len())) {
                    let rolled = key[..prefix.len() + at].to_string();
                    start = upload_key_head(bucket, &rolled);
                    start.push(0xFF);
                    entries.push(UploadEntry::Prefix(rolled));
                    continue 'seek;
                }
                let record = uploads
                    .get(id.as_str())?
                    .map(|v| decode::<UploadRecord>(v.value()))
                    .transpose()?
                    .ok_or_else(|| CatalogFault(format!("indexed upload {id} has no record")))?;
                entries.push(UploadEntry::Upload(id, record));
            }
            break;
        }
        Ok((entries, truncated))
    }

    /// Checks the uploads' indexes (by time, by key) against the uploads table; the
    /// difference, if any, as text. Reads every upload: for tests and tools.
    pub fn check_upload_index(&self) -> Result<Result<(), String>, CatalogFault> {
        let txn = self.read()?;
        let mut by_time = std::collections::BTreeSet::new();
        let mut by_key = std::collections::BTreeSet::new();
        for item in txn.open_table(UPLOADS)?.iter()? {
            let (k, v) = item?;
            let upload: UploadRecord = decode(v.value())?;
            by_time.insert(upload_time_key(upload.initiated_ms, k.value()));
            by_key.insert(upload_key_index(
                &upload.bucket,
                &upload.key,
                upload.initiated_ms,
                k.value(),
            ));
        }
        let mut indexed_time = std::collections::BTreeSet::new();
        for item in txn.open_table(UPLOADS_BY_TIME)?.iter()? {
            indexed_time.insert(item?.0.value().to_vec());
        }
        let mut indexed_key = std::collections::BTreeSet::new();
        for item in txn.open_table(UPLOADS_BY_KEY)?.iter()? {
            indexed_key.insert(item?.0.value().to_vec());
        }
        if by_time != indexed_time {
            return Ok(Err(format!(
                "the time index holds {} entries for {} uploads, or other ones",
                indexed_time.len(),
                by_time.len()
            )));
        }
        if by_key != indexed_key {
            return Ok(Err(format!(
                "the key index holds {} entries for {} uploads, or other ones",
                indexed_key.len(),
                by_key.len()
            )));
        }
        Ok(Ok(()))
    }

    /// The ids of the uploads in progress in `bucket`, at most `max`: one range read of
    /// the by-key index.
    pub fn upload_ids_in(&self, bucket: &str, max: usize) -> Result<Vec<String>, CatalogFault> {
        let txn = self.read()?;
        upload_ids_in(&txn.open_table(UPLOADS_BY_KEY)?, bucket, max)
    }

    /// Parts of an upload numbered above `after`, ascending, at most `max`.
    pub fn parts(
        &self,
        upload: &str,
        after: u32,
        max: usize,
    ) -> Result<Vec<(u32, PartRecord)>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(PARTS)?;
        let from = part_key(upload, after.saturating_add(1));
        let to = part_key(upload, u32::MAX);
        let mut out = Vec::new();
        for item in table.range(from.as_slice()..=to.as_slice())?.take(max) {
            let (k, v) = item?;
            let key = k.value();
            let mut number = [0u8; 4];
            number.copy_from_slice(&key[key.len() - 4..]);
            out.push((u32::from_be_bytes(number), decode(v.value())?));
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

    /// An invitation by the hash of its secret.
    pub fn invite(&self, secret_hash: &[u8; 32]) -> Result<Option<Invite>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(INVITES)?;
        table
            .get(*secret_hash)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        table.iter()?.map(|item| decode(item?.1.value())).collect()
    }

    /// Whether any shard queued as garbage is on `node` (deletion still has to reach it):
    /// one range read of the queue's node index.
    pub fn holds_garbage(&self, node: &NodeId) -> Result<bool, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(GARBAGE_BY_NODE)?;
        let first = garbage_node_key(node, &[0; 16]);
        let last = garbage_node_key(node, &[0xff; 16]);
        Ok(table.range(first..=last)?.next().transpose()?.is_some())
    }

    /// Checks the garbage queue's indexes (by time, by node) against the queue itself;
    /// the difference, if any, as text. Reads the whole queue: for tests and tools.
    pub fn check_garbage_index(&self) -> Result<Result<(), String>, CatalogFault> {
        let txn = self.read()?;
        let mut due = std::collections::BTreeSet::new();
        let mut by_node = std::collections::BTreeSet::new();
        for item in txn.open_table(GARBAGE)?.iter()? {
            let (k, v) = item?;
            let entry: GarbageShard = decode(v.value())?;
            due.insert(time_key(entry.since_ms, &k.value()));
            by_node.insert(garbage_node_key(&entry.node, &k.value()));
        }
        let mut indexed_due = std::collections::BTreeSet::new();
        for item in txn.open_table(GARBAGE_DUE)?.iter()? {
            indexed_due.insert(item?.0.value());
        }
        let mut indexed_by_node = std::collections::BTreeSet::new();
        for item in txn.open_table(GARBAGE_BY_NODE)?.iter()? {
            indexed_by_node.insert(item?.0.value());
        }
        if due != indexed_due {
            return Ok(Err(format!(
                "the time index holds {} entries for {} queued shards, or other ones",
                indexed_due.len(),
                due.len()
            )));
        }
        if by_node != indexed_by_node {
            return Ok(Err(format!(
                "the node index holds {} entries for {} queued shards, or other ones",
                indexed_by_node.len(),
                by_node.len()
            )));
        }
        Ok(Ok(()))
    }

    /// Shards waiting in the garbage queue.
    pub fn garbage_count(&self) -> Result<u64, CatalogFault> {
        let txn = self.read()?;
        Ok(txn.open_table(GARBAGE)?.len()?)
    }

    /// Up to `max` queued shards whose entries are at least as old as `cutoff_ms`, oldest
    /// first: one range read of the queue's time index, however long the queue.
    pub fn due_garbage(
        &self,
        cutoff_ms: u64,
        max: usize,
    ) -> Result<Vec<(ShardId, GarbageShard)>, CatalogFault> {
        let txn = self.read()?;
        let due = txn.open_table(GARBAGE_DUE)?;
        let shards = txn.open_table(GARBAGE)?;
        let end = time_key(cutoff_ms.saturating_add(1), &[0; 16]);
        let mut out = Vec::new();
        for item in due.range(..end)?.take(max) {
            let key = item?.0.value();
            let mut id = [0u8; 16];
            id.copy_from_slice(&key[8..]);
            if let Some(entry) = shards.get(id)? {
                out.push((ShardId(id), decode(entry.value())?));
            }
        }
        Ok(out)
    }

    /// A shard's entry in the garbage queue, if it is queued.
    pub fn garbage_shard(&self, shard: &ShardId) -> Result<Option<GarbageShard>, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(GARBAGE)?;
        table.get(shard.0)?.map(|v| decode(v.value())).transpose()
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

    /// Every shard the catalog refers to (objects, parts of uploads in progress) and every
    /// shard queued as garbage, by node, in one snapshot: what a node's inventory is
    /// checked against.
    pub fn shard_map(&self) -> Result<ShardMap, CatalogFault> {
        let txn = self.read()?;
        let mut map = ShardMap::default();
        for item in txn.open_table(OBJECTS)?.iter()? {
            let record: ObjectRecord = decode(item?.1.value())?;
            for shard in record.body.shards() {
                map.referenced
                    .entry(shard.node)
                    .or_default()
                    .insert(shard.id);
            }
        }
        for item in txn.open_table(PARTS)?.iter()? {
            let part: PartRecord = decode(item?.1.value())?;
            for shard in part.segments.iter().flat_map(|s| s.shards.iter()) {
                map.referenced
                    .entry(shard.node)
                    .or_default()
                    .insert(shard.id);
            }
        }
        for item in txn.open_table(GARBAGE)?.iter()? {
            let (k, v) = item?;
            let entry: GarbageShard = decode(v.value())?;
            map.garbage
                .entry(entry.node)
                .or_default()
                .insert(ShardId(k.value()));
        }
        Ok(map)
    }

    /// Shards and shard bytes moved so far for `reason` (repair, drain, rebalance), as
    /// committed.
    pub fn moved(&self, reason: MoveReason) -> Result<(u64, u64), CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(COUNTERS)?;
        let get = |name: String| -> Result<u64, CatalogFault> {
            Ok(table.get(name.as_str())?.map(|v| v.value()).unwrap_or(0))
        };
        Ok((
            get(moved_shards_counter(reason))?,
            get(moved_bytes_counter(reason))?,
        ))
    }

    /// Calls `visit` with every object (bucket, key, record) in one consistent snapshot, in
    /// bucket and key order; stops early if `visit` returns `false`. For the leader's
    /// durability survey, which must see every segment.
    pub fn for_each_object(
        &self,
        mut visit: impl FnMut(&str, &str, &ObjectRecord) -> bool,
    ) -> Result<(), CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS)?;
        for item in table.iter()? {
            let (k, v) = item?;
            let raw = k.value();
            let Some((&len, rest)) = raw.split_first() else {
                continue;
            };
            let Some((bucket, key)) = rest.split_at_checked(usize::from(len)) else {
                continue;
            };
            let (Ok(bucket), Ok(key)) = (std::str::from_utf8(bucket), std::str::from_utf8(key))
            else {
                continue;
            };
            let record: ObjectRecord = decode(v.value())?;
            if !visit(bucket, key, &record) {
                break;
            }
        }
        Ok(())
    }

    /// Calls `visit` with every stored part of every multipart upload in progress (the
    /// upload's id and record, the part's number and record), in one snapshot.
    pub fn for_each_part(
        &self,
        mut visit: impl FnMut(&str, &UploadRecord, u32, &PartRecord),
    ) -> Result<(), CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(PARTS)?;
        let uploads = txn.open_table(UPLOADS)?;
        // Parts are keyed by upload, so each upload's record is read once.
        let mut current: Option<(String, Option<UploadRecord>)> = None;
        for item in table.iter()? {
            let (k, v) = item?;
            let raw = k.value();
            let Some((&len, rest)) = raw.split_first() else {
                continue;
            };
            let Some((id, number)) = rest.split_at_checked(usize::from(len)) else {
                continue;
            };
            let (Ok(id), Ok(number)) = (std::str::from_utf8(id), <[u8; 4]>::try_from(number))
            else {
                continue;
            };
            if current.as_ref().is_none_or(|(seen, _)| seen != id) {
                let record = uploads
                    .get(id)?
                    .map(|v| decode::<UploadRecord>(v.value()))
                    .transpose()?;
                current = Some((id.to_string(), record));
            }
            // A part whose upload is gone is garbage being collected, not data.
            if let Some((_, Some(upload))) = &current {
                visit(id, upload, u32::from_be_bytes(number), &decode(v.value())?);
            }
        }
        Ok(())
    }

    /// The shards and shard bytes the catalog places on `node` (objects and parts of
    /// uploads in progress): one read of the per-node totals.
    pub fn placed_totals(&self, node: &NodeId) -> Result<PlacedTotals, CatalogFault> {
        let txn = self.read()?;
        let table = txn.open_table(shard_index::PLACED_BY_NODE)?;
        Ok(table
            .get(*node.as_bytes())?
            .map(|v| {
                let (shards, bytes) = v.value();
                PlacedTotals { shards, bytes }
            })
            .unwrap_or_default())
    }

    /// [`Catalog::placed_totals`] of every node that has shards placed on it.
    pub fn placed_totals_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<NodeId, PlacedTotals>, CatalogFault> {
        placed_totals_by_node(&self.read()?)
    }

    /// Segments and their shard bytes per shape (`k`, shards in the segment): counters
    /// `apply` keeps with every change, so the durability totals need no walk.
    pub fn segment_shapes(
        &self,
    ) -> Result<std::collections::BTreeMap<(u16, u16), ShapeTotals>, CatalogFault> {
        shard_index::shapes_of(&self.read()?)
    }

    /// A consistent read-only view of the catalog as it is now, for comparisons that must
    /// read the same state more than once (an inventory checked against the catalog before
    /// and after it was taken).
    pub fn view(&self) -> Result<CatalogView, CatalogFault> {
        Ok(CatalogView { txn: self.read()? })
    }

    /// Checks the shards-by-node index and its totals against a full walk of every object
    /// and part, in one snapshot; the difference, if any, as text.
    pub fn check_shard_index(&self) -> Result<Result<(), String>, CatalogFault> {
        let txn = self.read()?;
        let (walked, named) = shard_index::walk(&txn)?;
        let indexed = shard_index::indexed(&txn)?;
        let stale = shard_index::stale_locators(&txn, &named)?;
        if !stale.is_empty() {
            return Ok(Err(format!(
                "index entries name the wrong record: {stale:?}"
            )));
        }
        if walked == indexed {
            return Ok(Ok(()));
        }
        Ok(Err(format!(
            "index differs from the records: walked {walked:?}, indexed {indexed:?}"
        )))
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
    txn.open_table(GATEWAYS)?;
    txn.open_table(UPLOADS)?;
    txn.open_table(PARTS)?;
    txn.open_table(REQUESTS)?;
    txn.open_table(REQUESTS_BY_TIME)?;
    txn.open_table(shard_index::SHARDS_BY_NODE)?;
    txn.open_table(shard_index::PLACED_BY_NODE)?;
    txn.open_table(shard_index::SEGMENT_SHAPES)?;
    index_garbage(txn)?;
    index_uploads(txn)?;
    Ok(())
}

/// Builds the uploads' indexes by time and by key where they are missing (a catalog
/// written before them): once, at open, in proportion to the uploads in progress.
/// Format 5 brought the key index, so no release that leaves it unkept writes a catalog
/// that has it.
fn index_uploads(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    let mut by_time = txn.open_table(UPLOADS_BY_TIME)?;
    let mut by_key = txn.open_table(UPLOADS_BY_KEY)?;
    let uploads = txn.open_table(UPLOADS)?;
    let (no_time, no_key) = (by_time.is_empty()?, by_key.is_empty()?);
    if !(no_time || no_key) || uploads.is_empty()? {
        return Ok(());
    }
    for item in uploads.iter()? {
        let (k, v) = item?;
        let upload: UploadRecord = decode(v.value())?;
        if no_time {
            by_time.insert(
                upload_time_key(upload.initiated_ms, k.value()).as_slice(),
                (),
            )?;
        }
        if no_key {
            by_key.insert(
                upload_key_index(&upload.bucket, &upload.key, upload.initiated_ms, k.value())
                    .as_slice(),
                (),
            )?;
        }
    }
    Ok(())
}

/// The key and upload id an [`UPLOADS_BY_KEY`] entry names, from the escaped key on (the
/// bucket's head already taken off).
fn split_upload_key_index(raw: &[u8]) -> Option<(String, String)> {
    let mut key = Vec::new();
    let mut at = 0;
    loop {
        match (raw.get(at)?, raw.get(at + 1)) {
            (0, Some(0)) => break,
            (0, Some(0xFF)) => {
                key.push(0);
                at += 2;
            }
            (0, _) => return None,
            (&byte, _) => {
                key.push(byte);
                at += 1;
            }
        }
    }
    // Past the end marker and the start time.
    let id = raw.get(at + 2 + 8..)?;
    Some((
        String::from_utf8(key).ok()?,
        std::str::from_utf8(id).ok()?.to_string(),
    ))
}

/// [`Catalog::upload_ids_in`] inside a transaction's index table.
pub(crate) fn upload_ids_in(
    index: &impl ReadableTable<&'static [u8], ()>,
    bucket: &str,
    max: usize,
) -> Result<Vec<String>, CatalogFault> {
    let head = upload_key_head(bucket, "");
    let mut ids = Vec::new();
    for item in index.range(head.as_slice()..)? {
        let raw = item?.0.value().to_vec();
        if !raw.starts_with(&head) || ids.len() == max {
            break;
        }
        let (_, id) = split_upload_key_index(&raw[head.len()..])
            .ok_or_else(|| CatalogFault("malformed uploads_by_key entry".into()))?;
        ids.push(id);
    }
    Ok(ids)
}

/// Builds the garbage queue's indexes by time and by node where they are missing (a
/// catalog written before them): once, at open, in proportion to the queue. Format 5
/// brought the node index, so no release that leaves it unkept writes a catalog that has
/// it.
fn index_garbage(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    let mut due = txn.open_table(GARBAGE_DUE)?;
    let mut by_node = txn.open_table(GARBAGE_BY_NODE)?;
    let shards = txn.open_table(GARBAGE)?;
    let (no_due, no_by_node) = (due.is_empty()?, by_node.is_empty()?);
    if !(no_due || no_by_node) || shards.is_empty()? {
        return Ok(());
    }
    for item in shards.iter()? {
        let (k, v) = item?;
        let entry: GarbageShard = decode(v.value())?;
        if no_due {
            due.insert(time_key(entry.since_ms, &k.value()), ())?;
        }
        if no_by_node {
            by_node.insert(garbage_node_key(&entry.node, &k.value()), ())?;
        }
    }
    Ok(())
}

/// Every catalog row in memory: stored records (version byte and body) per table.
///
/// Snapshots and backups stream the same rows instead ([`stream`]); a dump is for small
/// catalogs: tests, reading back a backup to check it, and backups of versions 1 and 2,
/// which were a dump.
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
    /// `GATEWAYS` rows.
    pub gateways: Vec<([u8; 32], Vec<u8>)>,
    /// `UPLOADS` rows.
    pub uploads: Vec<(String, Vec<u8>)>,
    /// `PARTS` rows.
    pub parts: Vec<(Vec<u8>, Vec<u8>)>,
    /// `REQUESTS` rows (their by-time index is rebuilt from them on import): every member
    /// must remember the same requests, or a retry would be applied on some and not others.
    pub requests: Vec<([u8; 16], Vec<u8>)>,
}

/// Copies every catalog row out of a read transaction into memory.
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
    for item in txn.open_table(GATEWAYS)?.iter()? {
        let (k, v) = item?;
        dump.gateways.push((k.value(), v.value().to_vec()));
    }
    for item in txn.open_table(UPLOADS)?.iter()? {
        let (k, v) = item?;
        dump.uploads
            .push((k.value().to_string(), v.value().to_vec()));
    }
    for item in txn.open_table(PARTS)?.iter()? {
        let (k, v) = item?;
        dump.parts.push((k.value().to_vec(), v.value().to_vec()));
    }
    for item in txn.open_table(REQUESTS)?.iter()? {
        let (k, v) = item?;
        dump.requests.push((k.value(), v.value().to_vec()));
    }
    Ok(dump)
}

/// Replaces every catalog row with `dump`'s inside `txn` (in one transaction, so in
/// memory: [`stream::import_dump`] does the same in bounded batches).
pub fn import(txn: &WriteTransaction, dump: &CatalogDump) -> Result<(), CatalogFault> {
    txn.delete_table(BUCKETS)?;
    txn.delete_table(OBJECTS)?;
    txn.delete_table(ACCESS_KEYS)?;
    txn.delete_table(NODES)?;
    txn.delete_table(GARBAGE)?;
    txn.delete_table(GARBAGE_DUE)?;
    txn.delete_table(GARBAGE_BY_NODE)?;
    txn.delete_table(COUNTERS)?;
    txn.delete_table(INVITES)?;
    txn.delete_table(GATEWAYS)?;
    txn.delete_table(UPLOADS)?;
    txn.delete_table(UPLOADS_BY_TIME)?;
    txn.delete_table(UPLOADS_BY_KEY)?;
    txn.delete_table(PARTS)?;
    txn.delete_table(REQUESTS)?;
    txn.delete_table(REQUESTS_BY_TIME)?;
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
    let mut garbage = GarbageQueue::open(txn)?;
    for (k, v) in &dump.garbage {
        garbage.queue(ShardId(*k), &decode(v)?)?;
    }
    let mut counters = txn.open_table(COUNTERS)?;
    for (k, v) in &dump.counters {
        counters.insert(k.as_str(), *v)?;
    }
    let mut invites = txn.open_table(INVITES)?;
    for (k, v) in &dump.invites {
        invites.insert(*k, v.as_slice())?;
    }
    let mut gateways = txn.open_table(GATEWAYS)?;
    for (k, v) in &dump.gateways {
        gateways.insert(*k, v.as_slice())?;
    }
    let mut uploads = txn.open_table(UPLOADS)?;
    let mut upload_indexes = UploadIndexes::open(txn)?;
    for (k, v) in &dump.uploads {
        uploads.insert(k.as_str(), v.as_slice())?;
        upload_indexes.add(k, &decode(v)?)?;
    }
    drop(upload_indexes);
    let mut parts = txn.open_table(PARTS)?;
    for (k, v) in &dump.parts {
        parts.insert(k.as_slice(), v.as_slice())?;
    }
    let mut requests = txn.open_table(REQUESTS)?;
    let mut by_time = txn.open_table(REQUESTS_BY_TIME)?;
    for (k, v) in &dump.requests {
        let (now_ms, _): (u64, CommandResult) = decode(v)?;
        requests.insert(*k, v.as_slice())?;
        by_time.insert(request_time_key(now_ms, k), ())?;
    }
    drop((objects, parts, uploads));
    shard_index::rebuild(txn)
}

/// First bytes of a backup file; the version is in the text. Version 3 names the
/// coordinator key the catalog needs (32 bytes after the magic), because the segment mask
/// key derives from it: a catalog restored under another key can unmask nothing. Then
/// comes the catalog as a chunked stream ([`stream`]) of format-2 records.
pub const BACKUP_MAGIC: &[u8] = b"cairn-catalog-backup-3\n";
/// Version 2 backups: the key, then the whole dump of format-1 records.
const BACKUP_MAGIC_V2: &[u8] = b"cairn-catalog-backup-2\n";
/// Version 1 backups: the dump without the request memory, and no key named.
const BACKUP_MAGIC_V1: &[u8] = b"cairn-catalog-backup-1\n";

/// A backup as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The coordinator key the catalog was made under (`None` in version-1 backups, which
    /// did not say).
    pub coordinator: Option<cairn_proto::identity::PublicKey>,
    /// The catalog's rows, as this release stores them.
    pub dump: CatalogDump,
}

/// Writes a consistent backup of the whole catalog (one read transaction, so one point in
/// time) to `out`, naming `coordinator`, the key of the group it comes from. Streamed: it
/// holds one chunk of rows at a time.
pub fn write_backup<W: std::io::Write>(
    catalog: &Catalog,
    coordinator: &cairn_proto::identity::PublicKey,
    mut out: W,
) -> Result<stream::StreamSummary, CatalogFault> {
    let txn = catalog.read()?;
    out.write_all(BACKUP_MAGIC)
        .and_then(|()| out.write_all(coordinator.as_bytes()))
        .map_err(|err| CatalogFault(format!("writing the backup: {err}")))?;
    let mut writer = stream::StreamWriter::new(out, stream::DEFAULT_CHUNK_BYTES);
    stream::write_catalog(&txn, &mut writer)?;
    Ok(writer.finish()?.1)
}

/// A consistent backup of the whole catalog in memory (see [`write_backup`]).
pub fn backup(
    catalog: &Catalog,
    coordinator: &cairn_proto::identity::PublicKey,
) -> Result<Vec<u8>, CatalogFault> {
    let mut out = Vec::new();
    write_backup(catalog, coordinator, &mut out)?;
    Ok(out)
}

/// Reads a whole backup made by [`backup`] (or by a release of version 1 or 2) into
/// memory, records upgraded to this release's format.
pub fn read_backup(bytes: &[u8]) -> Result<Backup, CatalogFault> {
    let mut input = bytes;
    let (coordinator, body) = read_backup_header(&mut input)?;
    let dump = match body {
        BackupBody::Stream => {
            let mut reader = stream::StreamReader::new(&mut input);
            let dump = stream::read_dump(&mut reader)?;
            if !input.is_empty() {
                return Err(CatalogFault(format!(
                    "{} unexpected bytes after the backup",
                    input.len()
                )));
            }
            dump
        }
        BackupBody::V1 => upgrade_dump(whole::<DumpV1>(input)?.into()),
        BackupBody::V2 => upgrade_dump(whole(input)?),
    };
    Ok(Backup { coordinator, dump })
}

/// What follows a backup's header.
enum BackupBody {
    /// A version-1 dump.
    V1,
    /// A version-2 dump.
    V2,
    /// A version-3 stream.
    Stream,
}

/// Reads a backup's magic and key, leaving `input` at the body.
fn read_backup_header(
    input: &mut impl std::io::Read,
) -> Result<(Option<cairn_proto::identity::PublicKey>, BackupBody), CatalogFault> {
    let mut magic = [0u8; 23];
    input
        .read_exact(&mut magic)
        .map_err(|_| CatalogFault("not a Cairn catalog backup (too short)".into()))?;
    let body = match &magic[..] {
        m if m == BACKUP_MAGIC_V1 => return Ok((None, BackupBody::V1)),
        m if m == BACKUP_MAGIC_V2 => BackupBody::V2,
        m if m == BACKUP_MAGIC => BackupBody::Stream,
        _ => {
            return Err(CatalogFault(
                "not a Cairn catalog backup (wrong header)".into(),
            ));
        }
    };
    let mut key = [0u8; 32];
    input
        .read_exact(&mut key)
        .map_err(|_| CatalogFault("backup truncated before its coordinator key".into()))?;
    Ok((
        Some(cairn_proto::identity::PublicKey::from_bytes(key)),
        body,
    ))
}

/// The coordinator key a backup file names (`None` for version 1), reading only its
/// header.
pub fn backup_file_key(
    path: &std::path::Path,
) -> Result<Option<cairn_proto::identity::PublicKey>, CatalogFault> {
    let mut file = std::fs::File::open(path)
        .map_err(|err| CatalogFault(format!("cannot read {}: {err}", path.display())))?;
    Ok(read_backup_header(&mut file)?.0)
}

/// Replaces the catalog in `db` with the backup file at `path`: a version-3 backup is
/// streamed in bounded batches; older ones (a dump, limited in size by what they could
/// hold) are read whole and upgraded.
pub fn restore_backup_file(db: &Database, path: &std::path::Path) -> Result<(), CatalogFault> {
    let file = std::fs::File::open(path)
        .map_err(|err| CatalogFault(format!("cannot read {}: {err}", path.display())))?;
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let (_, body) = read_backup_header(&mut input)?;
    match body {
        BackupBody::Stream => {
            let mut reader = stream::StreamReader::new(&mut input);
            stream::import_stream(db, &mut reader, |_| Ok(()))?;
            let mut rest = [0u8; 1];
            if std::io::Read::read(&mut input, &mut rest)
                .map_err(|err| CatalogFault(err.to_string()))?
                != 0
            {
                return Err(CatalogFault("unexpected bytes after the backup".into()));
            }
            Ok(())
        }
        BackupBody::V1 | BackupBody::V2 => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut input, &mut bytes)
                .map_err(|err| CatalogFault(err.to_string()))?;
            let dump = match body {
                BackupBody::V1 => whole::<DumpV1>(&bytes)?.into(),
                _ => whole(&bytes)?,
            };
            stream::import_dump(db, &upgrade_dump(dump), |_| Ok(()))
        }
    }
}

/// A dump of format-1 records (backups of versions 1 and 2, format-1 snapshots) with
/// every record upgraded to this release's format.
pub fn upgrade_dump(mut dump: CatalogDump) -> CatalogDump {
    fn up<K>(rows: &mut [(K, Vec<u8>)]) {
        for (_, v) in rows {
            *v = format::upgrade_record(v);
        }
    }
    up(&mut dump.buckets);
    up(&mut dump.objects);
    up(&mut dump.access_keys);
    up(&mut dump.nodes);
    up(&mut dump.garbage);
    up(&mut dump.invites);
    up(&mut dump.gateways);
    up(&mut dump.uploads);
    up(&mut dump.parts);
    up(&mut dump.requests);
    dump
}
/// Decodes `body` as one `T` with nothing after it.
fn whole<T: DeserializeOwned>(body: &[u8]) -> Result<T, CatalogFault> {
    let (value, rest) = postcard::take_from_bytes::<T>(body)?;
    if !rest.is_empty() {
        return Err(CatalogFault(format!(
            "{} unexpected bytes after the backup",
            rest.len()
        )));
    }
    Ok(value)
}

/// [`CatalogDump`] as version-1 backups wrote it.
#[derive(Deserialize)]
struct DumpV1 {
    buckets: Vec<(String, Vec<u8>)>,
    objects: Vec<(Vec<u8>, Vec<u8>)>,
    access_keys: Vec<(String, Vec<u8>)>,
    nodes: Vec<([u8; 32], Vec<u8>)>,
    garbage: Vec<([u8; 16], Vec<u8>)>,
    counters: Vec<(String, u64)>,
    invites: Vec<([u8; 32], Vec<u8>)>,
    gateways: Vec<([u8; 32], Vec<u8>)>,
    uploads: Vec<(String, Vec<u8>)>,
    parts: Vec<(Vec<u8>, Vec<u8>)>,
}

impl From<DumpV1> for CatalogDump {
    fn from(v1: DumpV1) -> Self {
        CatalogDump {
            buckets: v1.buckets,
            objects: v1.objects,
            access_keys: v1.access_keys,
            nodes: v1.nodes,
            garbage: v1.garbage,
            counters: v1.counters,
            invites: v1.invites,
            gateways: v1.gateways,
            uploads: v1.uploads,
            parts: v1.parts,
            requests: Vec::new(),
        }
    }
}
