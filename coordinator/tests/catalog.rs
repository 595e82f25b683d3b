//! The catalog applies commands deterministically: refusals change nothing, overwrites and
//! deletes queue the old shards for collection, listings come back in key order, and the
//! same commands on two databases give identical catalogs.

use std::sync::Arc;

use cairn_coordinator::catalog::model::{
    AccessKey, Bucket, BucketMode, CannedAcl, ChecksumAlgorithm, ChecksumType, ErasureProfile,
    NodeRecord, NodeState, ObjectBody, ObjectChecksum, ObjectHeaders, ObjectRecord, PartRecord,
    PartSummary, SegmentRecord, ShardRecord, UploadChecksum, UploadRecord,
};
use cairn_coordinator::catalog::{
    self, Catalog, CatalogError, Command, CommandResult, ListQuery, UploadEntry, UploadQuery,
};
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
            vetted: false,
            reputation: Default::default(),
        },
    }
}

/// Three fresh node ids (a segment of the 2+1 code needs three distinct nodes).
fn trio() -> [NodeId; 3] {
    [(); 3].map(|_| SecretKey::generate().public())
}

fn register(catalog: &Catalog, nodes: &[NodeId]) {
    for n in nodes {
        run(catalog, &node(*n));
    }
}

/// Creates upload `id` of `bucket`/`key`, begun at `initiated_ms`, with a 2 + 1 code.
fn create_upload(id: &str, bucket: &str, key: &str, initiated_ms: u64) -> Command {
    Command::CreateUpload {
        id: id.into(),
        upload: UploadRecord {
            bucket: bucket.into(),
            key: key.into(),
            initiated_ms,
            headers: ObjectHeaders::default(),
            erasure: ErasureProfile {
                k: 2,
                m: 1,
                segment_size: 1 << 20,
            },
            acl: Default::default(),
            checksum: None,
        },
    }
}

fn stored(size: u64, nodes: [NodeId; 3], first_shard: u8) -> ObjectRecord {
    let shards = (0..3u8)
        .map(|i| ShardRecord {
            id: ShardId([first_shard + i; 16]),
            node: nodes[usize::from(i)],
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
            segments: vec![SegmentRecord {
                len: size,
                shards,
                mask: None,
            }],
        },
        acl: Default::default(),
        parts: Vec::new(),
        checksum: None,
    }
}

fn put(bucket: &str, key: &str, object: ObjectRecord) -> Command {
    Command::PutObject {
        bucket: bucket.into(),
        key: key.into(),
        object,
        condition: None,
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
    let n = trio();
    run(&catalog, &bucket("cache"));
    // Shards on a node nobody registered are refused.
    assert!(matches!(
        run(&catalog, &put("cache", "nar/a", stored(10, n, 0))),
        CommandResult::Refused(CatalogError::UnknownNode(_))
    ));
    register(&catalog, &n);
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
                name: "cache".into(),
                now_ms: 1,
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
                name: "cache".into(),
                now_ms: 1,
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
    let n = trio();
    register(&catalog, &n);
    run(&catalog, &bucket("aaa"));
    run(&catalog, &bucket("aab"));
    for key in ["b", "a/2", "a/1", "c"] {
        let inline = ObjectRecord {
            size: key.len() as u64,
            body: ObjectBody::Inline(key.as_bytes().to_vec()),
            ..stored(1, n, 0)
        };
        run(&catalog, &put("aaa", key, inline));
    }
    run(&catalog, &put("aab", "a/0", stored(1, n, 0)));
    let list = |bucket: &str, prefix: &str, delimiter: Option<&str>, after: Option<&str>, max| {
        let query = ListQuery {
            prefix: prefix.into(),
            delimiter: delimiter.map(String::from),
            after: after.map(String::from),
            max,
        };
        let listing = catalog.list(bucket, &query).unwrap();
        let names: Vec<String> = listing.objects.iter().map(|(k, _)| k.clone()).collect();
        (names, listing.common_prefixes, listing.truncated)
    };
    assert_eq!(list("aaa", "", None, None, 100).0, ["a/1", "a/2", "b", "c"]);
    assert_eq!(list("aaa", "a/", None, None, 100).0, ["a/1", "a/2"]);
    let (names, _, truncated) = list("aaa", "", None, Some("a/2"), 2);
    assert_eq!(names, ["b", "c"]);
    assert!(!truncated);
    assert_eq!(list("aab", "", None, None, 100).0, ["a/0"]);
    assert!(list("nope", "", None, None, 100).0.is_empty());

    // A delimiter rolls keys up into one common prefix, which counts once against `max`
    // and, used as the start of the next page, is skipped whole.
    let (names, prefixes, truncated) = list("aaa", "", Some("/"), None, 2);
    assert!(names == ["b"] && prefixes == ["a/"] && truncated);
    let (names, prefixes, truncated) = list("aaa", "", Some("/"), Some("a/"), 2);
    assert!(names == ["b", "c"] && prefixes.is_empty() && !truncated);
    let (names, prefixes, _) = list("aaa", "a/", Some("/"), None, 10);
    assert!(names == ["a/1", "a/2"] && prefixes.is_empty());
}

#[test]
fn same_commands_same_catalog_and_dumps_round_trip() {
    let n = trio();
    let commands = vec![
        bucket("cache"),
        node(n[0]),
        node(n[1]),
        node(n[2]),
        Command::SetNodeState {
            node: n[0],
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
    assert_eq!(one.node(&n[0]).unwrap().unwrap().state, NodeState::Active);

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
            vetted: false,
            reputation: Default::default(),
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
    for (hash, org) in [([1; 32], Some("o")), ([2; 32], Some("o")), ([3; 32], None)] {
        run(
            &catalog,
            &Command::CreateInvite {
                secret_hash: hash,
                expires_ms: 100,
                org: org.map(str::to_string),
            },
        );
    }
    assert_eq!(run(&catalog, &join(a, [2; 32], 100)), invalid, "expired");
    assert_eq!(
        run(&catalog, &join(a, [3; 32], 50)),
        invalid,
        "an invitation that names no organisation admits no one"
    );
    assert_eq!(run(&catalog, &join(a, [1; 32], 50)), CommandResult::Done);
    assert_eq!(catalog.node(&a).unwrap().unwrap().state, NodeState::Vetting);
    assert_eq!(
        run(&catalog, &join(b, [1; 32], 60)),
        invalid,
        "already used"
    );
    assert!(catalog.node(&b).unwrap().is_none());
}

#[test]
fn an_invitation_bound_to_an_organisation_admits_only_a_member_of_it() {
    let (_dir, catalog) = open();
    let join = |org: &str, hash: [u8; 32]| Command::JoinNode {
        node: NodeRecord {
            id: SecretKey::generate().public(),
            addr: "127.0.0.1:7400".into(),
            org: org.into(),
            site: "s".into(),
            capacity: 1,
            state: NodeState::Vetting,
            joined_ms: 0,
            state_since_ms: 0,
            vetted: false,
            reputation: Default::default(),
        },
        secret_hash: hash,
        now_ms: 10,
    };
    run(
        &catalog,
        &Command::CreateInvite {
            secret_hash: [5; 32],
            expires_ms: 100,
            org: Some("uni-a".into()),
        },
    );
    assert_eq!(
        run(&catalog, &join("uni-b", [5; 32])),
        CommandResult::Refused(CatalogError::WrongOrg {
            invited: "uni-a".into(),
            claimed: "uni-b".into()
        })
    );
    let joined = join("uni-a", [5; 32]);
    assert_eq!(
        run(&catalog, &joined),
        CommandResult::Done,
        "the refusal did not use the invitation up"
    );

    // The node joins again with a fresh invitation for another organisation: refused, and
    // its organisation stays the one first vouched for.
    let Command::JoinNode { node, .. } = &joined else {
        unreachable!()
    };
    run(
        &catalog,
        &Command::CreateInvite {
            secret_hash: [6; 32],
            expires_ms: 100,
            org: Some("uni-b".into()),
        },
    );
    let again = Command::JoinNode {
        node: NodeRecord {
            org: "uni-b".into(),
            ..node.clone()
        },
        secret_hash: [6; 32],
        now_ms: 20,
    };
    assert_eq!(
        run(&catalog, &again),
        CommandResult::Refused(CatalogError::WrongOrg {
            invited: "uni-a".into(),
            claimed: "uni-b".into()
        })
    );
    assert_eq!(catalog.node(&node.id).unwrap().unwrap().org, "uni-a");
    // Registering again (a new address) keeps the organisation whatever the record says.
    run(
        &catalog,
        &Command::RegisterNode {
            node: NodeRecord {
                org: "uni-c".into(),
                addr: "127.0.0.1:7500".into(),
                ..node.clone()
            },
        },
    );
    let record = catalog.node(&node.id).unwrap().unwrap();
    assert_eq!(
        (record.org.as_str(), record.addr.as_str()),
        ("uni-a", "127.0.0.1:7500")
    );
}

#[test]
fn failed_audits_disqualify_after_the_policy_s_count_and_passes_vet() {
    let (_dir, catalog) = open();
    let policy = cairn_coordinator::catalog::model::ReputationPolicy {
        lambda_ppm: 950_000,
        disqualify_below_ppm: 600_000,
        vetting_audits: 3,
    };
    assert_eq!(policy.failures_to_disqualify(), Some(10));
    let n = SecretKey::generate().public();
    run(&catalog, &node(n));
    let record = |passed: bool| Command::RecordAudits {
        results: vec![(n, passed)],
        policy,
        now_ms: 50,
    };
    let get = || catalog.node(&n).unwrap().unwrap();
    for _ in 0..2 {
        run(&catalog, &record(true));
    }
    assert_eq!(get().state, NodeState::Vetting, "two passes are not enough");
    run(&catalog, &record(true));
    assert_eq!(get().state, NodeState::Active, "vetted by the third pass");
    assert!(get().vetted);
    assert_eq!(get().reputation.score_ppm, 1_000_000);
    for failures in 1..10 {
        run(&catalog, &record(false));
        assert_eq!(get().state, NodeState::Active, "after {failures} failures");
    }
    // A gateway's report of bad bytes is counted, not judged: ten of them change nothing.
    for _ in 0..10 {
        run(&catalog, &Command::ReportBadRead { node: n });
    }
    assert_eq!(get().state, NodeState::Active);
    assert_eq!(get().reputation.bad_reads, 10);
    // The tenth failed audit disqualifies.
    run(&catalog, &record(false));
    let node = get();
    assert_eq!(node.state, NodeState::Disqualified);
    assert!(!node.vetted);
    assert_eq!(node.state_since_ms, 50);
    assert_eq!(node.reputation.audits_passed, 3);
    assert_eq!(node.reputation.audits_failed, 10);
    assert_eq!(node.reputation.bad_reads, 10);
    assert!(node.reputation.score_ppm < 600_000);
    // Passing audits afterwards changes the score, never the verdict.
    for _ in 0..50 {
        run(&catalog, &record(true));
    }
    assert_eq!(get().state, NodeState::Disqualified);
}

/// The score is the share of recent audits passed: a node failing one audit in a
/// hundred, evenly spread, settles near 0.99 and stays; one failing one in ten is
/// disqualified (it drifts towards 0.9, far below the line at 0.975).
#[test]
fn a_node_that_fails_now_and_then_keeps_its_place_but_one_that_fails_often_does_not() {
    let policy = cairn_coordinator::catalog::model::ReputationPolicy::default();
    let mut reputation = cairn_coordinator::catalog::model::Reputation::default();
    for i in 0..2_000 {
        reputation.judge(i % 100 != 50, policy.lambda_ppm);
        assert!(
            reputation.score_ppm >= policy.disqualify_below_ppm,
            "audit {i}: {}",
            reputation.score()
        );
    }
    assert!(
        (reputation.score() - 0.99).abs() < 0.01,
        "{}",
        reputation.score()
    );
    let mut often = cairn_coordinator::catalog::model::Reputation::default();
    let caught = (0..1_000).find(|i| {
        often.judge(i % 10 != 5, policy.lambda_ppm);
        often.score_ppm < policy.disqualify_below_ppm
    });
    assert!(caught.is_some_and(|i| i < 100), "{caught:?}");
}

#[test]
fn vetting_is_remembered_through_suspicion_and_lost_only_to_disqualification() {
    let (_dir, catalog) = open();
    let n = SecretKey::generate().public();
    run(&catalog, &node(n));
    let set = |state, now_ms| Command::SetNodeState {
        node: n,
        state,
        now_ms,
    };
    let vetted = || catalog.node(&n).unwrap().unwrap().vetted;
    assert!(!vetted(), "a new node has earned nothing yet");
    run(&catalog, &set(NodeState::Suspect, 10));
    assert!(!vetted());
    run(&catalog, &set(NodeState::Active, 20));
    assert!(vetted());
    for (state, now_ms) in [(NodeState::Suspect, 30), (NodeState::Lost, 40)] {
        run(&catalog, &set(state, now_ms));
        assert!(vetted(), "{state:?} keeps what the node earned");
    }
    // Registering again (new address) keeps it too.
    run(&catalog, &node(n));
    assert!(vetted());
    let record = catalog.node(&n).unwrap().unwrap();
    assert_eq!((record.state, record.state_since_ms), (NodeState::Lost, 40));
    run(&catalog, &set(NodeState::Disqualified, 50));
    assert!(!vetted());
}

#[test]
fn multipart_uploads_assemble_parts_and_collect_the_rest() {
    let (_dir, catalog) = open();
    let n = trio();
    register(&catalog, &n);
    run(&catalog, &bucket("cache"));
    let erasure = ErasureProfile {
        k: 2,
        m: 1,
        segment_size: 1 << 20,
    };
    let create = Command::CreateUpload {
        id: "u1".into(),
        upload: UploadRecord {
            bucket: "cache".into(),
            key: "big".into(),
            initiated_ms: 1,
            headers: ObjectHeaders {
                expires: Some("Thu, 01 Dec 2044 16:00:00 GMT".into()),
                ..ObjectHeaders::default()
            },
            erasure,
            acl: CannedAcl::PublicRead,
            checksum: Some(UploadChecksum {
                algorithm: ChecksumAlgorithm::Sha256,
                kind: ChecksumType::Composite,
            }),
        },
    };
    assert_eq!(run(&catalog, &create), CommandResult::Done);
    assert_eq!(
        catalog.upload("u1").unwrap().unwrap().checksum,
        Some(UploadChecksum {
            algorithm: ChecksumAlgorithm::Sha256,
            kind: ChecksumType::Composite,
        })
    );
    assert!(matches!(
        run(&catalog, &create),
        CommandResult::Refused(CatalogError::UploadExists(_))
    ));
    // MD5 of nothing and of "a": real digests, so the multipart ETag can be checked.
    let md5_empty = "\"d41d8cd98f00b204e9800998ecf8427e\"";
    let md5_a = "\"0cc175b9c0f1b6a831c399e269772661\"";
    // Stand-ins for the part checksums a gateway computes: the catalog keeps, not checks.
    let sha = |first: u8| ObjectChecksum {
        algorithm: ChecksumAlgorithm::Sha256,
        value: format!("part-{first}"),
    };
    let part = |size: u64, etag: &str, first: u8| Command::PutPart {
        upload: "u1".into(),
        number: 0,
        part: PartRecord {
            size,
            etag: etag.into(),
            last_modified_ms: 2,
            segments: match stored(size, n, first).body {
                ObjectBody::Segments { segments, .. } => segments,
                ObjectBody::Inline(_) => unreachable!(),
            },
            checksum: Some(sha(first)),
        },
        now_ms: 3,
    };
    let numbered = |number, command: Command| match command {
        Command::PutPart {
            upload,
            part,
            now_ms,
            ..
        } => Command::PutPart {
            upload,
            number,
            part,
            now_ms,
        },
        other => other,
    };
    assert!(matches!(
        run(&catalog, &numbered(0, part(5 << 20, md5_a, 0))),
        CommandResult::Refused(CatalogError::InvalidPart(_))
    ));
    run(&catalog, &numbered(1, part(5 << 20, md5_empty, 0)));
    // Part 1 again: the first version's shards become garbage.
    run(&catalog, &numbered(1, part(5 << 20, md5_a, 10)));
    assert_eq!(catalog.garbage(100).unwrap().len(), 3);
    run(&catalog, &numbered(2, part(1, md5_empty, 20)));
    run(&catalog, &numbered(3, part(1, md5_a, 30)));
    assert_eq!(catalog.parts("u1", 0, 100).unwrap().len(), 3);
    assert_eq!(catalog.parts("u1", 1, 1).unwrap()[0].0, 2);

    let complete_with = |parts: &[(u32, &str)], checksum| Command::CompleteUpload {
        upload: "u1".into(),
        parts: parts.iter().map(|(n, e)| (*n, e.to_string())).collect(),
        verified: Vec::new(),
        checksum,
        condition: None,
        now_ms: 4,
    };
    let complete = |parts: &[(u32, &str)]| complete_with(parts, None);
    // Refusals change nothing: every part is still there afterwards.
    for (parts, refusal) in [
        (vec![(1, md5_a), (3, md5_empty)], "etag"),
        (vec![(2, md5_empty), (1, md5_a)], "order"),
        (vec![(2, md5_empty), (3, md5_a)], "small"),
        (vec![(4, md5_a)], "missing"),
    ] {
        let result = run(&catalog, &complete(&parts));
        assert!(
            matches!(result, CommandResult::Refused(_)),
            "{refusal}: {result:?}"
        );
        assert_eq!(catalog.parts("u1", 0, 100).unwrap().len(), 3, "{refusal}");
    }
    let whole = ObjectChecksum {
        algorithm: ChecksumAlgorithm::Sha256,
        value: "whole-2".into(),
    };
    let result = run(
        &catalog,
        &complete_with(&[(1, md5_a), (3, md5_a)], Some(whole.clone())),
    );
    // MD5 of the two binary digests of "a", then the part count.
    let CommandResult::Completed { etag, size } = result else {
        panic!("{result:?}");
    };
    assert_eq!(size, (5 << 20) + 1);
    assert_eq!(etag, "\"7b3c799ee8b11a11c798c8b41bed8502-2\"");
    let object = catalog.object("cache", "big").unwrap().unwrap();
    assert_eq!((object.size, object.body.shards().count()), (size, 6));
    // The object keeps where each listed part ends and its checksum, the object's
    // checksum, and what the upload was created with.
    assert_eq!(
        object.parts,
        vec![
            PartSummary {
                size: 5 << 20,
                etag: md5_a.into(),
                checksum: Some(sha(10)),
            },
            PartSummary {
                size: 1,
                etag: md5_a.into(),
                checksum: Some(sha(30)),
            },
        ]
    );
    assert_eq!(object.checksum, Some(whole));
    assert_eq!(object.acl, CannedAcl::PublicRead);
    assert_eq!(
        object.headers.expires.as_deref(),
        Some("Thu, 01 Dec 2044 16:00:00 GMT")
    );
    // Its ACL can be changed alone; the bucket's public flag too.
    let set_acl = |acl| Command::SetObjectAcl {
        bucket: "cache".into(),
        key: "big".into(),
        acl,
    };
    assert_eq!(
        run(&catalog, &set_acl(CannedAcl::Private)),
        CommandResult::Done
    );
    let private = catalog.object("cache", "big").unwrap().unwrap();
    assert_eq!(private.acl, CannedAcl::Private);
    assert_eq!(private.version(), object.version());
    assert_eq!(private.parts, object.parts);
    assert!(matches!(
        run(
            &catalog,
            &Command::SetObjectAcl {
                bucket: "cache".into(),
                key: "missing".into(),
                acl: CannedAcl::PublicRead,
            }
        ),
        CommandResult::Refused(CatalogError::NoSuchKey(_))
    ));
    let public = |public_read| Command::SetBucketPublicRead {
        name: "cache".into(),
        public_read,
    };
    run(&catalog, &public(true));
    assert!(catalog.bucket("cache").unwrap().unwrap().public_read);
    run(&catalog, &public(false));
    assert!(!catalog.bucket("cache").unwrap().unwrap().public_read);
    // Part 2 was not listed: its shards join the replaced part 1's as garbage.
    assert_eq!(catalog.garbage(100).unwrap().len(), 6);
    assert_eq!(catalog.upload("u1").unwrap(), None);
    assert!(catalog.parts("u1", 0, 100).unwrap().is_empty());
    assert!(matches!(
        run(&catalog, &complete(&[(1, md5_a)])),
        CommandResult::Refused(CatalogError::NoSuchUpload(_))
    ));
}

fn once(request: u8, command: Command, now_ms: u64) -> Command {
    Command::Once {
        request: catalog::RequestId([request; 16]),
        command: Box::new(command),
        now_ms,
    }
}

fn garbage_ids(catalog: &Catalog) -> Vec<ShardId> {
    catalog
        .garbage(1000)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// A commit whose answer was lost comes again: under the same request id it is answered
/// with the first result and applied once; a same-record commit without one (or after the
/// request was forgotten) still never queues the shards the record it stores holds.
#[test]
fn a_retried_commit_is_applied_once_and_never_collects_its_own_shards() {
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    let first = once(1, put("cache", "nar/a", stored(10, n, 0)), 1_000);
    assert_eq!(
        run(&catalog, &first),
        CommandResult::Object { existed: false }
    );
    // The retry: the same answer, nothing applied, nothing queued.
    assert_eq!(
        run(&catalog, &first),
        CommandResult::Object { existed: false }
    );
    assert!(garbage_ids(&catalog).is_empty());
    assert_eq!(catalog.stats().unwrap().objects, 1);

    // The same record committed twice with no request id (an old client): the second
    // replaces the first with itself and collects nothing.
    run(&catalog, &put("cache", "nar/b", stored(10, n, 20)));
    run(&catalog, &put("cache", "nar/b", stored(10, n, 20)));
    assert!(garbage_ids(&catalog).is_empty());

    // A late retry of a record that was overwritten meanwhile: its shards, queued by the
    // overwrite, leave the queue again when it becomes visible once more.
    run(&catalog, &put("cache", "nar/c", stored(10, n, 40)));
    run(&catalog, &put("cache", "nar/c", stored(10, n, 50)));
    assert_eq!(
        garbage_ids(&catalog),
        vec![ShardId([40; 16]), ShardId([41; 16]), ShardId([42; 16])]
    );
    run(&catalog, &put("cache", "nar/c", stored(10, n, 40)));
    assert_eq!(
        garbage_ids(&catalog),
        vec![ShardId([50; 16]), ShardId([51; 16]), ShardId([52; 16])]
    );

    // Refusals are remembered too, and requests are forgotten after the memory's span, a
    // few per new request, oldest first.
    let refused = once(2, put("nope", "k", stored(1, n, 60)), 2_000);
    assert!(matches!(
        run(&catalog, &refused),
        CommandResult::Refused(CatalogError::NoSuchBucket(_))
    ));
    run(&catalog, &bucket("nope"));
    assert!(matches!(
        run(&catalog, &refused),
        CommandResult::Refused(CatalogError::NoSuchBucket(_))
    ));
    let later = 2_000 + catalog::REQUEST_MEMORY_MS + 1;
    run(&catalog, &once(3, bucket("later"), later));
    assert_eq!(
        run(&catalog, &refused),
        CommandResult::Object { existed: false },
        "a forgotten request is applied as new"
    );
}

/// A multipart completion whose answer was lost is answered again with the object it made;
/// a part uploaded again from the same shards keeps them; a refused completion keeps every
/// part.
#[test]
fn multipart_retries_complete_once_and_refusals_keep_the_parts() {
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    let upload = |id: &str, bucket: &str| create_upload(id, bucket, "big", 1);
    let part = |first: u8| {
        let ObjectBody::Segments { segments, .. } = stored(6 << 20, n, first).body else {
            unreachable!()
        };
        PartRecord {
            size: 6 << 20,
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            last_modified_ms: 3,
            segments,
            checksum: None,
        }
    };
    let put_part = |upload: &str, first: u8| Command::PutPart {
        upload: upload.into(),
        number: 1,
        part: part(first),
        now_ms: 4,
    };
    run(&catalog, &upload("u1", "cache"));
    run(&catalog, &put_part("u1", 0));
    run(&catalog, &put_part("u1", 0));
    assert!(
        garbage_ids(&catalog).is_empty(),
        "a part re-sent from the same shards"
    );
    let complete = once(
        7,
        Command::CompleteUpload {
            upload: "u1".into(),
            parts: vec![(1, "\"0123456789abcdef0123456789abcdef\"".into())],
            verified: Vec::new(),
            checksum: None,
            condition: None,
            now_ms: 5,
        },
        5,
    );
    let first = run(&catalog, &complete);
    assert!(
        matches!(first, CommandResult::Completed { .. }),
        "{first:?}"
    );
    assert_eq!(run(&catalog, &complete), first);
    assert!(garbage_ids(&catalog).is_empty());

    // A completion the catalog refuses (a listed part's ETag does not match) keeps every
    // part, so the client can complete again or abort.
    run(&catalog, &upload("u2", "cache"));
    run(&catalog, &put_part("u2", 30));
    let refused = run(
        &catalog,
        &Command::CompleteUpload {
            upload: "u2".into(),
            parts: vec![(1, "\"ffffffffffffffffffffffffffffffff\"".into())],
            verified: Vec::new(),
            checksum: None,
            condition: None,
            now_ms: 6,
        },
    );
    assert!(
        matches!(
            refused,
            CommandResult::Refused(CatalogError::InvalidPart(_))
        ),
        "{refused:?}"
    );
    assert_eq!(catalog.parts("u2", 0, 10).unwrap().len(), 1);
    assert!(catalog.upload("u2").unwrap().is_some());
}

/// The garbage queue is read by due time: entries not yet due never hide due ones, a shard
/// queued again counts from its later time, forgotten and re-referenced shards leave the
/// index with the queue, and a restored dump has the same index. Its index by node says
/// which nodes deletion still has to reach, through the same changes.
#[test]
fn garbage_is_read_oldest_first_up_to_the_cutoff() {
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    let delete = |key: &str, now_ms: u64| Command::DeleteObject {
        bucket: "cache".into(),
        key: key.into(),
        now_ms,
    };
    // Three objects deleted at times 500, 300 and 900: nine queued shards.
    for (key, first, at) in [("a", 0, 500), ("b", 10, 300), ("c", 20, 900)] {
        run(&catalog, &put("cache", key, stored(10, n, first)));
        run(&catalog, &delete(key, at));
    }
    let due = |cutoff: u64| -> Vec<u8> {
        catalog
            .due_garbage(cutoff, 100)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id.0[0])
            .collect()
    };
    assert_eq!(due(299), Vec::<u8>::new());
    assert_eq!(due(300), vec![10, 11, 12]);
    assert_eq!(due(600), vec![10, 11, 12, 0, 1, 2]);
    assert_eq!(
        catalog.due_garbage(10_000, 4).unwrap().len(),
        4,
        "at most max"
    );
    // Forgotten shards leave the index; a shard a record names again leaves the queue.
    run(
        &catalog,
        &Command::ForgetGarbage {
            shards: vec![ShardId([10; 16]), ShardId([11; 16])],
        },
    );
    run(&catalog, &put("cache", "again", stored(10, n, 0)));
    assert_eq!(due(600), vec![12]);
    assert_eq!(due(10_000), vec![12, 20, 21, 22]);
    // The same rows in another catalog give the same queue and index.
    let dump = {
        let txn = catalog.database().begin_read().unwrap();
        catalog::export(&txn).unwrap()
    };
    let (_other_dir, other) = open();
    let txn = other.database().begin_write().unwrap();
    catalog::import(&txn, &dump).unwrap();
    txn.commit().unwrap();
    let restored: Vec<u8> = other
        .due_garbage(10_000, 100)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.0[0])
        .collect();
    assert_eq!(restored, vec![12, 20, 21, 22]);
    assert_eq!(other.check_garbage_index().unwrap(), Ok(()));

    // Shard i of each object is on node i: 20 on the first, 21 on the second, 12 and 22
    // on the third.
    assert_eq!(catalog.check_garbage_index().unwrap(), Ok(()));
    let holding = |catalog: &Catalog| n.map(|node| catalog.holds_garbage(&node).unwrap());
    assert_eq!(holding(&catalog), [true, true, true]);
    run(
        &catalog,
        &Command::ForgetGarbage {
            shards: vec![ShardId([20; 16]), ShardId([12; 16])],
        },
    );
    assert_eq!(holding(&catalog), [false, true, true]);
    run(&catalog, &put("cache", "b", stored(10, n, 20)));
    assert_eq!(holding(&catalog), [false, false, false]);
    assert_eq!(catalog.check_garbage_index().unwrap(), Ok(()));
    assert!(
        trio()
            .iter()
            .all(|stranger| !catalog.holds_garbage(stranger).unwrap())
    );
}

/// A catalog of format 4 (before the garbage queue's node index and the uploads' key
/// index) gets both built from its queue and its uploads when this release opens it.
#[test]
fn a_catalog_of_format_4_gets_its_garbage_node_index_at_open() {
    let (dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    run(&catalog, &put("cache", "a", stored(10, n, 0)));
    run(&catalog, &put("cache", "a", stored(10, n, 10)));
    assert_eq!(catalog.garbage(100).unwrap().len(), 3);
    run(&catalog, &create_upload("u", "cache", "k", 1));
    let path = dir.path().join("catalog.redb");
    {
        let txn = catalog.database().begin_write().unwrap();
        let by_node: redb::TableDefinition<[u8; 48], ()> =
            redb::TableDefinition::new("garbage_by_node");
        txn.delete_table(by_node).unwrap();
        let by_key: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("uploads_by_key");
        txn.delete_table(by_key).unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 4).unwrap();
        txn.commit().unwrap();
    }
    // The index is gone (reading it fails) until the catalog is opened again.
    assert!(!matches!(catalog.check_garbage_index(), Ok(Ok(()))));
    drop(catalog);
    let reopened = Catalog::new(Arc::new(redb::Database::open(&path).unwrap())).unwrap();
    assert_eq!(reopened.check_garbage_index().unwrap(), Ok(()));
    assert!(n.iter().all(|node| reopened.holds_garbage(node).unwrap()));
    assert_eq!(reopened.check_shard_index().unwrap(), Ok(()));
    assert_eq!(reopened.check_upload_index().unwrap(), Ok(()));
    let all = UploadQuery {
        max: 10,
        ..Default::default()
    };
    assert_eq!(reopened.uploads("cache", &all).unwrap().0.len(), 1);
}

/// Uploads are indexed by age for expiry; completing one whose part lost more shards than
/// the code can spare is refused (the part stays, to be uploaded again) while one with
/// enough shards left completes; deleting a bucket whose only contents are open uploads
/// aborts them and queues their parts' shards.
#[test]
fn uploads_expire_by_age_refuse_unreadable_parts_and_go_with_their_bucket() {
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    let create = |id: &str, bucket: &str, initiated_ms: u64| {
        create_upload(id, bucket, &format!("{id}.nar"), initiated_ms)
    };
    let etag = "\"0123456789abcdef0123456789abcdef\"";
    let put_part = |upload: &str, first: u8| {
        let ObjectBody::Segments { segments, .. } = stored(100, n, first).body else {
            unreachable!()
        };
        Command::PutPart {
            upload: upload.into(),
            number: 1,
            part: PartRecord {
                size: 100,
                etag: etag.into(),
                last_modified_ms: 3,
                segments,
                checksum: None,
            },
            now_ms: 4,
        }
    };
    for (id, at) in [("late", 900), ("early", 100), ("mid", 500)] {
        run(&catalog, &create(id, "cache", at));
    }
    assert_eq!(
        catalog.stale_uploads(100, 10).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        catalog.stale_uploads(600, 10).unwrap(),
        vec!["early", "mid"]
    );
    assert_eq!(catalog.stale_uploads(10_000, 1).unwrap(), vec!["early"]);
    run(
        &catalog,
        &Command::AbortUpload {
            upload: "early".into(),
            now_ms: 5,
        },
    );
    assert_eq!(
        catalog.stale_uploads(10_000, 10).unwrap(),
        vec!["mid", "late"]
    );

    // Two of a part's three shards on lost nodes: below k = 2, refused, part kept.
    run(&catalog, &put_part("mid", 0));
    let set = |node: NodeId, state: NodeState| Command::SetNodeState {
        node,
        state,
        now_ms: 7,
    };
    run(&catalog, &set(n[0], NodeState::Lost));
    run(&catalog, &set(n[1], NodeState::Lost));
    let complete = Command::CompleteUpload {
        upload: "mid".into(),
        parts: vec![(1, etag.into())],
        verified: Vec::new(),
        checksum: None,
        condition: None,
        now_ms: 8,
    };
    let refused = run(&catalog, &complete);
    assert!(
        matches!(&refused, CommandResult::Refused(CatalogError::InvalidPart(m)) if m.contains("upload the part again")),
        "{refused:?}"
    );
    assert_eq!(catalog.parts("mid", 0, 10).unwrap().len(), 1);
    // One node back: two shards left, enough to read; the completion goes through.
    run(&catalog, &set(n[1], NodeState::Active));
    assert!(matches!(
        run(&catalog, &complete),
        CommandResult::Completed { .. }
    ));
    assert_eq!(catalog.stale_uploads(10_000, 10).unwrap(), vec!["late"]);

    // A bucket holding only an open upload is deleted, the upload with it.
    run(&catalog, &bucket("scratch"));
    run(&catalog, &create("abandoned", "scratch", 950));
    run(&catalog, &put_part("abandoned", 30));
    let before = catalog.garbage(1000).unwrap().len();
    assert_eq!(
        run(
            &catalog,
            &Command::DeleteBucket {
                name: "scratch".into(),
                now_ms: 9,
            }
        ),
        CommandResult::Done
    );
    assert!(catalog.upload("abandoned").unwrap().is_none());
    assert!(catalog.parts("abandoned", 0, 10).unwrap().is_empty());
    assert_eq!(catalog.garbage(1000).unwrap().len(), before + 3);
    assert_eq!(catalog.stale_uploads(10_000, 10).unwrap(), vec!["late"]);
}

/// A completion names the versions of the parts the gateway read back and checked: if a
/// part was uploaded again meanwhile (even with the same ETag, as an MD5 collision would
/// give), the completion is refused and changes nothing; with the current versions it
/// goes through.
#[test]
fn a_completion_is_bound_to_the_parts_that_were_checked() {
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    let record = UploadRecord {
        bucket: "cache".into(),
        key: "nar/x.nar".into(),
        initiated_ms: 1,
        headers: ObjectHeaders::default(),
        erasure: ErasureProfile {
            k: 2,
            m: 1,
            segment_size: 1 << 20,
        },
        acl: Default::default(),
        checksum: None,
    };
    run(
        &catalog,
        &Command::CreateUpload {
            id: "u".into(),
            upload: record.clone(),
        },
    );
    let etag = "\"0123456789abcdef0123456789abcdef\"";
    // Each upload of a part masks its segments under a fresh nonce, so its shards differ.
    let part = |first: u8| {
        let ObjectBody::Segments { mut segments, .. } = stored(100, n, first).body else {
            unreachable!()
        };
        segments[0].mask = Some(cairn_erasure::SegmentNonce::from_bytes([first; 16]));
        PartRecord {
            size: 100,
            etag: etag.into(),
            last_modified_ms: 3,
            segments,
            checksum: None,
        }
    };
    let put_part = |first: u8| Command::PutPart {
        upload: "u".into(),
        number: 1,
        part: part(first),
        now_ms: 4,
    };
    run(&catalog, &put_part(0));
    let checked = part(0).as_object(&record).version();
    // The same number uploaded again from other shards, with the same ETag.
    run(&catalog, &put_part(40));
    let complete = |version| Command::CompleteUpload {
        upload: "u".into(),
        parts: vec![(1, etag.into())],
        verified: vec![(1, version)],
        checksum: None,
        condition: None,
        now_ms: 5,
    };
    let refused = run(&catalog, &complete(checked));
    assert!(
        matches!(&refused, CommandResult::Refused(CatalogError::InvalidPart(m)) if m.contains("changed after it was checked")),
        "{refused:?}"
    );
    assert_eq!(
        catalog.parts("u", 0, 10).unwrap().len(),
        1,
        "nothing changed"
    );
    let current = part(40).as_object(&record).version();
    assert!(matches!(
        run(&catalog, &complete(current)),
        CommandResult::Completed { .. }
    ));
}

/// Conditional writes are decided in the same step that writes: `Absent` refuses an
/// existing key, `ETag` refuses another version and names a missing key, and a refused
/// completion keeps its parts.
#[test]
fn conditional_writes_are_checked_where_they_are_applied() {
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    let put_if = |key: &str, first: u8, condition| Command::PutObject {
        bucket: "cache".into(),
        key: key.into(),
        object: stored(10, n, first),
        condition: Some(condition),
        now_ms: 100,
    };
    assert_eq!(
        run(&catalog, &put_if("nar", 0, catalog::WriteCondition::Absent)),
        CommandResult::Object { existed: false }
    );
    assert!(matches!(
        run(
            &catalog,
            &put_if("nar", 10, catalog::WriteCondition::Absent)
        ),
        CommandResult::Refused(CatalogError::PreconditionFailed(_))
    ));
    assert!(
        catalog.garbage(100).unwrap().is_empty(),
        "the refused write changed nothing"
    );
    let wrong = catalog::WriteCondition::ETag("\"other\"".into());
    assert!(matches!(
        run(&catalog, &put_if("nar", 10, wrong)),
        CommandResult::Refused(CatalogError::PreconditionFailed(_))
    ));
    let current = catalog::WriteCondition::ETag("e".into());
    assert_eq!(
        run(&catalog, &put_if("nar", 10, current.clone())),
        CommandResult::Object { existed: true }
    );
    assert!(matches!(
        run(&catalog, &put_if("missing", 20, current)),
        CommandResult::Refused(CatalogError::NoSuchKey(_))
    ));
}

/// The survey counts segments with more shards in one organisation than their bucket's
/// rule allows (2 + 1 surviving one organisation: one shard each), and queues the shards
/// past the cap to move once the organisations with room could hold a segment under the
/// rule (behind every rebuild and drain).
#[test]
fn the_survey_counts_segments_below_the_spread_rule_and_queues_them_for_moves() {
    use cairn_coordinator::durability::survey;
    use std::collections::HashMap;
    let (_dir, catalog) = open();
    let n = trio();
    run(&catalog, &bucket("cache"));
    register(&catalog, &n);
    run(&catalog, &put("cache", "spread", stored(10, n, 0)));
    run(&catalog, &put("cache", "crowded", stored(10, n, 10)));
    let states = n.iter().map(|id| (*id, NodeState::Active)).collect();
    let orgs_of = |crowded: bool| -> HashMap<NodeId, String> {
        n.iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    *id,
                    if crowded && i < 2 {
                        "a".into()
                    } else {
                        format!("o{i}")
                    },
                )
            })
            .collect()
    };
    let room = |orgs: &[(&str, usize)]| -> HashMap<String, usize> {
        orgs.iter().map(|(o, n)| (o.to_string(), *n)).collect()
    };
    let missing = Default::default();
    let crowded_room = room(&[("a", 2), ("o2", 1)]);
    let (found, needs) = survey(
        &catalog,
        &states,
        &orgs_of(false),
        &crowded_room,
        &missing,
        1,
    )
    .unwrap();
    assert_eq!((found.segments, found.below_spread), (2, 0));
    assert!(needs.is_empty(), "{needs:?}");
    // Crowded, and no third organisation to move to: counted, not queued (it would only
    // fail placement every round).
    let (found, needs) = survey(
        &catalog,
        &states,
        &orgs_of(true),
        &crowded_room,
        &missing,
        1,
    )
    .unwrap();
    assert_eq!((found.segments, found.below_spread), (2, 2));
    assert!(needs.is_empty(), "{needs:?}");
    // A third organisation with room: each segment's second shard in "a" moves.
    let (found, needs) = survey(
        &catalog,
        &states,
        &orgs_of(true),
        &room(&[("a", 2), ("o2", 1), ("b", 1)]),
        &missing,
        1,
    )
    .unwrap();
    assert_eq!(found.below_spread, 2);
    assert_eq!(needs.len(), 2, "{needs:?}");
    for need in &needs {
        assert!(need.respread && need.missing.is_empty() && need.draining.is_empty());
        assert_eq!(need.moving, vec![1], "{need:?}");
        assert_eq!(
            cairn_coordinator::repair::reason(need),
            cairn_coordinator::catalog::MoveReason::Spread
        );
    }
}

/// Uploads in progress are listed from their index by key, then start, then id, in pages
/// from any marker: following the markers with any page size, with and without a
/// delimiter, gives exactly the model's order, keys with 0 bytes and keys that extend
/// one another included; other buckets never show; deleting the bucket aborts exactly
/// its uploads and leaves both indexes matching the table.
#[test]
fn uploads_are_listed_page_by_page_from_their_index_in_s3_order() {
    let (_dir, catalog) = open();
    run(&catalog, &bucket("cache"));
    run(&catalog, &bucket("other"));
    let keys = [
        "a", "a\0", "a\0\0b", "a\u{1}", "a/b", "a/b/c", "a/c", "ab", "b/x\0/y", "b/x/y", "é",
    ];
    let txn = catalog.database().begin_write().unwrap();
    // (key, start, id) of every upload in "cache": a key's uploads begun in another order
    // than their ids, and a thousand more than one page under "many/".
    let mut model = Vec::new();
    let mut create = |bucket: &str, key: &str, initiated_ms: u64, id: String| {
        let command = create_upload(&id, bucket, key, initiated_ms);
        assert_eq!(catalog::apply(&txn, &command).unwrap(), CommandResult::Done);
        if bucket == "cache" {
            model.push((key.to_string(), initiated_ms, id));
        }
    };
    for (i, key) in keys.iter().enumerate() {
        for (j, at) in [30u64, 10, 20].into_iter().enumerate() {
            create("cache", key, at, format!("u{i}-{j}"));
        }
        create("other", key, 5, format!("o{i}"));
    }
    for i in 0..1_200u64 {
        create(
            "cache",
            &format!("many/{i:05}"),
            1_000 - (i % 7),
            format!("m{i}"),
        );
    }
    txn.commit().unwrap();
    model.sort();
    assert_eq!(catalog.check_upload_index().unwrap(), Ok(()));

    // Every page size, prefix and delimiter against the model.
    for (prefix, delimiter) in [("", None), ("a", None), ("a/", Some("/")), ("", Some("/"))] {
        let mut want: Vec<(String, Option<String>)> = Vec::new();
        for (key, _, id) in model.iter().filter(|(k, _, _)| k.starts_with(prefix)) {
            let rolled = delimiter.and_then(|d| {
                key[prefix.len()..]
                    .find(d)
                    .map(|at| key[..prefix.len() + at + d.len()].to_string())
            });
            match rolled {
                Some(common) if want.last() == Some(&(common.clone(), None)) => {}
                Some(common) => want.push((common, None)),
                None => want.push((key.clone(), Some(id.clone()))),
            }
        }
        for max in [1, 7, 1000] {
            let mut got: Vec<(String, Option<String>)> = Vec::new();
            let mut query = UploadQuery {
                prefix: prefix.into(),
                delimiter: delimiter.map(String::from),
                max,
                ..Default::default()
            };
            loop {
                let (page, truncated) = catalog.uploads("cache", &query).unwrap();
                assert!(page.len() <= max);
                for entry in &page {
                    got.push(match entry {
                        UploadEntry::Upload(id, upload) => {
                            assert_eq!(upload.bucket, "cache");
                            (upload.key.clone(), Some(id.clone()))
                        }
                        UploadEntry::Prefix(common) => (common.clone(), None),
                    });
                }
                if !truncated {
                    break;
                }
                let (key, id) = got.last().cloned().expect("a truncated page holds entries");
                query.key_marker = Some(key);
                query.upload_id_marker = id;
            }
            assert_eq!(
                got, want,
                "prefix {prefix:?}, delimiter {delimiter:?}, pages of {max}"
            );
        }
    }
    // A key marker alone skips every upload of that key; an upload marker naming no
    // upload of it likewise.
    let after = |key: &str, id: Option<&str>| {
        let query = UploadQuery {
            key_marker: Some(key.into()),
            upload_id_marker: id.map(String::from),
            max: 1,
            ..Default::default()
        };
        match catalog.uploads("cache", &query).unwrap().0.first() {
            Some(UploadEntry::Upload(id, upload)) => (upload.key.clone(), id.clone()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(after("a", None), ("a\0".to_string(), "u1-1".to_string()));
    assert_eq!(
        after("a", Some("o0")),
        ("a\0".to_string(), "u1-1".to_string())
    );
    // Within a key, by start: u0-1 (10), u0-2 (20), u0-0 (30).
    assert_eq!(
        after("a", Some("u0-1")),
        ("a".to_string(), "u0-2".to_string())
    );

    // Deleting the bucket aborts its uploads, and only its.
    run(
        &catalog,
        &Command::DeleteBucket {
            name: "cache".into(),
            now_ms: 1,
        },
    );
    let everything = UploadQuery {
        max: 100,
        ..Default::default()
    };
    assert!(catalog.uploads("cache", &everything).unwrap().0.is_empty());
    assert_eq!(
        catalog.uploads("other", &everything).unwrap().0.len(),
        keys.len()
    );
    assert_eq!(catalog.check_upload_index().unwrap(), Ok(()));
}
