//! [`StateMachine`]: the catalog as openraft's state machine, with snapshots.
//!
//! Every batch of committed entries is applied in one redb write transaction that also
//! records the last applied log id and membership, so the catalog and its position in the
//! log can never disagree. Those commits skip the fsync: the Raft log is the durable record,
//! and after a crash openraft re-applies committed entries past the recorded position. The
//! snapshot is written durably, which also flushes every earlier commit, before openraft
//! purges the log entries it covers.

// openraft fixes the error type of every storage call to its own large `StorageError`.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError,
};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::types::{LogId, Member, StoredMembership, TypeConfig};
use crate::catalog::{self, Catalog, CatalogDump, CatalogFault, CommandResult};

/// Raft bookkeeping kept beside the catalog tables, in the same database.
const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";

/// A snapshot as kept on disk: its metadata and the catalog rows.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, Member>,
    data: Vec<u8>,
}

/// The catalog, applied from the Raft log.
#[derive(Clone)]
pub struct StateMachine {
    catalog: Catalog,
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

impl StateMachine {
    /// Opens (or creates) the catalog database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let db = Database::create(path).map_err(sm_write)?;
        let catalog = Catalog::new(Arc::new(db)).map_err(sm_write)?;
        let txn = catalog.database().begin_write().map_err(sm_write)?;
        txn.open_table(RAFT_STATE).map_err(sm_write)?;
        txn.commit().map_err(sm_write)?;
        Ok(Self { catalog })
    }

    /// Loads a catalog backup into a state machine that has applied nothing yet: the first
    /// step of starting a new group from a backup.
    pub fn restore(&self, dump: &CatalogDump) -> Result<()> {
        let db = self.db();
        let last: Option<Option<LogId>> = Self::read_state(&db, LAST_APPLIED)?;
        if last.flatten().is_some() {
            return Err(sm_write(
                "refusing to restore over a catalog that has applied log entries",
            ));
        }
        let txn = db.begin_write().map_err(sm_write)?;
        catalog::import(&txn, dump).map_err(sm_write)?;
        txn.commit().map_err(sm_write)
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

    /// The snapshot of the current state: catalog rows plus where in the log they stand.
    fn snapshot_now(db: &Database) -> Result<StoredSnapshot> {
        let txn = db.begin_read().map_err(sm_read)?;
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
        let dump = catalog::export(&txn).map_err(sm_read)?;
        let data = postcard::to_allocvec(&dump).map_err(sm_read)?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        Ok(StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            },
            data,
        })
    }

    fn save_snapshot(db: &Database, snapshot: &StoredSnapshot) -> Result<()> {
        let bytes = postcard::to_allocvec(snapshot).map_err(sm_write)?;
        let txn = db.begin_write().map_err(sm_write)?;
        txn.open_table(RAFT_STATE)
            .map_err(sm_write)?
            .insert(SNAPSHOT, bytes.as_slice())
            .map_err(sm_write)?;
        txn.commit().map_err(sm_write)
    }
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
        let db = self.db();
        let snapshot = blocking(move || {
            let snapshot = Self::snapshot_now(&db)?;
            Self::save_snapshot(&db, &snapshot)?;
            Ok(snapshot)
        })
        .await?;
        tracing::info!(
            snapshot = %snapshot.meta.snapshot_id,
            bytes = snapshot.data.len(),
            "catalog snapshot built"
        );
        Ok(Snapshot {
            meta: snapshot.meta,
            snapshot: Box::new(Cursor::new(snapshot.data)),
        })
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let meta = meta.clone();
        let db = self.db();
        blocking(move || {
            let snapshot_err = |err: &dyn ToString| {
                fault(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Read,
                    err.to_string(),
                )
            };
            let dump: CatalogDump = postcard::from_bytes(&data).map_err(|e| snapshot_err(&e))?;
            let txn = db.begin_write().map_err(sm_write)?;
            catalog::import(&txn, &dump).map_err(sm_write)?;
            {
                let mut state = txn.open_table(RAFT_STATE).map_err(sm_write)?;
                let last = postcard::to_allocvec(&meta.last_log_id).map_err(sm_write)?;
                state
                    .insert(LAST_APPLIED, last.as_slice())
                    .map_err(sm_write)?;
                let membership = postcard::to_allocvec(&meta.last_membership).map_err(sm_write)?;
                state
                    .insert(MEMBERSHIP, membership.as_slice())
                    .map_err(sm_write)?;
                let stored = postcard::to_allocvec(&StoredSnapshot {
                    meta: meta.clone(),
                    data,
                })
                .map_err(sm_write)?;
                state
                    .insert(SNAPSHOT, stored.as_slice())
                    .map_err(sm_write)?;
            }
            txn.commit().map_err(sm_write)?;
            tracing::info!(snapshot = %meta.snapshot_id, "catalog snapshot installed");
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let db = self.db();
        let stored: Option<StoredSnapshot> =
            blocking(move || Self::read_state(&db, SNAPSHOT)).await?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
