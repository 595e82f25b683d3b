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

/// A dump's rows but those of objects and uploads, whose record version depends on which
/// release wrote them.
fn without_objects_and_uploads(dump: &catalog::CatalogDump) -> catalog::CatalogDump {
    catalog::CatalogDump {
        objects: Vec::new(),
        uploads: Vec::new(),
        parts: Vec::new(),
        ..dump.clone()
    }
}

#[tokio::test]
async fn a_format_1_catalog_is_migrated_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let mut sm = StateMachine::open(&path).unwrap();
    let expected = replayed(dir.path());

    // Every row equals what this release writes for the same commands, but objects,
    // uploads and parts: those keep their version-1 records (this release writes newer
    // versions when it writes one) and are compared decoded below.
    let migrated = dump(sm.catalog());
    let replayed_rows = dump(&expected);
    assert_eq!(
        without_objects_and_uploads(&migrated),
        without_objects_and_uploads(&replayed_rows)
    );
    assert_eq!(migrated.objects.len(), 7, "objects in the fixture");
    assert!(!migrated.garbage.is_empty() && !migrated.requests.is_empty());
    assert_eq!(migrated.parts.len(), 2);
    let keys = |rows: &[(Vec<u8>, Vec<u8>)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&migrated.objects), keys(&replayed_rows.objects));
    let versions = |rows: &[(Vec<u8>, Vec<u8>)]| rows.iter().map(|r| r.1[0]).collect::<Vec<_>>();
    assert_eq!(
        versions(&migrated.objects),
        vec![catalog::format::RECORD_V1; 7]
    );
    assert_eq!(
        versions(&replayed_rows.objects),
        vec![catalog::format::RECORD_V3; 7]
    );
    assert_eq!(migrated.uploads.len(), 1);
    assert_eq!(migrated.uploads[0].1[0], catalog::format::RECORD_V1);
    assert_eq!(keys(&migrated.parts), keys(&replayed_rows.parts));
    assert_eq!(
        versions(&migrated.parts),
        vec![catalog::format::RECORD_V1; 2]
    );
    assert_eq!(
        versions(&replayed_rows.parts),
        vec![catalog::format::RECORD_V2; 2]
    );

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
    let objects = |catalog: &Catalog| {
        let mut out = Vec::new();
        catalog
            .for_each_object(|bucket, key, record| {
                out.push((bucket.to_string(), key.to_string(), record.clone()));
                true
            })
            .unwrap();
        out
    };
    let read_back = objects(catalog);
    assert_eq!(read_back, objects(&expected));
    // Version-1 objects read as private, with no parts, checksum or Expires.
    for (_, _, record) in &read_back {
        assert_eq!(record.acl, catalog::model::CannedAcl::Private);
        assert!(record.parts.is_empty() && record.checksum.is_none());
        assert_eq!(record.headers.expires, None);
    }
    assert_eq!(
        catalog.upload("upload-1").unwrap(),
        expected.upload("upload-1").unwrap()
    );
    assert!(catalog.upload("upload-1").unwrap().is_some());
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

/// Raft log entries written before record version 2 still decode as the commands they
/// were: the old variants kept their numbers (postcard numbers variants in order) and
/// their layouts, and apply as the new ones.
#[test]
fn log_entries_of_version_1_commands_decode_and_apply() {
    let commands = format1_commands::commands();
    let put = commands
        .iter()
        .find(|c| matches!(c, catalog::Command::PutObjectV1 { .. }))
        .unwrap();
    let create = commands
        .iter()
        .find(|c| matches!(c, catalog::Command::CreateUploadV1 { .. }))
        .unwrap();
    // The variant numbers format-1 code wrote for PutObject and CreateUpload.
    let put_bytes = postcard::to_stdvec(put).unwrap();
    let create_bytes = postcard::to_stdvec(create).unwrap();
    assert_eq!(put_bytes[0], 8, "PutObject's variant number");
    assert_eq!(create_bytes[0], 12, "CreateUpload's variant number");
    assert_eq!(
        postcard::from_bytes::<catalog::Command>(&put_bytes).unwrap(),
        *put
    );
    assert_eq!(
        postcard::from_bytes::<catalog::Command>(&create_bytes).unwrap(),
        *create
    );
}

/// A version-1 object record, as format 2 stored it before record version 2, reads back
/// as a private object without parts, checksum or Expires; written again, it is at the
/// newest version.
#[test]
fn a_version_1_object_record_still_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = replayed(dir.path());
    let objects: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
    let old = catalog::legacy::ObjectRecordV1 {
        size: 3,
        etag: "\"old\"".into(),
        last_modified_ms: 42,
        headers: catalog::legacy::ObjectHeadersV1 {
            content_type: Some("text/plain".into()),
            cache_control: Some("no-cache".into()),
            user_metadata: vec![("a".into(), "b".into())],
            ..Default::default()
        },
        body: catalog::model::ObjectBody::Inline(b"old".to_vec()),
    };
    let mut row = vec![catalog::format::RECORD_V1];
    row.extend(postcard::to_stdvec(&old).unwrap());
    let key = catalog::object_key("plain", "written-by-v1");
    let txn = catalog.database().begin_write().unwrap();
    txn.open_table(objects)
        .unwrap()
        .insert(key.as_slice(), row.as_slice())
        .unwrap();
    txn.commit().unwrap();

    let read = catalog.object("plain", "written-by-v1").unwrap().unwrap();
    assert_eq!(read, catalog::model::ObjectRecord::from(old.clone()));
    assert_eq!(read.acl, catalog::model::CannedAcl::Private);
    assert_eq!(read.headers.content_type.as_deref(), Some("text/plain"));
    assert_eq!(read.headers.expires, None);
    assert!(read.parts.is_empty() && read.checksum.is_none());

    // Changing it (here its ACL) writes it back at the newest version, the rest unchanged.
    let txn = catalog.database().begin_write().unwrap();
    let result = catalog::apply(
        &txn,
        &catalog::Command::SetObjectAcl {
            bucket: "plain".into(),
            key: "written-by-v1".into(),
            acl: catalog::model::CannedAcl::PublicRead,
        },
    )
    .unwrap();
    txn.commit().unwrap();
    assert_eq!(result, catalog::CommandResult::Done);
    let raw = catalog
        .database()
        .begin_read()
        .unwrap()
        .open_table(objects)
        .unwrap()
        .get(key.as_slice())
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(raw[0], catalog::format::RECORD_V3);
    let again = catalog.object("plain", "written-by-v1").unwrap().unwrap();
    assert_eq!(again.acl, catalog::model::CannedAcl::PublicRead);
    assert_eq!(
        again.version(),
        read.version(),
        "an ACL change keeps the version"
    );
}

/// Records written before part checksums were kept read back: a version-2 object's parts
/// and a version-1 part carry no checksum, a version-2 upload no checksum algorithm; the log
/// entries that carried those layouts keep their variant numbers and still decode.
#[test]
fn version_2_objects_and_uploads_and_version_1_parts_still_decode() {
    use catalog::legacy::{ObjectRecordV2, PartRecordV1, PartSummaryV1, UploadRecordV2};
    let dir = tempfile::tempdir().unwrap();
    let catalog = replayed(dir.path());
    let old_object = ObjectRecordV2 {
        size: 7,
        etag: "\"abc-2\"".into(),
        last_modified_ms: 42,
        headers: Default::default(),
        body: catalog::model::ObjectBody::Inline(b"old mp!".to_vec()),
        acl: catalog::model::CannedAcl::PublicRead,
        parts: vec![
            PartSummaryV1 {
                size: 3,
                etag: "\"p1\"".into(),
            },
            PartSummaryV1 {
                size: 4,
                etag: "\"p2\"".into(),
            },
        ],
        checksum: None,
    };
    let old_upload = UploadRecordV2 {
        bucket: "plain".into(),
        key: "old-upload".into(),
        initiated_ms: 43,
        headers: Default::default(),
        erasure: catalog::model::ErasureProfile {
            k: 2,
            m: 1,
            segment_size: 1 << 20,
        },
        acl: catalog::model::CannedAcl::Private,
    };
    let old_part = PartRecordV1 {
        size: 5,
        etag: "\"p\"".into(),
        last_modified_ms: 44,
        segments: Vec::new(),
    };
    let row = |version: u8, body: Vec<u8>| {
        let mut row = vec![version];
        row.extend(body);
        row
    };
    let objects: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
    let uploads: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
    let parts: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
    let txn = catalog.database().begin_write().unwrap();
    txn.open_table(objects)
        .unwrap()
        .insert(
            catalog::object_key("plain", "written-by-v2").as_slice(),
            row(
                catalog::format::RECORD_V2,
                postcard::to_stdvec(&old_object).unwrap(),
            )
            .as_slice(),
        )
        .unwrap();
    txn.open_table(uploads)
        .unwrap()
        .insert(
            "old-upload",
            row(
                catalog::format::RECORD_V2,
                postcard::to_stdvec(&old_upload).unwrap(),
            )
            .as_slice(),
        )
        .unwrap();
    txn.open_table(parts)
        .unwrap()
        .insert(
            catalog::part_key("old-upload", 1).as_slice(),
            row(
                catalog::format::RECORD_V1,
                postcard::to_stdvec(&old_part).unwrap(),
            )
            .as_slice(),
        )
        .unwrap();
    txn.commit().unwrap();

    let object = catalog.object("plain", "written-by-v2").unwrap().unwrap();
    assert_eq!(
        object,
        catalog::model::ObjectRecord::from(old_object.clone())
    );
    assert_eq!(
        object
            .parts
            .iter()
            .map(|p| (p.size, p.checksum.clone()))
            .collect::<Vec<_>>(),
        vec![(3, None), (4, None)]
    );
    assert_eq!(object.acl, catalog::model::CannedAcl::PublicRead);
    let upload = catalog.upload("old-upload").unwrap().unwrap();
    assert_eq!((upload.key.as_str(), upload.checksum), ("old-upload", None));
    let stored = catalog.parts("old-upload", 0, 10).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].1.size, stored[0].1.checksum.clone()), (5, None));

    // The log entries of those layouts kept their numbers: PutObjectV2 and CreateUploadV2
    // are where PutObject and CreateUpload were (25, 26), PutPartV1 and CompleteUploadV1
    // where PutPart and CompleteUpload were (13, 14).
    let entries = [
        (
            25,
            catalog::Command::PutObjectV2 {
                bucket: "plain".into(),
                key: "k".into(),
                object: old_object,
                condition: None,
                now_ms: 1,
            },
        ),
        (
            26,
            catalog::Command::CreateUploadV2 {
                id: "u".into(),
                upload: old_upload,
            },
        ),
        (
            13,
            catalog::Command::PutPartV1 {
                upload: "u".into(),
                number: 1,
                part: old_part,
                now_ms: 1,
            },
        ),
        (
            14,
            catalog::Command::CompleteUploadV1 {
                upload: "u".into(),
                parts: vec![(1, "\"p\"".into())],
                verified: Vec::new(),
                condition: None,
                now_ms: 1,
            },
        ),
    ];
    for (number, command) in entries {
        let bytes = postcard::to_stdvec(&command).unwrap();
        assert_eq!(bytes[0], number, "{command:?}");
        assert_eq!(
            postcard::from_bytes::<catalog::Command>(&bytes).unwrap(),
            command
        );
    }
}
