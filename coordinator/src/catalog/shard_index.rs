//! The shards-by-node index: every shard an object or a part of an upload in progress
//! places, keyed by its node then its id, with per-node totals.
//!
//! The background loops read one node's shards (audit sampling, inventories, rebalancing,
//! `placed_on`) from a range of this table instead of walking every record. `apply` keeps
//! it in the same write transaction as every change of an `OBJECTS` or `PARTS` row, so it
//! never disagrees with them; it is derived, never carried in a snapshot or backup: the
//! importer builds it from the rows it installs, and a catalog of an older format builds
//! it once at open.
//!
//! A (node, shard id) pair named by two records (a retried commit of the same shards
//! under another key) is one entry listing both places, so removing one record never
//! unindexes a shard another still names: GC's rule that a referenced shard is never
//! deleted holds on the index as it did on the records.

use std::collections::BTreeMap;

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::model::{
    ErasureProfile, ObjectBody, ObjectRecord, PartRecord, SegmentRecord, UploadRecord,
};
use super::{CatalogFault, OBJECTS, PARTS, UPLOADS, decode, encode};

/// Placed shards by [`index_key`]: node (32 bytes) then shard id (16 bytes), so one node's
/// shards are one contiguous range, in shard id order.
pub(crate) const SHARDS_BY_NODE: TableDefinition<[u8; 48], &[u8]> =
    TableDefinition::new("shards_by_node");

/// Per node: (placed shards, placed shard bytes), as [`SHARDS_BY_NODE`] holds them.
pub(crate) const PLACED_BY_NODE: TableDefinition<[u8; 32], (u64, u64)> =
    TableDefinition::new("placed_by_node");

/// Segments by shape, (data shards `k`, shards in the segment): (segments, bytes of all
/// their shards). Every segment an object or a part of an upload in progress holds counts
/// once per record naming it, as the durability survey counts it; a segment whose code is
/// impossible is not counted (the survey skips it).
pub(crate) const SEGMENT_SHAPES: TableDefinition<(u16, u16), (u64, u64)> =
    TableDefinition::new("segment_shapes");

/// The segments of one shape and the bytes of their shards, as [`SEGMENT_SHAPES`] holds
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeTotals {
    /// Segments of the shape.
    pub segments: u64,
    /// Bytes of all their shards (shards in the segment × each shard's length).
    pub bytes: u64,
}

/// The key of a shard in [`SHARDS_BY_NODE`].
pub fn index_key(node: &NodeId, shard: &ShardId) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..32].copy_from_slice(node.as_bytes());
    key[32..].copy_from_slice(&shard.0);
    key
}

/// The node and shard id an [`index_key`] names.
pub fn split_index_key(key: &[u8; 48]) -> (NodeId, ShardId) {
    let mut node = [0u8; 32];
    node.copy_from_slice(&key[..32]);
    let mut shard = [0u8; 16];
    shard.copy_from_slice(&key[32..]);
    (NodeId::from_bytes(node), ShardId(shard))
}

/// Which table the record placing a shard lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Holder {
    /// An object: the locator's key is its `object_key`.
    Object,
    /// A part of an upload in progress: the locator's key is its `part_key`.
    Part,
}

/// One place a record names a shard: enough to find its segment with one read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// The kind of record.
    pub holder: Holder,
    /// The record's key in its table.
    pub key: Vec<u8>,
    /// Segment index in the record.
    pub segment: u32,
    /// Shard index in the segment.
    pub index: u16,
}

/// A placed shard: its size and every place a record names it (almost always one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Bytes of the shard.
    pub size: u64,
    /// Where records name it; never empty while the entry exists.
    pub at: Vec<Locator>,
}

impl Placement {
    /// The first place the shard is named.
    pub fn first(&self) -> Option<&Locator> {
        self.at.first()
    }
}

impl super::format::Record for Placement {}

/// One node's placed shards and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedTotals {
    /// Shards placed on the node.
    pub shards: u64,
    /// Bytes of those shards.
    pub bytes: u64,
}

/// The index tables inside a write transaction.
pub(crate) struct ShardIndex<'txn> {
    shards: redb::Table<'txn, [u8; 48], &'static [u8]>,
    totals: redb::Table<'txn, [u8; 32], (u64, u64)>,
    shapes: redb::Table<'txn, (u16, u16), (u64, u64)>,
}

impl<'txn> ShardIndex<'txn> {
    /// The live index inside `txn`.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, CatalogFault> {
        Self::open_tables(txn, SHARDS_BY_NODE, PLACED_BY_NODE, SEGMENT_SHAPES)
    }

    /// The index in the given tables (the importer's staging tables).
    pub(crate) fn open_tables(
        txn: &'txn WriteTransaction,
        shards: TableDefinition<[u8; 48], &'static [u8]>,
        totals: TableDefinition<[u8; 32], (u64, u64)>,
        shapes: TableDefinition<(u16, u16), (u64, u64)>,
    ) -> Result<Self, CatalogFault> {
        Ok(Self {
            shards: txn.open_table(shards)?,
            totals: txn.open_table(totals)?,
            shapes: txn.open_table(shapes)?,
        })
    }

    /// Indexes every shard of `segments`, named by the record `key` of kind `holder`.
    pub(crate) fn add(
        &mut self,
        holder: Holder,
        key: &[u8],
        erasure: &ErasureProfile,
        segments: &[SegmentRecord],
    ) -> Result<(), CatalogFault> {
        for (number, segment) in segments.iter().enumerate() {
            self.add_segment(holder, key, erasure, number as u32, segment)?;
        }
        Ok(())
    }

    /// Indexes every shard of one segment.
    pub(crate) fn add_segment(
        &mut self,
        holder: Holder,
        key: &[u8],
        erasure: &ErasureProfile,
        number: u32,
        segment: &SegmentRecord,
    ) -> Result<(), CatalogFault> {
        let size = shard_len(erasure, segment);
        self.count_shape(erasure, segment, 1)?;
        for (index, shard) in segment.shards.iter().enumerate() {
            let k = index_key(&shard.node, &shard.id);
            let existing = self
                .shards
                .get(k)?
                .map(|v| decode::<Placement>(v.value()))
                .transpose()?;
            let locator = Locator {
                holder,
                key: key.to_vec(),
                segment: number,
                index: index as u16,
            };
            let placement = match existing {
                Some(mut known) => {
                    known.at.push(locator);
                    known
                }
                None => {
                    self.count(&shard.node, 1, i128::from(size))?;
                    Placement {
                        size,
                        at: vec![locator],
                    }
                }
            };
            self.shards.insert(k, encode(&placement)?.as_slice())?;
        }
        Ok(())
    }

    /// Unindexes every shard of `segments` as the record `key` of kind `holder` names them.
    pub(crate) fn remove(
        &mut self,
        holder: Holder,
        key: &[u8],
        erasure: &ErasureProfile,
        segments: &[SegmentRecord],
    ) -> Result<(), CatalogFault> {
        for (number, segment) in segments.iter().enumerate() {
            self.remove_segment(holder, key, erasure, number as u32, segment)?;
        }
        Ok(())
    }

    /// Unindexes every shard of one segment as the record `key` names them; a shard
    /// another record names too stays, under that record.
    pub(crate) fn remove_segment(
        &mut self,
        holder: Holder,
        key: &[u8],
        erasure: &ErasureProfile,
        number: u32,
        segment: &SegmentRecord,
    ) -> Result<(), CatalogFault> {
        self.count_shape(erasure, segment, -1)?;
        for (index, shard) in segment.shards.iter().enumerate() {
            let k = index_key(&shard.node, &shard.id);
            let existing = self
                .shards
                .get(k)?
                .map(|v| decode::<Placement>(v.value()))
                .transpose()?;
            let Some(mut known) = existing else {
                continue;
            };
            let this = |l: &Locator| {
                l.holder == holder
                    && l.key == key
                    && l.segment == number
                    && usize::from(l.index) == index
            };
            match known.at.iter().position(this) {
                Some(at) => {
                    known.at.remove(at);
                }
                // Not named where the caller says (cannot happen while apply keeps the
                // index): drop one place, so the count still follows the records.
                None => {
                    known.at.pop();
                }
            }
            if known.at.is_empty() {
                self.shards.remove(k)?;
                self.count(&shard.node, -1, -i128::from(known.size))?;
            } else {
                self.shards.insert(k, encode(&known)?.as_slice())?;
            }
        }
        Ok(())
    }

    /// Indexes an object record's shards.
    pub(crate) fn add_object(
        &mut self,
        key: &[u8],
        object: &ObjectRecord,
    ) -> Result<(), CatalogFault> {
        match &object.body {
            ObjectBody::Inline(_) => Ok(()),
            ObjectBody::Segments { erasure, segments } => {
                self.add(Holder::Object, key, erasure, segments)
            }
        }
    }

    /// Unindexes the shards of the object record stored under `key`.
    pub(crate) fn remove_object(
        &mut self,
        key: &[u8],
        object: &ObjectRecord,
    ) -> Result<(), CatalogFault> {
        match &object.body {
            ObjectBody::Inline(_) => Ok(()),
            ObjectBody::Segments { erasure, segments } => {
                self.remove(Holder::Object, key, erasure, segments)
            }
        }
    }

    /// Counts one segment of `erasure` in (`by` 1) or out (`by` -1) of its shape.
    fn count_shape(
        &mut self,
        erasure: &ErasureProfile,
        segment: &SegmentRecord,
        by: i128,
    ) -> Result<(), CatalogFault> {
        let Some(shape) = shape_of(erasure, segment) else {
            return Ok(());
        };
        let bytes = segment_bytes(erasure, segment);
        let (segments, now_bytes) = self.shapes.get(shape)?.map(|v| v.value()).unwrap_or((0, 0));
        let clamp = |v: i128| v.clamp(0, i128::from(u64::MAX)) as u64;
        let next = (
            clamp(i128::from(segments) + by),
            clamp(i128::from(now_bytes) + by * i128::from(bytes)),
        );
        if next.0 == 0 {
            self.shapes.remove(shape)?;
        } else {
            self.shapes.insert(shape, next)?;
        }
        Ok(())
    }

    fn count(&mut self, node: &NodeId, shards: i128, bytes: i128) -> Result<(), CatalogFault> {
        let (now_shards, now_bytes) = self
            .totals
            .get(*node.as_bytes())?
            .map(|v| v.value())
            .unwrap_or((0, 0));
        let clamp = |v: i128| v.clamp(0, i128::from(u64::MAX)) as u64;
        let next = (
            clamp(i128::from(now_shards) + shards),
            clamp(i128::from(now_bytes) + bytes),
        );
        if next.0 == 0 {
            self.totals.remove(*node.as_bytes())?;
        } else {
            self.totals.insert(*node.as_bytes(), next)?;
        }
        Ok(())
    }
}

/// Bytes of each shard of `segment` under `erasure` (0 for an impossible code).
pub(crate) fn shard_len(erasure: &ErasureProfile, segment: &SegmentRecord) -> u64 {
    cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m))
        .map(|codec| codec.shard_len(segment.len))
        .unwrap_or(0)
}

/// The [`SEGMENT_SHAPES`] key of a segment: `k` and its number of shards (`None` for an
/// impossible code, which the survey does not count either).
pub(crate) fn shape_of(erasure: &ErasureProfile, segment: &SegmentRecord) -> Option<(u16, u16)> {
    cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m)).ok()?;
    Some((erasure.k, u16::try_from(segment.shards.len()).ok()?))
}

/// Bytes of all the shards of `segment`.
fn segment_bytes(erasure: &ErasureProfile, segment: &SegmentRecord) -> u64 {
    shard_len(erasure, segment).saturating_mul(segment.shards.len() as u64)
}

/// Empties the live index and builds it again from every object and part in `txn`: once,
/// when a catalog of an older format is opened, and after an in-memory import.
pub(crate) fn rebuild(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    txn.delete_table(SHARDS_BY_NODE)?;
    txn.delete_table(PLACED_BY_NODE)?;
    txn.delete_table(SEGMENT_SHAPES)?;
    let mut index = ShardIndex::open(txn)?;
    let objects = txn.open_table(OBJECTS)?;
    for item in objects.iter()? {
        let (k, v) = item?;
        index.add_object(k.value(), &decode(v.value())?)?;
    }
    let parts = txn.open_table(PARTS)?;
    let uploads = txn.open_table(UPLOADS)?;
    for item in parts.iter()? {
        let (k, v) = item?;
        let Some(erasure) = part_erasure(&uploads, k.value())? else {
            continue;
        };
        let part: PartRecord = decode(v.value())?;
        index.add(Holder::Part, k.value(), &erasure, &part.segments)?;
    }
    Ok(())
}

/// The erasure profile of the upload a part key belongs to (`None` if the upload is gone:
/// such a part is being collected, not placed).
pub(crate) fn part_erasure(
    uploads: &impl ReadableTable<&'static str, &'static [u8]>,
    part_key: &[u8],
) -> Result<Option<ErasureProfile>, CatalogFault> {
    let Some((&len, rest)) = part_key.split_first() else {
        return Ok(None);
    };
    let Some(id) = rest
        .get(..usize::from(len))
        .and_then(|id| std::str::from_utf8(id).ok())
    else {
        return Ok(None);
    };
    Ok(uploads
        .get(id)?
        .map(|v| decode::<UploadRecord>(v.value()))
        .transpose()?
        .map(|upload| upload.erasure))
}

/// What a full walk of the records says the index holds: per (node, shard) the number of
/// records naming it and its size, per node the totals, and the segments per shape. The
/// index must equal this after any sequence of commands (tests compare them).
pub(crate) type Walked = (
    BTreeMap<(NodeId, ShardId), (u32, u64)>,
    BTreeMap<NodeId, PlacedTotals>,
    BTreeMap<(u16, u16), ShapeTotals>,
);

/// Every place the records name each (node, shard).
pub(crate) type Named = BTreeMap<(NodeId, ShardId), Vec<Locator>>;

/// [`Walked`] computed by reading every object and part, and where each (node, shard) is
/// named.
pub(crate) fn walk(txn: &redb::ReadTransaction) -> Result<(Walked, Named), CatalogFault> {
    let mut shards: BTreeMap<(NodeId, ShardId), (u32, u64)> = BTreeMap::new();
    let mut named: BTreeMap<(NodeId, ShardId), Vec<Locator>> = BTreeMap::new();
    let mut shapes: BTreeMap<(u16, u16), ShapeTotals> = BTreeMap::new();
    let mut visit =
        |holder: Holder, key: &[u8], erasure: &ErasureProfile, segments: &[SegmentRecord]| {
            for (number, segment) in segments.iter().enumerate() {
                if let Some(shape) = shape_of(erasure, segment) {
                    let totals = shapes.entry(shape).or_default();
                    totals.segments += 1;
                    totals.bytes += segment_bytes(erasure, segment);
                }
                let size = shard_len(erasure, segment);
                for (index, shard) in segment.shards.iter().enumerate() {
                    let entry = shards.entry((shard.node, shard.id)).or_insert((0, size));
                    entry.0 += 1;
                    named
                        .entry((shard.node, shard.id))
                        .or_default()
                        .push(Locator {
                            holder,
                            key: key.to_vec(),
                            segment: number as u32,
                            index: index as u16,
                        });
                }
            }
        };
    for item in txn.open_table(OBJECTS)?.iter()? {
        let (k, v) = item?;
        let record: ObjectRecord = decode(v.value())?;
        if let ObjectBody::Segments { erasure, segments } = &record.body {
            visit(Holder::Object, k.value(), erasure, segments);
        }
    }
    let uploads = txn.open_table(UPLOADS)?;
    for item in txn.open_table(PARTS)?.iter()? {
        let (k, v) = item?;
        if let Some(erasure) = part_erasure(&uploads, k.value())? {
            let part: PartRecord = decode(v.value())?;
            visit(Holder::Part, k.value(), &erasure, &part.segments);
        }
    }
    let mut totals: BTreeMap<NodeId, PlacedTotals> = BTreeMap::new();
    for ((node, _), (_, size)) in &shards {
        let t = totals.entry(*node).or_default();
        t.shards += 1;
        t.bytes += size;
    }
    Ok(((shards, totals, shapes), named))
}

/// Index entries whose places are not exactly where the records name the shard.
pub(crate) fn stale_locators(
    txn: &redb::ReadTransaction,
    named: &Named,
) -> Result<Vec<(NodeId, ShardId)>, CatalogFault> {
    let mut stale = Vec::new();
    for item in txn.open_table(SHARDS_BY_NODE)?.iter()? {
        let (k, v) = item?;
        let placement: Placement = decode(v.value())?;
        let at = split_index_key(&k.value());
        let mut stored = placement.at;
        let mut walked = named.get(&at).cloned().unwrap_or_default();
        let order = |l: &Locator| (l.holder == Holder::Part, l.key.clone(), l.segment, l.index);
        stored.sort_by_key(order);
        walked.sort_by_key(order);
        if stored != walked {
            stale.push(at);
        }
    }
    Ok(stale)
}

/// [`Walked`] as the index tables hold it.
pub(crate) fn indexed(txn: &redb::ReadTransaction) -> Result<Walked, CatalogFault> {
    let mut shards = BTreeMap::new();
    for item in txn.open_table(SHARDS_BY_NODE)?.iter()? {
        let (k, v) = item?;
        let placement: Placement = decode(v.value())?;
        shards.insert(
            split_index_key(&k.value()),
            (placement.at.len() as u32, placement.size),
        );
    }
    let mut totals = BTreeMap::new();
    for item in txn.open_table(PLACED_BY_NODE)?.iter()? {
        let (k, v) = item?;
        let (count, bytes) = v.value();
        totals.insert(
            NodeId::from_bytes(k.value()),
            PlacedTotals {
                shards: count,
                bytes,
            },
        );
    }
    Ok((shards, totals, shapes_of(txn)?))
}

/// Every row of [`SEGMENT_SHAPES`] in `txn`.
pub(crate) fn shapes_of(
    txn: &redb::ReadTransaction,
) -> Result<BTreeMap<(u16, u16), ShapeTotals>, CatalogFault> {
    let mut shapes = BTreeMap::new();
    for item in txn.open_table(SEGMENT_SHAPES)?.iter()? {
        let (k, v) = item?;
        let (segments, bytes) = v.value();
        shapes.insert(k.value(), ShapeTotals { segments, bytes });
    }
    Ok(shapes)
}
