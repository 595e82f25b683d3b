//! [`StateMachine`]: the catalog as openraft's state machine, with snapshots.
//!
//! Every batch of committed entries is applied in one redb write transaction that also
//! records the last applied log id and membership, so the catalog and its position in the
//! log can never disagree. Those commits skip the fsync: the Raft log is the durable record,
//! and after a crash openraft re-applies committed entries past the recorded position. The
//! snapshot is recorded durably, which also flushes every earlier commit, before openraft
//! purges the log entries it covers.
//!
//! A snapshot is a file in `snapshots/` beside the catalog ([`SnapshotFile`]): a header
//! (magic, format, the snapshot's metadata) and the catalog rows of one read transaction as
//! a chunked stream (`catalog::stream`). It is written straight to disk, sent to followers
//! by openraft in chunks read from the file, received into a file, and installed from it in
//! bounded batches: memory follows the chunk size, not the catalog. Only the current
//! snapshot's file is kept.

// openraft fixes the error type of every storage call to its own large `StorageError`.
#![allow(clippy::result_large_err)]

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::snapshot_file::SnapshotFile;
use super::types::{LogId, Member, StoredMembership, TypeConfig};
use crate::catalog::stream::{self, StreamReader, StreamWriter};
use crate::catalog::{self, Catalog, CatalogDump, CatalogFault, CommandResult};

/// Raft bookkeeping kept beside the catalog tables, in the same database.
const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
/// The current snapshot: a [`SnapshotRecord`].
const CURRENT_SNAPSHOT: &str = "current_snapshot";
/// Where catalog format 1 kept its whole snapshot as one value (converted at open).
const LEGACY_SNAPSHOT: &str = "snapshot";

/// First bytes of a snapshot file; the number is the snapshot format.
pub const SNAPSHOT_MAGIC: &[u8] = b"cairn-snapshot-1\n";
/// Largest snapshot header (the metadata: log id and membership) a reader accepts.
const MAX_HEADER_BYTES: u32 = 1 << 20;

/// The current snapshot as recorded in [`RAFT_STATE`].
#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<u64, Member>,
    /// File name in the snapshot directory (chosen locally, never taken from a peer).
    file: String,
}

/// A snapshot as catalog format 1 kept it: its metadata and the encoded dump.
#[derive(Deserialize)]
struct LegacySnapshot {
    meta: SnapshotMeta<u64, Member>,
    data: Vec<u8>,
}

/// The catalog, applied from the Raft log.
#[derive(Clone)]
pub struct StateMachine {
    catalog: Catalog,
    snapshots: Arc<PathBuf>,
    chunk_bytes: usize,
    /// Held while the current snapshot changes and stale files are deleted: a build (which
    /// openraft runs beside the state machine's other work) and an install must not delete
    /// each other's file between its rename and its record.
    files: Arc<std::sync::Mutex<()>>,
}

type Result<T> = std::result::Result<T, StorageError<u64>>;

fn fault(subject: ErrorSubject<u64>, verb: ErrorVerb, err: impl ToString) -> StorageError<u64> {
    StorageIOError::new(subject, verb, openraft::AnyError::error(err.to_string())).into()
}

fn sm_read(err: impl ToString) -> StorageError<u64> {
    fault(ErrorSubject::StateMachine, ErrorVerb::Read, err)
}

fn sm_write(err: impl ToString) -> StorageError<u64> {
    fault(ErrorSubject::StateMachine, ErrorVerb::Write, err)
}

fn snap_read(err: impl ToString) -> StorageError<u64> {
    fault(ErrorSubject::Snapshot(None), ErrorVerb::Read, err)
}

fn snap_write(err: impl ToString) -> StorageError<u64> {
    fault(ErrorSubject::Snapshot(None), ErrorVerb::Write, err)
}

/// A fresh random name part, so files never collide and never come from a peer.
fn random_name() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(snap_write)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes a rename or creation in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    /// Opens (or creates) the catalog database at `path`; snapshots live in `snapshots/`
    /// beside it. A catalog of format 1 is migrated, its snapshot rewritten as a file.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(sm_write)?;
        let catalog = Catalog::new(Arc::new(db)).map_err(sm_write)?;
        let snapshots = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(snap_write)?;
        let sm = Self {
            catalog,
            snapshots: Arc::new(snapshots),
            chunk_bytes: stream::DEFAULT_CHUNK_BYTES,
            files: Arc::default(),
        };
        let txn = sm.db().begin_write().map_err(sm_write)?;
        txn.open_table(RAFT_STATE).map_err(sm_write)?;
        txn.commit().map_err(sm_write)?;
        sm.convert_legacy_snapshot()?;
        sm.remove_stale_files(true)?;
        Ok(sm)
    }

    /// Cuts snapshots into chunks of about `bytes` (the default is
    /// [`stream::DEFAULT_CHUNK_BYTES`]; tests use small ones to get many chunks).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// The directory snapshot files are kept in.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshots
    }

    /// Loads a catalog backup into a state machine that has applied nothing yet: the first
    /// step of starting a new group from a backup.
    pub fn restore(&self, dump: &CatalogDump) -> Result<()> {
        self.refuse_if_applied()?;
        stream::import_dump(&self.db(), dump, |_| Ok(())).map_err(sm_write)
    }

    /// Loads the backup file at `path` (any version `cairn admin backup` wrote) into a
    /// state machine that has applied nothing yet, streaming it when it is of version 3.
    pub fn restore_file(&self, path: &Path) -> Result<()> {
        self.refuse_if_applied()?;
        catalog::restore_backup_file(&self.db(), path).map_err(sm_write)
    }

    fn refuse_if_applied(&self) -> Result<()> {
        let last: Option<Option<LogId>> = Self::read_state(&self.db(), LAST_APPLIED)?;
        if last.flatten().is_some() {
            return Err(sm_write(
                "refusing to restore over a catalog that has applied log entries",
            ));
        }
        Ok(())
    }

    /// The catalog, for reads.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn db(&self) -> Arc<Database> {
        self.catalog.database().clone()
    }

    fn read_state<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>> {
        let txn = db.begin_read().map_err(sm_read)?;
        let table = txn.open_table(RAFT_STATE).map_err(sm_read)?;
        let value = table.get(key).map_err(sm_read)?;
        value
            .map(|v| postcard::from_bytes(v.value()).map_err(sm_read))
            .transpose()
    }

    fn current(&self) -> Result<Option<SnapshotRecord>> {
        Self::read_state(&self.db(), CURRENT_SNAPSHOT)
    }

    /// Writes a snapshot file of the current state: one read transaction gives the rows
    /// and where in the log they stand.
    fn write_snapshot(&self) -> Result<SnapshotRecord> {
        let db = self.db();
        let txn = db.begin_read().map_err(sm_read)?;
        let (last_applied, membership) = {
            let state = txn.open_table(RAFT_STATE).map_err(sm_read)?;
            let get = |key: &str| -> Result<Option<Vec<u8>>> {
                Ok(state.get(key).map_err(sm_read)?.map(|v| v.value().to_vec()))
            };
            let last_applied: Option<LogId> = match get(LAST_APPLIED)? {
                Some(bytes) => postcard::from_bytes(&bytes).map_err(sm_read)?,
                None => None,
            };
            let membership: StoredMembership = match get(MEMBERSHIP)? {
                Some(bytes) => postcard::from_bytes(&bytes).map_err(sm_read)?,
                None => StoredMembership::default(),
            };
            (last_applied, membership)
        };
        let unique = random_name()?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{unique}", id.leader_id.term, id.index),
            None => format!("empty-{unique}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let file = format!("{unique}.snap");
        self.write_file(&file, &meta, |writer| {
            catalog::stream::write_catalog(&txn, writer)
        })?;
        Ok(SnapshotRecord { meta, file })
    }

    /// Writes `file` (header, then the rows `rows` gives), fsynced, under a temporary name
    /// until it is whole.
    fn write_file(
        &self,
        file: &str,
        meta: &SnapshotMeta<u64, Member>,
        rows: impl FnOnce(
            &mut StreamWriter<BufWriter<std::fs::File>>,
        ) -> std::result::Result<(), CatalogFault>,
    ) -> Result<()> {
        let done = self.snapshots.join(file);
        let partial = self.snapshots.join(format!("{file}.part"));
        let out = std::fs::File::create(&partial).map_err(snap_write)?;
        let mut out = BufWriter::with_capacity(1 << 20, out);
        out.write_all(SNAPSHOT_MAGIC).map_err(snap_write)?;
        let header = postcard::to_allocvec(meta).map_err(snap_write)?;
        let len = u32::try_from(header.len())
            .ok()
            .filter(|len| *len <= MAX_HEADER_BYTES)
            .ok_or_else(|| snap_write("snapshot header too large"))?;
        out.write_all(&len.to_le_bytes()).map_err(snap_write)?;
        out.write_all(&header).map_err(snap_write)?;
        let mut writer = StreamWriter::new(out, self.chunk_bytes);
        rows(&mut writer).map_err(snap_write)?;
        let (out, summary) = writer.finish().map_err(snap_write)?;
        let out = out.into_inner().map_err(|err| snap_write(err.error()))?;
        out.sync_all().map_err(snap_write)?;
        drop(out);
        std::fs::rename(&partial, &done).map_err(snap_write)?;
        sync_dir(&self.snapshots).map_err(snap_write)?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            rows = summary.rows,
            chunks = summary.chunks,
            bytes = summary.bytes,
            "catalog snapshot written"
        );
        Ok(())
    }

    /// Records `record` as the current snapshot in `txn` unless a newer one is (a build
    /// racing an install must not take the place of what the install brought); returns
    /// whether it did.
    fn record_current(txn: &WriteTransaction, record: &SnapshotRecord) -> Result<bool> {
        let mut state = txn.open_table(RAFT_STATE).map_err(sm_write)?;
        let current: Option<SnapshotRecord> = state
            .get(CURRENT_SNAPSHOT)
            .map_err(sm_read)?
            .map(|v| postcard::from_bytes(v.value()).map_err(sm_read))
            .transpose()?;
        if current.is_some_and(|c| c.meta.last_log_id > record.meta.last_log_id) {
            return Ok(false);
        }
        let bytes = postcard::to_allocvec(record).map_err(sm_write)?;
        state
            .insert(CURRENT_SNAPSHOT, bytes.as_slice())
            .map_err(sm_write)?;
        Ok(true)
    }

    /// Deletes snapshot files other than the current one, and at open (when nothing can be
    /// writing one) partial files too.
    fn remove_stale_files(&self, at_open: bool) -> Result<()> {
        let keep = self.current()?.map(|c| c.file);
        let entries = std::fs::read_dir(self.snapshots.as_path()).map_err(snap_read)?;
        for entry in entries {
            let entry = entry.map_err(snap_read)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = (at_open && name.ends_with(".part"))
                || (name.ends_with(".snap") && keep.as_deref() != Some(name));
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Rewrites the whole-value snapshot of catalog format 1, if there is one, as a
    /// snapshot file with the same metadata (its rows upgraded to format 2).
    fn convert_legacy_snapshot(&self) -> Result<()> {
        let Some(legacy) = Self::read_state::<LegacySnapshot>(&self.db(), LEGACY_SNAPSHOT)? else {
            return Ok(());
        };
        let dump: CatalogDump = postcard::from_bytes(&legacy.data).map_err(snap_read)?;
        let dump = catalog::upgrade_dump(dump);
        let record = SnapshotRecord {
            file: format!("{}.snap", random_name()?),
            meta: legacy.meta,
        };
        self.write_file(&record.file, &record.meta, |writer| {
            catalog::stream::write_dump(&dump, writer)
        })?;
        let txn = self.db().begin_write().map_err(sm_write)?;
        Self::record_current(&txn, &record)?;
        txn.open_table(RAFT_STATE)
            .map_err(sm_write)?
            .remove(LEGACY_SNAPSHOT)
            .map_err(sm_write)?;
        txn.commit().map_err(sm_write)?;
        tracing::info!(snapshot = %record.meta.snapshot_id, "format-1 snapshot rewritten as a file");
        Ok(())
    }

    fn open_snapshot(&self, record: SnapshotRecord) -> Result<Snapshot<TypeConfig>> {
        let path = self.snapshots.join(&record.file);
        let file = std::fs::File::open(&path).map_err(snap_read)?;
        Ok(Snapshot {
            meta: record.meta,
            snapshot: Box::new(SnapshotFile {
                file: tokio::fs::File::from_std(file),
                path,
            }),
        })
    }

    /// Installs the snapshot file at `path` (received whole) as the catalog.
    fn install_file(&self, meta: &SnapshotMeta<u64, Member>, path: &Path) -> Result<()> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let bad = |err: &dyn ToString| fault(subject(), ErrorVerb::Read, err.to_string());
        let file = std::fs::File::open(path).map_err(|e| bad(&e))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let header = read_header(&mut input).map_err(|e| bad(&e))?;
        if header.last_log_id != meta.last_log_id || header.snapshot_id != meta.snapshot_id {
            return Err(bad(&format!(
                "snapshot file is {} at {:?}, but {} at {:?} was sent",
                header.snapshot_id, header.last_log_id, meta.snapshot_id, meta.last_log_id
            )));
        }
        let mut reader = StreamReader::new(input);
        let record = SnapshotRecord {
            file: format!("{}.snap", random_name()?),
            meta: meta.clone(),
        };
        let db = self.db();
        let mut importer = stream::Importer::begin(&db).map_err(sm_write)?;
        while let Some((table, rows)) = reader.next_chunk().map_err(|e| bad(&e))? {
            importer.add(table, &rows).map_err(|e| bad(&e))?;
        }
        // The stream ended whole: keep the file as this member's current snapshot, so it
        // can serve it as leader, then swap the catalog in with the position it stands at.
        // Lock first, then the database's writer (as a build does), never the reverse.
        importer.flush().map_err(sm_write)?;
        let _files = self
            .files
            .lock()
            .map_err(|_| snap_write("snapshot file lock poisoned"))?;
        std::fs::rename(path, self.snapshots.join(&record.file)).map_err(snap_write)?;
        sync_dir(&self.snapshots).map_err(snap_write)?;
        importer
            .finish(|txn| {
                let mut state = txn.open_table(RAFT_STATE)?;
                let last = postcard::to_allocvec(&meta.last_log_id)?;
                state.insert(LAST_APPLIED, last.as_slice())?;
                let membership = postcard::to_allocvec(&meta.last_membership)?;
                state.insert(MEMBERSHIP, membership.as_slice())?;
                let bytes = postcard::to_allocvec(&record)?;
                state.insert(CURRENT_SNAPSHOT, bytes.as_slice())?;
                Ok(())
            })
            .map_err(sm_write)?;
        self.remove_stale_files(false)?;
        tracing::info!(snapshot = %meta.snapshot_id, "catalog snapshot installed");
        Ok(())
    }
}

/// Reads a snapshot file's header: magic, then the metadata (length bounded).
pub fn read_header(
    input: &mut impl Read,
) -> std::result::Result<SnapshotMeta<u64, Member>, CatalogFault> {
    let mut magic = [0u8; SNAPSHOT_MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|err| CatalogFault(format!("snapshot file too short: {err}")))?;
    if magic != SNAPSHOT_MAGIC {
        return Err(CatalogFault(
            "not a Cairn snapshot file of a format this release reads".into(),
        ));
    }
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|err| CatalogFault(format!("snapshot header truncated: {err}")))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(CatalogFault(format!(
            "snapshot header of {len} bytes exceeds the limit of {MAX_HEADER_BYTES}"
        )));
    }
    let mut header = Vec::new();
    input
        .take(u64::from(len))
        .read_to_end(&mut header)
        .map_err(|err| CatalogFault(format!("snapshot header unreadable: {err}")))?;
    if header.len() != len as usize {
        return Err(CatalogFault("snapshot header truncated".into()));
    }
    Ok(postcard::from_bytes(&header)?)
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| sm_write(format!("state machine task failed: {err}")))?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let sm = self.clone();
        blocking(move || {
            let record = sm.write_snapshot()?;
            // Lock first, then the database's writer (as an install does).
            let _files = sm
                .files
                .lock()
                .map_err(|_| snap_write("snapshot file lock poisoned"))?;
            let txn = sm.db().begin_write().map_err(sm_write)?;
            // Durable (the default): this commit also makes every earlier applied batch
            // durable, before openraft purges the log entries the snapshot covers.
            let recorded = Self::record_current(&txn, &record)?;
            txn.commit().map_err(sm_write)?;
            if recorded {
                sm.remove_stale_files(false)?;
                sm.open_snapshot(record)
            } else {
                // An install brought a newer snapshot meanwhile: hand out that one.
                let _ = std::fs::remove_file(sm.snapshots.join(&record.file));
                let current = sm
                    .current()?
                    .ok_or_else(|| snap_read("current snapshot vanished"))?;
                sm.open_snapshot(current)
            }
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership)> {
        let db = self.db();
        blocking(move || {
            let last: Option<Option<LogId>> = Self::read_state(&db, LAST_APPLIED)?;
            let membership: Option<StoredMembership> = Self::read_state(&db, MEMBERSHIP)?;
            Ok((last.flatten(), membership.unwrap_or_default()))
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.db();
        blocking(move || {
            let mut txn = db.begin_write().map_err(sm_write)?;
            txn.set_durability(Durability::None).map_err(sm_write)?;
            let mut results = Vec::with_capacity(entries.len());
            let mut last = None;
            let mut membership = None;
            for entry in &entries {
                last = Some(entry.log_id);
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult::Done,
                    EntryPayload::Normal(command) => {
                        catalog::apply(&txn, command).map_err(|err: CatalogFault| sm_write(err))?
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                        CommandResult::Done
                    }
                };
                results.push(result);
            }
            {
                let mut state = txn.open_table(RAFT_STATE).map_err(sm_write)?;
                let last = postcard::to_allocvec(&last).map_err(sm_write)?;
                state
                    .insert(LAST_APPLIED, last.as_slice())
                    .map_err(sm_write)?;
                if let Some(membership) = membership {
                    let bytes = postcard::to_allocvec(&membership).map_err(sm_write)?;
                    state
                        .insert(MEMBERSHIP, bytes.as_slice())
                        .map_err(sm_write)?;
                }
            }
            txn.commit().map_err(sm_write)?;
            Ok(results)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>> {
        let path = self
            .snapshots
            .join(format!("receiving-{}.part", random_name()?));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snap_write)?;
        Ok(Box::new(SnapshotFile { file, path }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<()> {
        tokio::io::AsyncWriteExt::flush(&mut snapshot.file)
            .await
            .map_err(snap_write)?;
        snapshot.file.sync_all().await.map_err(snap_write)?;
        let SnapshotFile { file, path } = *snapshot;
        drop(file);
        let meta = meta.clone();
        let sm = self.clone();
        blocking(move || {
            let result = sm.install_file(&meta, &path);
            // Whatever happened, a received file not renamed into place is not kept.
            let _ = std::fs::remove_file(&path);
            result
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let sm = self.clone();
        blocking(move || {
            sm.current()?
                .map(|record| sm.open_snapshot(record))
                .transpose()
        })
        .await
    }
}
