//! The redb Raft log: openraft's own storage suite, then what the suite cannot see —
//! reopening the file, truncate/purge across restarts, and damaged bytes on disk.

use std::io::Cursor;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cairn_coordinator::raft::log_store::LogStore;
use openraft::storage::{
    LogState, RaftLogStorage, RaftLogStorageExt, RaftStateMachine, Snapshot, SnapshotMeta,
};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// A stand-in for a catalog command: just enough payload to make entries realistic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Put {
    key: String,
    value: Vec<u8>,
}

openraft::declare_raft_types!(
    /// The type config the tests run the log under.
    TestConfig:
        D = Put,
        R = (),
        NodeId = u64,
        Node = BasicNode,
);

type Store = LogStore<TestConfig>;
type TestEntry = Entry<TestConfig>;

/// Same name and types as the store's private table: the corruption tests write behind its
/// back.
const RAW_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAW_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

// ---------------------------------------------------------------------------------------
// A minimal in-memory state machine, only so openraft's suite has something to pair the
// log with. It remembers the last applied id and membership, and snapshots exactly that.

#[derive(Debug, Default)]
struct SmState {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// What a snapshot of [`MemStateMachine`] holds.
#[derive(Serialize, Deserialize)]
struct SmImage {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

/// Shared so the snapshot builder openraft takes updates the same "current snapshot".
#[derive(Debug, Clone, Default)]
struct MemStateMachine(Arc<Mutex<SmState>>);

impl MemStateMachine {
    fn state(&self) -> MutexGuard<'_, SmState> {
        self.0.lock().expect("state machine mutex poisoned")
    }
}

impl RaftSnapshotBuilder<TestConfig> for MemStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StorageError<u64>> {
        let mut state = self.state();
        let image = SmImage {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
        };
        let bytes = postcard::to_stdvec(&image)
            .map_err(|err| StorageIOError::write_snapshot(None, &err))?;
        state.snapshots_built += 1;
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: format!("snapshot-{}", state.snapshots_built),
        };
        state.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TestConfig> for MemStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let state = self.state();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = TestEntry> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state();
        let mut replies = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            if let EntryPayload::Membership(membership) = entry.payload {
                state.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let image: SmImage = postcard::from_bytes(&bytes)
            .map_err(|err| StorageIOError::read_snapshot(Some(meta.signature()), &err))?;
        let mut state = self.state();
        state.last_applied = image.last_applied;
        state.membership = image.membership;
        state.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TestConfig>>, StorageError<u64>> {
        Ok(self.state().snapshot.clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Builds each suite case a fresh log file in its own temp dir (the guard deletes it).
struct FreshStore;

impl StoreBuilder<TestConfig, Store, MemStateMachine, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, Store, MemStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|err| StorageIOError::write(&err))?;
        let store = Store::open(&dir.path().join("raft-log.redb"))?;
        Ok((dir, store, MemStateMachine::default()))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    // Its assertions panic; a returned error is a storage failure along the way.
    if let Err(err) = Suite::test_all(FreshStore) {
        panic!("storage suite hit a storage error: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the hand-written tests.

fn temp_log() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft-log.redb");
    (dir, path)
}

/// A normal entry whose payload is `len` bytes, so sizes resemble catalog commands.
fn put(term: u64, index: u64, len: usize) -> TestEntry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Put {
            key: format!("object/{index}"),
            value: (0..len).map(|i| (i as u64 ^ index) as u8).collect(),
        }),
    }
}

fn blank(term: u64, index: u64) -> TestEntry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> TestEntry {
    let voters = [1u64, 2, 3].into_iter().collect();
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

fn indexes(entries: &[TestEntry]) -> Vec<u64> {
    entries.iter().map(|entry| entry.log_id.index).collect()
}

fn state(last_purged: Option<LogId<u64>>, last: Option<LogId<u64>>) -> LogState<TestConfig> {
    LogState {
        last_purged_log_id: last_purged,
        last_log_id: last,
    }
}

/// Everything the store persists, read through its public API.
#[derive(Debug, PartialEq)]
struct Persisted {
    state: LogState<TestConfig>,
    entries: Vec<TestEntry>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
}

async fn persisted(store: &mut Store) -> Persisted {
    Persisted {
        state: store.get_log_state().await.expect("log state"),
        entries: store.try_get_log_entries(..).await.expect("entries"),
        vote: store.read_vote().await.expect("vote"),
        committed: store.read_committed().await.expect("committed"),
    }
}

/// The indexes `try_get_log_entries` returns for `range`.
async fn read(store: &mut Store, range: (Bound<u64>, Bound<u64>)) -> Vec<u64> {
    indexes(&store.try_get_log_entries(range).await.expect("read"))
}

/// Writes one raw row behind the store's back; the store must be closed.
fn poke_log(path: &Path, index: u64, bytes: &[u8]) {
    let db = Database::create(path).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    txn.open_table(RAW_LOG)
        .expect("log table")
        .insert(index, bytes)
        .expect("insert");
    txn.commit().expect("commit");
}

fn poke_meta(path: &Path, key: &str, bytes: &[u8]) {
    let db = Database::create(path).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    txn.open_table(RAW_META)
        .expect("meta table")
        .insert(key, bytes)
        .expect("insert");
    txn.commit().expect("commit");
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn everything_survives_reopening() {
    let (_dir, path) = temp_log();
    let before = {
        let mut store = Store::open(&path).expect("open");
        store
            .blocking_append([blank(1, 1), membership(1, 2)])
            .await
            .expect("append");
        store
            .blocking_append((3..=40).map(|i| put(1, i, 1500)))
            .await
            .expect("append");
        store
            .blocking_append([put(2, 41, 10)])
            .await
            .expect("append");
        store
            .save_vote(&Vote::new_committed(2, 1))
            .await
            .expect("vote");
        store
            .save_committed(Some(log_id(2, 1, 41)))
            .await
            .expect("committed");
        let before = persisted(&mut store).await;
        assert_eq!(before.entries.len(), 41);
        assert_eq!(before.state, state(None, Some(log_id(2, 1, 41))));
        before
    };
    // Every handle is gone, so the file is closed; reopening must give back the same log.
    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(persisted(&mut store).await, before);

    // A cleared committed id stays cleared.
    store.save_committed(None).await.expect("clear committed");
    drop(store);
    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(store.read_committed().await.expect("committed"), None);
}

#[tokio::test]
async fn a_fresh_log_is_empty() {
    let (_dir, path) = temp_log();
    let mut store = Store::open(&path).expect("open");
    assert_eq!(
        persisted(&mut store).await,
        Persisted {
            state: state(None, None),
            entries: Vec::new(),
            vote: None,
            committed: None,
        }
    );
}

#[tokio::test]
async fn truncate_removes_the_tail_and_allows_overwriting() {
    let (_dir, path) = temp_log();
    let mut store = Store::open(&path).expect("open");
    store
        .blocking_append((1..=10).map(|i| put(1, i, 100)))
        .await
        .expect("append");

    store.truncate(log_id(1, 1, 7)).await.expect("truncate");
    let entries = store.try_get_log_entries(..).await.expect("read");
    assert_eq!(indexes(&entries), (1..=6).collect::<Vec<_>>());
    assert_eq!(
        store.get_log_state().await.expect("state"),
        state(None, Some(log_id(1, 1, 6)))
    );

    // A new leader's entries replace the truncated ones.
    store
        .blocking_append([put(2, 7, 100), put(2, 8, 100)])
        .await
        .expect("append");
    let entries = store.try_get_log_entries(7..).await.expect("read");
    assert_eq!(entries, vec![put(2, 7, 100), put(2, 8, 100)]);

    // Truncating everything leaves no log and no purge mark.
    store.truncate(log_id(1, 1, 1)).await.expect("truncate");
    assert_eq!(
        store.get_log_state().await.expect("state"),
        state(None, None)
    );
}

#[tokio::test]
async fn purge_keeps_its_mark_across_reopening() {
    let (_dir, path) = temp_log();
    {
        let mut store = Store::open(&path).expect("open");
        store
            .blocking_append((1..=10).map(|i| put(1, i, 100)))
            .await
            .expect("append");
        store.purge(log_id(1, 1, 4)).await.expect("purge");

        let entries = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&entries), (5..=10).collect::<Vec<_>>());
        assert!(
            store
                .try_get_log_entries(..5)
                .await
                .expect("read")
                .is_empty()
        );
        // A stale purge neither moves the mark back nor removes anything.
        store.purge(log_id(1, 1, 2)).await.expect("stale purge");
        assert_eq!(
            store.get_log_state().await.expect("state"),
            state(Some(log_id(1, 1, 4)), Some(log_id(1, 1, 10)))
        );
    }

    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(
        store.get_log_state().await.expect("state"),
        state(Some(log_id(1, 1, 4)), Some(log_id(1, 1, 10)))
    );
    assert_eq!(
        indexes(&store.try_get_log_entries(..).await.expect("read")),
        (5..=10).collect::<Vec<_>>()
    );

    // Purging everything: the empty log ends where the purge did, even after a restart.
    store.purge(log_id(1, 1, 10)).await.expect("purge all");
    drop(store);
    let mut store = Store::open(&path).expect("reopen");
    let purged = Some(log_id(1, 1, 10));
    assert_eq!(
        store.get_log_state().await.expect("state"),
        state(purged, purged)
    );
    assert!(
        store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .is_empty()
    );

    // Purging past the end (after installing a snapshot) moves the end too; appending
    // continues from there.
    store.purge(log_id(3, 1, 15)).await.expect("purge ahead");
    let purged = Some(log_id(3, 1, 15));
    assert_eq!(
        store.get_log_state().await.expect("state"),
        state(purged, purged)
    );
    store
        .blocking_append([put(3, 16, 100)])
        .await
        .expect("append");
    assert_eq!(
        store.get_log_state().await.expect("state"),
        state(purged, Some(log_id(3, 1, 16)))
    );
}

#[tokio::test]
async fn reads_stop_at_the_first_gap_and_respect_bounds() {
    let (_dir, path) = temp_log();
    let mut store = Store::open(&path).expect("open");
    // Raft never leaves holes; this writes one on purpose to check the reader's guard.
    store
        .blocking_append((1..=3).chain(5..=6).map(|i| put(1, i, 10)))
        .await
        .expect("append");

    assert_eq!(read(&mut store, (Unbounded, Unbounded)).await, [1, 2, 3]);
    assert_eq!(read(&mut store, (Included(5), Unbounded)).await, [5, 6]);
    assert_eq!(read(&mut store, (Included(2), Excluded(3))).await, [2]);
    assert_eq!(read(&mut store, (Excluded(1), Included(2))).await, [2]);
    assert_eq!(
        read(&mut store, (Included(3), Excluded(3))).await,
        [0u64; 0]
    );
    assert_eq!(
        read(&mut store, (Included(6), Excluded(2))).await,
        [0u64; 0]
    );
    assert_eq!(
        read(&mut store, (Excluded(u64::MAX), Unbounded)).await,
        [0u64; 0]
    );
    assert_eq!(
        read(&mut store, (Included(6), Included(u64::MAX))).await,
        [6]
    );
}

#[tokio::test]
async fn damaged_entries_are_errors_not_panics() {
    let (_dir, path) = temp_log();
    {
        let mut store = Store::open(&path).expect("open");
        store
            .blocking_append((1..=3).map(|i| put(1, i, 50)))
            .await
            .expect("append");
    }

    // Garbage in the middle of the log.
    poke_log(&path, 2, &[0xff; 7]);
    let mut store = Store::open(&path).expect("reopen");
    let err = store
        .try_get_log_entries(1..4)
        .await
        .expect_err("garbage must not decode");
    assert!(err.to_string().contains("LogIndex(2)"), "{err}");
    // Rows around it still read.
    assert_eq!(
        indexes(&store.try_get_log_entries(1..2).await.expect("read")),
        [1]
    );
    assert_eq!(
        store.get_log_state().await.expect("state").last_log_id,
        Some(log_id(1, 1, 3))
    );
    drop(store);

    // A valid entry followed by extra bytes is not what the store wrote either.
    let mut padded = postcard::to_stdvec(&put(1, 3, 50)).expect("encode");
    padded.push(0);
    poke_log(&path, 3, &padded);
    let mut store = Store::open(&path).expect("reopen");
    assert!(store.get_log_state().await.is_err());
    drop(store);

    // A well-formed entry filed under the wrong index.
    let misfiled = postcard::to_stdvec(&put(1, 1, 50)).expect("encode");
    poke_log(&path, 3, &misfiled);
    let mut store = Store::open(&path).expect("reopen");
    let err = store
        .get_log_state()
        .await
        .expect_err("misfiled entry must be refused");
    assert!(err.to_string().contains("LogIndex(3)"), "{err}");
    drop(store);

    // A damaged vote is an error too.
    poke_meta(&path, "vote", &[0xff; 3]);
    let mut store = Store::open(&path).expect("reopen");
    let err = store
        .read_vote()
        .await
        .expect_err("garbage vote must not decode");
    assert!(err.to_string().contains("Vote"), "{err}");
}

#[test]
fn refuses_a_log_in_another_format() {
    let (_dir, path) = temp_log();
    drop(Store::open(&path).expect("open"));
    poke_meta(
        &path,
        "format",
        &postcard::to_stdvec(&2u32).expect("encode"),
    );
    let err = Store::open(&path).expect_err("format 2 must be refused");
    assert!(err.to_string().contains("format 2"), "{err}");
}

#[test]
fn refuses_a_file_that_is_not_a_database() {
    let (_dir, path) = temp_log();
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("write junk");
    assert!(Store::open(&path).is_err());
}

/// Durable append throughput for single-entry and 64-entry batches of 1–2 KiB entries.
/// Ignored by default (it measures the disk, not the code); run with
/// `cargo nextest run -p cairn-coordinator -E 'binary(log_store)' --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints throughput"]
async fn append_throughput() {
    // On the real disk, not a tmpfs, so fsync costs what it will in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let mut store = Store::open(&dir.path().join("bench.redb")).expect("open");
    let size = |index: u64| 1024 + (index as usize * 37) % 1024;

    let mut next = 1u64;
    for (batch, batches) in [(1u64, 1000u64), (64, 150), (1, 1000), (64, 150)] {
        let entries: Vec<Vec<TestEntry>> = (0..batches)
            .map(|b| {
                (0..batch)
                    .map(|i| {
                        let index = next + b * batch + i;
                        put(1, index, size(index))
                    })
                    .collect()
            })
            .collect();
        next += batch * batches;
        let started = Instant::now();
        for group in entries {
            store.blocking_append(group).await.expect("append");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "batch {batch:>2}: {:>8.0} entries/s, {:>6.0} commits/s ({} entries in {secs:.2}s)",
            (batch * batches) as f64 / secs,
            batches as f64 / secs,
            batch * batches,
        );
    }
}
