//! The catalog as a stream of bounded chunks: how Raft snapshots and backups carry it.
//!
//! A stream is a sequence of frames, each a `u32` (little-endian) length and that many
//! bytes of postcard: [`Frame::Rows`] (rows of one table, up to a chosen size), then one
//! [`Frame::End`] with the number of rows and the BLAKE3 hash of every rows frame before
//! it. Rows are the stored bytes (records with their version byte), so a stream is copied,
//! never re-encoded. Indexes are not in the stream: the [`Importer`] derives them from the
//! rows it installs, so they cannot disagree with their tables (the shards-by-node index
//! among them: built from each object row as it is staged, and from the parts, which are
//! few, when the import finishes).
//!
//! The writer holds one chunk; the reader holds one frame and refuses a length above
//! [`MAX_FRAME_BYTES`] before reading it; the importer writes into staging tables in
//! bounded transactions and swaps them in with the caller's bookkeeping in one final
//! durable transaction, so a crash or a bad stream leaves the live catalog as it was.

use std::io::{Read, Write};

use cairn_proto::ids::ShardId;
use redb::{
    Database, Durability, ReadTransaction, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::format::{decode_record, is_known_record};
use super::model::{GarbageShard, ObjectRecord, PartRecord, UploadRecord};
use super::shard_index::{
    self, Holder, PLACED_BY_NODE, SEGMENT_SHAPES, SHARDS_BY_NODE, ShardIndex,
};
use super::{
    ACCESS_KEYS, BUCKETS, COUNTERS, CatalogDump, CatalogFault, CommandResult, GARBAGE,
    GARBAGE_BY_NODE, GARBAGE_DUE, GATEWAYS, GarbageQueue, INVITES, NODES, OBJECTS, PARTS, REQUESTS,
    REQUESTS_BY_TIME, UPLOADS, UPLOADS_BY_KEY, UPLOADS_BY_TIME, UploadIndexes, request_time_key,
};

/// The chunk size snapshots and backups are cut into unless told otherwise.
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;

/// The largest frame a reader accepts. A chunk holds at least one row, so this is also the
/// largest row a stream can carry (an object record of this size would be a multi-terabyte
/// object in 64 MiB segments).
pub const MAX_FRAME_BYTES: u32 = 1 << 30;

/// How many bytes of rows the importer writes per transaction.
const IMPORT_BATCH_BYTES: usize = 64 << 20;

/// The tables a stream carries (indexes are derived, never carried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    /// `buckets`: name → record.
    Buckets,
    /// `objects`: `object_key` → record.
    Objects,
    /// `access_keys`: id → record.
    AccessKeys,
    /// `nodes`: 32-byte key → record.
    Nodes,
    /// `garbage`: 16-byte shard id → record.
    Garbage,
    /// `counters`: name → `u64` (8 bytes, little-endian).
    Counters,
    /// `invites`: 32-byte secret hash → record.
    Invites,
    /// `gateways`: 32-byte key → record.
    Gateways,
    /// `uploads`: id → record.
    Uploads,
    /// `parts`: `part_key` → record.
    Parts,
    /// `requests`: 16-byte request id → record.
    Requests,
}

/// One row as carried: key bytes, value bytes.
pub type Row = (Vec<u8>, Vec<u8>);

/// One frame of a stream.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// Rows of one table, in key order.
    Rows { table: Table, rows: Vec<Row> },
    /// The end: how many rows came, and the hash of the rows frames as written.
    End { rows: u64, hash: [u8; 32] },
}

/// [`Frame::Rows`] borrowed, so writing a chunk copies nothing (same shape, same bytes).
#[derive(Serialize)]
enum FrameRef<'a> {
    Rows { table: Table, rows: &'a [Row] },
}

/// What a written stream holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Rows written.
    pub rows: u64,
    /// Rows frames written.
    pub chunks: u64,
    /// Bytes written, frames and lengths included.
    pub bytes: u64,
}

/// Writes a stream one chunk at a time.
pub struct StreamWriter<W: Write> {
    out: W,
    target: usize,
    table: Table,
    rows: Vec<Row>,
    size: usize,
    hasher: blake3::Hasher,
    summary: StreamSummary,
}

impl<W: Write> StreamWriter<W> {
    /// A writer cutting chunks of about `chunk_bytes` (a row larger than that gets a chunk
    /// of its own).
    pub fn new(out: W, chunk_bytes: usize) -> Self {
        Self {
            out,
            target: chunk_bytes.max(1),
            table: Table::Buckets,
            rows: Vec::new(),
            size: 0,
            hasher: blake3::Hasher::new(),
            summary: StreamSummary::default(),
        }
    }

    /// Adds one row of `table`.
    pub fn push(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) -> Result<(), CatalogFault> {
        let row = key.len() + value.len() + 10;
        if !self.rows.is_empty() && (table != self.table || self.size + row > self.target) {
            self.flush_chunk()?;
        }
        self.table = table;
        self.size += row;
        self.rows.push((key, value));
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), CatalogFault> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let body = postcard::to_allocvec(&FrameRef::Rows {
            table: self.table,
            rows: &self.rows,
        })?;
        self.hasher.update(&body);
        self.summary.rows += self.rows.len() as u64;
        self.summary.chunks += 1;
        self.write_frame(&body)?;
        self.rows.clear();
        self.size = 0;
        Ok(())
    }

    fn write_frame(&mut self, body: &[u8]) -> Result<(), CatalogFault> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME_BYTES)
            .ok_or_else(|| {
                CatalogFault(format!(
                    "a catalog row of {} bytes is too large to stream",
                    body.len()
                ))
            })?;
        self.out.write_all(&len.to_le_bytes()).map_err(io_fault)?;
        self.out.write_all(body).map_err(io_fault)?;
        self.summary.bytes += 4 + body.len() as u64;
        Ok(())
    }

    /// Writes the last chunk and the end frame; gives back the output and the summary.
    pub fn finish(mut self) -> Result<(W, StreamSummary), CatalogFault> {
        self.flush_chunk()?;
        let end = postcard::to_allocvec(&Frame::End {
            rows: self.summary.rows,
            hash: *self.hasher.finalize().as_bytes(),
        })?;
        self.write_frame(&end)?;
        self.out.flush().map_err(io_fault)?;
        Ok((self.out, self.summary))
    }
}

fn io_fault(err: std::io::Error) -> CatalogFault {
    CatalogFault(format!("catalog stream: {err}"))
}

/// Writes every catalog row visible to `txn` (one point in time) to `writer`, table by
/// table, in key order.
pub fn write_catalog<W: Write>(
    txn: &ReadTransaction,
    writer: &mut StreamWriter<W>,
) -> Result<(), CatalogFault> {
    macro_rules! copy {
        ($table:expr, $def:expr, |$k:ident| $key:expr, |$v:ident| $value:expr) => {
            for item in txn.open_table($def)?.iter()? {
                let (k, v) = item?;
                let $k = k.value();
                let $v = v.value();
                writer.push($table, $key, $value)?;
            }
        };
    }
    copy!(Table::Buckets, BUCKETS, |k| k.as_bytes().to_vec(), |v| v
        .to_vec());
    copy!(Table::Objects, OBJECTS, |k| k.to_vec(), |v| v.to_vec());
    copy!(
        Table::AccessKeys,
        ACCESS_KEYS,
        |k| k.as_bytes().to_vec(),
        |v| v.to_vec()
    );
    copy!(Table::Nodes, NODES, |k| k.to_vec(), |v| v.to_vec());
    copy!(Table::Garbage, GARBAGE, |k| k.to_vec(), |v| v.to_vec());
    copy!(Table::Counters, COUNTERS, |k| k.as_bytes().to_vec(), |v| v
        .to_le_bytes()
        .to_vec());
    copy!(Table::Invites, INVITES, |k| k.to_vec(), |v| v.to_vec());
    copy!(Table::Gateways, GATEWAYS, |k| k.to_vec(), |v| v.to_vec());
    copy!(Table::Uploads, UPLOADS, |k| k.as_bytes().to_vec(), |v| v
        .to_vec());
    copy!(Table::Parts, PARTS, |k| k.to_vec(), |v| v.to_vec());
    copy!(Table::Requests, REQUESTS, |k| k.to_vec(), |v| v.to_vec());
    Ok(())
}

/// Writes the rows of `dump` (stored bytes, as [`super::export`] gives them).
pub fn write_dump<W: Write>(
    dump: &CatalogDump,
    writer: &mut StreamWriter<W>,
) -> Result<(), CatalogFault> {
    for (table, rows) in dump_rows(dump) {
        for (k, v) in rows {
            writer.push(table, k, v)?;
        }
    }
    Ok(())
}

/// A dump's rows, table by table, as a stream carries them.
fn dump_rows(dump: &CatalogDump) -> Vec<(Table, Vec<Row>)> {
    fn rows<K: AsRef<[u8]>>(items: &[(K, Vec<u8>)]) -> Vec<Row> {
        items
            .iter()
            .map(|(k, v)| (k.as_ref().to_vec(), v.clone()))
            .collect()
    }
    vec![
        (Table::Buckets, rows(&dump.buckets)),
        (Table::Objects, rows(&dump.objects)),
        (Table::AccessKeys, rows(&dump.access_keys)),
        (Table::Nodes, rows(&dump.nodes)),
        (Table::Garbage, rows(&dump.garbage)),
        (
            Table::Counters,
            dump.counters
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_le_bytes().to_vec()))
                .collect(),
        ),
        (Table::Invites, rows(&dump.invites)),
        (Table::Gateways, rows(&dump.gateways)),
        (Table::Uploads, rows(&dump.uploads)),
        (Table::Parts, rows(&dump.parts)),
        (Table::Requests, rows(&dump.requests)),
    ]
}

/// Reads a stream one frame at a time, checking its end.
pub struct StreamReader<R: Read> {
    input: R,
    hasher: blake3::Hasher,
    rows: u64,
    ended: bool,
}

impl<R: Read> StreamReader<R> {
    /// A reader of the stream that `input` is positioned at.
    pub fn new(input: R) -> Self {
        Self {
            input,
            hasher: blake3::Hasher::new(),
            rows: 0,
            ended: false,
        }
    }

    /// The next chunk of rows; `None` once the end frame has been read and matched the
    /// rows before it (a stream that stops before its end frame is an error, so a
    /// truncated snapshot or backup is never taken for a small catalog).
    pub fn next_chunk(&mut self) -> Result<Option<(Table, Vec<Row>)>, CatalogFault> {
        if self.ended {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.input
            .read_exact(&mut len)
            .map_err(|err| CatalogFault(format!("catalog stream ends before its end: {err}")))?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME_BYTES {
            return Err(CatalogFault(format!(
                "catalog stream frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES}"
            )));
        }
        // Read as the bytes arrive: a wrong length in a short file allocates no more than
        // the file holds.
        let mut body = Vec::new();
        (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut body)
            .map_err(io_fault)?;
        if body.len() != len as usize {
            return Err(CatalogFault("catalog stream ends inside a frame".into()));
        }
        let (frame, rest) = postcard::take_from_bytes::<Frame>(&body)?;
        if !rest.is_empty() {
            return Err(CatalogFault(
                "catalog stream frame has trailing bytes".into(),
            ));
        }
        match frame {
            Frame::Rows { table, rows } => {
                self.hasher.update(&body);
                self.rows += rows.len() as u64;
                Ok(Some((table, rows)))
            }
            Frame::End { rows, hash } => {
                if rows != self.rows || hash != *self.hasher.finalize().as_bytes() {
                    return Err(CatalogFault(format!(
                        "catalog stream is damaged: its end names {rows} rows and a hash, \
                         {} rows came and the hash differs",
                        self.rows
                    )));
                }
                self.ended = true;
                Ok(None)
            }
        }
    }

    /// The input, positioned after the end frame.
    pub fn into_inner(self) -> R {
        self.input
    }
}

/// Reads a whole stream into memory (for small catalogs: tests, checking a backup).
pub fn read_dump<R: Read>(reader: &mut StreamReader<R>) -> Result<CatalogDump, CatalogFault> {
    let mut dump = CatalogDump::default();
    while let Some((table, rows)) = reader.next_chunk()? {
        for (k, v) in rows {
            match table {
                Table::Buckets => dump.buckets.push((utf8(k)?, v)),
                Table::Objects => dump.objects.push((k, v)),
                Table::AccessKeys => dump.access_keys.push((utf8(k)?, v)),
                Table::Nodes => dump.nodes.push((array(&k)?, v)),
                Table::Garbage => dump.garbage.push((array(&k)?, v)),
                Table::Counters => dump.counters.push((utf8(k)?, counter(&v)?)),
                Table::Invites => dump.invites.push((array(&k)?, v)),
                Table::Gateways => dump.gateways.push((array(&k)?, v)),
                Table::Uploads => dump.uploads.push((utf8(k)?, v)),
                Table::Parts => dump.parts.push((k, v)),
                Table::Requests => dump.requests.push((array(&k)?, v)),
            }
        }
    }
    Ok(dump)
}

fn utf8(bytes: Vec<u8>) -> Result<String, CatalogFault> {
    String::from_utf8(bytes).map_err(|_| CatalogFault("catalog row key is not UTF-8".into()))
}

fn str_key(bytes: &[u8]) -> Result<&str, CatalogFault> {
    std::str::from_utf8(bytes).map_err(|_| CatalogFault("catalog row key is not UTF-8".into()))
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], CatalogFault> {
    bytes.try_into().map_err(|_| {
        CatalogFault(format!(
            "catalog row key has {} bytes, not {N}",
            bytes.len()
        ))
    })
}

fn counter(bytes: &[u8]) -> Result<u64, CatalogFault> {
    Ok(u64::from_le_bytes(array(bytes)?))
}

fn record(bytes: &[u8]) -> Result<&[u8], CatalogFault> {
    if is_known_record(bytes) {
        Ok(bytes)
    } else {
        Err(CatalogFault(
            "catalog row is not a record this release reads".into(),
        ))
    }
}

/// A staging table: where an import writes before it is swapped in.
macro_rules! staging {
    ($($name:ident: $k:ty => $v:ty = $text:literal;)*) => {
        $(const $name: TableDefinition<$k, $v> = TableDefinition::new($text);)*
    };
}
staging! {
    S_BUCKETS: &str => &[u8] = "staging.buckets";
    S_OBJECTS: &[u8] => &[u8] = "staging.objects";
    S_ACCESS_KEYS: &str => &[u8] = "staging.access_keys";
    S_NODES: [u8; 32] => &[u8] = "staging.nodes";
    S_GARBAGE: [u8; 16] => &[u8] = "staging.garbage";
    S_GARBAGE_DUE: [u8; 24] => () = "staging.garbage_due";
    S_GARBAGE_BY_NODE: [u8; 48] => () = "staging.garbage_by_node";
    S_COUNTERS: &str => u64 = "staging.counters";
    S_INVITES: [u8; 32] => &[u8] = "staging.invites";
    S_GATEWAYS: [u8; 32] => &[u8] = "staging.gateways";
    S_UPLOADS: &str => &[u8] = "staging.uploads";
    S_UPLOADS_BY_TIME: &[u8] => () = "staging.uploads_by_time";
    S_UPLOADS_BY_KEY: &[u8] => () = "staging.uploads_by_key";
    S_PARTS: &[u8] => &[u8] = "staging.parts";
    S_REQUESTS: [u8; 16] => &[u8] = "staging.requests";
    S_REQUESTS_BY_TIME: [u8; 24] => () = "staging.requests_by_time";
    S_SHARDS_BY_NODE: [u8; 48] => &[u8] = "staging.shards_by_node";
    S_PLACED_BY_NODE: [u8; 32] => (u64, u64) = "staging.placed_by_node";
    S_SEGMENT_SHAPES: (u16, u16) => (u64, u64) = "staging.segment_shapes";
}

/// Drops every staging table (what an interrupted import left).
pub(crate) fn drop_staging(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    txn.delete_table(S_BUCKETS)?;
    txn.delete_table(S_OBJECTS)?;
    txn.delete_table(S_ACCESS_KEYS)?;
    txn.delete_table(S_NODES)?;
    txn.delete_table(S_GARBAGE)?;
    txn.delete_table(S_GARBAGE_DUE)?;
    txn.delete_table(S_GARBAGE_BY_NODE)?;
    txn.delete_table(S_COUNTERS)?;
    txn.delete_table(S_INVITES)?;
    txn.delete_table(S_GATEWAYS)?;
    txn.delete_table(S_UPLOADS)?;
    txn.delete_table(S_UPLOADS_BY_TIME)?;
    txn.delete_table(S_UPLOADS_BY_KEY)?;
    txn.delete_table(S_PARTS)?;
    txn.delete_table(S_REQUESTS)?;
    txn.delete_table(S_REQUESTS_BY_TIME)?;
    txn.delete_table(S_SHARDS_BY_NODE)?;
    txn.delete_table(S_PLACED_BY_NODE)?;
    txn.delete_table(S_SEGMENT_SHAPES)?;
    Ok(())
}

/// Replaces the live catalog with streamed rows, in bounded memory.
///
/// Rows go into staging tables, [`IMPORT_BATCH_BYTES`] per transaction (not flushed to
/// disk: until [`Importer::finish`] nothing depends on them, and an import that does not
/// finish is started again from the beginning). `finish` swaps the staging tables in and
/// runs the caller's bookkeeping in the same durable transaction.
pub struct Importer<'db> {
    db: &'db Database,
    txn: Option<WriteTransaction>,
    pending: usize,
}

impl<'db> Importer<'db> {
    /// Starts an import into `db`, dropping what an interrupted one left.
    pub fn begin(db: &'db Database) -> Result<Self, CatalogFault> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|err| CatalogFault(err.to_string()))?;
        drop_staging(&txn)?;
        Ok(Self {
            db,
            txn: Some(txn),
            pending: 0,
        })
    }

    fn txn(&mut self) -> Result<&WriteTransaction, CatalogFault> {
        if self.txn.is_none() {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)
                .map_err(|err| CatalogFault(err.to_string()))?;
            self.txn = Some(txn);
        }
        self.txn
            .as_ref()
            .ok_or_else(|| CatalogFault("import transaction missing".into()))
    }

    /// Adds a chunk of rows of `table` (checked: keys of the right shape, values records
    /// this release reads, no key twice).
    pub fn add(&mut self, table: Table, rows: &[Row]) -> Result<(), CatalogFault> {
        let txn = self.txn()?;
        insert_rows(txn, table, rows)?;
        self.pending += rows.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if self.pending >= IMPORT_BATCH_BYTES
            && let Some(txn) = self.txn.take()
        {
            txn.commit()?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Commits the rows added so far (not durably), so that no write transaction is open
    /// until the next [`Importer::add`] or [`Importer::finish`]: a caller that takes a lock
    /// before finishing must not hold the database's writer while it waits for it.
    pub fn flush(&mut self) -> Result<(), CatalogFault> {
        if let Some(txn) = self.txn.take() {
            txn.commit()?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Swaps the imported tables in for the live ones and runs `bookkeeping` in the same
    /// durable transaction.
    pub fn finish(
        mut self,
        bookkeeping: impl FnOnce(&WriteTransaction) -> Result<(), CatalogFault>,
    ) -> Result<(), CatalogFault> {
        self.txn()?;
        let Some(mut txn) = self.txn.take() else {
            return Err(CatalogFault("import transaction missing".into()));
        };
        txn.set_durability(Durability::Immediate)
            .map_err(|err| CatalogFault(err.to_string()))?;
        swap(&txn, S_BUCKETS, BUCKETS)?;
        swap(&txn, S_OBJECTS, OBJECTS)?;
        swap(&txn, S_ACCESS_KEYS, ACCESS_KEYS)?;
        swap(&txn, S_NODES, NODES)?;
        swap(&txn, S_GARBAGE, GARBAGE)?;
        swap(&txn, S_GARBAGE_DUE, GARBAGE_DUE)?;
        swap(&txn, S_GARBAGE_BY_NODE, GARBAGE_BY_NODE)?;
        swap(&txn, S_COUNTERS, COUNTERS)?;
        swap(&txn, S_INVITES, INVITES)?;
        swap(&txn, S_GATEWAYS, GATEWAYS)?;
        swap(&txn, S_UPLOADS, UPLOADS)?;
        swap(&txn, S_UPLOADS_BY_TIME, UPLOADS_BY_TIME)?;
        swap(&txn, S_UPLOADS_BY_KEY, UPLOADS_BY_KEY)?;
        swap(&txn, S_PARTS, PARTS)?;
        swap(&txn, S_REQUESTS, REQUESTS)?;
        index_staged_parts(&txn)?;
        swap(&txn, S_REQUESTS_BY_TIME, REQUESTS_BY_TIME)?;
        swap(&txn, S_SHARDS_BY_NODE, SHARDS_BY_NODE)?;
        swap(&txn, S_PLACED_BY_NODE, PLACED_BY_NODE)?;
        swap(&txn, S_SEGMENT_SHAPES, SEGMENT_SHAPES)?;
        bookkeeping(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

/// Indexes the shards of every imported part (the parts and uploads are swapped in
/// already; the index is still staged). Parts are few, since uploads expire, and are
/// indexed here rather than as they stream so that their uploads are all known.
fn index_staged_parts(txn: &WriteTransaction) -> Result<(), CatalogFault> {
    let mut index =
        ShardIndex::open_tables(txn, S_SHARDS_BY_NODE, S_PLACED_BY_NODE, S_SEGMENT_SHAPES)?;
    let parts = txn.open_table(PARTS)?;
    let uploads = txn.open_table(UPLOADS)?;
    for item in parts.iter()? {
        let (k, v) = item?;
        let Some(erasure) = shard_index::part_erasure(&uploads, k.value())? else {
            continue;
        };
        let part: PartRecord = decode_record(v.value())?;
        index.add(Holder::Part, k.value(), &erasure, &part.segments)?;
    }
    Ok(())
}

/// Replaces `live` with `staged` (created empty if no row came for it).
fn swap<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    staged: TableDefinition<K, V>,
    live: TableDefinition<K, V>,
) -> Result<(), CatalogFault> {
    txn.open_table(staged)?;
    txn.delete_table(live)?;
    txn.rename_table(staged, live)?;
    Ok(())
}

fn duplicate(table: Table) -> CatalogFault {
    CatalogFault(format!("catalog stream holds a {table:?} key twice"))
}

fn insert_rows(txn: &WriteTransaction, table: Table, rows: &[Row]) -> Result<(), CatalogFault> {
    macro_rules! plain {
        ($def:expr, |$k:ident| $key:expr) => {{
            let mut t = txn.open_table($def)?;
            for ($k, v) in rows {
                if t.insert($key, record(v)?)?.is_some() {
                    return Err(duplicate(table));
                }
            }
        }};
    }
    match table {
        Table::Buckets => plain!(S_BUCKETS, |k| str_key(k)?),
        Table::Objects => {
            let mut t = txn.open_table(S_OBJECTS)?;
            let mut index =
                ShardIndex::open_tables(txn, S_SHARDS_BY_NODE, S_PLACED_BY_NODE, S_SEGMENT_SHAPES)?;
            for (k, v) in rows {
                let object: ObjectRecord = decode_record(v)?;
                if t.insert(k.as_slice(), v.as_slice())?.is_some() {
                    return Err(duplicate(table));
                }
                index.add_object(k, &object)?;
            }
        }
        Table::AccessKeys => plain!(S_ACCESS_KEYS, |k| str_key(k)?),
        Table::Nodes => plain!(S_NODES, |k| array::<32>(k)?),
        Table::Invites => plain!(S_INVITES, |k| array::<32>(k)?),
        Table::Gateways => plain!(S_GATEWAYS, |k| array::<32>(k)?),
        Table::Parts => plain!(S_PARTS, |k| k.as_slice()),
        Table::Counters => {
            let mut t = txn.open_table(S_COUNTERS)?;
            for (k, v) in rows {
                if t.insert(str_key(k)?, counter(v)?)?.is_some() {
                    return Err(duplicate(table));
                }
            }
        }
        Table::Garbage => {
            // The queue's own code keeps its indexes, as apply does.
            let mut queue =
                GarbageQueue::open_tables(txn, S_GARBAGE, S_GARBAGE_DUE, S_GARBAGE_BY_NODE)?;
            for (k, v) in rows {
                let id = array::<16>(k)?;
                let entry: GarbageShard = decode_record(v)?;
                if !queue.insert_new(ShardId(id), &entry)? {
                    return Err(duplicate(table));
                }
            }
        }
        Table::Uploads => {
            let mut t = txn.open_table(S_UPLOADS)?;
            let mut indexes = UploadIndexes::open_tables(txn, S_UPLOADS_BY_TIME, S_UPLOADS_BY_KEY)?;
            for (k, v) in rows {
                let id = str_key(k)?;
                let upload: UploadRecord = decode_record(v)?;
                if t.insert(id, v.as_slice())?.is_some() {
                    return Err(duplicate(table));
                }
                indexes.add(id, &upload)?;
            }
        }
        Table::Requests => {
            let mut t = txn.open_table(S_REQUESTS)?;
            let mut by_time = txn.open_table(S_REQUESTS_BY_TIME)?;
            for (k, v) in rows {
                let id = array::<16>(k)?;
                let (now_ms, _): (u64, CommandResult) = decode_record(v)?;
                if t.insert(id, v.as_slice())?.is_some() {
                    return Err(duplicate(table));
                }
                by_time.insert(request_time_key(now_ms, &id), ())?;
            }
        }
    }
    Ok(())
}

/// Imports a whole stream into `db` (see [`Importer`]).
pub fn import_stream<R: Read>(
    db: &Database,
    reader: &mut StreamReader<R>,
    bookkeeping: impl FnOnce(&WriteTransaction) -> Result<(), CatalogFault>,
) -> Result<(), CatalogFault> {
    let mut importer = Importer::begin(db)?;
    while let Some((table, rows)) = reader.next_chunk()? {
        importer.add(table, &rows)?;
    }
    importer.finish(bookkeeping)
}

/// Imports a dump held in memory into `db` (see [`Importer`]).
pub fn import_dump(
    db: &Database,
    dump: &CatalogDump,
    bookkeeping: impl FnOnce(&WriteTransaction) -> Result<(), CatalogFault>,
) -> Result<(), CatalogFault> {
    let mut importer = Importer::begin(db)?;
    for (table, rows) in dump_rows(dump) {
        importer.add(table, &rows)?;
    }
    importer.finish(bookkeeping)
}

/// The names of the staging tables (a test checks none is left behind).
pub fn staging_table_names() -> [&'static str; 19] {
    [
        S_BUCKETS.name(),
        S_OBJECTS.name(),
        S_ACCESS_KEYS.name(),
        S_NODES.name(),
        S_GARBAGE.name(),
        S_GARBAGE_DUE.name(),
        S_GARBAGE_BY_NODE.name(),
        S_COUNTERS.name(),
        S_INVITES.name(),
        S_GATEWAYS.name(),
        S_UPLOADS.name(),
        S_UPLOADS_BY_TIME.name(),
        S_UPLOADS_BY_KEY.name(),
        S_PARTS.name(),
        S_REQUESTS.name(),
        S_REQUESTS_BY_TIME.name(),
        S_SHARDS_BY_NODE.name(),
        S_PLACED_BY_NODE.name(),
        S_SEGMENT_SHAPES.name(),
    ]
}
