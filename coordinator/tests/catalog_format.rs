//! The catalog's on-disk format: a catalog written by the first format (the fixture, made
//! by that code) is migrated at open and reads back whole, its snapshot included; a newer
//! format and unknown record versions are refused, not misread.

#[path = "fixtures/format1_commands.rs"]
mod format1_commands;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use cairn_coordinator::catalog::{self, Catalog, ListQuery};
use cairn_coordinator::raft::state_machine::StateMachine;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// The fixture: a `catalog.redb` written by format-1 code (`format1_commands` applied as
/// log entries 2.., after a membership entry at 1; then a snapshot built).
fn fixture(dir: &Path) -> std::path::PathBuf {
    let packed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog-format-1.redb.zst"),
    )
    .unwrap();
    let mut bytes = Vec::new();
    zstd::stream::read::Decoder::new(packed.as_slice())
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let path = dir.join("catalog.redb");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The same commands applied by this release to a fresh catalog.
fn replayed(dir: &Path) -> Catalog {
    let db = redb::Database::create(dir.join("replayed.redb")).unwrap();
    let catalog = Catalog::new(Arc::new(db)).unwrap();
    let txn = catalog.database().begin_write().unwrap();
    for command in format1_commands::commands() {
        catalog::apply(&txn, &command).unwrap();
    }
    txn.commit().unwrap();
    catalog
}

fn dump(catalog: &Catalog) -> catalog::CatalogDump {
    catalog::export(&catalog.database().begin_read().unwrap()).unwrap()
}

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[tokio::test]
async fn a_format_1_catalog_is_migrated_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let mut sm = StateMachine::open(&path).unwrap();
    let expected = replayed(dir.path());

    // Every row equals what this release writes for the same commands.
    let migrated = dump(sm.catalog());
    assert_eq!(migrated, dump(&expected));
    assert_eq!(migrated.objects.len(), 7, "objects in the fixture");
    assert!(!migrated.garbage.is_empty() && !migrated.requests.is_empty());
    assert_eq!(migrated.parts.len(), 2);

    // And every record decodes through the catalog's own reads.
    let catalog = sm.catalog();
    assert_eq!(catalog.buckets().unwrap(), expected.buckets().unwrap());
    assert_eq!(catalog.buckets().unwrap().len(), 2);
    let query = ListQuery {
        max: 100,
        ..ListQuery::default()
    };
    for bucket in ["cache", "plain"] {
        let listing = catalog.list(bucket, &query).unwrap();
        assert_eq!(listing, expected.list(bucket, &query).unwrap());
    }
    assert_eq!(catalog.list("cache", &query).unwrap().objects.len(), 6);
    assert_eq!(catalog.stats().unwrap(), expected.stats().unwrap());
    assert_eq!(catalog.shard_map().unwrap(), expected.shard_map().unwrap());
    assert_eq!(
        catalog.due_garbage(u64::MAX, 100).unwrap(),
        expected.due_garbage(u64::MAX, 100).unwrap()
    );
    assert_eq!(
        catalog.stale_uploads(u64::MAX, 10).unwrap(),
        vec!["upload-1".to_string()]
    );
    assert_eq!(catalog.nodes().unwrap(), expected.nodes().unwrap());
    assert_eq!(catalog.gateways().unwrap(), expected.gateways().unwrap());
    assert_eq!(
        catalog.access_keys().unwrap(),
        expected.access_keys().unwrap()
    );
    assert_eq!(
        catalog.invite(&[7; 32]).unwrap(),
        expected.invite(&[7; 32]).unwrap()
    );
    assert!(catalog.invite(&[7; 32]).unwrap().is_some());
    let parts = catalog.parts("upload-1", 0, 10).unwrap();
    assert_eq!(parts, expected.parts("upload-1", 0, 10).unwrap());
    assert_eq!(parts.len(), 2);

    // The Raft position survived, and the whole-value snapshot became a snapshot file
    // that installs into a fresh member as the same catalog.
    let commands = format1_commands::commands().len() as u64;
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(commands + 1));
    assert_eq!(membership.membership().nodes().count(), 1);
    let snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(snapshot.meta.last_log_id, applied);
    let other = tempfile::tempdir().unwrap();
    let mut fresh = StateMachine::open(&other.path().join("catalog.redb")).unwrap();
    let mut received = fresh.begin_receiving_snapshot().await.unwrap();
    let mut data = snapshot.snapshot;
    tokio::io::copy(&mut *data, &mut *received).await.unwrap();
    fresh
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    assert_eq!(dump(fresh.catalog()), migrated);
    assert_eq!(
        fresh.catalog().due_garbage(u64::MAX, 100).unwrap(),
        expected.due_garbage(u64::MAX, 100).unwrap()
    );

    // The database is marked, and opening it again changes nothing.
    drop(sm);
    drop(data);
    let db = redb::Database::open(&path).unwrap();
    let format = db
        .begin_read()
        .unwrap()
        .open_table(META)
        .unwrap()
        .get("format")
        .unwrap()
        .map(|v| v.value());
    assert_eq!(format, Some(catalog::format::FORMAT));
    drop(db);
    let mut again = StateMachine::open(&path).unwrap();
    assert_eq!(dump(again.catalog()), migrated);
    let rebuilt = again.get_snapshot_builder().await.build_snapshot().await;
    assert_eq!(rebuilt.unwrap().meta.last_log_id, applied);
}

#[test]
fn a_newer_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.redb");
    let sm = StateMachine::open(&path).unwrap();
    let db = sm.catalog().database().clone();
    drop(sm);
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format", catalog::format::FORMAT + 1)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let err = match StateMachine::open(&path) {
        Ok(_) => panic!("a catalog of a newer format was opened"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("newer release"), "{err}");
}

#[test]
fn a_record_of_an_unknown_version_is_a_fault_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = replayed(dir.path());
    let buckets: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
    let txn = catalog.database().begin_write().unwrap();
    {
        let mut table = txn.open_table(buckets).unwrap();
        let mut row = table.get("plain").unwrap().unwrap().value().to_vec();
        assert_eq!(row[0], catalog::format::RECORD_V1);
        row[0] = 0xEE;
        table.insert("plain", row.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    let err = catalog.bucket("plain").unwrap_err().to_string();
    assert!(err.contains("version 238"), "{err}");
    assert!(catalog.bucket("cache").unwrap().is_some());
}
