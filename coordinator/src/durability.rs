//! The durability survey: every segment's margin, read from the catalog and the nodes'
//! states, and the segments that need work, most urgent first.
//!
//! A segment's *margin* is the number of its shards that still exist minus `k`: how many
//! more it can lose and still be read. Shards count while their node is in a state that
//! holds data (vetting, active, suspect, draining) and its inventory does not lack it; a
//! lost, gone or disqualified node's shards are missing, and so are shards a node's
//! inventory no longer lists ([`crate::gc`]) and shards whose holder failed an audit of them
//! ([`crate::audit`]). A suspect node's shards still count, so a node that is only slow or
//! rebooting costs no repair traffic. Parts of multipart uploads in progress are surveyed
//! and repaired like objects (an upload may stay open for days), but not rebalanced.
//!
//! The leader's survey ([`Surveyor`]) is incremental: each round reads, from the
//! shards-by-node index, only the segments with a shard on a node whose shards are all
//! missing or moving (lost, gone, disqualified, draining, unknown) or with a shard known
//! missing, judges each from its record, and derives the totals from segment counters the
//! catalog keeps per erasure shape. Its cost follows what is unhealthy, bounded per round
//! ([`SurveyLimits`]); what cannot come from the index (segments crowded in one
//! organisation) comes from a slow pass over the catalog at a bounded rate, which also
//! cross-checks the index. [`survey`], one walk of everything, is the reference it is
//! tested against.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use serde::{Deserialize, Serialize};

use crate::catalog::model::{ErasureProfile, NodeState, ObjectBody, SegmentRecord};
use crate::catalog::{Catalog, CatalogFault, CatalogView, Holder};

/// A segment that needs work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Bucket name.
    pub bucket: String,
    /// Object key, or for a part the upload id.
    pub key: String,
    /// For a part of an upload in progress, its number.
    pub part: Option<u32>,
    /// ETag of the object version (or part) surveyed.
    pub etag: String,
    /// Segment index.
    pub segment: u32,
    /// Shards that exist minus `k`.
    pub margin: i64,
    /// Indexes of shards whose node no longer holds data: to rebuild.
    pub missing: Vec<u32>,
    /// Indexes of shards on draining nodes: to move.
    pub draining: Vec<u32>,
    /// Indexes of shards on over-full nodes, to move to `targets` (rebalancing).
    pub moving: Vec<u32>,
    /// Nodes the moved shards should go to (empty: anywhere placement allows).
    pub targets: Vec<NodeId>,
    /// Whether the `moving` shards leave organisations holding more of the segment than
    /// the spread rule allows: they go only where the segment then keeps the rule.
    pub respread: bool,
    /// Length of each shard of the segment.
    pub shard_size: u64,
    /// Data shards of the segment's code.
    pub k: u16,
}

/// What the survey found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survey {
    /// Segments per margin.
    pub segments_by_margin: BTreeMap<i64, u64>,
    /// Segments surveyed.
    pub segments: u64,
    /// Bytes of shards on nodes that hold data: what the cluster stores.
    pub stored_bytes: u64,
    /// Segments whose margin is below zero: unreadable until a node comes back.
    pub unreadable: u64,
    /// Segments with more shards in one organisation than their bucket's spread rule
    /// allows (⌊m/f⌋ for a bucket that must survive losing `f` organisations): placement
    /// fell back to a weaker spread, or shards moved since. Losing that organisation costs
    /// more of the segment than the rule promises.
    #[serde(default)]
    pub below_spread: u64,
    /// Shards the catalog places on each node (objects and multipart parts in progress):
    /// what still depends on it.
    pub shards_by_node: BTreeMap<NodeId, u64>,
    /// Bytes of those shards per node: the node's utilisation as the catalog sees it
    /// (unlike its disk, this does not count copies waiting for collection).
    pub bytes_by_node: BTreeMap<NodeId, u64>,
    /// Segments the spread pass under way has read (of `segments`): its progress.
    #[serde(default)]
    pub spread_checked: u64,
    /// Spread passes completed since this member began leading; `below_spread` is the
    /// count of the last one (of the pass under way before the first completes).
    #[serde(default)]
    pub spread_passes: u64,
    /// Segments per (shards present, margin), for the loss model.
    #[serde(skip)]
    pub segments_by_shape: BTreeMap<(u32, i64), u64>,
}

/// Most segments queued per survey to restore the spread rule: they wait behind every
/// rebuild and drain, and the next survey finds the rest.
pub const MAX_RESPREAD: usize = 256;

/// Where a segment is: its record and its index in it.
#[derive(Debug, Clone, Copy)]
struct SegmentAt<'a> {
    bucket: &'a str,
    /// Object key, or the upload id for a part.
    key: &'a str,
    part: Option<u32>,
    etag: &'a str,
    index: u32,
}

/// One segment as the survey judges it.
#[derive(Debug, Clone)]
struct Judged {
    /// Shards whose node holds data and whose copy is not known missing.
    present: u32,
    margin: i64,
    missing: Vec<u32>,
    draining: Vec<u32>,
    /// More shards in one organisation than the bucket's rule allows.
    below_spread: bool,
    shard_size: u64,
    k: u16,
}

impl Judged {
    /// Whether any shard is missing or on a draining node: what the index finds.
    fn unhealthy(&self) -> bool {
        !self.missing.is_empty() || !self.draining.is_empty()
    }
}

/// What decides a segment's condition: node states and organisations, the shards known
/// missing, each bucket's spread rule, and the repair threshold.
struct Rules<'a> {
    states: &'a HashMap<NodeId, NodeState>,
    orgs: &'a HashMap<NodeId, String>,
    missing_shards: &'a HashSet<ShardId>,
    /// Per bucket: at most this many shards of a segment per organisation, and whether
    /// the organisations with room could keep that for a whole segment.
    per_org: HashMap<String, (usize, bool)>,
    threshold: u16,
}

impl<'a> Rules<'a> {
    fn new(
        buckets: Vec<crate::catalog::model::Bucket>,
        states: &'a HashMap<NodeId, NodeState>,
        orgs: &'a HashMap<NodeId, String>,
        room: &HashMap<String, usize>,
        missing_shards: &'a HashSet<ShardId>,
        threshold: u16,
    ) -> Self {
        let per_org = buckets
            .into_iter()
            .map(|b| {
                let limit = match usize::from(b.failure_tolerance) {
                    0 => usize::MAX,
                    f => usize::from(b.erasure.m) / f,
                };
                let slots: usize = room.values().map(|n| (*n).min(limit)).sum();
                let width = usize::from(b.erasure.k) + usize::from(b.erasure.m);
                (b.name, (limit, slots >= width))
            })
            .collect();
        Self {
            states,
            orgs,
            missing_shards,
            per_org,
            threshold,
        }
    }

    /// The bucket's cap per organisation (at least 1) and whether it is reachable.
    fn spread_rule(&self, bucket: &str) -> (usize, bool) {
        let (limit, feasible) = self
            .per_org
            .get(bucket)
            .copied()
            .unwrap_or((usize::MAX, false));
        (limit.max(1), feasible)
    }

    /// The segment's margin, missing and draining shards and spread; `None` for an
    /// impossible code (never surveyed).
    fn judge(
        &self,
        bucket: &str,
        erasure: &ErasureProfile,
        segment: &SegmentRecord,
    ) -> Option<Judged> {
        let codec =
            cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m)).ok()?;
        let (limit, _) = self.spread_rule(bucket);
        let mut in_org: HashMap<&str, usize> = HashMap::new();
        for shard in &segment.shards {
            if let Some(org) = self.orgs.get(&shard.node) {
                *in_org.entry(org.as_str()).or_default() += 1;
            }
        }
        let below_spread = in_org.values().any(|n| *n > limit);
        let mut missing = Vec::new();
        let mut draining = Vec::new();
        for (i, shard) in segment.shards.iter().enumerate() {
            match self.states.get(&shard.node) {
                Some(state) if state.holds_data() && !self.missing_shards.contains(&shard.id) => {
                    if *state == NodeState::Draining {
                        draining.push(i as u32);
                    }
                }
                _ => missing.push(i as u32),
            }
        }
        let present = (segment.shards.len() - missing.len()) as u32;
        Some(Judged {
            present,
            margin: i64::from(present) - i64::from(erasure.k),
            missing,
            draining,
            below_spread,
            shard_size: codec.shard_len(segment.len),
            k: erasure.k,
        })
    }

    /// The work a judged segment needs, if any: a rebuild (margin ≤ threshold with
    /// shards missing) and/or a move off draining nodes; otherwise, with `respread` and a
    /// whole object segment crowded in an organisation that room elsewhere could relieve,
    /// the shards past the cap.
    fn need(
        &self,
        at: SegmentAt<'_>,
        judged: &Judged,
        segment: &SegmentRecord,
        respread: bool,
    ) -> Option<Need> {
        let margin = judged.margin;
        let need = |missing, draining, moving, respread| Need {
            bucket: at.bucket.to_string(),
            key: at.key.to_string(),
            part: at.part,
            etag: at.etag.to_string(),
            segment: at.index,
            margin,
            missing,
            draining,
            moving,
            targets: Vec::new(),
            respread,
            shard_size: judged.shard_size,
            k: judged.k,
        };
        // Below zero nothing can be rebuilt (fewer than k shards exist); the segment
        // waits, counted as unreadable, for a node to come back.
        let rebuild =
            !judged.missing.is_empty() && (0..=i64::from(self.threshold)).contains(&margin);
        if margin >= 0 && (rebuild || !judged.draining.is_empty()) {
            let missing = if rebuild {
                judged.missing.clone()
            } else {
                Vec::new()
            };
            return Some(need(missing, judged.draining.clone(), Vec::new(), false));
        }
        let (limit, feasible) = self.spread_rule(at.bucket);
        if judged.below_spread
            && feasible
            && judged.missing.is_empty()
            && at.part.is_none()
            && respread
        {
            // The shards past the cap in each crowded organisation move; the rest stay.
            // (Parts are not respread: they become objects, or are dropped, soon.)
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let moving = segment
                .shards
                .iter()
                .enumerate()
                .filter(|(_, shard)| {
                    self.orgs.get(&shard.node).is_some_and(|org| {
                        let n = seen.entry(org.as_str()).or_default();
                        *n += 1;
                        *n > limit
                    })
                })
                .map(|(i, _)| i as u32)
                .collect();
            return Some(need(Vec::new(), Vec::new(), moving, true));
        }
        None
    }
}

/// Counts one judged segment into `survey`'s margins, shapes, stored bytes and spread.
fn count(survey: &mut Survey, judged: &Judged) {
    survey.stored_bytes += judged.shard_size * u64::from(judged.present);
    if judged.below_spread {
        survey.below_spread += 1;
    }
    *survey.segments_by_margin.entry(judged.margin).or_default() += 1;
    *survey
        .segments_by_shape
        .entry((judged.present, judged.margin))
        .or_default() += 1;
    survey.segments += 1;
    if judged.margin < 0 {
        survey.unreadable += 1;
    }
}

/// Rebuilds before drains before respreading, lowest margin first; a stable sort keeps
/// the order found within a margin.
pub fn sort_needs(needs: &mut [Need]) {
    needs.sort_by_key(|need| (need.missing.is_empty(), need.respread, need.margin));
}

/// Walks the whole catalog: returns the survey and the segments needing work, lowest
/// margin first, then the moves off draining nodes, then moves restoring the spread rule.
///
/// Linear in the catalog, so the leader no longer runs it ([`Surveyor`] does the same
/// work from the shards-by-node index); it stays as the reference the incremental survey
/// is tested against.
///
/// A segment needs a rebuild when shards are missing and its margin is at most
/// `threshold`; it needs a move when shards sit on a draining node (whatever its margin:
/// draining must finish). A segment with both is one need: rebuilt and moved together.
/// A whole segment with more shards in one organisation than its bucket's rule allows
/// needs the extra shards moved, when the organisations in `room` (nodes per organisation
/// that accept new shards) could hold the segment under the rule at all; up to
/// [`MAX_RESPREAD`] of them per survey.
pub fn survey(
    catalog: &Catalog,
    states: &HashMap<NodeId, NodeState>,
    orgs: &HashMap<NodeId, String>,
    room: &HashMap<String, usize>,
    missing_shards: &HashSet<ShardId>,
    threshold: u16,
) -> Result<(Survey, Vec<Need>), CatalogFault> {
    let rules = Rules::new(
        catalog.buckets()?,
        states,
        orgs,
        room,
        missing_shards,
        threshold,
    );
    let mut survey = Survey::default();
    let mut needs = Vec::new();
    let mut respread = 0usize;
    let mut visit = |at: SegmentAt<'_>, erasure: &ErasureProfile, segment: &SegmentRecord| {
        let Some(judged) = rules.judge(at.bucket, erasure, segment) else {
            return;
        };
        for shard in &segment.shards {
            *survey.shards_by_node.entry(shard.node).or_default() += 1;
            *survey.bytes_by_node.entry(shard.node).or_default() += judged.shard_size;
        }
        count(&mut survey, &judged);
        if let Some(need) = rules.need(at, &judged, segment, respread < MAX_RESPREAD) {
            respread += usize::from(need.respread);
            needs.push(need);
        }
    };
    catalog.for_each_object(|bucket, key, object| {
        if let ObjectBody::Segments { erasure, segments } = &object.body {
            for (index, segment) in segments.iter().enumerate() {
                let at = SegmentAt {
                    bucket,
                    key,
                    part: None,
                    etag: &object.etag,
                    index: index as u32,
                };
                visit(at, erasure, segment);
            }
        }
        true
    })?;
    // Parts of uploads in progress are surveyed and repaired like objects: an upload may
    // stay open for days, and what it completes into must be whole.
    catalog.for_each_part(|id, upload, number, part| {
        for (index, segment) in part.segments.iter().enumerate() {
            let at = SegmentAt {
                bucket: &upload.bucket,
                key: id,
                part: Some(number),
                etag: &part.etag,
                index: index as u32,
            };
            visit(at, &upload.erasure, segment);
        }
    })?;
    sort_needs(&mut needs);
    Ok((survey, needs))
}

/// Segments read from the shards-by-node index per round by default: a round reads at
/// most this many records (one per segment a lost, draining or unknown node or a missing
/// shard touches), and a larger loss is surveyed over several rounds.
pub const MAX_SEGMENTS_PER_ROUND: usize = 100_000;

/// Segments the spread pass reads per round by default (see [`Surveyor`]).
pub const SPREAD_SEGMENTS_PER_ROUND: usize = 1_000;

/// Index entries read per page while collecting the segments to judge.
const INDEX_PAGE: usize = 1_024;

/// Records read per step of the spread pass.
const SPREAD_PAGE: usize = 64;

/// The work one [`Surveyor`] round may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurveyLimits {
    /// Most segments judged from the index per round.
    pub segments_per_round: usize,
    /// Segments the spread pass reads per round (0: no spread pass).
    pub spread_per_round: usize,
}

impl Default for SurveyLimits {
    fn default() -> Self {
        Self {
            segments_per_round: MAX_SEGMENTS_PER_ROUND,
            spread_per_round: SPREAD_SEGMENTS_PER_ROUND,
        }
    }
}

/// What one [`Surveyor::round`] found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// The totals, when this round finished a pass over every unhealthy segment (every
    /// round, unless more than [`SurveyLimits::segments_per_round`] segments are touched).
    pub survey: Option<Survey>,
    /// Segments needing work, most urgent first: rebuilds, drains, then respreads.
    pub needs: Vec<Need>,
    /// Whether `needs` starts a new pass and replaces the queue (otherwise it continues
    /// the pass and is added to it).
    pub replace: bool,
}

/// Where the index walk of one pass resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WalkAt {
    /// At candidate node ≥ the node, after the shard id on that very node.
    Node(NodeId, Option<ShardId>),
    /// At the individually missing shards after this (node, shard).
    Single(NodeId, ShardId),
}

/// Where the spread pass resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SpreadAt {
    /// At objects after this key (from the first when `None`).
    Objects(Option<Vec<u8>>),
    /// At parts after this key.
    Parts(Option<Vec<u8>>),
}

/// Unhealthy segments judged so far in a pass: per (k, shards in segment, present) and
/// the bytes of their missing shards.
#[derive(Debug, Clone, Default)]
struct Unhealthy {
    shapes: BTreeMap<(u16, u16, u32), u64>,
    missing_bytes: u64,
}

/// The leader's incremental survey: each round judges only the segments that can need a
/// rebuild or a move (those with a shard on a node that does not hold data, is draining
/// or is unknown, and those with a shard known missing) from the shards-by-node index,
/// and derives the totals from counters the catalog keeps, so its cost follows what is
/// unhealthy, not the catalog's size.
///
/// The work per round is bounded: at most [`SurveyLimits::segments_per_round`] segments
/// from the index (a pass over more continues next round from a cursor; each segment is
/// judged once per pass, at the first place the walk reaches it, so totals add up), and
/// [`SurveyLimits::spread_per_round`] segments of a slow pass over every object and part
/// that counts segments below their bucket's spread rule (reported for the last complete
/// pass), queues respread moves as it finds them (at most [`MAX_RESPREAD`] waiting, each
/// checked again every round), and checks that every shard it reads is in the index.
#[derive(Debug, Default)]
pub struct Surveyor {
    limits: SurveyLimits,
    walk: Option<WalkAt>,
    unhealthy: Unhealthy,
    spread_at: Option<SpreadAt>,
    /// Segments below spread and segments read in the spread pass under way.
    spread_count: u64,
    spread_read: u64,
    /// Index mismatches the spread pass under way found.
    spread_mismatches: u64,
    /// Below-spread count of the last complete spread pass.
    spread_last: Option<u64>,
    spread_passes: u64,
    /// Respread moves found and not yet done.
    respread: Vec<Need>,
}

impl Surveyor {
    /// A surveyor starting its first pass.
    pub fn new(limits: SurveyLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Spread passes completed.
    pub fn spread_passes(&self) -> u64 {
        self.spread_passes
    }

    /// One round: the next part of the index pass and of the spread pass, in one read
    /// snapshot. `missing` is the shards known missing (inventories, failed audits) with
    /// the node each was missing from.
    pub fn round(
        &mut self,
        catalog: &Catalog,
        states: &HashMap<NodeId, NodeState>,
        orgs: &HashMap<NodeId, String>,
        room: &HashMap<String, usize>,
        missing: &HashMap<ShardId, NodeId>,
        threshold: u16,
    ) -> Result<Round, CatalogFault> {
        let view = catalog.view()?;
        let ids: HashSet<ShardId> = missing.keys().copied().collect();
        let rules = Rules::new(catalog.buckets()?, states, orgs, room, &ids, threshold);
        let placed = view.placed_totals_by_node()?;
        // Nodes all of whose shards need work: missing (lost, gone, disqualified,
        // unknown) or to move (draining).
        let candidates: BTreeSet<NodeId> = placed
            .keys()
            .filter(|node| {
                states
                    .get(*node)
                    .is_none_or(|s| !s.holds_data() || *s == NodeState::Draining)
            })
            .copied()
            .collect();
        let singles: BTreeSet<(NodeId, ShardId)> = missing
            .iter()
            .filter(|(_, node)| !candidates.contains(*node))
            .map(|(shard, node)| (*node, *shard))
            .collect();
        let replace = self.walk.is_none();
        if replace {
            self.unhealthy = Unhealthy::default();
        }
        let (found, done) = self.collect(&view, &candidates, &singles)?;
        let mut needs = self.judge_found(&view, &rules, &candidates, &singles, found)?;
        sort_needs(&mut needs);
        self.spread_step(&view, &rules)?;
        let survey = if done {
            self.walk = None;
            Some(self.totals(&view, placed)?)
        } else {
            None
        };
        if replace {
            self.recheck_respread(&view, &rules)?;
            needs.extend(self.respread.iter().cloned());
        }
        Ok(Round {
            survey,
            needs,
            replace,
        })
    }

    /// Index entries from where the pass stands, until the round's budget of segments:
    /// each segment with the walk position it was reached at. `true` once the pass has
    /// reached its end.
    #[allow(clippy::type_complexity)]
    fn collect(
        &mut self,
        view: &CatalogView,
        candidates: &BTreeSet<NodeId>,
        singles: &BTreeSet<(NodeId, ShardId)>,
    ) -> Result<(BTreeMap<(Holder, Vec<u8>, u32), Position>, bool), CatalogFault> {
        let budget = self.limits.segments_per_round.max(1);
        let mut found = BTreeMap::new();
        fn add(
            found: &mut BTreeMap<(Holder, Vec<u8>, u32), Position>,
            placement: &crate::catalog::Placement,
            position: Position,
        ) {
            for at in &placement.at {
                found
                    .entry((at.holder, at.key.clone(), at.segment))
                    .or_insert(position);
            }
        }
        let (from_node, mut after) = match &self.walk {
            None => (None, None),
            Some(WalkAt::Node(node, after)) => (Some(*node), *after),
            Some(WalkAt::Single(..)) => (None, None),
        };
        if !matches!(self.walk, Some(WalkAt::Single(..))) {
            let nodes = candidates
                .iter()
                .filter(|n| from_node.is_none_or(|from| **n >= from));
            for node in nodes {
                if Some(*node) != from_node {
                    after = None;
                }
                loop {
                    let page = view.placed_page(node, after, INDEX_PAGE)?;
                    let Some((last, _)) = page.last() else {
                        break;
                    };
                    let last = *last;
                    for (shard, placement) in &page {
                        add(&mut found, placement, Position::Node(*node));
                        if found.len() >= budget {
                            self.walk = Some(WalkAt::Node(*node, Some(*shard)));
                            return Ok((found, false));
                        }
                    }
                    after = Some(last);
                    if page.len() < INDEX_PAGE {
                        break;
                    }
                }
            }
        }
        let from = match &self.walk {
            Some(WalkAt::Single(node, shard)) => Some((*node, *shard)),
            _ => None,
        };
        let rest = singles
            .iter()
            .filter(|at| from.is_none_or(|from| **at > from));
        for (node, shard) in rest {
            if let Some(placement) = view.placement(node, shard)? {
                add(&mut found, &placement, Position::Single(*node, *shard));
            }
            if found.len() >= budget {
                self.walk = Some(WalkAt::Single(*node, *shard));
                return Ok((found, false));
            }
        }
        Ok((found, true))
    }

    /// Reads each record found once, judges the segments this walk position owns, counts
    /// the unhealthy ones and returns their needs.
    fn judge_found(
        &mut self,
        view: &CatalogView,
        rules: &Rules<'_>,
        candidates: &BTreeSet<NodeId>,
        singles: &BTreeSet<(NodeId, ShardId)>,
        found: BTreeMap<(Holder, Vec<u8>, u32), Position>,
    ) -> Result<Vec<Need>, CatalogFault> {
        let mut needs = Vec::new();
        let mut by_record: BTreeMap<RecordAt, Vec<(u32, Position)>> = BTreeMap::new();
        for ((holder, key, segment), position) in found {
            by_record
                .entry((holder, key))
                .or_default()
                .push((segment, position));
        }
        for ((holder, key), segments) in by_record {
            let mut visit =
                |at: SegmentAt<'_>, erasure: &ErasureProfile, segment: &SegmentRecord| {
                    let Some(judged) = rules.judge(at.bucket, erasure, segment) else {
                        return;
                    };
                    if !judged.unhealthy() {
                        return;
                    }
                    let width = u16::try_from(segment.shards.len()).unwrap_or(u16::MAX);
                    *self
                        .unhealthy
                        .shapes
                        .entry((judged.k, width, judged.present))
                        .or_default() += 1;
                    self.unhealthy.missing_bytes += judged.shard_size * judged.missing.len() as u64;
                    if let Some(need) = rules.need(at, &judged, segment, false) {
                        needs.push(need);
                    }
                };
            match holder {
                Holder::Object => {
                    let Some((bucket, name, object)) = view.object_at(&key)? else {
                        continue;
                    };
                    let ObjectBody::Segments {
                        erasure,
                        segments: all,
                    } = &object.body
                    else {
                        continue;
                    };
                    for (index, reached) in segments {
                        let Some(segment) = all.get(index as usize) else {
                            continue;
                        };
                        if owner(segment, candidates, singles) != Some(reached) {
                            continue;
                        }
                        let at = SegmentAt {
                            bucket: &bucket,
                            key: &name,
                            part: None,
                            etag: &object.etag,
                            index,
                        };
                        visit(at, erasure, segment);
                    }
                }
                Holder::Part => {
                    let Some((id, number, upload, part)) = view.part_at(&key)? else {
                        continue;
                    };
                    for (index, reached) in segments {
                        let Some(segment) = part.segments.get(index as usize) else {
                            continue;
                        };
                        if owner(segment, candidates, singles) != Some(reached) {
                            continue;
                        }
                        let at = SegmentAt {
                            bucket: &upload.bucket,
                            key: &id,
                            part: Some(number),
                            etag: &part.etag,
                            index,
                        };
                        visit(at, &upload.erasure, segment);
                    }
                }
            }
        }
        Ok(needs)
    }

    /// The totals at the end of a pass: every segment from the shape counters, the
    /// unhealthy ones moved to the shape they were judged at.
    fn totals(
        &mut self,
        view: &CatalogView,
        placed: BTreeMap<NodeId, crate::catalog::PlacedTotals>,
    ) -> Result<Survey, CatalogFault> {
        let mut survey = Survey::default();
        let mut shapes: BTreeMap<(u32, i64), u64> = BTreeMap::new();
        let mut all_bytes = 0u64;
        for ((k, width), totals) in view.segment_shapes()? {
            survey.segments += totals.segments;
            all_bytes = all_bytes.saturating_add(totals.bytes);
            let judged: u64 = self
                .unhealthy
                .shapes
                .range((k, width, 0)..=(k, width, u32::MAX))
                .map(|(_, n)| *n)
                .sum();
            let healthy = totals.segments.saturating_sub(judged);
            if healthy > 0 {
                *shapes
                    .entry((u32::from(width), i64::from(width) - i64::from(k)))
                    .or_default() += healthy;
            }
        }
        for ((k, _, present), n) in &self.unhealthy.shapes {
            *shapes
                .entry((*present, i64::from(*present) - i64::from(*k)))
                .or_default() += n;
        }
        for ((_, margin), n) in &shapes {
            *survey.segments_by_margin.entry(*margin).or_default() += n;
            if *margin < 0 {
                survey.unreadable += n;
            }
        }
        survey.segments_by_shape = shapes;
        survey.stored_bytes = all_bytes.saturating_sub(self.unhealthy.missing_bytes);
        survey.below_spread = self.spread_last.unwrap_or(self.spread_count);
        survey.spread_checked = self.spread_read;
        survey.spread_passes = self.spread_passes;
        for (node, totals) in placed {
            survey.shards_by_node.insert(node, totals.shards);
            survey.bytes_by_node.insert(node, totals.bytes);
        }
        Ok(survey)
    }

    /// Reads the next [`SurveyLimits::spread_per_round`] segments of the spread pass.
    fn spread_step(&mut self, view: &CatalogView, rules: &Rules<'_>) -> Result<(), CatalogFault> {
        let mut budget = self.limits.spread_per_round;
        while budget > 0 {
            match self.spread_at.take().unwrap_or(SpreadAt::Objects(None)) {
                SpreadAt::Objects(after) => {
                    let page = view.objects_after(after.as_deref(), SPREAD_PAGE)?;
                    let Some((last, _)) = page.last() else {
                        self.spread_at = Some(SpreadAt::Parts(None));
                        continue;
                    };
                    let mut at = Some(last.clone());
                    for (raw, object) in &page {
                        let Some((bucket, key)) = crate::catalog::split_object_key(raw) else {
                            continue;
                        };
                        // An inline object costs a read too: it counts as one segment.
                        let mut cost = 1;
                        if let ObjectBody::Segments { erasure, segments } = &object.body {
                            for (index, segment) in segments.iter().enumerate() {
                                let at = SegmentAt {
                                    bucket,
                                    key,
                                    part: None,
                                    etag: &object.etag,
                                    index: index as u32,
                                };
                                self.spread_segment(view, rules, at, erasure, segment)?;
                            }
                            cost = segments.len().max(1);
                        }
                        budget = budget.saturating_sub(cost);
                        if budget == 0 {
                            at = Some(raw.clone());
                            break;
                        }
                    }
                    self.spread_at = Some(SpreadAt::Objects(at));
                }
                SpreadAt::Parts(after) => {
                    let keys = view.part_keys_after(after.as_deref(), SPREAD_PAGE)?;
                    let Some(last) = keys.last() else {
                        // The pass is complete: its count is the one reported.
                        if self.spread_mismatches > 0 {
                            tracing::warn!(
                                mismatches = self.spread_mismatches,
                                "shards placed by records but missing from the shards-by-node index"
                            );
                        }
                        self.spread_last = Some(self.spread_count);
                        self.spread_passes += 1;
                        self.spread_count = 0;
                        self.spread_read = 0;
                        self.spread_mismatches = 0;
                        self.spread_at = Some(SpreadAt::Objects(None));
                        // At most one pass per round, so a tiny catalog is not re-read
                        // again and again within one round.
                        return Ok(());
                    };
                    let mut at = Some(last.clone());
                    for raw in &keys {
                        let mut cost = 1;
                        if let Some((id, number, upload, part)) = view.part_at(raw)? {
                            cost = part.segments.len().max(1);
                            for (index, segment) in part.segments.iter().enumerate() {
                                let at = SegmentAt {
                                    bucket: &upload.bucket,
                                    key: &id,
                                    part: Some(number),
                                    etag: &part.etag,
                                    index: index as u32,
                                };
                                self.spread_segment(view, rules, at, &upload.erasure, segment)?;
                            }
                        }
                        budget = budget.saturating_sub(cost);
                        if budget == 0 {
                            at = Some(raw.clone());
                            break;
                        }
                    }
                    self.spread_at = Some(SpreadAt::Parts(at));
                }
            }
        }
        Ok(())
    }

    /// One segment of the spread pass: counted if below spread, queued if it needs a
    /// respread, and each of its shards checked against the index.
    fn spread_segment(
        &mut self,
        view: &CatalogView,
        rules: &Rules<'_>,
        at: SegmentAt<'_>,
        erasure: &ErasureProfile,
        segment: &SegmentRecord,
    ) -> Result<(), CatalogFault> {
        for shard in &segment.shards {
            if !view.is_placed(&shard.node, &shard.id)? {
                self.spread_mismatches += 1;
            }
        }
        let Some(judged) = rules.judge(at.bucket, erasure, segment) else {
            return Ok(());
        };
        self.spread_read += 1;
        if judged.below_spread {
            self.spread_count += 1;
        }
        let room = self.respread.len() < MAX_RESPREAD;
        if let Some(need) = rules.need(at, &judged, segment, room)
            && need.respread
            && !self.respread.iter().any(|n| same_segment(n, &need))
        {
            self.respread.push(need);
        }
        Ok(())
    }

    /// Keeps the respread moves still needed (their segment unchanged and still crowded),
    /// judged afresh.
    fn recheck_respread(
        &mut self,
        view: &CatalogView,
        rules: &Rules<'_>,
    ) -> Result<(), CatalogFault> {
        let mut kept = Vec::new();
        for old in std::mem::take(&mut self.respread) {
            let raw = crate::catalog::object_key(&old.bucket, &old.key);
            let Some((bucket, key, object)) = view.object_at(&raw)? else {
                continue;
            };
            if object.etag != old.etag {
                continue;
            }
            let ObjectBody::Segments { erasure, segments } = &object.body else {
                continue;
            };
            let Some(segment) = segments.get(old.segment as usize) else {
                continue;
            };
            let Some(judged) = rules.judge(&bucket, erasure, segment) else {
                continue;
            };
            let at = SegmentAt {
                bucket: &bucket,
                key: &key,
                part: None,
                etag: &object.etag,
                index: old.segment,
            };
            if let Some(need) = rules.need(at, &judged, segment, true)
                && need.respread
            {
                kept.push(need);
            }
        }
        self.respread = kept;
        Ok(())
    }
}

/// A record as the index names it: its table and its key there.
type RecordAt = (Holder, Vec<u8>);

/// Where the index walk reaches a segment: from a candidate node's range, or from one
/// individually missing shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Position {
    Node(NodeId),
    Single(NodeId, ShardId),
}

/// The first position of the walk that reaches `segment`: the one that judges it, so a
/// segment reached from several nodes is counted once per pass.
fn owner(
    segment: &SegmentRecord,
    candidates: &BTreeSet<NodeId>,
    singles: &BTreeSet<(NodeId, ShardId)>,
) -> Option<Position> {
    segment
        .shards
        .iter()
        .filter_map(|shard| {
            if candidates.contains(&shard.node) {
                Some(Position::Node(shard.node))
            } else if singles.contains(&(shard.node, shard.id)) {
                Some(Position::Single(shard.node, shard.id))
            } else {
                None
            }
        })
        .min()
}

fn same_segment(a: &Need, b: &Need) -> bool {
    a.bucket == b.bucket && a.key == b.key && a.part == b.part && a.segment == b.segment
}

/// Shards the catalog places on `node`, in objects and in parts of uploads in progress:
/// one read of the node's totals in the shards-by-node index.
pub fn placed_on(catalog: &Catalog, node: &NodeId) -> Result<u64, CatalogFault> {
    Ok(catalog.placed_totals(node)?.shards)
}

/// Bytes to move off each over-full node, and the nodes that should receive them, when
/// the utilisation (bytes placed ÷ capacity) of the nodes taking new shards differs by more
/// than `threshold` (a fraction of capacity); `None` when the cluster is even enough.
///
/// Each node above the mean sheds what brings it to the mean, so one round of moves
/// evens the cluster out without overshooting; receivers are the nodes below the mean.
pub fn imbalance(
    capacity: &HashMap<NodeId, u64>,
    placed: &BTreeMap<NodeId, u64>,
    threshold: f64,
) -> Option<(HashMap<NodeId, u64>, Vec<NodeId>)> {
    let util = |node: &NodeId, cap: u64| placed.get(node).copied().unwrap_or(0) as f64 / cap as f64;
    let nodes: Vec<(NodeId, u64, f64)> = capacity
        .iter()
        .filter(|(_, cap)| **cap > 0)
        .map(|(node, cap)| (*node, *cap, util(node, *cap)))
        .collect();
    if nodes.len() < 2 {
        return None;
    }
    let total_placed: u64 = nodes
        .iter()
        .map(|(node, _, _)| placed.get(node).copied().unwrap_or(0))
        .sum();
    let total_capacity: u64 = nodes.iter().map(|(_, cap, _)| cap).sum();
    let mean = total_placed as f64 / total_capacity as f64;
    let (lowest, highest) = nodes
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (_, _, u)| {
            (lo.min(*u), hi.max(*u))
        });
    if highest - lowest <= threshold {
        return None;
    }
    let shed: HashMap<NodeId, u64> = nodes
        .iter()
        .filter(|(_, _, u)| *u > mean)
        .map(|(node, cap, u)| (*node, ((u - mean) * *cap as f64) as u64))
        .filter(|(_, bytes)| *bytes > 0)
        .collect();
    let receivers: Vec<NodeId> = nodes
        .iter()
        .filter(|(_, _, u)| *u < mean)
        .map(|(node, _, _)| *node)
        .collect();
    (!shed.is_empty() && !receivers.is_empty()).then_some((shed, receivers))
}

/// Index entries read per over-full node and planned move before a round of planning
/// stops looking: the candidates a node's index range offers are mostly usable, and the
/// rest wait for the next round, so planning never walks a whole node.
const CANDIDATES_PER_MOVE: usize = 16;

/// Moves for rebalancing: for each over-full node in `shed` (the one with the most left to
/// shed first), shards of healthy segments (every shard present, none on a draining node)
/// that some receiver can take, until its byte budget is spent, at most one shard per
/// segment and `max_moves` in all. Each goes to one of `receivers`.
///
/// Candidates come from the node's range of the shards-by-node index, from `start` (a
/// random id, so successive rounds try different shards) onwards, at most
/// [`CANDIDATES_PER_MOVE`] × `max_moves` entries per node: the work of one round is bounded
/// whatever the catalog's size.
pub fn rebalance_moves(
    catalog: &Catalog,
    states: &HashMap<NodeId, NodeState>,
    shed: &HashMap<NodeId, u64>,
    receivers: &[NodeId],
    max_moves: usize,
    start: ShardId,
) -> Result<Vec<Need>, CatalogFault> {
    let view = catalog.view()?;
    let mut order: Vec<(u64, NodeId)> = shed.iter().map(|(n, b)| (*b, *n)).collect();
    order.sort_by(|a, b| b.cmp(a));
    let mut moves = Vec::new();
    let mut planned: HashSet<(Vec<u8>, u32)> = HashSet::new();
    for (mut budget, node) in order {
        let limit = max_moves.saturating_mul(CANDIDATES_PER_MOVE).max(1);
        for (shard, placement) in view.placed_from(&node, start, limit)? {
            if moves.len() >= max_moves {
                return Ok(moves);
            }
            let Some(at) = placement.at.iter().find(|at| at.holder == Holder::Object) else {
                continue;
            };
            if budget < placement.size.max(1) || planned.contains(&(at.key.clone(), at.segment)) {
                continue;
            }
            let Some((bucket, key, object)) = view.object_at(&at.key)? else {
                continue;
            };
            let ObjectBody::Segments { erasure, segments } = &object.body else {
                continue;
            };
            let Some(segment) = segments.get(at.segment as usize) else {
                continue;
            };
            let index = usize::from(at.index);
            if segment
                .shards
                .get(index)
                .is_none_or(|s| s.id != shard || s.node != node)
            {
                continue;
            }
            let healthy = segment.shards.iter().all(|s| {
                states
                    .get(&s.node)
                    .is_some_and(|st| st.holds_data() && *st != NodeState::Draining)
            });
            // Receivers already holding a shard of the segment cannot take another; a
            // segment no receiver can take spends no node's budget.
            let targets: Vec<NodeId> = receivers
                .iter()
                .filter(|r| !segment.shards.iter().any(|s| s.node == **r))
                .copied()
                .collect();
            if !healthy || targets.is_empty() {
                continue;
            }
            budget -= placement.size.max(1);
            planned.insert((at.key.clone(), at.segment));
            moves.push(Need {
                bucket,
                key,
                part: None,
                etag: object.etag.clone(),
                segment: at.segment,
                margin: (segment.shards.len() as i64) - i64::from(erasure.k),
                missing: Vec::new(),
                draining: Vec::new(),
                moving: vec![index as u32],
                targets,
                respread: false,
                shard_size: placement.size,
                k: erasure.k,
            });
        }
    }
    Ok(moves)
}

/// The modelled chance of losing data within a year, from node churn and current margins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossModel {
    /// Node failures per node-year: the observed ones plus one, over the node-years
    /// observed (at least one), so a young cluster does not claim immortality.
    pub failures_per_node_year: f64,
    /// Seconds from a node failing until its shards are rebuilt: the lost timeout, a
    /// survey, and moving its share of the data at the repair bandwidth.
    pub repair_window_secs: f64,
    /// Chance that some segment loses more shards than its margin within one repair
    /// window, in a year (an upper bound: segments sharing nodes are counted separately).
    pub annual_loss_probability: f64,
    /// Segments expected to become unreadable per year.
    pub expected_segments_lost_per_year: f64,
}

/// Models independent node failures at the observed rate: a segment with `present`
/// shards and margin `g` is lost if `g + 1` of its nodes fail within one repair window,
/// which happens `year / window` times a year.
pub fn loss_model(
    shapes: &BTreeMap<(u32, i64), u64>,
    failures: u64,
    node_years: f64,
    window: std::time::Duration,
) -> LossModel {
    const YEAR: f64 = 365.25 * 24.0 * 3600.0;
    let rate = (failures as f64 + 1.0) / node_years.max(1.0);
    let window_secs = window.as_secs_f64().max(1.0);
    // Chance one node fails within one window.
    let p = 1.0 - (-rate * window_secs / YEAR).exp();
    let windows = YEAR / window_secs;
    let mut expected = 0.0;
    let mut survive_all = 1.0f64;
    for (&(present, margin), &count) in shapes {
        if margin < 0 {
            // Already unreadable: counted as lost.
            expected += count as f64;
            survive_all = 0.0;
            continue;
        }
        let per_window = binomial_tail(present, (margin + 1) as u32, p);
        let per_year = 1.0 - (1.0 - per_window).powf(windows);
        expected += count as f64 * per_year;
        survive_all *= (1.0 - per_year).powf(count as f64);
    }
    LossModel {
        failures_per_node_year: rate,
        repair_window_secs: window_secs,
        annual_loss_probability: (1.0 - survive_all).clamp(0.0, 1.0),
        expected_segments_lost_per_year: expected,
    }
}

/// P[X ≥ at_least] for X ~ Binomial(n, p).
fn binomial_tail(n: u32, at_least: u32, p: f64) -> f64 {
    if at_least > n {
        return 0.0;
    }
    let mut total = 0.0;
    let mut choose = 1.0f64; // C(n, 0)
    for i in 0..=n {
        if i >= at_least {
            total += choose * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32);
        }
        choose = choose * f64::from(n - i) / f64::from(i + 1);
    }
    total.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_hand_values() {
        assert!((binomial_tail(2, 1, 0.5) - 0.75).abs() < 1e-12);
        assert!((binomial_tail(3, 3, 0.5) - 0.125).abs() < 1e-12);
        assert_eq!(binomial_tail(3, 4, 0.9), 0.0);
        assert!((binomial_tail(6, 0, 0.3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn more_margin_means_less_loss() {
        let window = std::time::Duration::from_secs(3600);
        let model = |margin: i64| {
            let shapes = BTreeMap::from([(((4 + margin) as u32, margin), 1_000)]);
            loss_model(&shapes, 3, 10.0, window).annual_loss_probability
        };
        assert!(model(0) > model(1));
        assert!(model(1) > model(2));
        assert!(model(2) > 0.0);
        let lost = BTreeMap::from([((3, -1), 1)]);
        assert_eq!(
            loss_model(&lost, 0, 1.0, window).annual_loss_probability,
            1.0
        );
    }
}
