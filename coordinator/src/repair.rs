//! The repair scheduler: the leader's queue of segments to rebuild or move, handed out to
//! gateways as jobs within the cluster's repair budget.
//!
//! While this member leads, [`run`] re-surveys the catalog every `interval`
//! ([`crate::durability::survey`]) and replaces the queue with what it found. Gateways ask
//! for work (`GatewayRequest::RepairJob`); [`Repairs::next`] hands out the
//! most urgent segment nobody is working on, if the concurrency limit and the bandwidth
//! budget allow, and leases it so no second gateway rebuilds the same segment. A lease ends
//! when the job is reported done or failed, or after `lease` if its gateway went quiet.
//!
//! The budget is a token bucket over the bytes a job moves (k shards read, the rebuilt ones
//! written): repair proceeds at `bandwidth` bytes per second however many gateways help,
//! which leaves the rest of every link to client reads and writes.
//!
//! Nothing here is replicated: a new leader re-surveys and starts a fresh queue. A job
//! finished under an old leader still commits, because the commit checks the catalog
//! itself (the shard ids replaced must still be current).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::order::unix_now_ms;
use openraft::Raft;
use serde::{Deserialize, Serialize};

use cairn_proto::identity::NodeId;
use cairn_proto::ids::ShardId;

use crate::catalog::model::NodeState;
use crate::catalog::{Catalog, Command, CommandResult, MoveReason};
use crate::durability::{Need, Survey, SurveyLimits, Surveyor};
use crate::raft::types::TypeConfig;

/// Limits and pace of repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairSettings {
    /// Time between surveys of the catalog.
    pub interval: Duration,
    /// A segment with missing shards is rebuilt once its margin is at most this.
    pub threshold: u16,
    /// Jobs out at once, across all gateways.
    pub concurrency: usize,
    /// Bytes per second repair may move (reads plus writes); 0 means no limit.
    pub bandwidth: u64,
    /// How long a handed-out job stays reserved for its gateway.
    pub lease: Duration,
    /// Rebalance when the utilisation of nodes taking new shards differs by more than this
    /// many thousandths of capacity; 0 never rebalances.
    pub rebalance_permille: u16,
    /// Silence after which a node is lost (the first part of every repair's delay).
    pub lost_after: Duration,
    /// Segments the survey's spread pass reads per round (0: none).
    pub spread_check_segments: usize,
}

impl From<&crate::config::CoordinatorConfig> for RepairSettings {
    fn from(config: &crate::config::CoordinatorConfig) -> Self {
        Self {
            interval: Duration::from_millis(config.repair_interval_ms),
            threshold: config.repair_threshold,
            concurrency: config.repair_concurrency,
            bandwidth: config.repair_bandwidth.0,
            lease: Duration::from_secs(config.repair_lease_secs),
            rebalance_permille: config.rebalance_threshold_permille,
            lost_after: Duration::from_secs(config.lost_after_secs),
            spread_check_segments: config.spread_check_segments,
        }
    }
}

/// Where a shard that failed its audit is placed, so the auditor can tell when the catalog
/// has moved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedShard {
    /// The node that failed the audit.
    pub node: NodeId,
    /// Bucket of the object the shard belongs to.
    pub bucket: String,
    /// Key of that object.
    pub key: String,
}

/// A shard a gateway's report asks the auditor to look at, and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRequest {
    /// The shard.
    pub shard: ShardId,
    /// Where the catalog placed it when it was reported.
    pub at: FailedShard,
    /// Ask it as a read (a `GetShard` from a client the node has never seen, under a read
    /// order) rather than as an audit: the node refused a reader, and a node that serves
    /// audits but refuses reads would pass an audit.
    pub as_read: bool,
}

/// Reported shards waiting for an audit on one node; a report past it is dropped (its
/// (gateway, shard) stays remembered, so the gateway's next report of it is too: enough
/// wait to judge the node).
const MAX_REQUESTS_PER_NODE: usize = 64;

/// (gateway, shard) reports remembered before the memory starts over.
const MAX_REMEMBERED_REPORTS: usize = 100_000;

/// A segment's identity in the queue and the lease table.
/// A queued segment: bucket, key (or upload id), part number for a part, segment index.
type SegmentKey = (String, String, Option<u32>, u32);

/// What the leader knows about durability and repair right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairView {
    /// The latest survey, if this member leads and has finished one.
    pub survey: Option<Survey>,
    /// Segments waiting for a rebuild or a move.
    pub queue: u64,
    /// Jobs out with gateways now.
    pub in_progress: u64,
    /// When the latest survey finished, milliseconds since the Unix epoch.
    pub surveyed_ms: Option<u64>,
}

/// The leader's repair queue and leases (shared by the survey loop and the gateway RPC).
pub struct Repairs {
    settings: RepairSettings,
    state: Mutex<State>,
}

struct State {
    /// Shards found missing from their nodes' inventories (by the collector).
    missing: HashMap<ShardId, NodeId>,
    /// Shards whose holder failed an audit of them (by the auditor), until the catalog no
    /// longer places them there.
    failed: HashMap<ShardId, FailedShard>,
    /// Shards a gateway read bad or was refused, per node, oldest first, to be audited
    /// next (the audit judges the node); at most [`MAX_REQUESTS_PER_NODE`] each.
    audit_requests: HashMap<NodeId, VecDeque<AuditRequest>>,
    /// Reports already taken, by (gateway, shard): a gateway counts once per shard.
    reports: HashSet<(NodeId, ShardId)>,
    /// Refused-read reports already taken, the same way (apart, so a refusal reported
    /// first does not hide bad bytes the same gateway reads later).
    refusals: HashSet<(NodeId, ShardId)>,
    survey: Option<Survey>,
    surveyed_ms: Option<u64>,
    queue: VecDeque<Need>,
    leases: HashMap<SegmentKey, Instant>,
    /// Bytes repair may still move now (the token bucket), and when it was last filled.
    budget: f64,
    filled: Instant,
}

impl Repairs {
    /// An empty scheduler.
    pub fn new(settings: RepairSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            state: Mutex::new(State {
                missing: HashMap::new(),
                failed: HashMap::new(),
                audit_requests: HashMap::new(),
                reports: HashSet::new(),
                refusals: HashSet::new(),
                survey: None,
                surveyed_ms: None,
                queue: VecDeque::new(),
                leases: HashMap::new(),
                budget: 0.0,
                filled: Instant::now(),
            }),
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &RepairSettings {
        &self.settings
    }

    /// Durability and queue as of the latest survey.
    pub fn view(&self) -> RepairView {
        let Ok(mut state) = self.state.lock() else {
            return RepairView::default();
        };
        expire(&mut state);
        RepairView {
            survey: state.survey.clone(),
            queue: state.queue.len() as u64,
            in_progress: state.leases.len() as u64,
            surveyed_ms: state.surveyed_ms,
        }
    }

    /// Records the shards the latest inventories lack (replacing the previous set); the
    /// next survey counts them lost.
    pub fn set_missing(&self, missing: HashMap<ShardId, NodeId>) {
        if let Ok(mut state) = self.state.lock() {
            state.missing = missing;
        }
    }

    /// The shards the next survey counts lost although their node holds data: those
    /// inventories lack and those whose holder failed an audit of them.
    pub fn missing(&self) -> HashSet<ShardId> {
        self.state
            .lock()
            .map(|state| {
                state
                    .missing
                    .keys()
                    .chain(state.failed.keys())
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// [`Repairs::missing`] with the node each shard is missing from: where the survey
    /// finds it in the shards-by-node index.
    pub fn missing_on(&self) -> HashMap<ShardId, NodeId> {
        self.state
            .lock()
            .map(|state| {
                state
                    .missing
                    .iter()
                    .map(|(shard, node)| (*shard, *node))
                    .chain(state.failed.iter().map(|(shard, f)| (*shard, f.node)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records that the holder of `shard` failed an audit of it: its copy is wrong or gone
    /// (whatever the node's inventory claims), so the next survey counts the shard lost and
    /// repair rebuilds it elsewhere, without waiting for the node to be disqualified.
    pub fn report_failed(&self, shard: ShardId, failed: FailedShard) {
        if let Ok(mut state) = self.state.lock() {
            state.failed.insert(shard, failed);
        }
    }

    /// Takes a gateway's report of a bad read of `shard` on `at.node`: `false` if this
    /// gateway already reported that shard (one report per gateway and shard counts), else
    /// `true`, and the shard is audited on that node in the next round: a report is a
    /// reason to look, the audit is the judgement.
    pub fn take_report(&self, gateway: NodeId, shard: ShardId, at: FailedShard) -> bool {
        self.take(gateway, shard, at, false)
    }

    /// Takes a gateway's report that `at.node` refused a read of `shard`, as
    /// [`Repairs::take_report`] takes one of a bad read (counted apart from those); the
    /// shard is then asked of the node as a read ([`AuditRequest::as_read`]).
    pub fn take_refusal(&self, gateway: NodeId, shard: ShardId, at: FailedShard) -> bool {
        self.take(gateway, shard, at, true)
    }

    fn take(&self, gateway: NodeId, shard: ShardId, at: FailedShard, as_read: bool) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let seen = if as_read {
            &mut state.refusals
        } else {
            &mut state.reports
        };
        if seen.len() >= MAX_REMEMBERED_REPORTS {
            seen.clear();
        }
        if !seen.insert((gateway, shard)) {
            return false;
        }
        let queue = state.audit_requests.entry(at.node).or_default();
        if queue.len() < MAX_REQUESTS_PER_NODE {
            queue.push_back(AuditRequest { shard, at, as_read });
        }
        true
    }

    /// The oldest shard reports asked to audit on each node `ready` accepts (one each),
    /// taken off the queue; a node still answering for an earlier challenge keeps its
    /// requests for later. A shard already counted lost (it failed an audit, or an
    /// inventory lacks it) is dropped from the queue unasked: judging it again before it
    /// is rebuilt would count one loss twice against the node.
    pub fn take_audit_requests(&self, ready: impl Fn(&NodeId) -> bool) -> Vec<AuditRequest> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let State {
            audit_requests,
            missing,
            failed,
            ..
        } = &mut *state;
        let mut taken = Vec::new();
        audit_requests.retain(|node, queue| {
            if ready(node) {
                while let Some(request) = queue.pop_front() {
                    let lost = failed.contains_key(&request.shard)
                        || missing.get(&request.shard) == Some(&request.at.node);
                    if !lost {
                        taken.push(request);
                        break;
                    }
                }
            }
            !queue.is_empty()
        });
        taken
    }

    /// The shards [`Repairs::report_failed`] recorded, with where they were placed.
    pub fn failed(&self) -> Vec<(ShardId, FailedShard)> {
        self.state
            .lock()
            .map(|state| {
                state
                    .failed
                    .iter()
                    .map(|(shard, failed)| (*shard, failed.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets failed shards the catalog no longer places where they failed (rebuilt
    /// elsewhere, or their object deleted): their ids are never placed again.
    pub fn forget_failed(&self, shards: &[ShardId]) {
        if let Ok(mut state) = self.state.lock() {
            for shard in shards {
                state.failed.remove(shard);
            }
        }
    }

    /// Replaces the queue with a survey round's needs (or, for a round continuing a
    /// survey pass, adds them), leaving out leased segments; records the totals when the
    /// round finished a pass.
    fn install(&self, found: Option<Survey>, needs: Vec<Need>, replace: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        expire(&mut state);
        let State { queue, leases, .. } = &mut *state;
        let fresh = needs
            .into_iter()
            .filter(|need| !leases.contains_key(&key_of(need)));
        if replace {
            *queue = fresh.collect();
        } else {
            // A pass over several rounds keeps the whole queue most urgent first.
            queue.extend(fresh);
            crate::durability::sort_needs(queue.make_contiguous());
        }
        if let Some(found) = found {
            state.survey = Some(found);
            state.surveyed_ms = Some(unix_now_ms());
        }
    }

    /// Queues rebalancing moves behind whatever else waits.
    fn install_moves(&self, moves: Vec<Need>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let State { queue, leases, .. } = &mut *state;
        queue.extend(
            moves
                .into_iter()
                .filter(|need| !leases.contains_key(&key_of(need))),
        );
    }

    /// Whether nothing waits and no job is out: the moment to plan rebalancing, so moves
    /// are planned from a catalog that already reflects the previous ones.
    fn idle(&self) -> bool {
        self.state.lock().is_ok_and(|mut state| {
            expire(&mut state);
            state.queue.is_empty() && state.leases.is_empty()
        })
    }

    /// Forgets everything (this member stopped leading).
    fn clear(&self) {
        if let Ok(mut state) = self.state.lock() {
            // A failed audit is the leader's own observation; the next leader audits anew.
            state.failed.clear();
            state.survey = None;
            state.surveyed_ms = None;
            state.queue.clear();
            state.leases.clear();
        }
    }

    /// The next segment to work on, leased to the caller; or how long to wait before
    /// asking again.
    pub fn next(&self) -> Result<Need, Duration> {
        let idle = self.settings.interval.max(Duration::from_millis(100));
        let Ok(mut state) = self.state.lock() else {
            return Err(idle);
        };
        expire(&mut state);
        if state.queue.is_empty() {
            return Err(idle);
        }
        if state.leases.len() >= self.settings.concurrency.max(1) {
            return Err(idle.min(Duration::from_secs(1)));
        }
        // Whole jobs are granted; the budget may go below zero by one job, which the
        // refill then pays back before the next grant.
        if self.settings.bandwidth > 0 {
            let rate = self.settings.bandwidth as f64;
            let now = Instant::now();
            let refill = now.duration_since(state.filled).as_secs_f64() * rate;
            // At most a second's worth is saved up, so an idle spell does not buy a burst.
            state.budget = (state.budget + refill).min(rate);
            state.filled = now;
            if state.budget <= 0.0 {
                let wait = Duration::from_secs_f64(-state.budget / rate);
                return Err(wait.clamp(Duration::from_millis(10), Duration::from_secs(5)));
            }
        }
        let need = state.queue.pop_front().ok_or(idle)?;
        if self.settings.bandwidth > 0 {
            state.budget -= job_bytes(&need) as f64;
        }
        let lease = Instant::now() + self.settings.lease;
        state.leases.insert(key_of(&need), lease);
        Ok(need)
    }

    /// Ends the lease of a segment (its job was done, failed, or could not be prepared).
    pub fn release(&self, bucket: &str, key: &str, part: Option<u32>, segment: u32) {
        if let Ok(mut state) = self.state.lock() {
            state
                .leases
                .remove(&(bucket.to_string(), key.to_string(), part, segment));
        }
    }
}

/// Bytes a job moves: a rebuild reads `k` shards and writes each replaced one; a move of
/// shards that are still readable copies each (one read, one write).
fn job_bytes(need: &Need) -> u64 {
    let replaced = (need.missing.len() + need.draining.len() + need.moving.len()) as u64;
    let shards = if need.missing.is_empty() {
        2 * replaced
    } else {
        u64::from(need.k) + replaced
    };
    shards.saturating_mul(need.shard_size)
}

/// Drops leases whose gateway went quiet.
fn expire(state: &mut State) {
    let now = Instant::now();
    state.leases.retain(|_, until| *until > now);
}

fn key_of(need: &Need) -> SegmentKey {
    (
        need.bucket.clone(),
        need.key.clone(),
        need.part,
        need.segment,
    )
}

/// Why a need is worked on: lost shards are a repair, moves off draining nodes a drain,
/// moves out of crowded organisations restore the spread, the rest rebalancing.
pub fn reason(need: &Need) -> MoveReason {
    if !need.missing.is_empty() {
        MoveReason::Repair
    } else if !need.draining.is_empty() {
        MoveReason::Drain
    } else if need.respread {
        MoveReason::Spread
    } else {
        MoveReason::Rebalance
    }
}

/// Most rebalancing moves planned per survey.
const MAX_MOVES: usize = 256;

/// Surveys the catalog every `interval` while this member leads ([`Surveyor`]: the
/// segments that can need work, from the shards-by-node index, and a slow spread pass);
/// idle (and with an empty queue) otherwise. A draining node is retired once no shard is
/// placed on it and the collector has deleted the copies it moved, so a gone node holds
/// nothing. Returns when Raft shuts down.
pub async fn run(raft: Raft<TypeConfig>, catalog: Catalog, repairs: Arc<Repairs>) {
    let mut ticks = crate::raft::leader_ticks::LeaderTicks::new(&raft, repairs.settings.interval);
    let limits = SurveyLimits {
        spread_per_round: repairs.settings.spread_check_segments,
        ..SurveyLimits::default()
    };
    // A new leader starts its passes afresh: the cursors are this member's own.
    let mut surveyor = Some(Surveyor::new(limits));
    while let Some(leading) = ticks.next().await {
        if !leading {
            repairs.clear();
            surveyor = Some(Surveyor::new(limits));
            continue;
        }
        // The survey must see every commit of earlier terms, or it would rebuild shards
        // that were already replaced.
        match tokio::time::timeout(Duration::from_secs(10), raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            _ => continue,
        }
        let snapshot = catalog.clone();
        let threshold = repairs.settings.threshold;
        let missing = repairs.missing_on();
        let mut taken = surveyor.take().unwrap_or_else(|| Surveyor::new(limits));
        let surveyed = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let nodes = snapshot.nodes()?;
                let states: HashMap<NodeId, NodeState> =
                    nodes.iter().map(|n| (n.id, n.state)).collect();
                // Organisations able to take the shards a respread moves.
                let mut room: HashMap<String, usize> = HashMap::new();
                for node in nodes.iter().filter(|n| n.state.accepts_new_shards()) {
                    *room.entry(node.org.clone()).or_default() += 1;
                }
                let orgs: HashMap<NodeId, String> =
                    nodes.into_iter().map(|n| (n.id, n.org)).collect();
                let round = taken.round(&snapshot, &states, &orgs, &room, &missing, threshold)?;
                // Only draining nodes can be retired: their garbage is read per node.
                let garbage = match &round.survey {
                    Some(found) => drained_candidates(&snapshot, &states, found)?,
                    None => Vec::new(),
                };
                Ok::<_, crate::catalog::CatalogFault>((round, states, garbage))
            })();
            (taken, result)
        })
        .await;
        match surveyed {
            Ok((taken, result)) => {
                surveyor = Some(taken);
                match result {
                    Ok((round, states, drained)) => {
                        if !round.needs.is_empty() {
                            tracing::debug!(
                                queue = round.needs.len(),
                                "durability survey: segments need work"
                            );
                        }
                        let quiet = round.needs.is_empty() && repairs.idle();
                        let finished = round.survey.is_some();
                        repairs.install(round.survey, round.needs, round.replace);
                        for node in drained {
                            finish_drain(&raft, node).await;
                        }
                        if finished && quiet && repairs.settings.rebalance_permille > 0 {
                            plan_rebalance(&catalog, &repairs, &states).await;
                        }
                    }
                    Err(err) => tracing::warn!(%err, "durability survey failed"),
                }
            }
            Err(err) => tracing::warn!(%err, "durability survey panicked"),
        }
    }
}

/// Draining nodes nothing is placed on any more and that hold no garbage: done.
fn drained_candidates(
    catalog: &Catalog,
    states: &HashMap<NodeId, NodeState>,
    found: &Survey,
) -> Result<Vec<NodeId>, crate::catalog::CatalogFault> {
    let empty: Vec<NodeId> = states
        .iter()
        .filter(|(id, state)| {
            **state == NodeState::Draining && !found.shards_by_node.contains_key(id)
        })
        .map(|(id, _)| *id)
        .collect();
    let mut drained = Vec::with_capacity(empty.len());
    for id in empty {
        if !catalog.holds_garbage(&id)? {
            drained.push(id);
        }
    }
    Ok(drained)
}

/// Queues moves from over-full nodes to under-full ones if utilisation is uneven.
async fn plan_rebalance(catalog: &Catalog, repairs: &Repairs, states: &HashMap<NodeId, NodeState>) {
    let Ok(nodes) = catalog.nodes() else {
        return;
    };
    // Per-node placed bytes are counters the catalog keeps with every change.
    let Ok(totals) = catalog.placed_totals_by_node() else {
        return;
    };
    let placed: std::collections::BTreeMap<NodeId, u64> =
        totals.into_iter().map(|(n, t)| (n, t.bytes)).collect();
    let capacity: HashMap<NodeId, u64> = nodes
        .iter()
        .filter(|n| n.state.accepts_new_shards())
        .map(|n| (n.id, n.capacity))
        .collect();
    let threshold = f64::from(repairs.settings.rebalance_permille) / 1000.0;
    let Some((shed, receivers)) = crate::durability::imbalance(&capacity, &placed, threshold)
    else {
        return;
    };
    let snapshot = catalog.clone();
    let states = states.clone();
    let planned = tokio::task::spawn_blocking(move || {
        let mut start = [0u8; 16];
        getrandom::fill(&mut start).map_err(|e| crate::catalog::CatalogFault(e.to_string()))?;
        crate::durability::rebalance_moves(
            &snapshot,
            &states,
            &shed,
            &receivers,
            MAX_MOVES,
            ShardId(start),
        )
    })
    .await;
    match planned {
        Ok(Ok(moves)) if !moves.is_empty() => {
            tracing::info!(moves = moves.len(), "utilisation uneven: rebalancing");
            repairs.install_moves(moves);
        }
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(%err, "planning rebalancing failed"),
        Err(err) => tracing::warn!(%err, "planning rebalancing panicked"),
    }
}

/// A draining node nothing depends on and that holds no garbage any more is gone.
async fn finish_drain(raft: &Raft<TypeConfig>, node: NodeId) {
    let command = Command::ChangeNodeState {
        node,
        from: NodeState::Draining,
        to: NodeState::Gone,
        now_ms: unix_now_ms(),
    };
    match tokio::time::timeout(Duration::from_secs(10), raft.client_write(command)).await {
        Ok(Ok(response)) => match response.data {
            CommandResult::Refused(err) => {
                tracing::debug!(%node, %err, "drain not finished: state changed");
            }
            _ => tracing::info!(%node, "node drained: no shard depends on it, it is gone"),
        },
        Ok(Err(err)) => tracing::warn!(%node, %err, "could not mark a drained node gone"),
        Err(_) => tracing::warn!(%node, "marking a drained node gone timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node refusing reads is asked the refused shard as a read; one gateway repeating
    /// the report asks once, and a refusal it reported first does not hide bad bytes it
    /// reads later (asked as an audit).
    #[test]
    fn a_node_refusing_reads_is_audited_once_per_gateway_and_shard() {
        let repairs = Repairs::new(RepairSettings {
            interval: Duration::from_secs(60),
            threshold: 1,
            concurrency: 1,
            bandwidth: 0,
            lease: Duration::from_secs(60),
            rebalance_permille: 0,
            lost_after: Duration::from_secs(60),
            spread_check_segments: 0,
        });
        let key = |n: u8| cairn_proto::identity::SecretKey::from_seed([n; 32]).public();
        let (gateway, other, node) = (key(1), key(2), key(3));
        let shard = ShardId([7; 16]);
        let at = FailedShard {
            node,
            bucket: "b".into(),
            key: "k".into(),
        };
        assert!(repairs.take_refusal(gateway, shard, at.clone()));
        assert!(!repairs.take_refusal(gateway, shard, at.clone()));
        let asked = |as_read| AuditRequest {
            shard,
            at: at.clone(),
            as_read,
        };
        let all = |_: &NodeId| true;
        assert_eq!(repairs.take_audit_requests(all), vec![asked(true)]);
        assert!(!repairs.take_refusal(gateway, shard, at.clone()));
        assert!(repairs.take_audit_requests(all).is_empty(), "asked once");
        assert!(repairs.take_refusal(other, shard, at.clone()));
        assert!(repairs.take_report(gateway, shard, at.clone()));
        // One a round, oldest first; none while the node is busy with another challenge.
        assert!(repairs.take_audit_requests(|_| false).is_empty());
        assert_eq!(repairs.take_audit_requests(all), vec![asked(true)]);
        assert_eq!(repairs.take_audit_requests(all), vec![asked(false)]);
        assert!(repairs.take_audit_requests(all).is_empty());
        assert!(
            repairs.failed().is_empty(),
            "a refusal marks no shard failed"
        );

        // A shard that already failed an audit is not asked again on a later report; the
        // next report in the node's queue is.
        let (third, second) = (key(4), ShardId([8; 16]));
        assert!(repairs.take_report(third, shard, at.clone()));
        assert!(repairs.take_report(third, second, at.clone()));
        repairs.report_failed(shard, at.clone());
        let taken = repairs.take_audit_requests(all);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].shard, second);
        assert!(repairs.take_audit_requests(all).is_empty());
    }
}
