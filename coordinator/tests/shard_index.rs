//! The shards-by-node index equals what a walk of every object and part computes, after
//! any sequence of commands that place, move or drop shards (puts, overwrites, deletes,
//! multipart parts, completions, aborts, shard replacements in objects and in parts,
//! bucket deletion), after a snapshot stream is installed elsewhere, and after a catalog of
//! the previous formats (no index; no segment-shape counters) is opened. The segment-shape
//! counters kept beside the index are checked with it.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, NodeRecord, NodeState, ObjectBody, ObjectHeaders,
    ObjectRecord, PartRecord, SegmentRecord, ShardRecord, UploadRecord,
};
use cairn_coordinator::catalog::stream::{self, StreamReader, StreamWriter};
use cairn_coordinator::catalog::{
    self, Catalog, Command, CommandResult, MoveReason, ShardReplacement,
};
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use proptest::prelude::*;
use redb::ReadableDatabase;

const NODES: usize = 5;
const KEYS: usize = 4;
const UPLOADS: usize = 3;
const ERASURE: ErasureProfile = ErasureProfile {
    k: 2,
    m: 1,
    segment_size: 8 << 20,
};

#[derive(Debug, Clone)]
enum Op {
    /// `key` gets a new version of `segments` segments on nodes from `seed`; with `reuse`,
    /// its first segment names the shards of another key's first segment (two records,
    /// one placed shard).
    Put {
        key: usize,
        segments: usize,
        seed: u64,
        reuse: Option<usize>,
    },
    /// `key` gets an inline version.
    PutInline {
        key: usize,
    },
    Delete {
        key: usize,
    },
    /// Shard `index` of segment 0 of `key` moves to `node`.
    Replace {
        key: usize,
        index: usize,
        node: usize,
    },
    CreateUpload {
        upload: usize,
    },
    PutPart {
        upload: usize,
        number: u32,
        seed: u64,
    },
    /// Completes `upload` with its parts `numbers` (a subset; a bad list is refused and
    /// must put every part back as it was).
    Complete {
        upload: usize,
        numbers: Vec<u32>,
    },
    Abort {
        upload: usize,
    },
    ReplacePart {
        upload: usize,
        number: u32,
        index: usize,
        node: usize,
    },
    /// Deletes every key, then the bucket (aborting its uploads).
    DropBucket,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, 1usize..3, any::<u64>(), prop::option::weighted(0.2, 0..KEYS))
            .prop_map(|(key, segments, seed, reuse)| Op::Put { key, segments, seed, reuse }),
        1 => (0..KEYS).prop_map(|key| Op::PutInline { key }),
        2 => (0..KEYS).prop_map(|key| Op::Delete { key }),
        2 => (0..KEYS, 0usize..3, 0..NODES).prop_map(|(key, index, node)| Op::Replace { key, index, node }),
        2 => (0..UPLOADS).prop_map(|upload| Op::CreateUpload { upload }),
        3 => (0..UPLOADS, 1u32..4, any::<u64>()).prop_map(|(upload, number, seed)| Op::PutPart { upload, number, seed }),
        2 => (0..UPLOADS, prop::sample::subsequence(vec![1u32, 2, 3], 0..=3))
            .prop_map(|(upload, numbers)| Op::Complete { upload, numbers }),
        1 => (0..UPLOADS).prop_map(|upload| Op::Abort { upload }),
        2 => (0..UPLOADS, 1u32..4, 0usize..3, 0..NODES)
            .prop_map(|(upload, number, index, node)| Op::ReplacePart { upload, number, index, node }),
        1 => Just(Op::DropBucket),
    ]
}

struct Model {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    nodes: Vec<NodeId>,
    next_shard: u128,
    now: u64,
    /// The id each upload slot currently has (a new one after completion or abort).
    upload_ids: HashMap<usize, String>,
}

fn bucket() -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: "bkt".into(),
            created_ms: 0,
            public_read: false,
            mode: BucketMode::Plain,
            erasure: ERASURE,
            failure_tolerance: 1,
        },
    }
}

impl Model {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("catalog.redb")).unwrap();
        let catalog = Catalog::new(Arc::new(db)).unwrap();
        let nodes: Vec<NodeId> = (0..NODES).map(|_| SecretKey::generate().public()).collect();
        let model = Model {
            _dir: dir,
            catalog,
            nodes,
            next_shard: 1,
            now: 1,
            upload_ids: HashMap::new(),
        };
        model.run(&bucket());
        for id in &model.nodes {
            model.run(&Command::RegisterNode {
                node: NodeRecord {
                    id: *id,
                    addr: "127.0.0.1:1".into(),
                    org: "o".into(),
                    site: "s".into(),
                    capacity: 1 << 30,
                    state: NodeState::Active,
                    joined_ms: 0,
                    state_since_ms: 0,
                    vetted: true,
                    reputation: Default::default(),
                },
            });
        }
        model
    }

    fn run(&self, command: &Command) -> CommandResult {
        let txn = self.catalog.database().begin_write().unwrap();
        let result = catalog::apply(&txn, command).unwrap();
        txn.commit().unwrap();
        result
    }

    fn shard(&mut self, node: NodeId) -> ShardRecord {
        // Ids spread over the whole range, as random ids are, but reproducible.
        let id = ShardId(
            blake3::hash(&self.next_shard.to_le_bytes()).as_bytes()[..16]
                .try_into()
                .unwrap(),
        );
        self.next_shard += 1;
        ShardRecord {
            id,
            node,
            root: ShardRoot::of(&id.0),
        }
    }

    /// A segment of `len` bytes on three distinct nodes chosen by `seed`.
    fn segment(&mut self, len: u64, seed: u64) -> SegmentRecord {
        let first = (seed % NODES as u64) as usize;
        let step = 1 + (seed / 7 % (NODES as u64 - 1)) as usize;
        let mut picked: Vec<usize> = Vec::new();
        let mut at = first;
        while picked.len() < 3 {
            if !picked.contains(&at) {
                picked.push(at);
            }
            at = (at + step) % NODES;
            if picked.len() < 3 && at == first {
                at = (at + 1) % NODES;
            }
        }
        let shards = picked.iter().map(|n| self.shard(self.nodes[*n])).collect();
        SegmentRecord {
            len,
            shards,
            mask: None,
        }
    }

    fn key(key: usize) -> String {
        format!("k{key}")
    }

    fn upload_id(&mut self, slot: usize) -> String {
        self.upload_ids
            .entry(slot)
            .or_insert_with(|| format!("u{slot}-0"))
            .clone()
    }

    fn object(&self, key: usize) -> Option<ObjectRecord> {
        self.catalog.object("bkt", &Self::key(key)).unwrap()
    }

    fn apply(&mut self, op: &Op) {
        self.now += 1;
        let now_ms = self.now;
        match op {
            Op::Put {
                key,
                segments,
                seed,
                reuse,
            } => {
                let mut list: Vec<SegmentRecord> = (0..*segments)
                    .map(|i| self.segment(1000 + i as u64, seed.wrapping_add(i as u64)))
                    .collect();
                if let Some(other) = reuse.filter(|other| other != key)
                    && let Some(ObjectRecord {
                        body: ObjectBody::Segments { segments, .. },
                        ..
                    }) = self.object(other)
                {
                    list[0] = segments[0].clone();
                }
                let size = list.iter().map(|s| s.len).sum();
                let object = ObjectRecord {
                    size,
                    etag: format!("\"{}\"", self.next_shard),
                    last_modified_ms: now_ms,
                    headers: ObjectHeaders::default(),
                    body: ObjectBody::Segments {
                        erasure: ERASURE,
                        segments: list,
                    },
                    acl: Default::default(),
                    parts: Vec::new(),
                    checksum: None,
                };
                self.run(&Command::PutObject {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    object,
                    condition: None,
                    now_ms,
                });
            }
            Op::PutInline { key } => {
                let object = ObjectRecord {
                    size: 3,
                    etag: "\"inline\"".into(),
                    last_modified_ms: now_ms,
                    headers: ObjectHeaders::default(),
                    body: ObjectBody::Inline(b"abc".to_vec()),
                    acl: Default::default(),
                    parts: Vec::new(),
                    checksum: None,
                };
                self.run(&Command::PutObject {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    object,
                    condition: None,
                    now_ms,
                });
            }
            Op::Delete { key } => {
                self.run(&Command::DeleteObject {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    now_ms,
                });
            }
            Op::Replace { key, index, node } => {
                let Some(object) = self.object(*key) else {
                    return;
                };
                let ObjectBody::Segments { segments, .. } = &object.body else {
                    return;
                };
                let current = segments[0].shards[*index].clone();
                let mut new = self.shard(self.nodes[*node]);
                new.root = current.root;
                self.run(&Command::ReplaceShards {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    etag: object.etag.clone(),
                    segment: 0,
                    replacements: vec![ShardReplacement {
                        index: *index as u32,
                        old: current.id,
                        new,
                    }],
                    reason: MoveReason::Rebalance,
                    now_ms,
                });
            }
            Op::CreateUpload { upload } => {
                let id = self.upload_id(*upload);
                self.run(&Command::CreateUpload {
                    id,
                    upload: UploadRecord {
                        bucket: "bkt".into(),
                        key: Self::key(*upload),
                        initiated_ms: now_ms,
                        headers: ObjectHeaders::default(),
                        erasure: ERASURE,
                        acl: Default::default(),
                        checksum: None,
                    },
                });
            }
            Op::PutPart {
                upload,
                number,
                seed,
            } => {
                let id = self.upload_id(*upload);
                let size = catalog::model::MIN_PART_SIZE + u64::from(*number);
                let segment = self.segment(size, *seed);
                self.run(&Command::PutPart {
                    upload: id,
                    number: *number,
                    part: PartRecord {
                        size,
                        etag: format!("\"{:032x}\"", seed),
                        last_modified_ms: now_ms,
                        segments: vec![segment],
                        checksum: None,
                    },
                    now_ms,
                });
            }
            Op::Complete { upload, numbers } => {
                let id = self.upload_id(*upload);
                let parts = self.catalog.parts(&id, 0, 100).unwrap();
                let listed = numbers
                    .iter()
                    .map(|n| {
                        let etag = parts
                            .iter()
                            .find(|(number, _)| number == n)
                            .map_or_else(|| "\"00\"".to_string(), |(_, p)| p.etag.clone());
                        (*n, etag)
                    })
                    .collect();
                let result = self.run(&Command::CompleteUpload {
                    upload: id,
                    parts: listed,
                    verified: Vec::new(),
                    checksum: None,
                    condition: None,
                    now_ms,
                });
                if matches!(result, CommandResult::Completed { .. }) {
                    self.upload_ids
                        .insert(*upload, format!("u{upload}-{}", self.now));
                }
            }
            Op::Abort { upload } => {
                let id = self.upload_id(*upload);
                let result = self.run(&Command::AbortUpload { upload: id, now_ms });
                if !matches!(result, CommandResult::Refused(_)) {
                    self.upload_ids
                        .insert(*upload, format!("u{upload}-{}", self.now));
                }
            }
            Op::ReplacePart {
                upload,
                number,
                index,
                node,
            } => {
                let id = self.upload_id(*upload);
                let parts = self.catalog.parts(&id, 0, 100).unwrap();
                let Some((_, part)) = parts.iter().find(|(n, _)| n == number) else {
                    return;
                };
                let current = part.segments[0].shards[*index].clone();
                let mut new = self.shard(self.nodes[*node]);
                new.root = current.root;
                self.run(&Command::ReplacePartShards {
                    upload: id,
                    number: *number,
                    etag: part.etag.clone(),
                    segment: 0,
                    replacements: vec![ShardReplacement {
                        index: *index as u32,
                        old: current.id,
                        new,
                    }],
                    reason: MoveReason::Drain,
                    now_ms,
                });
            }
            Op::DropBucket => {
                for key in 0..KEYS {
                    self.run(&Command::DeleteObject {
                        bucket: "bkt".into(),
                        key: Self::key(key),
                        now_ms,
                    });
                }
                self.run(&Command::DeleteBucket {
                    name: "bkt".into(),
                    now_ms,
                });
                self.upload_ids.clear();
                self.run(&bucket());
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        self.catalog.check_shard_index().unwrap()
    }
}

/// Index keys, and per-node totals rows.
type IndexRows = (Vec<[u8; 48]>, Vec<([u8; 32], (u64, u64))>);

/// The keys of the index and its totals, as stored (values are checked against the
/// records by `check_shard_index`; the record an entry names first may differ between two
/// histories when several records name one shard).
fn index_rows(catalog: &Catalog) -> IndexRows {
    let txn = catalog.database().begin_read().unwrap();
    let shards: redb::TableDefinition<[u8; 48], &[u8]> =
        redb::TableDefinition::new("shards_by_node");
    let totals: redb::TableDefinition<[u8; 32], (u64, u64)> =
        redb::TableDefinition::new("placed_by_node");
    use redb::ReadableTable;
    let a = txn
        .open_table(shards)
        .unwrap()
        .iter()
        .unwrap()
        .map(|i| {
            let (k, _) = i.unwrap();
            k.value()
        })
        .collect();
    let b = txn
        .open_table(totals)
        .unwrap()
        .iter()
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            (k.value(), v.value())
        })
        .collect();
    (a, b)
}

/// Streams `catalog` as a snapshot does and installs it into a fresh database.
fn installed_copy(catalog: &Catalog, dir: &std::path::Path) -> Catalog {
    let mut bytes = Vec::new();
    {
        let txn = catalog.database().begin_read().unwrap();
        let mut writer = StreamWriter::new(&mut bytes, 512);
        stream::write_catalog(&txn, &mut writer).unwrap();
        writer.finish().unwrap();
    }
    let db = redb::Database::create(dir.join("copy.redb")).unwrap();
    let copy = Catalog::new(Arc::new(db)).unwrap();
    let mut reader = StreamReader::new(bytes.as_slice());
    stream::import_stream(copy.database(), &mut reader, |_| Ok(())).unwrap();
    copy
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_index_equals_a_walk_after_any_commands(ops in prop::collection::vec(op(), 1..80)) {
        let mut model = Model::new();
        for op in &ops {
            model.apply(op);
            if let Err(diff) = model.check() {
                return Err(TestCaseError::fail(format!("after {op:?}: {diff}")));
            }
        }
        // A member installing this catalog from a snapshot stream has the same index, as
        // has one that loaded it from an in-memory dump.
        let dir = tempfile::tempdir().unwrap();
        let copy = installed_copy(&model.catalog, dir.path());
        prop_assert_eq!(copy.check_shard_index().unwrap(), Ok(()));
        prop_assert_eq!(index_rows(&copy), index_rows(&model.catalog));
        let db = redb::Database::create(dir.path().join("dump.redb")).unwrap();
        let loaded = Catalog::new(Arc::new(db)).unwrap();
        let dump = catalog::export(&model.catalog.database().begin_read().unwrap()).unwrap();
        let txn = loaded.database().begin_write().unwrap();
        catalog::import(&txn, &dump).unwrap();
        txn.commit().unwrap();
        prop_assert_eq!(loaded.check_shard_index().unwrap(), Ok(()));
        prop_assert_eq!(index_rows(&loaded), index_rows(&model.catalog));
    }
}

#[test]
fn totals_count_each_placed_shard_once_and_follow_deletes() {
    let mut model = Model::new();
    model.apply(&Op::Put {
        key: 0,
        segments: 2,
        seed: 3,
        reuse: None,
    });
    // Key 1 names key 0's first segment too: still one placed shard per (node, id).
    model.apply(&Op::Put {
        key: 1,
        segments: 1,
        seed: 9,
        reuse: Some(0),
    });
    model.check().unwrap();
    let totals = model.catalog.placed_totals_by_node().unwrap();
    assert_eq!(totals.values().map(|t| t.shards).sum::<u64>(), 6);
    let shard_len = cairn_erasure::Codec::new(2, 1).unwrap().shard_len(1000);
    assert!(totals.values().all(|t| t.bytes >= shard_len));
    // Deleting key 0 leaves the shared segment indexed for key 1.
    model.apply(&Op::Delete { key: 0 });
    model.check().unwrap();
    let left: u64 = model
        .catalog
        .placed_totals_by_node()
        .unwrap()
        .values()
        .map(|t| t.shards)
        .sum();
    assert_eq!(left, 3);
    model.apply(&Op::Delete { key: 1 });
    assert!(model.catalog.placed_totals_by_node().unwrap().is_empty());
    for node in &model.nodes {
        assert_eq!(
            cairn_coordinator::durability::placed_on(&model.catalog, node).unwrap(),
            0
        );
    }
}

#[test]
fn a_catalog_of_the_previous_format_gets_its_index_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.redb");
    let mut model = Model::new();
    for key in 0..KEYS {
        model.apply(&Op::Put {
            key,
            segments: 2,
            seed: key as u64 * 5,
            reuse: None,
        });
    }
    model.apply(&Op::CreateUpload { upload: 0 });
    model.apply(&Op::PutPart {
        upload: 0,
        number: 1,
        seed: 11,
    });
    let expected = index_rows(&model.catalog);
    assert!(!expected.0.is_empty());
    // What a format-2 release left: the same records, no index, marked 2.
    let dump = catalog::export(&model.catalog.database().begin_read().unwrap()).unwrap();
    {
        let db = Arc::new(redb::Database::create(&path).unwrap());
        let fresh = Catalog::new(db.clone()).unwrap();
        let txn = fresh.database().begin_write().unwrap();
        catalog::import(&txn, &dump).unwrap();
        let shards: redb::TableDefinition<[u8; 48], &[u8]> =
            redb::TableDefinition::new("shards_by_node");
        let totals: redb::TableDefinition<[u8; 32], (u64, u64)> =
            redb::TableDefinition::new("placed_by_node");
        txn.delete_table(shards).unwrap();
        txn.delete_table(totals).unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 2).unwrap();
        txn.commit().unwrap();
    }
    let reopened = Catalog::new(Arc::new(redb::Database::open(&path).unwrap())).unwrap();
    assert_eq!(reopened.check_shard_index().unwrap(), Ok(()));
    assert_eq!(index_rows(&reopened), expected);
}

/// A catalog of format 3 (the index, no segment-shape counters) gets its counters at open,
/// equal to a walk of its records.
#[test]
fn a_catalog_of_format_3_gets_its_shape_counters_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.redb");
    let mut model = Model::new();
    for key in 0..KEYS {
        model.apply(&Op::Put {
            key,
            segments: key + 1,
            seed: key as u64 * 3,
            reuse: None,
        });
    }
    model.apply(&Op::CreateUpload { upload: 1 });
    model.apply(&Op::PutPart {
        upload: 1,
        number: 2,
        seed: 5,
    });
    let expected = model.catalog.segment_shapes().unwrap();
    assert_eq!(
        expected.values().map(|t| t.segments).sum::<u64>(),
        (1..=KEYS as u64).sum::<u64>() + 1
    );
    let dump = catalog::export(&model.catalog.database().begin_read().unwrap()).unwrap();
    {
        let db = Arc::new(redb::Database::create(&path).unwrap());
        let fresh = Catalog::new(db.clone()).unwrap();
        let txn = fresh.database().begin_write().unwrap();
        catalog::import(&txn, &dump).unwrap();
        let shapes: redb::TableDefinition<(u16, u16), (u64, u64)> =
            redb::TableDefinition::new("segment_shapes");
        txn.delete_table(shapes).unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("format", 3).unwrap();
        txn.commit().unwrap();
    }
    let reopened = Catalog::new(Arc::new(redb::Database::open(&path).unwrap())).unwrap();
    assert_eq!(reopened.check_shard_index().unwrap(), Ok(()));
    assert_eq!(reopened.segment_shapes().unwrap(), expected);
}
