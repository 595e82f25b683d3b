//! Garbage collection never deletes a referenced shard, whatever order uploads, commits,
//! overwrites, deletes, repairs and collection rounds interleave in.
//!
//! A model cluster of four nodes (sets of shard ids) runs random operations against the
//! real catalog (`catalog::apply`), the real inventory comparison (`gc::reconcile`) and the
//! real orphan watch (`gc::OrphanWatch`); the collector's paged comparison against the
//! shards-by-node index (`gc::reconcile_paged`, with pages of two ids) must answer as the
//! whole-catalog comparison does, and is what the model acts on. Commits obey the commit window that
//! `rpc::serve::fresh_enough` enforces (half the orphan delay after placement). A
//! collection round is split into its steps (catalog read, node inventories, catalog read
//! again, deletions), with other operations landing between them. After every step, every
//! shard the catalog refers to must still be on its node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, NodeRecord, NodeState, ObjectBody, ObjectHeaders,
    ObjectRecord, SegmentRecord, ShardRecord,
};
use cairn_coordinator::catalog::{
    self, Catalog, CatalogView, Command, CommandResult, MoveReason, ShardMap, ShardReplacement,
};
use cairn_coordinator::gc::{OrphanWatch, reconcile, reconcile_paged};
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use proptest::prelude::*;

/// Ticks a shard must be seen unreferenced before it is collected.
const ORPHAN_DELAY: u64 = 10;
/// Ticks after placement a commit is still accepted (half the orphan delay).
const COMMIT_WITHIN: u64 = ORPHAN_DELAY / 2;
/// Ticks a garbage shard waits.
const GARBAGE_DELAY: u64 = 3;
const KEYS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// An upload stores a segment's three shards on three nodes (not yet committed).
    Store { nodes: [usize; 3] },
    /// A pending upload (picked by `which`) commits as `key` (refused if its window has
    /// passed).
    Commit { which: usize, key: usize },
    /// A pending upload is abandoned: its shards stay on the nodes, unreferenced.
    Abandon { which: usize },
    /// `key` is deleted.
    Delete { key: usize },
    /// Shard `index` of `key` is repaired onto `node` (a copy is stored there first).
    Repair {
        key: usize,
        index: usize,
        node: usize,
    },
    /// The collector reads the catalog (start of a round).
    GcBefore,
    /// The collector takes `node`'s inventory.
    GcInventory { node: usize },
    /// The collector reads the catalog again, compares, and deletes what is due.
    GcAfter,
    /// Time passes.
    Tick { ticks: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0usize..4;
    prop_oneof![
        3 => prop::sample::subsequence(vec![0usize, 1, 2, 3], 3)
            .prop_shuffle()
            .prop_map(|n| Op::Store { nodes: [n[0], n[1], n[2]] }),
        3 => (0usize..8, 0..KEYS).prop_map(|(which, key)| Op::Commit { which, key }),
        1 => (0usize..8).prop_map(|which| Op::Abandon { which }),
        2 => (0..KEYS).prop_map(|key| Op::Delete { key }),
        2 => (0..KEYS, 0usize..3, node.clone()).prop_map(|(key, index, node)| Op::Repair { key, index, node }),
        2 => Just(Op::GcBefore),
        3 => node.prop_map(|node| Op::GcInventory { node }),
        2 => Just(Op::GcAfter),
        4 => (1u64..=4).prop_map(|ticks| Op::Tick { ticks }),
    ]
}

/// A collection round in progress: the catalog as read before, and inventories since.
type Round = (ShardMap, CatalogView, Vec<(NodeId, Vec<ShardId>)>);

struct Model {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    nodes: Vec<NodeId>,
    /// What each node actually holds.
    held: HashMap<NodeId, HashSet<ShardId>>,
    /// Uploads stored but not committed: shards and the tick they were placed.
    pending: Vec<(Vec<ShardRecord>, u64)>,
    now: u64,
    next_shard: u128,
    watch: OrphanWatch,
    /// A round in progress: the catalog read before, and the inventories taken since.
    round: Option<Round>,
    /// When each garbage shard was first seen queued (the catalog's own clock is ms; the
    /// model keeps ticks).
    garbage_seen: HashMap<ShardId, u64>,
}

impl Model {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("catalog.redb")).unwrap();
        let catalog = Catalog::new(Arc::new(db)).unwrap();
        let nodes: Vec<NodeId> = (0..4).map(|_| SecretKey::generate().public()).collect();
        let model = Model {
            _dir: dir,
            catalog,
            held: nodes.iter().map(|n| (*n, HashSet::new())).collect(),
            nodes,
            pending: Vec::new(),
            now: 0,
            next_shard: 1,
            watch: OrphanWatch::default(),
            round: None,
            garbage_seen: HashMap::new(),
        };
        model.run(&Command::CreateBucket {
            bucket: Bucket {
                name: "bkt".into(),
                created_ms: 0,
                public_read: false,
                mode: BucketMode::Plain,
                erasure: ErasureProfile {
                    k: 2,
                    m: 1,
                    segment_size: 1 << 20,
                },
                failure_tolerance: 1,
            },
        });
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

    fn new_shard(&mut self, node: NodeId, root: ShardRoot) -> ShardRecord {
        let id = ShardId(self.next_shard.to_be_bytes());
        self.next_shard += 1;
        self.held.get_mut(&node).unwrap().insert(id);
        ShardRecord { id, node, root }
    }

    fn key(key: usize) -> String {
        format!("k{key}")
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Store { nodes } => {
                let shards = (0..3u8)
                    .map(|i| self.new_shard(self.nodes[nodes[usize::from(i)]], ShardRoot::of(&[i])))
                    .collect();
                self.pending.push((shards, self.now));
            }
            Op::Commit { which, key } => {
                if self.pending.is_empty() {
                    return;
                }
                let (shards, placed) = self.pending.remove(which % self.pending.len());
                // What `fresh_enough` refuses.
                if self.now - placed > COMMIT_WITHIN {
                    return;
                }
                let object = ObjectRecord {
                    size: 1000,
                    etag: format!("\"{}\"", self.next_shard),
                    last_modified_ms: self.now,
                    headers: ObjectHeaders::default(),
                    body: ObjectBody::Segments {
                        erasure: ErasureProfile {
                            k: 2,
                            m: 1,
                            segment_size: 1 << 20,
                        },
                        segments: vec![SegmentRecord {
                            len: 1000,
                            shards,
                            mask: None,
                        }],
                    },
                    acl: Default::default(),
                    parts: Vec::new(),
                    checksum: None,
                };
                let result = self.run(&Command::PutObject {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    object,
                    condition: None,
                    now_ms: self.now,
                });
                assert!(!matches!(result, CommandResult::Refused(_)), "{result:?}");
            }
            Op::Abandon { which } => {
                if !self.pending.is_empty() {
                    self.pending.remove(which % self.pending.len());
                }
            }
            Op::Delete { key } => {
                self.run(&Command::DeleteObject {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    now_ms: self.now,
                });
            }
            Op::Repair { key, index, node } => {
                let Some(object) = self.catalog.object("bkt", &Self::key(*key)).unwrap() else {
                    return;
                };
                let ObjectBody::Segments { segments, .. } = &object.body else {
                    return;
                };
                let current = segments[0].shards[*index].clone();
                let target = self.nodes[*node];
                if segments[0].shards.iter().any(|s| s.node == target) {
                    return;
                }
                let new = self.new_shard(target, current.root);
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
                    reason: MoveReason::Repair,
                    now_ms: self.now,
                });
            }
            Op::GcBefore => {
                self.round = Some((
                    self.catalog.shard_map().unwrap(),
                    self.catalog.view().unwrap(),
                    Vec::new(),
                ));
            }
            Op::GcInventory { node } => {
                let id = self.nodes[*node];
                let mut held: Vec<ShardId> = self.held[&id].iter().copied().collect();
                held.sort();
                if let Some((_, _, inventories)) = &mut self.round {
                    inventories.retain(|(n, _)| *n != id);
                    inventories.push((id, held));
                }
            }
            Op::GcAfter => {
                self.collect_garbage();
                let Some((before, before_view, inventories)) = self.round.take() else {
                    return;
                };
                let after = self.catalog.shard_map().unwrap();
                let after_view = self.catalog.view().unwrap();
                let now = Duration::from_secs(self.now);
                let delay = Duration::from_secs(ORPHAN_DELAY);
                for (node, held) in inventories {
                    let whole = reconcile(&node, &held, &before, &after);
                    let found =
                        reconcile_paged(&node, &held, &before_view, &after_view, 2).unwrap();
                    assert_eq!(found, whole, "paged and whole comparisons differ");
                    for shard in self.watch.observe(node, &found.unreferenced, now, delay) {
                        self.held.get_mut(&node).unwrap().remove(&shard);
                        self.watch.forget(node, shard);
                    }
                }
            }
            Op::Tick { ticks } => self.now += ticks,
        }
    }

    /// The garbage step: entries queued at least the delay ago are deleted and forgotten.
    fn collect_garbage(&mut self) {
        let garbage = self.catalog.garbage(usize::MAX).unwrap();
        let mut done = Vec::new();
        for (shard, entry) in garbage {
            let seen = *self.garbage_seen.entry(shard).or_insert(self.now);
            if self.now - seen >= GARBAGE_DELAY {
                self.held.get_mut(&entry.node).unwrap().remove(&shard);
                done.push(shard);
            }
        }
        if !done.is_empty() {
            self.run(&Command::ForgetGarbage { shards: done });
        }
    }

    /// Every shard the catalog refers to is on its node.
    fn check(&self) -> Result<(), String> {
        let map = self.catalog.shard_map().unwrap();
        for (node, shards) in &map.referenced {
            for shard in shards {
                if !self.held[node].contains(shard) {
                    return Err(format!("referenced shard {shard} was deleted from {node}"));
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn collection_never_deletes_a_referenced_shard(ops in prop::collection::vec(op(), 1..200)) {
        let mut model = Model::new();
        for op in &ops {
            model.apply(op);
            if let Err(problem) = model.check() {
                prop_assert!(false, "after {op:?}: {problem}");
            }
        }
    }
}

/// The model collects what it should, too: an abandoned upload's shards and a deleted
/// object's shards leave the nodes once their delays have passed.
#[test]
fn abandoned_and_deleted_shards_are_collected() {
    let mut model = Model::new();
    model.apply(&Op::Store { nodes: [0, 1, 2] });
    model.apply(&Op::Commit { which: 0, key: 0 });
    model.apply(&Op::Store { nodes: [1, 2, 3] });
    model.apply(&Op::Abandon { which: 0 });
    model.apply(&Op::Delete { key: 0 });
    for _ in 0..=ORPHAN_DELAY {
        model.apply(&Op::GcBefore);
        for node in 0..4 {
            model.apply(&Op::GcInventory { node });
        }
        model.apply(&Op::GcAfter);
        model.apply(&Op::Tick { ticks: 1 });
    }
    model.apply(&Op::GcBefore);
    for node in 0..4 {
        model.apply(&Op::GcInventory { node });
    }
    model.apply(&Op::GcAfter);
    for (node, held) in &model.held {
        assert!(held.is_empty(), "{node} still holds {held:?}");
    }
    assert!(model.catalog.garbage(10).unwrap().is_empty());
}
