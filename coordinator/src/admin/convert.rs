//! The catalog's records as the admin API's views ([`cairn_client::admin_views`]), which
//! the coordinator answers with and `cairn admin` reads.

use cairn_client::admin_views::{BucketView, GatewayView, KeyView, LossModelView, NodeView};

use crate::catalog::model::{AccessKey, Bucket, BucketMode, GatewayRecord, NodeRecord};
use crate::durability::LossModel;

/// The view of a node's catalog record plus what its last heartbeat said (how long ago,
/// and the heartbeat) and the shards the latest survey places on it.
pub(super) fn node_view(
    node: &NodeRecord,
    last: Option<(std::time::Duration, cairn_proto::wire::Heartbeat)>,
    placed_shards: Option<u64>,
) -> NodeView {
    NodeView {
        id: node.id.to_string(),
        addr: node.addr.clone(),
        org: node.org.clone(),
        site: node.site.clone(),
        state: node.state.as_str().to_string(),
        capacity: node.capacity,
        used: last.as_ref().map(|(_, hb)| hb.used_bytes),
        shards: last.as_ref().map(|(_, hb)| hb.shard_count),
        last_heartbeat_ms: last.map(|(ago, _)| ago.as_millis() as u64),
        state_since_ms: node.state_since_ms,
        vetted: node.vetted,
        bad_reads: node.reputation.bad_reads,
        audits_passed: node.reputation.audits_passed,
        audits_failed: node.reputation.audits_failed,
        score: node.reputation.score(),
        placed_shards,
    }
}

impl From<&Bucket> for BucketView {
    fn from(bucket: &Bucket) -> Self {
        let (mode, trusted_keys) = match &bucket.mode {
            BucketMode::Plain => ("plain", Vec::new()),
            BucketMode::NixCache { trusted_keys } => ("nix-cache", trusted_keys.clone()),
        };
        Self {
            name: bucket.name.clone(),
            public_read: bucket.public_read,
            mode: mode.to_string(),
            trusted_keys,
            k: bucket.erasure.k,
            m: bucket.erasure.m,
            segment_size: bucket.erasure.segment_size,
            failure_tolerance: bucket.failure_tolerance,
            created_ms: bucket.created_ms,
        }
    }
}

impl From<&AccessKey> for KeyView {
    fn from(key: &AccessKey) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            created_ms: key.created_ms,
            revoked: key.revoked,
        }
    }
}

impl From<&GatewayRecord> for GatewayView {
    fn from(gateway: &GatewayRecord) -> Self {
        Self {
            key: gateway.key.to_string(),
            name: gateway.name.clone(),
            created_ms: gateway.created_ms,
        }
    }
}

impl From<LossModel> for LossModelView {
    fn from(model: LossModel) -> Self {
        Self {
            failures_per_node_year: model.failures_per_node_year,
            repair_window_secs: model.repair_window_secs,
            annual_loss_probability: model.annual_loss_probability,
            expected_segments_lost_per_year: model.expected_segments_lost_per_year,
        }
    }
}
