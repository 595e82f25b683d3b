//! The catalog applies commands deterministically: refusals change nothing, overwrites and
//! deletes queue the old shards for collection, listings come back in key order, and the
//! same commands on two databases give identical catalogs.

use std::sync::Arc;

use cairn_coordinator::catalog::model::{
    AccessKey, Bucket, BucketMode, ErasureProfile, NodeRecord, NodeState, ObjectBody,
    ObjectHeaders, ObjectRecord, SegmentRecord, ShardRecord,
};
use cairn_coordinator::catalog::{self, Catalog, CatalogError, Command, CommandResult};
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use redb::ReadableDatabase;

fn open() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("catalog.redb")).unwrap();
    (dir, Catalog::new(Arc::new(db)).unwrap())
}

fn run(catalog: &Catalog, command: &Command) -> CommandResult {
    let txn = catalog.database().begin_write().unwrap();
    let result = catalog::apply(&txn, command).unwrap();
    txn.commit().unwrap();
    result
}

fn bucket(name: &str) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: name.into(),
            created_ms: 1,
            public_read: true,
            mode: BucketMode::Plain,
            erasure: ErasureProfile {
                k: 2,
                m: 1,
                segment_size: 1 << 20,
            },
            failure_tolerance: 1,
        },
    }
}

fn node(id: NodeId) -> Command {
    Command::RegisterNode {
        node: NodeRecord {
            id,
            addr: "127.0.0.1:7400".into(),
            org: "org".into(),
            site: "site".into(),
            capacity: 1 << 30,
            state: NodeState::Vetting,
            joined_ms: 5,
            state_since_ms: 5,
        },
    }
}

fn stored(size: u64, node: NodeId, first_shard: u8) -> ObjectRecord {
    let shards = (0..3u8)
        .map(|i| ShardRecord {
            id: ShardId([first_shard + i; 16]),
            node,
            root: ShardRoot::of(&[i]),
        })
        .collect();
    ObjectRecord {
        size,
        etag: "\"e\"".into(),
        last_modified_ms: 9,
        headers: ObjectHeaders {
            content_type: Some("application/x-nix-nar".into()),
            ..ObjectHeaders::default()
        },
        body: ObjectBody::Segments {
            erasure: ErasureProfile {
                k: 2,
                m: 1,
                segment_size: 1 << 20,
            },
            segments: vec![SegmentRecord { len: size, shards }],
        },
    }
}

fn put(bucket: &str, key: &str, object: ObjectRecord) -> Command {
    Command::PutObject {
        bucket: bucket.into(),
        key: key.into(),
        object,
        now_ms: 100,
    }
}

#[test]
fn buckets_and_keys_refuse_what_they_must() {
    let (_dir, catalog) = open();
    assert_eq!(run(&catalog, &bucket("cache")), CommandResult::Done);
    assert_eq!(
        run(&catalog, &bucket("cache")),
        CommandResult::Refused(CatalogError::BucketExists("cache".into()))
    );
    assert!(matches!(
        run(&catalog, &bucket("No_Caps")),
        CommandResult::Refused(CatalogError::InvalidBucketName(_))
    ));
    let key = AccessKey {
        id: "AKID".into(),
        secret: "s3cr3t".into(),
        name: "hydra".into(),
        created_ms: 1,
        revoked: false,
    };
    run(&catalog, &Command::CreateAccessKey { key: key.clone() });
    assert_eq!(
        run(&catalog, &Command::CreateAccessKey { key }),
        CommandResult::Refused(CatalogError::AccessKeyExists("AKID".into()))
    );
    run(&catalog, &Command::RevokeAccessKey { id: "AKID".into() });
    assert!(catalog.access_key("AKID").unwrap().unwrap().revoked);
    // The secret never shows in debug output.
    assert!(!format!("{:?}", catalog.access_keys().unwrap()).contains("s3cr3t"));
}

#[test]
fn objects_replace_atomically_and_old_shards_become_garbage() {
    let (_dir, catalog) = open();
    let n = SecretKey::generate().public();
    run(&catalog, &bucket("cache"));
    // Shards on a node nobody registered are refused.
    assert!(matches!(
        run(&catalog, &put("cache", "nar/a", stored(10, n, 0))),
        CommandResult::Refused(CatalogError::UnknownNode(_))
    ));
    run(&catalog, &node(n));
    assert_eq!(
        run(&catalog, &put("cache", "nar/a", stored(10, n, 0))),
        CommandResult::Object { existed: false }
    );
    assert!(catalog.garbage(100).unwrap().is_empty());
    assert_eq!(
        run(&catalog, &put("cache", "nar/a", stored(30, n, 10))),
        CommandResult::Object { existed: true }
    );
    assert_eq!(catalog.object("cache", "nar/a").unwrap().unwrap().size, 30);
    let garbage: Vec<ShardId> = catalog
        .garbage(100)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        garbage,
        vec![ShardId([0; 16]), ShardId([1; 16]), ShardId([2; 16])]
    );
    let stats = catalog.stats().unwrap();
    assert_eq!((stats.objects, stats.logical_bytes), (1, 30));

    // A bucket with objects cannot be deleted; after the delete it can.
    assert_eq!(
        run(
            &catalog,
            &Command::DeleteBucket {
                name: "cache".into()
            }
        ),
        CommandResult::Refused(CatalogError::BucketNotEmpty("cache".into()))
    );
    let delete = Command::DeleteObject {
        bucket: "cache".into(),
        key: "nar/a".into(),
        now_ms: 200,
    };
    assert_eq!(
        run(&catalog, &delete),
        CommandResult::Object { existed: true }
    );
    assert_eq!(
        run(&catalog, &delete),
        CommandResult::Object { existed: false }
    );
    assert_eq!(catalog.garbage(100).unwrap().len(), 6);
    assert_eq!(catalog.stats().unwrap().objects, 0);
    assert_eq!(
        run(
            &catalog,
            &Command::DeleteBucket {
                name: "cache".into()
            }
        ),
        CommandResult::Done
    );
    assert_eq!(
        run(&catalog, &put("cache", "x", stored(1, n, 50))),
        CommandResult::Refused(CatalogError::NoSuchBucket("cache".into()))
    );
}

#[test]
fn listing_is_in_key_order_within_one_bucket() {
    let (_dir, catalog) = open();
    let n = SecretKey::generate().public();
    run(&catalog, &node(n));
    run(&catalog, &bucket("aaa"));
    run(&catalog, &bucket("aab"));
    for key in ["b", "a/2", "a/1", "c"] {
        let inline = ObjectRecord {
            body: ObjectBody::Inline(key.as_bytes().to_vec()),
            ..stored(1, n, 0)
        };
        run(&catalog, &put("aaa", key, inline));
    }
    run(&catalog, &put("aab", "a/0", stored(1, n, 0)));
    let names =
        |items: Vec<(String, ObjectRecord)>| items.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        names(catalog.list_objects("aaa", "", None, 100).unwrap()),
        ["a/1", "a/2", "b", "c"]
    );
    assert_eq!(
        names(catalog.list_objects("aaa", "a/", None, 100).unwrap()),
        ["a/1", "a/2"]
    );
    assert_eq!(
        names(catalog.list_objects("aaa", "", Some("a/2"), 2).unwrap()),
        ["b", "c"]
    );
    assert_eq!(
        names(catalog.list_objects("aab", "", None, 100).unwrap()),
        ["a/0"]
    );
    assert!(
        catalog
            .list_objects("nope", "", None, 100)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn same_commands_same_catalog_and_dumps_round_trip() {
    let n = SecretKey::generate().public();
    let commands = vec![
        bucket("cache"),
        node(n),
        Command::SetNodeState {
            node: n,
            state: NodeState::Active,
            now_ms: 50,
        },
        put("cache", "a", stored(5, n, 0)),
        put("cache", "a", stored(6, n, 3)),
        put("cache", "b", stored(7, n, 6)),
        Command::DeleteObject {
            bucket: "cache".into(),
            key: "b".into(),
            now_ms: 60,
        },
    ];
    let (_d1, one) = open();
    let (_d2, two) = open();
    for command in &commands {
        assert_eq!(run(&one, command), run(&two, command));
    }
    let dump = |c: &Catalog| catalog::export(&c.database().begin_read().unwrap()).unwrap();
    assert_eq!(dump(&one), dump(&two));
    assert_eq!(one.node(&n).unwrap().unwrap().state, NodeState::Active);

    // Importing a dump into a catalog that holds something else replaces it entirely.
    let (_d3, three) = open();
    run(&three, &bucket("other"));
    let txn = three.database().begin_write().unwrap();
    catalog::import(&txn, &dump(&one)).unwrap();
    txn.commit().unwrap();
    assert_eq!(dump(&three), dump(&one));
    assert!(three.bucket("other").unwrap().is_none());
}

#[test]
fn an_invitation_admits_one_node_before_it_expires() {
    let (_dir, catalog) = open();
    let join = |id: NodeId, hash: [u8; 32], now_ms: u64| Command::JoinNode {
        node: NodeRecord {
            id,
            addr: "127.0.0.1:7400".into(),
            org: "o".into(),
            site: "s".into(),
            capacity: 1,
            state: NodeState::Active, // whatever the node claims, it starts vetting
            joined_ms: 0,
            state_since_ms: 0,
        },
        secret_hash: hash,
        now_ms,
    };
    let (a, b) = (
        SecretKey::generate().public(),
        SecretKey::generate().public(),
    );
    let invalid = CommandResult::Refused(CatalogError::InvalidInvite);
    assert_eq!(run(&catalog, &join(a, [1; 32], 10)), invalid);
    run(
        &catalog,
        &Command::CreateInvite {
            secret_hash: [1; 32],
            expires_ms: 100,
        },
    );
    run(
        &catalog,
        &Command::CreateInvite {
            secret_hash: [2; 32],
            expires_ms: 100,
        },
    );
    assert_eq!(run(&catalog, &join(a, [2; 32], 100)), invalid, "expired");
    assert_eq!(run(&catalog, &join(a, [1; 32], 50)), CommandResult::Done);
    assert_eq!(catalog.node(&a).unwrap().unwrap().state, NodeState::Vetting);
    assert_eq!(
        run(&catalog, &join(b, [1; 32], 60)),
        invalid,
        "already used"
    );
    assert!(catalog.node(&b).unwrap().is_none());
}
