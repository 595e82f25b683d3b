//! The durability survey: every segment's margin, read from the catalog and the nodes'
//! states, and the segments that need work, most urgent first.
//!
//! A segment's *margin* is the number of its shards that still exist minus `k`: how many
//! more it can lose and still be read. Shards count while their node is in a state that
//! holds data (vetting, active, suspect, draining) and its inventory does not lack it; a
//! lost, gone or disqualified node's shards are missing, and so are shards a node's
//! inventory no longer lists ([`crate::gc`]). A suspect node's shards still count, so a node that is only slow or
//! rebooting costs no repair traffic.
//!
//! The survey walks the whole catalog in one read snapshot. That is linear in the number of
//! objects; at the real cache's size it becomes an index of shards by node (so a lost node
//! touches only its own segments), with this walk kept as the periodic cross-check.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;
use serde::{Deserialize, Serialize};

use crate::catalog::model::{NodeState, ObjectBody};
use crate::catalog::{Catalog, CatalogFault};

/// A segment that needs work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// ETag of the object version surveyed.
    pub etag: String,
    /// Segment index.
    pub segment: u32,
    /// Shards that exist minus `k`.
    pub margin: i64,
    /// Indexes of shards whose node no longer holds data: to rebuild.
    pub missing: Vec<u32>,
    /// Indexes of shards on draining nodes: to move.
    pub draining: Vec<u32>,
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
    /// Shards the catalog places on each node (objects and multipart parts in progress):
    /// what still depends on it.
    pub shards_by_node: BTreeMap<NodeId, u64>,
}

/// Walks the catalog: returns the survey and the segments needing work, lowest margin
/// first, then the moves off draining nodes.
///
/// A segment needs a rebuild when shards are missing and its margin is at most
/// `threshold`; it needs a move when shards sit on a draining node (whatever its margin:
/// draining must finish). A segment with both is one need: rebuilt and moved together.
pub fn survey(
    catalog: &Catalog,
    states: &HashMap<NodeId, NodeState>,
    missing_shards: &HashSet<ShardId>,
    threshold: u16,
) -> Result<(Survey, Vec<Need>), CatalogFault> {
    let mut survey = Survey::default();
    let mut needs = Vec::new();
    catalog.for_each_object(|bucket, key, object| {
        let ObjectBody::Segments { erasure, segments } = &object.body else {
            return true;
        };
        let Ok(codec) = cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m))
        else {
            return true;
        };
        for (index, segment) in segments.iter().enumerate() {
            let shard_size = codec.shard_len(segment.len);
            let mut missing = Vec::new();
            let mut draining = Vec::new();
            for (i, shard) in segment.shards.iter().enumerate() {
                *survey.shards_by_node.entry(shard.node).or_default() += 1;
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
            survey.segments += 1;
            if margin < 0 {
                survey.unreadable += 1;
            }
            // Below zero nothing can be rebuilt (fewer than k shards exist); the segment
            // waits, counted as unreadable, for a node to come back.
            let rebuild = !missing.is_empty() && (0..=i64::from(threshold)).contains(&margin);
            if margin >= 0 && (rebuild || !draining.is_empty()) {
                needs.push(Need {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    etag: object.etag.clone(),
                    segment: index as u32,
                    margin,
                    missing: if rebuild { missing } else { Vec::new() },
                    draining,
                    shard_size,
                    k: erasure.k,
                });
            }
        }
        true
    })?;
    // Parts of uploads in progress are not repaired or moved (they become objects or are
    // dropped within the upload's life), but their nodes are still needed until then.
    catalog.for_each_part(|part| {
        for shard in part.segments.iter().flat_map(|s| s.shards.iter()) {
            *survey.shards_by_node.entry(shard.node).or_default() += 1;
        }
    })?;
    // Rebuilds before moves, lowest margin first; a stable sort keeps catalog order within
    // a margin, so every segment gets its turn.
    needs.sort_by_key(|need| (need.missing.is_empty(), need.margin));
    Ok((survey, needs))
}

/// Shards the catalog places on `node`, in objects and in parts of uploads in progress.
pub fn placed_on(catalog: &Catalog, node: &NodeId) -> Result<u64, CatalogFault> {
    let mut count = 0u64;
    catalog.for_each_object(|_, _, object| {
        count += object.body.shards().filter(|s| s.node == *node).count() as u64;
        true
    })?;
    catalog.for_each_part(|part| {
        count += part
            .segments
            .iter()
            .flat_map(|s| s.shards.iter())
            .filter(|s| s.node == *node)
            .count() as u64;
    })?;
    Ok(count)
}
