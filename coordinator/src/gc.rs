//! Garbage collection and inventory checks: the leader deletes shards nothing references
//! from the nodes that hold them, and compares what each node says it holds with what the
//! catalog says it should.
//!
//! Two kinds of shards are collected, each after its own safety delay:
//!
//! - **Garbage**: shards the catalog queued when their object was replaced or deleted, a
//!   part was dropped, or a shard was replaced by repair. They wait `garbage_delay` so
//!   that reads that began before the change (holding read orders) can finish.
//! - **Orphans**: shards a node's inventory lists that the catalog neither refers to nor
//!   queued, such as an upload's shards whose gateway died before the commit. A shard is
//!   collected only after it has been seen unreferenced, round after round, for
//!   `orphan_delay`, which commits enforce from the other side: a put order older than
//!   half the delay is refused at commit ([`crate::rpc::verify_shard`] callers pass the
//!   limit), so no upload can still turn an orphan into a referenced shard once it is
//!   collected. The count starts again on a new leader.
//!
//! The same inventory round finds shards the catalog places on a node that its inventory
//! lacks (a wiped disk, a deleted file, a shard found damaged): they are handed to the
//! repair scheduler as missing, so the survey counts them lost and they are rebuilt.
//!
//! Nodes are trusted for none of this: the catalog says what may be deleted, and a node
//! that claims a shard it lost is caught by audits, not by its inventory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::Action;
use cairn_proto::order::unix_now_ms;
use openraft::Raft;

use crate::catalog::model::NodeRecord;
use crate::catalog::{Catalog, CatalogFault, CatalogView, Command, ShardMap};
use crate::liveness::Liveness;
use crate::raft::types::TypeConfig;
use crate::repair::Repairs;

/// Garbage entries handled per round.
const GARBAGE_BATCH: usize = 10_000;
/// Expired uploads aborted per round.
const EXPIRE_BATCH: usize = 100;
/// Nodes garbage is deleted from at once.
const PARALLEL_NODES: usize = 32;
/// Longest one request to a node may take.
const NODE_LIMIT: Duration = Duration::from_secs(10);
/// Lifetime of the delete and inventory orders the collector signs for itself.
const ORDER_SECS: u64 = 120;
/// Shard ids a node's inventory may list beyond twice what the catalog places or queues
/// on it (16 MiB of ids): room for the uploads in flight and the orphans of failed ones
/// on a node the catalog does not yet place much on.
const INVENTORY_SLACK: usize = 1 << 20;

/// Pace and safety delays of collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    /// Time between rounds.
    pub interval: Duration,
    /// How long a garbage shard waits before it is deleted.
    pub garbage_delay: Duration,
    /// How long a shard must be seen unreferenced before it is deleted as an orphan.
    pub orphan_delay: Duration,
    /// A node is asked for its inventory only if a heartbeat came within this long.
    pub alive_within: Duration,
    /// Multipart uploads open longer than this are aborted.
    pub upload_expiry: Duration,
}

impl From<&crate::config::CoordinatorConfig> for GcSettings {
    fn from(config: &crate::config::CoordinatorConfig) -> Self {
        Self {
            interval: Duration::from_millis(config.gc_interval_ms),
            garbage_delay: Duration::from_secs(config.gc_delay_secs),
            orphan_delay: Duration::from_secs(config.orphan_delay_secs),
            alive_within: Duration::from_secs(config.suspect_after_secs),
            upload_expiry: Duration::from_secs(config.upload_expiry_secs),
        }
    }
}

/// What one node's inventory says against the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Shards the catalog placed on the node (before and after the inventory was taken)
    /// that the inventory lacks.
    pub missing: Vec<ShardId>,
    /// Shards the inventory lists that the catalog (after the inventory was taken) neither
    /// refers to nor queued as garbage.
    pub unreferenced: Vec<ShardId>,
}

/// Compares `inventory` of `node` with the catalog read just `before` and just `after` it.
///
/// Reading the catalog on both sides of the inventory is what makes the answer safe while
/// writes go on: a shard committed before the inventory was stored before it too, so its
/// absence means loss; a shard unreferenced after the inventory cannot belong to a commit
/// the inventory raced (such a commit would be visible in `after`).
pub fn reconcile(
    node: &NodeId,
    inventory: &[ShardId],
    before: &ShardMap,
    after: &ShardMap,
) -> Reconciled {
    let held: HashSet<&ShardId> = inventory.iter().collect();
    let empty = HashSet::new();
    let referenced_before = before.referenced.get(node).unwrap_or(&empty);
    let referenced_after = after.referenced.get(node).unwrap_or(&empty);
    let garbage_after = after.garbage.get(node).unwrap_or(&empty);
    let mut missing: Vec<ShardId> = referenced_before
        .intersection(referenced_after)
        .filter(|id| !held.contains(id))
        .copied()
        .collect();
    missing.sort();
    let unreferenced = inventory
        .iter()
        .filter(|id| !referenced_after.contains(id) && !garbage_after.contains(id))
        .copied()
        .collect();
    Reconciled {
        missing,
        unreferenced,
    }
}

/// Shard ids read per page of a node's range of the shards-by-node index.
pub const INDEX_PAGE: usize = 4096;

/// [`reconcile`] against the shards-by-node index instead of whole-catalog maps: the
/// catalog `before` and `after` the inventory are read snapshots, and `node`'s range of
/// the index is read `page` ids at a time and merged with the sorted inventory, so memory
/// holds the inventory and one page, never every shard id of the catalog. Answers as
/// [`reconcile`] does (`missing` in id order, `unreferenced` in inventory order).
pub fn reconcile_paged(
    node: &NodeId,
    inventory: &[ShardId],
    before: &CatalogView,
    after: &CatalogView,
    page: usize,
) -> Result<Reconciled, CatalogFault> {
    let mut held = inventory.to_vec();
    held.sort_unstable();
    held.dedup();
    let mut referenced = vec![false; held.len()];
    let mut missing = Vec::new();
    let mut cursor = None;
    loop {
        let batch = after.placed_page(node, cursor, page.max(1))?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        cursor = Some(*last);
        for (shard, _) in &batch {
            match held.binary_search(shard) {
                Ok(at) => referenced[at] = true,
                // Placed after the inventory too: only one placed before it as well was
                // due in it.
                Err(_) if before.is_placed(node, shard)? => missing.push(*shard),
                Err(_) => {}
            }
        }
        if batch.len() < page.max(1) {
            break;
        }
    }
    let mut unreferenced = Vec::new();
    for shard in inventory {
        let at = held.binary_search(shard).ok();
        if at.is_some_and(|at| referenced[at]) {
            continue;
        }
        if !after.is_garbage_on(node, shard)? {
            unreferenced.push(*shard);
        }
    }
    Ok(Reconciled {
        missing,
        unreferenced,
    })
}

/// Unreferenced shards seen in inventories, and since when (on a clock the caller keeps).
///
/// A shard may be deleted once it has been seen unreferenced for the orphan delay: it was
/// stored before the first inventory that listed it, so its put order is at least that old
/// and commits refuse it after half the delay. Between members' wall clocks (which date
/// the orders) and this monotonic clock, the other half absorbs any skew.
#[derive(Debug, Default)]
pub struct OrphanWatch {
    first_seen: HashMap<(NodeId, ShardId), Duration>,
}

impl OrphanWatch {
    /// Records that `node`'s inventory at `now` lists `unreferenced` shards nothing refers
    /// to, and returns those first seen so at least `delay` ago. The node's other watched
    /// shards are referenced again (or gone) and leave the watch.
    pub fn observe(
        &mut self,
        node: NodeId,
        unreferenced: &[ShardId],
        now: Duration,
        delay: Duration,
    ) -> Vec<ShardId> {
        let listed: HashSet<&ShardId> = unreferenced.iter().collect();
        self.first_seen
            .retain(|(n, shard), _| *n != node || listed.contains(shard));
        let mut due = Vec::new();
        for shard in unreferenced {
            let first = *self.first_seen.entry((node, *shard)).or_insert(now);
            if now.saturating_sub(first) >= delay {
                due.push(*shard);
            }
        }
        due
    }

    /// Stops watching a shard (it was deleted).
    pub fn forget(&mut self, node: NodeId, shard: ShardId) {
        self.first_seen.remove(&(node, shard));
    }

    /// Shards watched.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }

    /// Forgets everything (a new term starts the watch again).
    pub fn clear(&mut self) {
        self.first_seen.clear();
    }
}

/// What the collector did, for status and metrics (leader memory, since it took office).
#[derive(Debug, Default)]
pub struct GcStats {
    /// Shards deleted from nodes.
    pub deleted: std::sync::atomic::AtomicU64,
    /// Shards found missing in the latest round.
    pub missing: std::sync::atomic::AtomicU64,
    /// Unreferenced shards being watched before they are collected.
    pub orphans_pending: std::sync::atomic::AtomicU64,
}

/// What the collector works with.
pub struct GcContext {
    /// This member's Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The catalog.
    pub catalog: Catalog,
    /// QUIC endpoint to reach nodes from.
    pub endpoint: quinn::Endpoint,
    /// The coordinator key: it signs the collector's own orders and is its identity.
    pub key: SecretKey,
    /// Heartbeats (only nodes heard from lately are asked for inventories).
    pub liveness: Arc<Liveness>,
    /// Where missing shards are reported.
    pub repairs: Arc<Repairs>,
    /// Counters for status and metrics.
    pub stats: Arc<GcStats>,
}

/// Collects garbage and checks inventories while this member leads. Returns when Raft
/// shuts down.
pub async fn run(context: GcContext, settings: GcSettings) {
    let GcContext {
        raft,
        catalog,
        endpoint,
        key,
        liveness,
        repairs,
        stats,
    } = context;
    let mut ticks = crate::raft::leader_ticks::LeaderTicks::new(&raft, settings.interval);
    let mut collector = Collector {
        catalog,
        clients: crate::node_clients::NodeClients::new(endpoint, key),
        orphans: OrphanWatch::default(),
        started: Instant::now(),
        settings,
    };
    while let Some(leading) = ticks.next().await {
        if !leading {
            // A later term starts the orphan watch from scratch.
            collector.orphans.clear();
            repairs.set_missing(HashMap::new());
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            _ => continue,
        }
        if let Err(err) = collector.round(&raft, &liveness, &repairs, &stats).await {
            tracing::warn!(%err, "garbage collection round incomplete");
        }
    }
}

struct Collector {
    catalog: Catalog,
    clients: crate::node_clients::NodeClients,
    /// Unreferenced shards and when this leader first saw them so.
    orphans: OrphanWatch,
    /// The collector's clock for the orphan watch.
    started: Instant,
    settings: GcSettings,
}

impl Collector {
    async fn round(
        &mut self,
        raft: &Raft<TypeConfig>,
        liveness: &Liveness,
        repairs: &Repairs,
        stats: &GcStats,
    ) -> Result<(), String> {
        let nodes: HashMap<NodeId, NodeRecord> = self
            .catalog
            .nodes()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        self.expire_uploads(raft).await?;
        self.collect_garbage(raft, &nodes, liveness, stats).await?;

        // Inventories, between two catalog snapshots (read transactions: nothing is
        // copied out of the catalog but one page of a node's index at a time).
        let before = Arc::new(self.view().await?);
        let mut inventories = Vec::new();
        for node in nodes.values() {
            let alive = liveness
                .last(&node.id)
                .is_some_and(|(ago, _)| ago <= self.settings.alive_within);
            if !node.state.holds_data() || !alive {
                continue;
            }
            match self.inventory(node, &before).await {
                Ok(held) => inventories.push((node.id, held)),
                Err(err) => tracing::debug!(node = %node.id, %err, "no inventory this round"),
            }
        }
        let after = Arc::new(self.view().await?);

        let mut missing = HashMap::new();
        let now = self.started.elapsed();
        let mut due: HashMap<NodeId, Vec<ShardId>> = HashMap::new();
        for (node, held) in inventories {
            let (before, after) = (before.clone(), after.clone());
            let found = tokio::task::spawn_blocking(move || {
                reconcile_paged(&node, &held, &before, &after, INDEX_PAGE)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let node = &node;
            if !found.missing.is_empty() {
                tracing::warn!(%node, missing = found.missing.len(), "node lacks shards the catalog places on it");
            }
            for shard in found.missing {
                missing.insert(shard, *node);
            }
            let ripe =
                self.orphans
                    .observe(*node, &found.unreferenced, now, self.settings.orphan_delay);
            if !ripe.is_empty() {
                due.insert(*node, ripe);
            }
        }
        stats
            .missing
            .store(missing.len() as u64, std::sync::atomic::Ordering::Relaxed);
        repairs.set_missing(missing);
        for (node, shards) in due {
            let Some(record) = nodes.get(&node) else {
                continue;
            };
            let mut deleted = 0u64;
            for shard in shards {
                if self.delete(record, shard).await.is_ok() {
                    self.orphans.forget(node, shard);
                    deleted += 1;
                }
            }
            if deleted > 0 {
                tracing::info!(%node, shards = deleted, "orphan shards collected");
                stats
                    .deleted
                    .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
            }
        }
        stats.orphans_pending.store(
            self.orphans.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Deletes garbage older than the delay from its nodes and forgets it. Garbage on a node
    /// that no longer holds data (lost, gone, disqualified, removed) is forgotten at once:
    /// should the node return, its inventory shows the shards as orphans.
    ///
    /// The due entries are read oldest first from the queue's time index, so entries not
    /// yet due never clog a round. Nodes are served in parallel, each by one task deleting
    /// its shards in turn; a node not heard from lately is skipped until it returns, and a
    /// node that fails a delete is left for the next round, so one dead node costs a round
    /// at most one timeout, not one per shard.
    async fn collect_garbage(
        &mut self,
        raft: &Raft<TypeConfig>,
        nodes: &HashMap<NodeId, NodeRecord>,
        liveness: &Liveness,
        stats: &GcStats,
    ) -> Result<(), String> {
        let catalog = self.catalog.clone();
        let cutoff = unix_now_ms().saturating_sub(self.settings.garbage_delay.as_millis() as u64);
        let garbage =
            tokio::task::spawn_blocking(move || catalog.due_garbage(cutoff, GARBAGE_BATCH))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let mut done = Vec::new();
        let mut by_node: HashMap<NodeId, Vec<ShardId>> = HashMap::new();
        for (shard, entry) in garbage {
            match nodes.get(&entry.node) {
                Some(node) if node.state.holds_data() => {
                    by_node.entry(entry.node).or_default().push(shard);
                }
                _ => done.push(shard),
            }
        }
        let mut deleting = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_NODES));
        for (id, shards) in by_node {
            let alive = liveness
                .last(&id)
                .is_some_and(|(ago, _)| ago <= self.settings.alive_within);
            let Some(node) = nodes.get(&id).filter(|_| alive) else {
                continue;
            };
            let client = match self.clients.get(node).await {
                Ok(client) => client,
                Err(err) => {
                    tracing::debug!(node = %id, %err, "garbage not deleted yet");
                    continue;
                }
            };
            let orders = shards
                .iter()
                .map(|shard| {
                    self.clients
                        .order(id, Action::Delete { shard: *shard }, ORDER_SECS)
                        .map(|order| (*shard, order))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let slots = slots.clone();
            deleting.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let mut gone = Vec::new();
                let mut existed = 0u64;
                for (shard, order) in orders {
                    match tokio::time::timeout(NODE_LIMIT, client.delete_shard(&order)).await {
                        Ok(Ok(had)) => {
                            existed += u64::from(had);
                            gone.push(shard);
                        }
                        failed => {
                            let err = match failed {
                                Ok(Err(err)) => err.to_string(),
                                _ => format!("no answer within {NODE_LIMIT:?}"),
                            };
                            tracing::debug!(node = %id, %shard, %err, "garbage not deleted yet; the node's rest waits for the next round");
                            break;
                        }
                    }
                }
                (gone, existed)
            });
        }
        let mut deleted = 0u64;
        for (gone, existed) in deleting.join_all().await {
            deleted += existed;
            done.extend(gone);
        }
        if done.is_empty() {
            return Ok(());
        }
        let forgotten = done.len();
        tokio::time::timeout(
            Duration::from_secs(10),
            raft.client_write(Command::ForgetGarbage { shards: done }),
        )
        .await
        .map_err(|_| "forgetting collected garbage timed out".to_string())?
        .map_err(|e| e.to_string())?;
        stats
            .deleted
            .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(deleted, forgotten, "garbage collected");
        Ok(())
    }

    /// Aborts uploads open longer than the expiry, oldest first, a bounded number per
    /// round; their parts become garbage like any aborted upload's.
    async fn expire_uploads(&self, raft: &Raft<TypeConfig>) -> Result<(), String> {
        let catalog = self.catalog.clone();
        let before = unix_now_ms().saturating_sub(self.settings.upload_expiry.as_millis() as u64);
        let stale =
            tokio::task::spawn_blocking(move || catalog.stale_uploads(before, EXPIRE_BATCH))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        for upload in stale {
            let command = Command::AbortUpload {
                upload: upload.clone(),
                now_ms: unix_now_ms(),
            };
            tokio::time::timeout(Duration::from_secs(10), raft.client_write(command))
                .await
                .map_err(|_| "aborting an expired upload timed out".to_string())?
                .map_err(|e| e.to_string())?;
            tracing::info!(%upload, "expired multipart upload aborted");
        }
        Ok(())
    }

    async fn view(&self) -> Result<CatalogView, String> {
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.view())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// `node`'s inventory, refused if it lists more shards than the node can hold: what
    /// the catalog (`placed`) places there or queues as garbage (anywhere: the queue is
    /// not indexed by node), as many again in shards stored but not (yet) committed, and
    /// [`INVENTORY_SLACK`]. A node cannot make the leader hold more than that (plus one
    /// page) by listing ids it invents; an honest one over the bound is only skipped this
    /// round, as if it had not answered.
    async fn inventory(
        &mut self,
        node: &NodeRecord,
        placed: &CatalogView,
    ) -> Result<Vec<ShardId>, String> {
        let placed_here = placed.placed_totals(&node.id).map_err(|e| e.to_string())?;
        let queued = placed.garbage_count().map_err(|e| e.to_string())?;
        let expected =
            usize::try_from(placed_here.shards.saturating_add(queued)).unwrap_or(usize::MAX);
        let limit = expected.saturating_mul(2).saturating_add(INVENTORY_SLACK);
        let order = self.clients.order(node.id, Action::Inventory, ORDER_SECS)?;
        let client = self.clients.get(node).await?;
        tokio::time::timeout(NODE_LIMIT, client.inventory_within(&order, limit))
            .await
            .map_err(|_| format!("no inventory within {NODE_LIMIT:?}"))?
            .map_err(|e| e.to_string())
    }

    /// Deletes one shard; returns whether the node had it.
    async fn delete(&mut self, node: &NodeRecord, shard: ShardId) -> Result<bool, String> {
        let order = self
            .clients
            .order(node.id, Action::Delete { shard }, ORDER_SECS)?;
        let client = self.clients.get(node).await?;
        tokio::time::timeout(NODE_LIMIT, client.delete_shard(&order))
            .await
            .map_err(|_| format!("no answer within {NODE_LIMIT:?}"))?
            .map_err(|e| e.to_string())
    }
}
