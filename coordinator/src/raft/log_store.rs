//! The Raft log on redb: openraft's [`RaftLogStorage`] and [`RaftLogReader`] for any type
//! config whose entries serde can encode.
//!
//! # Layout
//!
//! One redb file with two tables, named with a `raft_` prefix so the file can be shared
//! with other tables (see [`LogStore::with_database`]):
//!
//! * `raft_log`: log index → postcard bytes of `C::Entry`. The key is the entry's own index,
//!   and every read checks that the decoded entry agrees, so a mis-filed row is an error
//!   instead of a silently wrong log.
//! * `raft_meta`: a handful of named postcard values: the vote, the committed log id, the
//!   last purged log id, and the format version.
//!
//! # Durability
//!
//! Every write is one redb write transaction. Appends, votes, truncations and purges commit
//! with [`Durability::Immediate`] (fsync before the commit returns), because Raft's safety
//! rests on them surviving a crash. Only the committed log id is written without an fsync:
//! it is a hint for how far to re-apply after a restart, any value that reaches the disk
//! is truly committed, and a lost one only means re-applying less. It rides to disk on the
//! next durable commit or a clean close, which keeps the hot path at one fsync per batch.
//!
//! # Blocking
//!
//! redb is synchronous and a durable commit waits for an fsync (milliseconds on slow
//! disks), so every call runs its redb work on tokio's blocking pool rather than stalling a
//! runtime worker. The methods therefore need a tokio runtime, which openraft 0.9 requires
//! anyway.

// openraft's traits fix the error type to its own `StorageError` (~185 bytes); boxing it in
// the helpers would only be undone at every trait boundary, and errors here are rare.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, NodeId, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Log index → postcard-encoded entry.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

/// Name → postcard-encoded value, for the few single values kept beside the log.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// `Vote<NodeId>`: who this node voted for in which term.
const KEY_VOTE: &str = "vote";

/// `LogId<NodeId>`: the last log id known to be committed (absent until first saved).
const KEY_COMMITTED: &str = "committed";

/// `LogId<NodeId>`: the newest log id removed by a purge. Kept because an empty log still
/// has to report where it ends.
const KEY_PURGED: &str = "last_purged";

/// `u32`: [`FORMAT_VERSION`] of the file.
const KEY_FORMAT: &str = "format";

/// Bumped whenever a table or record encoding changes (including openraft changing its log
/// types across a major upgrade), so an old binary refuses a newer log instead of
/// misreading it.
const FORMAT_VERSION: u32 = 1;

/// Raft log, vote and committed log id, stored durably in redb.
///
/// Generic over the openraft type config so the catalog's entry type can evolve without
/// touching storage; entries only need to round-trip through postcard (which means no
/// `#[serde(untagged)]`, `flatten` or `skip_serializing_if` in the application data: postcard
/// is not self-describing).
///
/// Clones share the database and the write queue, so the clone openraft uses as its log
/// reader sees every write as soon as the writing call returns.
pub struct LogStore<C: RaftTypeConfig> {
    db: Arc<Database>,
    /// Held from the moment a write is issued until its redb transaction has finished, even
    /// if the issuing future is dropped meanwhile. openraft requires log and vote writes to
    /// take effect in the order it issued them; without this, a cancelled append still
    /// running on the blocking pool could land after a later truncate.
    write_queue: Arc<Mutex<()>>,
    /// `fn() -> C` keeps the store `Send + Sync` whatever `C` is: no `C` is ever stored.
    _config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: Arc::clone(&self.db),
            write_queue: Arc::clone(&self.write_queue),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for LogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens the log at `path`, creating the file and its tables if they do not exist.
    ///
    /// Every page checksum is verified on open, so a file damaged outside redb is reported
    /// as an error rather than trusted (a plain redb open may panic on such a file). The log
    /// is kept short by purging, so the check is cheap. This blocks; call it before starting
    /// Raft or from a blocking task.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not a redb database, fails its integrity
    /// check, or holds a log in another format.
    pub fn open(path: &Path) -> Result<Self, StorageError<C::NodeId>> {
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|err| db_error(ErrorSubject::Store, ErrorVerb::Read, err))?;
        Self::with_database(Arc::new(db))
    }

    /// Uses an already open database, so the state machine can keep its tables in the same
    /// file (redb allows one open handle per file per process).
    ///
    /// Creates the `raft_log` and `raft_meta` tables if missing and refuses a file written
    /// in a different log format. Blocks like [`Self::open`].
    ///
    /// # Errors
    ///
    /// The tables cannot be created, or the file holds a log in another format.
    pub fn with_database(db: Arc<Database>) -> Result<Self, StorageError<C::NodeId>> {
        init_tables(&db)?;
        Ok(Self {
            db,
            write_queue: Arc::new(Mutex::new(())),
            _config: PhantomData,
        })
    }

    /// Waits for earlier writes to finish; the returned guard travels into the blocking
    /// task so the queue only moves on once the transaction is over.
    async fn queue_write(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.write_queue).lock_owned().await
    }

    /// Encodes and durably writes one batch in a single transaction, because each redb
    /// commit costs an fsync.
    async fn write_batch<I>(&self, entries: I) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry>,
    {
        let rows = entries
            .into_iter()
            .map(|entry| {
                let log_id = entry.get_log_id();
                postcard::to_stdvec(&entry)
                    .map(|bytes| (log_id.index, bytes))
                    .map_err(|err| StorageIOError::write_log_entry(log_id.clone(), &err).into())
            })
            .collect::<Result<Vec<_>, StorageError<C::NodeId>>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        let guard = self.queue_write().await;
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Logs, ErrorVerb::Write, move || {
            let _queued = guard;
            write_rows(&db, &rows).or_io(&ErrorSubject::Logs, ErrorVerb::Write)
        })
        .await
    }

    /// Writes one meta value in its own transaction (`None` removes it).
    async fn put_meta(
        &self,
        key: &'static str,
        value: Option<Vec<u8>>,
        durability: Durability,
        subject: ErrorSubject<C::NodeId>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let guard = self.queue_write().await;
        let db = Arc::clone(&self.db);
        let on_error = subject.clone();
        blocking(subject, ErrorVerb::Write, move || {
            let _queued = guard;
            write_meta(&db, key, value.as_deref(), durability).or_io(&on_error, ErrorVerb::Write)
        })
        .await
    }

    /// Reads and decodes one meta value.
    async fn get_meta<T>(
        &self,
        key: &'static str,
        subject: ErrorSubject<C::NodeId>,
    ) -> Result<Option<T>, StorageError<C::NodeId>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let on_error = subject.clone();
        blocking(subject, ErrorVerb::Read, move || {
            read_meta(&db, key)
                .or_io(&on_error, ErrorVerb::Read)?
                .map(|bytes| decode(&bytes))
                .transpose()
                .map_err(|err| StorageIOError::new(on_error, ErrorVerb::Read, err).into())
        })
        .await
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>>
    where
        RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend,
    {
        let Some((start, end)) = normalize(&range) else {
            return Ok(Vec::new());
        };
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            read_entries::<C>(&db, start, end)
        })
        .await
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            read_log_state::<C>(&db)
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let bytes = postcard::to_stdvec(vote).map_err(|err| StorageIOError::write_vote(&err))?;
        self.put_meta(
            KEY_VOTE,
            Some(bytes),
            Durability::Immediate,
            ErrorSubject::Vote,
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote).await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = committed
            .map(|log_id| postcard::to_stdvec(&log_id))
            .transpose()
            .map_err(|err| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, &err))?;
        // No fsync: see the module docs for why a lost committed id is harmless.
        self.put_meta(KEY_COMMITTED, bytes, Durability::None, ErrorSubject::Store)
            .await
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.get_meta(KEY_COMMITTED, ErrorSubject::Store).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The callback is Raft's durability promise: it fires only once the commit (and its
        // fsync) has returned, and it hears about failures too so nothing waits forever.
        let result = self.write_batch(entries).await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(err) => callback.log_io_completed(Err(io::Error::other(err.clone()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let guard = self.queue_write().await;
        let db = Arc::clone(&self.db);
        blocking(
            ErrorSubject::Log(log_id.clone()),
            ErrorVerb::Delete,
            move || {
                let _queued = guard;
                remove_from(&db, log_id.index).or_io(&ErrorSubject::Log(log_id), ErrorVerb::Delete)
            },
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let guard = self.queue_write().await;
        let db = Arc::clone(&self.db);
        blocking(
            ErrorSubject::Log(log_id.clone()),
            ErrorVerb::Delete,
            move || {
                let _queued = guard;
                purge_upto::<C>(&db, &log_id)
            },
        )
        .await
    }
}

/// Runs redb work on the blocking pool; a panic there becomes a storage error tagged with
/// the operation's subject rather than tearing down the caller.
async fn blocking<N, T, F>(
    subject: ErrorSubject<N>,
    verb: ErrorVerb,
    work: F,
) -> Result<T, StorageError<N>>
where
    N: NodeId,
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError<N>> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(StorageIOError::new(subject, verb, &join).into()),
    }
}

/// Wraps any redb error as an openraft I/O error.
fn db_error<N: NodeId>(
    subject: ErrorSubject<N>,
    verb: ErrorVerb,
    err: impl Into<redb::Error>,
) -> StorageError<N> {
    let err: redb::Error = err.into();
    StorageIOError::new(subject, verb, &err).into()
}

/// Tags a redb result with what was being done, turning its error into openraft's.
trait OrIo<T> {
    /// Maps the error to a [`StorageError`] about `subject`.
    fn or_io<N: NodeId>(
        self,
        subject: &ErrorSubject<N>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<N>>;
}

impl<T, E: Into<redb::Error>> OrIo<T> for Result<T, E> {
    fn or_io<N: NodeId>(
        self,
        subject: &ErrorSubject<N>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<N>> {
        self.map_err(|err| db_error(subject.clone(), verb, err))
    }
}

/// Decodes a postcard record, refusing trailing bytes: a record that decodes but leaves
/// bytes over was not written by this code.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|err| AnyError::new(&err))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(AnyError::error(format!(
            "{} unexpected trailing bytes after the record",
            rest.len()
        )))
    }
}

/// Turns any range of indexes into `[start, end)` (`None` = unbounded), or `None` if it is
/// empty, so redb never sees an inverted range.
fn normalize(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        // `..=u64::MAX` has no exclusive end; it reaches as far as unbounded does.
        Bound::Included(&end) => end.checked_add(1),
        Bound::Excluded(&end) => Some(end),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if start >= end => None,
        _ => Some((start, end)),
    }
}

/// Creates both tables so later read transactions never meet a missing one, and records or
/// checks the format version.
fn init_tables<N: NodeId>(db: &Database) -> Result<(), StorageError<N>> {
    let store = ErrorSubject::Store;
    let write = ErrorVerb::Write;
    let txn = db.begin_write().or_io(&store, write)?;
    {
        txn.open_table(LOG).or_io(&store, write)?;
        let mut meta = txn.open_table(META).or_io(&store, write)?;
        let stored = meta
            .get(KEY_FORMAT)
            .or_io(&store, write)?
            .map(|guard| decode::<u32>(guard.value()));
        match stored {
            None => {
                let bytes = postcard::to_stdvec(&FORMAT_VERSION)
                    .map_err(|err| StorageIOError::write(&err))?;
                meta.insert(KEY_FORMAT, bytes.as_slice())
                    .or_io(&store, write)?;
            }
            Some(Ok(FORMAT_VERSION)) => {}
            Some(Ok(other)) => {
                return Err(StorageIOError::read(AnyError::error(format!(
                    "raft log format {other} is not the supported format {FORMAT_VERSION}"
                )))
                .into());
            }
            Some(Err(err)) => return Err(StorageIOError::read(err).into()),
        }
    }
    txn.commit().or_io(&store, write)
}

/// Inserts a batch of encoded entries in one durable transaction.
fn write_rows(db: &Database, rows: &[(u64, Vec<u8>)]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut log = txn.open_table(LOG)?;
        for (index, bytes) in rows {
            log.insert(index, bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Sets or removes one meta value in its own transaction.
fn write_meta(
    db: &Database,
    key: &str,
    value: Option<&[u8]>,
    durability: Durability,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    {
        let mut meta = txn.open_table(META)?;
        match value {
            Some(bytes) => {
                meta.insert(key, bytes)?;
            }
            None => {
                meta.remove(key)?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Reads one raw meta value.
fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.get(key)?.map(|guard| guard.value().to_vec()))
}

/// Removes every entry at or after `index`, durably.
fn remove_from(db: &Database, index: u64) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut log = txn.open_table(LOG)?;
        log.retain_in::<u64, _>(index.., |_, _| false)?;
    }
    txn.commit()?;
    Ok(())
}

/// Records `log_id` as the last purged id, then removes every entry up to it, in one
/// durable transaction: the mark can never be lost while entries are gone. The mark never
/// moves backwards, so a stale purge cannot make the log claim to end earlier than it did.
fn purge_upto<C: RaftTypeConfig>(
    db: &Database,
    log_id: &LogId<C::NodeId>,
) -> Result<(), StorageError<C::NodeId>> {
    let subject = ErrorSubject::Log(log_id.clone());
    let delete = ErrorVerb::Delete;
    let mut txn = db.begin_write().or_io(&subject, delete)?;
    txn.set_durability(Durability::Immediate)
        .or_io(&subject, delete)?;
    {
        let mut meta = txn.open_table(META).or_io(&subject, delete)?;
        let previous = meta
            .get(KEY_PURGED)
            .or_io(&subject, delete)?
            .map(|guard| decode::<LogId<C::NodeId>>(guard.value()))
            .transpose()
            .map_err(|err| StorageIOError::new(subject.clone(), ErrorVerb::Read, err))?;
        if previous.is_none_or(|previous| previous < *log_id) {
            let bytes = postcard::to_stdvec(log_id)
                .map_err(|err| StorageIOError::new(subject.clone(), ErrorVerb::Write, &err))?;
            meta.insert(KEY_PURGED, bytes.as_slice())
                .or_io(&subject, delete)?;
        }
        let mut log = txn.open_table(LOG).or_io(&subject, delete)?;
        log.retain_in::<u64, _>(..=log_id.index, |_, _| false)
            .or_io(&subject, delete)?;
    }
    txn.commit().or_io(&subject, delete)
}

/// Decodes the entry stored under `index`, checking it is the entry for that index.
fn decode_entry<C: RaftTypeConfig>(
    index: u64,
    bytes: &[u8],
) -> Result<C::Entry, StorageError<C::NodeId>>
where
    C::Entry: DeserializeOwned,
{
    let entry: C::Entry =
        decode(bytes).map_err(|err| StorageIOError::read_log_at_index(index, err))?;
    let stored = entry.get_log_id().index;
    if stored != index {
        return Err(StorageIOError::read_log_at_index(
            index,
            AnyError::error(format!("row {index} holds the entry for index {stored}")),
        )
        .into());
    }
    Ok(entry)
}

/// Reads the entries in `[start, end)` in order, stopping at the first hole: Raft only
/// trusts a contiguous run, so nothing past a gap is returned.
fn read_entries<C: RaftTypeConfig>(
    db: &Database,
    start: u64,
    end: Option<u64>,
) -> Result<Vec<C::Entry>, StorageError<C::NodeId>>
where
    C::Entry: DeserializeOwned,
{
    let logs = ErrorSubject::Logs;
    let read = ErrorVerb::Read;
    let txn = db.begin_read().or_io(&logs, read)?;
    let log = txn.open_table(LOG).or_io(&logs, read)?;
    let rows = match end {
        Some(end) => log.range::<u64>(start..end),
        None => log.range::<u64>(start..),
    }
    .or_io(&logs, read)?;
    let mut entries = Vec::new();
    let mut next: Option<u64> = None;
    for row in rows {
        let (key, value) = row.or_io(&logs, read)?;
        let index = key.value();
        if next.is_some_and(|next| next != index) {
            break;
        }
        entries.push(decode_entry::<C>(index, value.value())?);
        next = Some(index.saturating_add(1));
    }
    Ok(entries)
}

/// Reads the last entry's id and the purge mark from one snapshot, so a concurrent purge
/// can never be seen half-way.
fn read_log_state<C: RaftTypeConfig>(db: &Database) -> Result<LogState<C>, StorageError<C::NodeId>>
where
    C::Entry: DeserializeOwned,
{
    let logs = ErrorSubject::Logs;
    let read = ErrorVerb::Read;
    let txn = db.begin_read().or_io(&logs, read)?;
    let meta = txn.open_table(META).or_io(&logs, read)?;
    let last_purged_log_id = meta
        .get(KEY_PURGED)
        .or_io(&logs, read)?
        .map(|guard| decode::<LogId<C::NodeId>>(guard.value()))
        .transpose()
        .map_err(StorageIOError::read_logs)?;
    let log = txn.open_table(LOG).or_io(&logs, read)?;
    let last_entry = match log.last().or_io(&logs, read)? {
        Some((key, value)) => Some(
            decode_entry::<C>(key.value(), value.value())?
                .get_log_id()
                .clone(),
        ),
        None => None,
    };
    Ok(LogState {
        last_log_id: last_entry.or_else(|| last_purged_log_id.clone()),
        last_purged_log_id,
    })
}
