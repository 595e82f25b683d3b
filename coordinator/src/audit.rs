//! Audits: while leading, the coordinator challenges every live node holding data for
//! random slices of a random shard it signed a receipt for, and checks the answer against
//! the 32-byte root in the catalog.
//!
//! A round gives each node challenges in proportion to what it holds
//! ([`challenges_per_round`]: one per [`SHARDS_PER_CHALLENGE`] shards, at least one, at
//! most [`MAX_CHALLENGES_PER_ROUND`]), so a shard on a big node is as likely to be asked
//! about as one on a small node: each challenge is a shard picked uniformly among those the
//! catalog places on the node (drawn from the shards-by-node index: `sample_node`) and a few
//! random byte ranges of it. The node must return the bytes with slice proofs within the
//! deadline. Outcomes:
//!
//! - **passed**: every range verifies against the root;
//! - **failed**: a proof or byte is wrong, or the node denies holding the shard (not
//!   found, damaged, another root) — it signed a receipt for it;
//! - **missed**: no answer in time, a broken connection, or any refusal the node chooses
//!   (busy, a claimed bad range…; a refusal is never a pass). The node is *contained*: the
//!   same challenges are asked again in the following rounds (and no new ones), and only
//!   after `retries` further misses does one count as failed. A slow or lossy link delays an
//!   answer; it does not make it wrong, and the retried challenge cannot be prepared for
//!   better than the first (the ranges are the same, the bytes were due all along).
//!
//! Judgements are committed in one [`Command::RecordAudits`] per round; applying it moves
//! the scores ([`crate::catalog::model::Reputation`]) and disqualifies nodes that fall
//! below the threshold, after which the survey counts their shards lost and repair
//! rebuilds them elsewhere. Before committing, each judged shard is looked up again: an
//! object deleted or a shard moved during the round is not held against anyone.
//!
//! A failed shard is also reported to the repair scheduler ([`Repairs::report_failed`]),
//! which counts it lost from then on: it is rebuilt on another node at once, not only once
//! its holder has failed often enough to be disqualified. A node that loses or spoils one
//! shard is not trusted with that shard again, whatever its score; the record lives on the
//! leader only (a new leader's audits find a bad copy again) and ends when the catalog no
//! longer places the shard there.
//!
//! A gateway that reads bad bytes from a node reports the shard; the report is counted
//! once per gateway and shard and judges nothing by itself (one gateway's word could
//! otherwise disqualify anyone): it makes the next round audit that very shard on that
//! node, and the audit judges.
//!
//! Shards a node's own inventory already admits losing are not audited: they are being
//! rebuilt, and the node told the truth about them.
//!
//! The challenge must be unpredictable to the node, so shards and ranges are drawn from a
//! keyed BLAKE3 stream under a fresh random key each round.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_client::node::{ClientError, NodeClient};
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, SignedOrder, unix_now_ms};
use cairn_proto::wire::ErrorCode;
use openraft::Raft;

use crate::catalog::model::{NodeRecord, ObjectBody, ReputationPolicy};
use crate::catalog::{Catalog, Command};
use crate::liveness::Liveness;
use crate::node_clients::{NodeClients, sign_own_order};
use crate::raft::types::TypeConfig;
use crate::repair::{AuditRequest, FailedShard, Repairs};

/// Ranges asked per challenge.
const RANGES_PER_AUDIT: usize = 4;
/// Longest range asked: proofs come in 16 KiB chunk groups anyway, so a short range costs
/// the node one group of reading and the auditor one group of hashing.
const RANGE_LEN: u64 = 1024;
/// Lifetime of the audit orders the coordinator signs for itself.
const ORDER_SECS: u64 = 120;

/// Shards a node holds per challenge it is asked each round.
pub const SHARDS_PER_CHALLENGE: u64 = 1_000;
/// Most challenges one node is asked per round, however much it holds: a challenge costs
/// the node a few KiB read and the auditor a few proofs checked.
pub const MAX_CHALLENGES_PER_ROUND: usize = 16;

/// Challenges per round for a node holding `held` shards: `⌈held / 1000⌉`, between 1 and
/// [`MAX_CHALLENGES_PER_ROUND`]. Audits in proportion to holdings make the time to catch a
/// node that loses a share of its shards depend on the share, not on how much it holds
/// (up to the cap).
pub fn challenges_per_round(held: u64) -> usize {
    let wanted = held.div_ceil(SHARDS_PER_CHALLENGE).max(1);
    usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .min(MAX_CHALLENGES_PER_ROUND)
}

/// Pace and patience of audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSettings {
    /// Time between rounds; zero disables audits.
    pub interval: Duration,
    /// How long a node has to answer one challenge.
    pub deadline: Duration,
    /// Misses of one challenge forgiven before it counts as a failure.
    pub retries: u32,
    /// Only nodes heard from within this long are challenged (silence is the failure
    /// detector's business, not a failed audit).
    pub alive_within: Duration,
    /// How judgements move scores.
    pub policy: ReputationPolicy,
}

impl From<&crate::config::CoordinatorConfig> for AuditSettings {
    fn from(config: &crate::config::CoordinatorConfig) -> Self {
        Self {
            interval: Duration::from_millis(config.audit_interval_ms),
            deadline: Duration::from_millis(config.audit_deadline_ms),
            retries: config.audit_retries,
            alive_within: Duration::from_secs(config.suspect_after_secs),
            policy: config.reputation_policy(),
        }
    }
}

/// Audit counters for status and metrics (leader memory, since it took office).
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Challenges answered correctly.
    pub passed: AtomicU64,
    /// Challenges failed (wrong bytes, denied, or missed past every retry).
    pub failed: AtomicU64,
    /// Challenges missed and held for a retry.
    pub missed: AtomicU64,
    /// Nodes with a challenge outstanding after a miss.
    pub contained: AtomicU64,
    /// Rounds completed.
    pub rounds: AtomicU64,
}

/// What the auditor works with.
pub struct AuditContext {
    /// This member's Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The catalog.
    pub catalog: Catalog,
    /// QUIC endpoint to reach nodes from.
    pub endpoint: quinn::Endpoint,
    /// The coordinator key: it signs the audit orders and is the auditor's identity.
    pub key: SecretKey,
    /// Heartbeats (only nodes heard from lately are challenged).
    pub liveness: Arc<Liveness>,
    /// Shards inventories admit missing (not audited); failed shards are reported to it.
    pub repairs: Arc<Repairs>,
    /// Counters.
    pub stats: Arc<AuditStats>,
}

/// One shard chosen for a challenge, and where the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    bucket: String,
    key: String,
    shard: ShardId,
    root: ShardRoot,
    size: u64,
}

/// A challenge: a shard and the ranges asked of it.
#[derive(Debug, Clone)]
struct Challenge {
    target: Target,
    ranges: Vec<Range<u64>>,
    /// Asked as a read: a `GetShard` of the first range under a read order, from a key
    /// made for this challenge, so it looks to the node like any reader's request.
    as_read: bool,
    /// Times it went unanswered.
    misses: u32,
}

/// How one challenge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    /// No answer (deadline, connection): retried before it counts.
    Missed,
    /// Perhaps not the node's doing (an order refused as expired or replayed): asked
    /// again at once, and dropped only if this side cannot sign an order at all.
    Void,
}

/// Audits while this member leads. Returns when Raft shuts down.
pub async fn run(context: AuditContext, settings: AuditSettings) {
    if settings.interval.is_zero() {
        return;
    }
    let mut auditor = Auditor {
        clients: NodeClients::new(context.endpoint.clone(), context.key.clone()),
        contained: HashMap::new(),
        context,
        settings,
    };
    let mut ticks =
        crate::raft::leader_ticks::LeaderTicks::new(&auditor.context.raft, settings.interval);
    while let Some(leading) = ticks.next().await {
        if !leading {
            auditor.contained.clear();
            continue;
        }
        if let Err(err) = auditor.round().await {
            tracing::warn!(%err, "audit round incomplete");
        }
    }
}

struct Auditor {
    context: AuditContext,
    settings: AuditSettings,
    clients: NodeClients,
    /// Challenges missed and due again, per node.
    contained: HashMap<NodeId, Vec<Challenge>>,
}

impl Auditor {
    async fn round(&mut self) -> Result<(), String> {
        self.forget_moved_failures().await?;
        let nodes: Vec<NodeRecord> = self
            .context
            .catalog
            .nodes()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|node| {
                node.state.holds_data()
                    && self
                        .context
                        .liveness
                        .last(&node.id)
                        .is_some_and(|(ago, _)| ago <= self.settings.alive_within)
            })
            .collect();
        // Containment ends with the node: a node no longer holding data is judged by
        // its state, not its last challenge.
        let holding: HashSet<NodeId> = nodes.iter().map(|n| n.id).collect();
        self.contained.retain(|node, _| holding.contains(node));

        let mut rng = AuditRng::new()?;
        let fresh: HashSet<NodeId> = holding
            .iter()
            .filter(|id| !self.contained.contains_key(id))
            .copied()
            .collect();
        let mut targets = self.sample(&fresh, &mut rng).await?;
        // Shards gateways read bad are audited before any random pick on their node.
        let requested = self.requested().await?;
        let mut challenges = Vec::new();
        for node in &nodes {
            let asked = match self.contained.remove(&node.id) {
                Some(challenges) => challenges,
                None => {
                    let mut picks = targets.remove(&node.id).unwrap_or_default();
                    let mut as_read = false;
                    if let Some((target, read)) = requested.get(&node.id) {
                        // The requested shard takes the place of one random pick.
                        picks.retain(|t| t.shard != target.shard);
                        picks.truncate(picks.len().saturating_sub(1));
                        picks.insert(0, target.clone());
                        as_read = *read;
                    }
                    picks
                        .into_iter()
                        .enumerate()
                        .map(|(i, target)| Challenge {
                            ranges: ranges(target.size, &mut rng),
                            target,
                            as_read: as_read && i == 0,
                            misses: 0,
                        })
                        .collect()
                }
            };
            if asked.is_empty() {
                continue;
            }
            match self.clients.get(node).await {
                Ok(client) => {
                    for challenge in asked {
                        challenges.push((node.id, client.clone(), challenge));
                    }
                }
                Err(err) => {
                    tracing::warn!(node = %node.id, %err, "cannot audit node");
                    self.contained.insert(node.id, asked);
                }
            }
        }

        let deadline = self.settings.deadline;
        let key = self.context.key.clone();
        let mut asking = tokio::task::JoinSet::new();
        for (node, client, challenge) in challenges {
            let key = key.clone();
            asking.spawn(async move {
                let outcome = challenge_node(&key, node, &client, &challenge, deadline).await;
                (node, challenge, outcome)
            });
        }
        let answers = asking.join_all().await;

        let mut results = Vec::new();
        for (node, mut challenge, outcome) in answers {
            let outcome = match outcome {
                Outcome::Missed if challenge.misses >= self.settings.retries => Outcome::Failed,
                other => other,
            };
            match outcome {
                Outcome::Missed => {
                    challenge.misses += 1;
                    tracing::info!(%node, shard = %challenge.target.shard, misses = challenge.misses, "audit missed; will ask again");
                    self.context.stats.missed.fetch_add(1, Ordering::Relaxed);
                    self.contained.entry(node).or_default().push(challenge);
                }
                Outcome::Passed | Outcome::Failed => results.push((node, challenge, outcome)),
                Outcome::Void => {}
            }
        }
        self.context
            .stats
            .contained
            .store(self.contained.len() as u64, Ordering::Relaxed);
        let judged = self.still_placed(results).await?;
        if !judged.is_empty() {
            for (node, _, passed) in &judged {
                let counter = if *passed {
                    &self.context.stats.passed
                } else {
                    tracing::warn!(%node, "node failed an audit");
                    &self.context.stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let command = Command::RecordAudits {
                results: judged
                    .iter()
                    .map(|(node, _, passed)| (*node, *passed))
                    .collect(),
                policy: self.settings.policy,
                now_ms: unix_now_ms(),
            };
            tokio::time::timeout(
                Duration::from_secs(10),
                self.context.raft.client_write(command),
            )
            .await
            .map_err(|_| "recording audits timed out".to_string())?
            .map_err(|e| e.to_string())?;
            // The failed copies are rebuilt now, whatever becomes of their nodes.
            for (node, target, passed) in judged {
                if !passed {
                    let failed = FailedShard {
                        node,
                        bucket: target.bucket,
                        key: target.key,
                    };
                    self.context.repairs.report_failed(target.shard, failed);
                }
            }
        }
        self.context.stats.rounds.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`challenges_per_round`] distinct shards per node in `nodes`, uniformly among
    /// those the catalog places there and no inventory admits missing.
    async fn sample(
        &self,
        nodes: &HashSet<NodeId>,
        rng: &mut AuditRng,
    ) -> Result<HashMap<NodeId, Vec<Target>>, String> {
        if nodes.is_empty() {
            return Ok(HashMap::new());
        }
        let catalog = self.context.catalog.clone();
        let missing = self.context.repairs.missing();
        let nodes = nodes.clone();
        let mut rng = rng.fork();
        tokio::task::spawn_blocking(move || {
            let view = catalog.view()?;
            let mut chosen: HashMap<NodeId, Vec<Target>> = HashMap::new();
            for node in &nodes {
                let held = view.placed_totals(node)?.shards;
                if held == 0 {
                    continue;
                }
                let targets = sample_node(&view, node, held, &missing, &mut rng)?;
                if !targets.is_empty() {
                    chosen.insert(*node, targets);
                }
            }
            Ok::<_, crate::catalog::CatalogFault>(chosen)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// The shards gateways reported since the last round, where the catalog still places
    /// them on the node named, as challenges to ask.
    async fn requested(&self) -> Result<HashMap<NodeId, (Target, bool)>, String> {
        // A contained node answers for its earlier challenges first.
        let contained = &self.contained;
        let requests = self
            .context
            .repairs
            .take_audit_requests(|node| !contained.contains_key(node));
        if requests.is_empty() {
            return Ok(HashMap::new());
        }
        let catalog = self.context.catalog.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = HashMap::new();
            for AuditRequest { shard, at, as_read } in requests {
                let Some(object) = catalog.object(&at.bucket, &at.key)? else {
                    continue;
                };
                let ObjectBody::Segments { erasure, segments } = &object.body else {
                    continue;
                };
                let Ok(codec) =
                    cairn_erasure::Codec::new(usize::from(erasure.k), usize::from(erasure.m))
                else {
                    continue;
                };
                let placed = segments.iter().find_map(|segment| {
                    segment
                        .shards
                        .iter()
                        .find(|s| s.id == shard && s.node == at.node)
                        .map(|s| (s.root, codec.shard_len(segment.len)))
                });
                if let Some((root, size)) = placed.filter(|(_, size)| *size > 0) {
                    let target = Target {
                        bucket: at.bucket.clone(),
                        key: at.key.clone(),
                        shard,
                        root,
                        size,
                    };
                    out.insert(at.node, (target, as_read));
                }
            }
            Ok::<_, crate::catalog::CatalogFault>(out)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Stops counting failed shards lost once the catalog no longer places them on the
    /// node that failed them (rebuilt elsewhere, or their object gone).
    async fn forget_moved_failures(&self) -> Result<(), String> {
        let failed = self.context.repairs.failed();
        if failed.is_empty() {
            return Ok(());
        }
        let catalog = self.context.catalog.clone();
        let moved = tokio::task::spawn_blocking(move || {
            let mut moved = Vec::new();
            for (shard, at) in failed {
                let placed = catalog.object(&at.bucket, &at.key)?.is_some_and(|object| {
                    object
                        .body
                        .shards()
                        .any(|s| s.id == shard && s.node == at.node)
                });
                if !placed {
                    moved.push(shard);
                }
            }
            Ok::<_, crate::catalog::CatalogFault>(moved)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.context.repairs.forget_failed(&moved);
        Ok(())
    }

    /// The judgements whose shard the catalog still places on the judged node, with the
    /// shard and whether the node passed.
    async fn still_placed(
        &self,
        results: Vec<(NodeId, Challenge, Outcome)>,
    ) -> Result<Vec<(NodeId, Target, bool)>, String> {
        let catalog = self.context.catalog.clone();
        tokio::task::spawn_blocking(move || {
            let mut judged = Vec::new();
            for (node, challenge, outcome) in results {
                let target = &challenge.target;
                let Some(object) = catalog.object(&target.bucket, &target.key)? else {
                    continue;
                };
                if object
                    .body
                    .shards()
                    .any(|s| s.id == target.shard && s.node == node && s.root == target.root)
                {
                    judged.push((node, challenge.target, outcome == Outcome::Passed));
                }
            }
            Ok::<_, crate::catalog::CatalogFault>(judged)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// Asks `node` one challenge and judges the answer.
async fn challenge_node(
    key: &SecretKey,
    node: NodeId,
    client: &NodeClient,
    challenge: &Challenge,
    deadline: Duration,
) -> Outcome {
    let started = tokio::time::Instant::now();
    let mut reasked = false;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        let asked = if challenge.as_read {
            ask_as_read(key, node, client, challenge, left).await
        } else {
            ask_as_audit(key, node, client, challenge, left).await
        };
        match asked {
            Err(Asked::Late) => return Outcome::Missed,
            Err(Asked::Unsigned) => return Outcome::Void,
            Ok(outcome) => return outcome,
            Err(Asked::Refused(err)) => match judge_error(node, challenge.target.shard, &err) {
                // Possibly this side's doing: asked again at once with a fresh order,
                // once; the same refusal again is the node's.
                Outcome::Void if !reasked => reasked = true,
                Outcome::Void => {
                    tracing::warn!(%node, shard = %challenge.target.shard, %err, "audit order refused twice");
                    return Outcome::Missed;
                }
                outcome => return outcome,
            },
        }
    }
}

/// Why one asking of a challenge gave no judgement by itself.
enum Asked {
    /// No answer within the deadline.
    Late,
    /// This side could not sign an order.
    Unsigned,
    /// The node refused, or the exchange broke: judged by [`judge_error`].
    Refused(ClientError),
}

/// Asks the challenge's ranges under an audit order, as the coordinator.
async fn ask_as_audit(
    key: &SecretKey,
    node: NodeId,
    client: &NodeClient,
    challenge: &Challenge,
    left: Duration,
) -> Result<Outcome, Asked> {
    let target = &challenge.target;
    let action = Action::Audit {
        shard: target.shard,
        root: target.root,
        size: target.size,
    };
    let order = sign_own_order(key, node, action, ORDER_SECS).map_err(|err| {
        tracing::warn!(%err, "cannot sign an audit order");
        Asked::Unsigned
    })?;
    let proofs = tokio::time::timeout(left, client.audit(&order, challenge.ranges.clone()))
        .await
        .map_err(|_| Asked::Late)?
        .map_err(Asked::Refused)?;
    for (proof, range) in proofs.iter().zip(&challenge.ranges) {
        if let Err(err) = proof.verify(&target.root, target.size, range.clone()) {
            tracing::warn!(%node, shard = %target.shard, ?range, %err, "audit answer does not verify");
            return Ok(Outcome::Failed);
        }
    }
    Ok(Outcome::Passed)
}

/// Reads the challenge's first range as a reader would: a key made for this one request,
/// a read order the coordinator signs for that key, a `GetShard`, the bytes verified
/// against the catalog's root. A node that answers audits but refuses gateways' reads
/// cannot tell this from a reader it has not met, so its refusal is judged like a refused
/// audit. (A node that learns every gateway's key and serves only unknown ones still
/// escapes this; that would take keys the node has no way to learn from the orders.)
async fn ask_as_read(
    key: &SecretKey,
    node: NodeId,
    client: &NodeClient,
    challenge: &Challenge,
    left: Duration,
) -> Result<Outcome, Asked> {
    let target = &challenge.target;
    let reader = SecretKey::generate();
    let mut serial = [0u8; 8];
    getrandom::fill(&mut serial).map_err(|err| {
        tracing::warn!(%err, "cannot draw a read order's serial");
        Asked::Unsigned
    })?;
    let order = SignedOrder::sign(
        Order {
            node,
            client: reader.public(),
            serial: u64::from_le_bytes(serial),
            expires_at: cairn_proto::order::unix_now() + ORDER_SECS,
            action: Action::Get {
                shard: target.shard,
                root: target.root,
                size: target.size,
            },
        },
        key,
    );
    let range = challenge.ranges.first().cloned();
    let read = client.as_key(reader);
    match tokio::time::timeout(left, read.get_shard(&order, range)).await {
        Err(_) => Err(Asked::Late),
        // get_shard verifies the bytes against the root before returning them.
        Ok(Ok(_)) => Ok(Outcome::Passed),
        Ok(Err(err)) => Err(Asked::Refused(err)),
    }
}

/// What a refusal or broken exchange says about the node.
///
/// A refusal is the node's choice, so it is never a pass: a node that keeps no bytes could
/// otherwise answer every challenge with `Busy` and stay unjudged. Denying the shard or
/// sending a wrong answer fails at once; any other refusal is a miss (the challenge is
/// asked again and fails after the retries), except an order refused as expired or
/// replayed, which may be this side's clock or serial: [`Outcome::Void`] tells the caller
/// to ask once more at once with a fresh order.
fn judge_error(node: NodeId, shard: ShardId, err: &ClientError) -> Outcome {
    match err {
        ClientError::Connect(_) | ClientError::Stream(_) => Outcome::Missed,
        ClientError::Refused { code, .. } => match code {
            // It signed a receipt for this shard: denying it now is losing it.
            ErrorCode::NotFound | ErrorCode::Damaged | ErrorCode::RootMismatch => {
                tracing::warn!(%node, %shard, %err, "node denies a shard it holds a receipt for");
                Outcome::Failed
            }
            ErrorCode::Expired | ErrorCode::Replayed => Outcome::Void,
            // Busy, a failing disk, a claimed bad signature or range: the node's to fix
            // within the retries.
            _ => {
                tracing::warn!(%node, %shard, %err, "node refused an audit");
                Outcome::Missed
            }
        },
        ClientError::Protocol(_) | ClientError::BadProof(_) | ClientError::BadReceipt(_) => {
            tracing::warn!(%node, %shard, %err, "audit answer malformed");
            Outcome::Failed
        }
    }
}

/// `RANGES_PER_AUDIT` random ranges of at most `RANGE_LEN` bytes inside a shard of `size`
/// bytes (`size ≥ 1`).
fn ranges(size: u64, rng: &mut AuditRng) -> Vec<Range<u64>> {
    (0..RANGES_PER_AUDIT)
        .map(|_| {
            let start = rng.below(size);
            start..(start + RANGE_LEN).min(size)
        })
        .collect()
}

/// Nodes holding at most this many shards are sampled exactly: their whole index range is
/// read (a bounded amount) and a uniform subset drawn from it.
const EXACT_SAMPLE_BELOW: u64 = 4096;

/// Draws for each challenge a node is due: tries per challenge before the round makes do
/// with fewer (every candidate may be missing, or a part of an upload in progress).
const DRAWS_PER_CHALLENGE: usize = 4;

/// [`challenges_per_round`] distinct shards of `node` (which holds `held`), drawn from the
/// shards-by-node index: uniformly from the whole range on a small node; on a large one,
/// each from a random id onwards (shard ids are random, so every shard is about equally
/// likely), in O(challenges) reads whatever the catalog's size. Shards an inventory
/// admitted missing and parts of uploads in progress are skipped.
fn sample_node(
    view: &crate::catalog::CatalogView,
    node: &NodeId,
    held: u64,
    missing: &HashSet<ShardId>,
    rng: &mut AuditRng,
) -> Result<Vec<Target>, crate::catalog::CatalogFault> {
    let want = challenges_per_round(held);
    let usable = |(shard, placement): &(ShardId, crate::catalog::Placement)| {
        object_locator(placement).is_some() && placement.size > 0 && !missing.contains(shard)
    };
    let mut picked: Vec<(ShardId, crate::catalog::Placement)> = Vec::new();
    if held <= EXACT_SAMPLE_BELOW {
        let mut all: Vec<_> = view
            .placed_page(node, None, EXACT_SAMPLE_BELOW as usize)?
            .into_iter()
            .filter(|c| usable(c))
            .collect();
        // A partial Fisher-Yates shuffle: the first `want` are a uniform subset.
        for i in 0..want.min(all.len()) {
            let j = i + rng.below((all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(want);
        picked = all;
    } else {
        for _ in 0..want * DRAWS_PER_CHALLENGE {
            if picked.len() == want {
                break;
            }
            let mut from = [0u8; 16];
            rng.0.fill(&mut from);
            let run = view.placed_from(node, ShardId(from), DRAWS_PER_CHALLENGE)?;
            if let Some(candidate) = run
                .into_iter()
                .find(|c| usable(c) && !picked.iter().any(|p| p.0 == c.0))
            {
                picked.push(candidate);
            }
        }
    }
    let mut targets = Vec::with_capacity(picked.len());
    for (shard, placement) in picked {
        let Some(at) = object_locator(&placement) else {
            continue;
        };
        let Some((bucket, key, object)) = view.object_at(&at.key)? else {
            continue;
        };
        let ObjectBody::Segments { segments, .. } = &object.body else {
            continue;
        };
        let named = segments
            .get(at.segment as usize)
            .and_then(|segment| segment.shards.get(usize::from(at.index)))
            .filter(|s| s.id == shard && s.node == *node);
        if let Some(record) = named {
            targets.push(Target {
                bucket,
                key,
                shard,
                root: record.root,
                size: placement.size,
            });
        }
    }
    Ok(targets)
}

/// The shards one audit round would challenge `node` about, drawn as a round draws them
/// (fresh randomness; shards in `missing` skipped): for measuring and testing the draw.
pub fn draw_targets(
    catalog: &Catalog,
    node: &NodeId,
    missing: &HashSet<ShardId>,
) -> Result<Vec<ShardId>, crate::catalog::CatalogFault> {
    let mut rng = AuditRng::new().map_err(crate::catalog::CatalogFault)?;
    let view = catalog.view()?;
    let held = view.placed_totals(node)?.shards;
    if held == 0 {
        return Ok(Vec::new());
    }
    Ok(sample_node(&view, node, held, missing, &mut rng)?
        .into_iter()
        .map(|target| target.shard)
        .collect())
}

/// The first object naming a placed shard (`None` if only parts of uploads in progress
/// do: those are not audited).
fn object_locator(placement: &crate::catalog::Placement) -> Option<&crate::catalog::Locator> {
    placement
        .at
        .iter()
        .find(|at| at.holder == crate::catalog::Holder::Object)
}

/// Unpredictable draws: a BLAKE3 output stream under a random key. A node seeing its own
/// challenges learns nothing about the next ones.
struct AuditRng(blake3::OutputReader);

impl AuditRng {
    fn new() -> Result<Self, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| e.to_string())?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: [u8; 32]) -> Self {
        Self(blake3::Hasher::new_keyed(&key).finalize_xof())
    }

    /// An independent stream, keyed by the next 32 bytes of this one.
    fn fork(&mut self) -> Self {
        let mut key = [0u8; 32];
        self.0.fill(&mut key);
        Self::from_key(key)
    }

    /// Uniform in `0..n` for `n ≥ 1` (multiply-shift; bias ≤ n/2⁶⁴).
    fn below(&mut self, n: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.0.fill(&mut bytes);
        ((u128::from(u64::from_le_bytes(bytes)) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_inside_the_shard() {
        let mut rng = AuditRng::from_key([7; 32]);
        for size in [1u64, 63, 64, 1024, 1025, 1 << 20] {
            for _ in 0..200 {
                for range in ranges(size, &mut rng) {
                    assert!(range.start < range.end, "{range:?} of {size}");
                    assert!(range.end <= size, "{range:?} of {size}");
                    assert!(range.end - range.start <= RANGE_LEN);
                }
            }
        }
    }

    #[test]
    fn draws_cover_every_value() {
        let mut rng = AuditRng::from_key([1; 32]);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            seen[rng.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn refusals_are_judged_by_who_is_at_fault() {
        let node = SecretKey::generate().public();
        let shard = ShardId([3; 16]);
        let refused = |code| ClientError::Refused {
            code,
            message: String::new(),
        };
        assert_eq!(
            judge_error(node, shard, &refused(ErrorCode::NotFound)),
            Outcome::Failed
        );
        assert_eq!(
            judge_error(node, shard, &refused(ErrorCode::Damaged)),
            Outcome::Failed
        );
        assert_eq!(
            judge_error(node, shard, &refused(ErrorCode::Expired)),
            Outcome::Void
        );
        assert_eq!(
            judge_error(node, shard, &ClientError::Stream("reset".into())),
            Outcome::Missed
        );
    }
}
