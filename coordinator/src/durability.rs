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
//! The survey walks the whole catalog in one read snapshot. That is linear in the number of
//! objects; at the real cache's size it becomes an index of shards by node (so a lost node
//! touches only its own segments), with this walk kept as the periodic cross-check.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use serde::{Deserialize, Serialize};

use crate::catalog::model::{ErasureProfile, NodeState, ObjectBody, SegmentRecord};
use crate::catalog::{Catalog, CatalogFault, Holder};

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
    /// Segments per (shards present, margin), for the loss model.
    #[serde(skip)]
    pub segments_by_shape: BTreeMap<(u32, i64), u64>,
}

/// Most segments queued per survey to restore the spread rule: they wait behind every
/// rebuild and drain, and the next survey finds the rest.
pub const MAX_RESPREAD: usize = 256;

/// Walks the catalog: returns the survey and the segments needing work, lowest margin
/// first, then the moves off draining nodes, then moves restoring the spread rule.
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
    let mut survey = Survey::default();
    let mut needs = Vec::new();
    let mut respread = 0usize;
    // The spread rule per bucket: at most this many shards of a segment per organisation,
    // and whether the organisations with room could keep it for a whole segment.
    let per_org: HashMap<String, (usize, bool)> = catalog
        .buckets()?
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
    // One segment of an object (`part` None) or of a part of an upload in progress (`key`
    // is then the upload id).
    let mut visit = |bucket: &str,
                     key: &str,
                     part: Option<u32>,
                     etag: &str,
                     erasure: &ErasureProfile,
                     index: usize,
                     segment: &SegmentRecord| {
        let Ok(codec) = cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m))
        else {
            return;
        };
        let (limit, feasible) = per_org.get(bucket).copied().unwrap_or((usize::MAX, false));
        let limit = limit.max(1);
        let mut in_org: HashMap<&str, usize> = HashMap::new();
        for shard in &segment.shards {
            if let Some(org) = orgs.get(&shard.node) {
                *in_org.entry(org.as_str()).or_default() += 1;
            }
        }
        let below_spread = in_org.values().any(|n| *n > limit);
        if below_spread {
            survey.below_spread += 1;
        }
        let shard_size = codec.shard_len(segment.len);
        let mut missing = Vec::new();
        let mut draining = Vec::new();
        for (i, shard) in segment.shards.iter().enumerate() {
            *survey.shards_by_node.entry(shard.node).or_default() += 1;
            *survey.bytes_by_node.entry(shard.node).or_default() += shard_size;
            match states.get(&shard.node) {
                Some(state) if state.holds_data() && !missing_shards.contains(&shard.id) => {
                    survey.stored_bytes += shard_size;
                    if *state == NodeState::Draining {
                        draining.push(i as u32);
                    }
                }
                _ => missing.push(i as u32),
            }
        }
        let present = (segment.shards.len() - missing.len()) as i64;
        let margin = present - i64::from(erasure.k);
        *survey.segments_by_margin.entry(margin).or_default() += 1;
        *survey
            .segments_by_shape
            .entry((present as u32, margin))
            .or_default() += 1;
        survey.segments += 1;
        if margin < 0 {
            survey.unreadable += 1;
        }
        let need = |missing, draining, moving, respread| Need {
            bucket: bucket.to_string(),
            key: key.to_string(),
            part,
            etag: etag.to_string(),
            segment: index as u32,
            margin,
            missing,
            draining,
            moving,
            targets: Vec::new(),
            respread,
            shard_size,
            k: erasure.k,
        };
        // Below zero nothing can be rebuilt (fewer than k shards exist); the segment
        // waits, counted as unreadable, for a node to come back.
        let rebuild = !missing.is_empty() && (0..=i64::from(threshold)).contains(&margin);
        if margin >= 0 && (rebuild || !draining.is_empty()) {
            let missing = if rebuild { missing } else { Vec::new() };
            needs.push(need(missing, draining, Vec::new(), false));
        } else if below_spread
            && feasible
            && missing.is_empty()
            && part.is_none()
            && respread < MAX_RESPREAD
        {
            // The shards past the cap in each crowded organisation move; the rest stay.
            // (Parts are not respread: they become objects, or are dropped, soon.)
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let moving = segment
                .shards
                .iter()
                .enumerate()
                .filter(|(_, shard)| {
                    orgs.get(&shard.node).is_some_and(|org| {
                        let n = seen.entry(org.as_str()).or_default();
                        *n += 1;
                        *n > limit
                    })
                })
                .map(|(i, _)| i as u32)
                .collect();
            respread += 1;
            needs.push(need(Vec::new(), Vec::new(), moving, true));
        }
    };
    catalog.for_each_object(|bucket, key, object| {
        if let ObjectBody::Segments { erasure, segments } = &object.body {
            for (index, segment) in segments.iter().enumerate() {
                visit(bucket, key, None, &object.etag, erasure, index, segment);
            }
        }
        true
    })?;
    // Parts of uploads in progress are surveyed and repaired like objects: an upload may
    // stay open for days, and what it completes into must be whole.
    catalog.for_each_part(|id, upload, number, part| {
        for (index, segment) in part.segments.iter().enumerate() {
            visit(
                &upload.bucket,
                id,
                Some(number),
                &part.etag,
                &upload.erasure,
                index,
                segment,
            );
        }
    })?;
    // Rebuilds before drains before respreading, lowest margin first; a stable sort keeps
    // catalog order within a margin, so every segment gets its turn.
    needs.sort_by_key(|need| (need.missing.is_empty(), need.respread, need.margin));
    Ok((survey, needs))
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
