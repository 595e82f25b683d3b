//! The incremental durability survey (`Surveyor`: needs from the shards-by-node index,
//! totals from the catalog's shape counters, a bounded spread pass) finds exactly what the
//! full walk (`durability::survey`, kept as the reference) finds, after any sequence of
//! commands and with any node states and shards known missing: the same rebuild and drain
//! needs, the same respread needs, and the same totals. With a budget of one segment per
//! round, a pass spread over many rounds still adds up to the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use cairn_coordinator::catalog::model::{
    Bucket, BucketMode, ErasureProfile, NodeRecord, NodeState, ObjectBody, ObjectHeaders,
    ObjectRecord, PartRecord, SegmentRecord, ShardRecord, UploadRecord,
};
use cairn_coordinator::catalog::{self, Catalog, Command, CommandResult, MoveReason};
use cairn_coordinator::catalog::{ShardReplacement, model::MIN_PART_SIZE};
use cairn_coordinator::durability::{Need, Survey, SurveyLimits, Surveyor, sort_needs, survey};
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use proptest::prelude::*;

/// Organisations of the nodes: "a" has three, so a segment can crowd it.
const ORGS: [&str; 7] = ["a", "a", "a", "b", "b", "c", "c"];
const KEYS: usize = 5;
const UPLOADS: usize = 2;
const ERASURE: ErasureProfile = ErasureProfile {
    k: 2,
    m: 2,
    segment_size: 8 << 20,
};
const WIDTH: usize = 4;
const STATES: [NodeState; 7] = NodeState::ALL;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        segments: usize,
        seed: u64,
    },
    Delete {
        key: usize,
    },
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
    Complete {
        upload: usize,
    },
    Abort {
        upload: usize,
    },
    /// The node's state as the survey sees it (`None`: unknown to the catalog).
    State {
        node: usize,
        state: Option<usize>,
    },
    /// Shard `index` of segment 0 of `key` is known missing (a failed audit, an inventory).
    Missing {
        key: usize,
        index: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..KEYS, 1usize..4, any::<u64>())
            .prop_map(|(key, segments, seed)| Op::Put { key, segments, seed }),
        1 => (0..KEYS).prop_map(|key| Op::Delete { key }),
        2 => (0..KEYS, 0..WIDTH, 0..ORGS.len())
            .prop_map(|(key, index, node)| Op::Replace { key, index, node }),
        1 => (0..UPLOADS).prop_map(|upload| Op::CreateUpload { upload }),
        2 => (0..UPLOADS, 1u32..3, any::<u64>())
            .prop_map(|(upload, number, seed)| Op::PutPart { upload, number, seed }),
        1 => (0..UPLOADS).prop_map(|upload| Op::Complete { upload }),
        1 => (0..UPLOADS).prop_map(|upload| Op::Abort { upload }),
        3 => (0..ORGS.len(), prop::option::weighted(0.9, 0..STATES.len()))
            .prop_map(|(node, state)| Op::State { node, state }),
        2 => (0..KEYS, 0..WIDTH).prop_map(|(key, index)| Op::Missing { key, index }),
    ]
}

struct Model {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    nodes: Vec<NodeId>,
    states: HashMap<NodeId, NodeState>,
    missing: HashMap<ShardId, NodeId>,
    next: u128,
    now: u64,
    upload_ids: HashMap<usize, String>,
}

impl Model {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("catalog.redb")).unwrap();
        let catalog = Catalog::new(Arc::new(db)).unwrap();
        let nodes: Vec<NodeId> = (0..ORGS.len())
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]).public())
            .collect();
        let model = Model {
            _dir: dir,
            catalog,
            states: nodes.iter().map(|n| (*n, NodeState::Active)).collect(),
            nodes,
            missing: HashMap::new(),
            next: 1,
            now: 1,
            upload_ids: HashMap::new(),
        };
        model.run(&Command::CreateBucket {
            bucket: Bucket {
                name: "bkt".into(),
                created_ms: 0,
                public_read: false,
                mode: BucketMode::Plain,
                erasure: ERASURE,
                failure_tolerance: 1,
            },
        });
        for (i, id) in model.nodes.iter().enumerate() {
            model.run(&Command::RegisterNode {
                node: NodeRecord {
                    id: *id,
                    addr: "127.0.0.1:1".into(),
                    org: ORGS[i].into(),
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

    fn shard(&mut self, node: usize) -> ShardRecord {
        let id = ShardId(
            blake3::hash(&self.next.to_le_bytes()).as_bytes()[..16]
                .try_into()
                .unwrap(),
        );
        self.next += 1;
        ShardRecord {
            id,
            node: self.nodes[node],
            root: ShardRoot::of(&id.0),
        }
    }

    /// A segment on `WIDTH` distinct nodes chosen by `seed`.
    fn segment(&mut self, len: u64, seed: u64) -> SegmentRecord {
        let mut order: Vec<usize> = (0..ORGS.len()).collect();
        let mut state = seed;
        for i in (1..order.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        let shards = order[..WIDTH].iter().map(|n| self.shard(*n)).collect();
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
            } => {
                let list: Vec<SegmentRecord> = (0..*segments)
                    .map(|i| self.segment(1000 + i as u64 * 77, seed.wrapping_add(i as u64)))
                    .collect();
                let size = list.iter().map(|s| s.len).sum();
                self.run(&Command::PutObject {
                    bucket: "bkt".into(),
                    key: Self::key(*key),
                    object: ObjectRecord {
                        size,
                        etag: format!("\"{}\"", self.next),
                        last_modified_ms: now_ms,
                        headers: ObjectHeaders::default(),
                        body: ObjectBody::Segments {
                            erasure: ERASURE,
                            segments: list,
                        },
                        acl: Default::default(),
                        parts: Vec::new(),
                        checksum: None,
                    },
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
                let mut new = self.shard(*node);
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
                    reason: MoveReason::Repair,
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
                let size = MIN_PART_SIZE + u64::from(*number);
                let segment = self.segment(size, *seed);
                self.run(&Command::PutPart {
                    upload: id,
                    number: *number,
                    part: PartRecord {
                        size,
                        etag: format!("\"{seed:032x}\""),
                        last_modified_ms: now_ms,
                        segments: vec![segment],
                        checksum: None,
                    },
                    now_ms,
                });
            }
            Op::Complete { upload } => {
                let id = self.upload_id(*upload);
                let parts = self.catalog.parts(&id, 0, 100).unwrap();
                let listed = parts.iter().map(|(n, p)| (*n, p.etag.clone())).collect();
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
            Op::State { node, state } => {
                let id = self.nodes[*node];
                match state {
                    Some(s) => self.states.insert(id, STATES[*s]),
                    None => self.states.remove(&id),
                };
            }
            Op::Missing { key, index } => {
                if let Some(ObjectRecord {
                    body: ObjectBody::Segments { segments, .. },
                    ..
                }) = self.object(*key)
                {
                    let shard = &segments[0].shards[*index];
                    self.missing.insert(shard.id, shard.node);
                }
            }
        }
    }

    fn orgs(&self) -> HashMap<NodeId, String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, ORGS[i].to_string()))
            .collect()
    }

    fn room(&self) -> HashMap<String, usize> {
        let mut room = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if self.states.get(n).is_some_and(|s| s.accepts_new_shards()) {
                *room.entry(ORGS[i].to_string()).or_default() += 1;
            }
        }
        room
    }

    /// The full walk's survey and needs.
    fn oracle(&self) -> (Survey, Vec<Need>) {
        let ids: HashSet<ShardId> = self.missing.keys().copied().collect();
        survey(
            &self.catalog,
            &self.states,
            &self.orgs(),
            &self.room(),
            &ids,
            THRESHOLD,
        )
        .unwrap()
    }

    /// Rounds of a fresh surveyor under `limits` until an index pass that began after a
    /// complete spread pass has finished: its totals, every need queued during it (as the
    /// repair queue holds them) and the rounds taken.
    fn incremental(&self, limits: SurveyLimits) -> (Survey, Vec<Need>, usize) {
        let mut surveyor = Surveyor::new(limits);
        let mut queue: Vec<Need> = Vec::new();
        let mut spread_known = false;
        for rounds in 1..10_000 {
            let spread_before = surveyor.spread_passes() > 0;
            let round = surveyor
                .round(
                    &self.catalog,
                    &self.states,
                    &self.orgs(),
                    &self.room(),
                    &self.missing,
                    THRESHOLD,
                )
                .unwrap();
            if round.replace {
                queue = round.needs;
                spread_known = spread_before;
            } else {
                // As the repair queue does: the whole pass most urgent first.
                queue.extend(round.needs);
                sort_needs(&mut queue);
            }
            if let Some(found) = round.survey
                && spread_known
            {
                return (found, queue, rounds);
            }
        }
        panic!("the survey never finished both passes: {queue:?}");
    }
}

const THRESHOLD: u16 = 1;

fn by_segment(needs: &[Need]) -> BTreeMap<(String, String, Option<u32>, u32), Need> {
    needs
        .iter()
        .map(|n| {
            (
                (n.bucket.clone(), n.key.clone(), n.part, n.segment),
                n.clone(),
            )
        })
        .collect()
}

/// Checks the incremental survey under `limits` against the oracle.
fn compare(model: &Model, limits: SurveyLimits) -> Result<(), TestCaseError> {
    let (want, want_needs) = model.oracle();
    let (got, got_needs, _) = model.incremental(limits);
    prop_assert_eq!(&got.segments_by_margin, &want.segments_by_margin);
    prop_assert_eq!(got.segments, want.segments);
    prop_assert_eq!(got.stored_bytes, want.stored_bytes);
    prop_assert_eq!(got.unreadable, want.unreadable);
    prop_assert_eq!(got.below_spread, want.below_spread);
    prop_assert_eq!(&got.shards_by_node, &want.shards_by_node);
    prop_assert_eq!(&got.bytes_by_node, &want.bytes_by_node);
    prop_assert_eq!(&got.segments_by_shape, &want.segments_by_shape);
    prop_assert!(got.spread_passes > 0);
    // The same needs, each once; rebuilds and drains lowest margin first, before every
    // respread.
    prop_assert_eq!(got_needs.len(), by_segment(&got_needs).len());
    prop_assert_eq!(by_segment(&got_needs), by_segment(&want_needs));
    let order: Vec<(bool, bool, i64)> = got_needs
        .iter()
        .map(|n| (n.missing.is_empty(), n.respread, n.margin))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    prop_assert_eq!(order, sorted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_incremental_survey_equals_the_full_walk(ops in prop::collection::vec(op(), 1..60)) {
        let mut model = Model::new();
        for op in &ops {
            model.apply(op);
        }
        prop_assert_eq!(model.catalog.check_shard_index().unwrap(), Ok(()));
        // One round does both passes at the default budget.
        compare(&model, SurveyLimits::default())?;
        // A budget of one segment per round: a pass over many rounds adds up the same.
        compare(&model, SurveyLimits { segments_per_round: 1, spread_per_round: 1 })?;
    }
}

/// A lost node's segments are judged from its range of the index alone: the round's
/// work follows that node's shards, and a node coming back clears the needs.
#[test]
fn a_lost_node_is_surveyed_from_its_own_shards() {
    let mut model = Model::new();
    for key in 0..KEYS {
        model.apply(&Op::Put {
            key,
            segments: 3,
            seed: key as u64 * 11,
        });
    }
    let (found, needs, rounds) = model.incremental(SurveyLimits::default());
    assert_eq!(rounds, 2);
    assert_eq!(found.segments, 3 * KEYS as u64);
    assert_eq!(found.unreadable, 0);
    assert!(needs.iter().all(|n| n.respread), "{needs:?}");
    model.apply(&Op::State {
        node: 3,
        state: Some(3),
    });
    let lost = model.nodes[3];
    let on_lost = model.catalog.placed_totals(&lost).unwrap().shards;
    assert!(on_lost > 0);
    let (found, needs, _) = model.incremental(SurveyLimits::default());
    let rebuilds: Vec<&Need> = needs.iter().filter(|n| !n.missing.is_empty()).collect();
    assert_eq!(
        rebuilds.len() as u64,
        on_lost,
        "one rebuild per shard on the node"
    );
    assert_eq!(found.segments_by_margin.get(&1), Some(&on_lost));
    // Budgeted to one segment a round, the pass takes one round per segment it touches.
    let (_, _, rounds) = model.incremental(SurveyLimits {
        segments_per_round: 1,
        spread_per_round: 1_000,
    });
    assert!(
        rounds as u64 > on_lost,
        "{rounds} rounds for {on_lost} segments"
    );
    model.apply(&Op::State {
        node: 3,
        state: Some(1),
    });
    let (found, needs, _) = model.incremental(SurveyLimits::default());
    assert!(needs.iter().all(|n| n.missing.is_empty()), "{needs:?}");
    assert_eq!(found.segments_by_margin.len(), 1);
}
