//! The data path under the S3 operations: bodies in, encoded, placed and stored on nodes;
//! bodies out, fetched, verified and decoded.
//!
//! [`DataPath`] holds what both directions share: the coordinator client, this gateway's
//! identity and QUIC endpoint, and one [`NodeClient`] per node (each keeps its connection).

mod read;
mod repair_worker;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::coordinator::{CallError, CoordinatorClient};
use cairn_client::node::NodeClient;
use cairn_erasure::MaskKey;
use cairn_proto::identity::{NodeId, SecretKey};

pub use read::{ReadError, ShardProblem, read_range};
pub use repair_worker::{Repaired, run_worker};
pub use write::{WriteError, Written, write_body};

/// How long a node that did not answer is skipped. Long enough to spare every request
/// in a burst the wait, short enough that a restarted node is used again soon; the
/// coordinator's failure detector decides about longer absences.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// Shared state of the data path.
pub struct DataPath {
    /// The coordinator group.
    pub coordinator: CoordinatorClient,
    endpoint: quinn::Endpoint,
    key: SecretKey,
    nodes: Mutex<HashMap<(NodeId, SocketAddr), Arc<NodeClient>>>,
    /// Nodes that failed to answer recently, and when.
    down: Mutex<HashMap<NodeId, Instant>>,
    /// Bodies up to this size live in the catalog instead of on nodes.
    pub inline_threshold: usize,
    /// Counts segment reads that gave up on a slow or failing data shard and decoded
    /// around it (set once by whoever exports metrics).
    degraded_reads: std::sync::OnceLock<prometheus::IntCounter>,
    /// The cluster's segment mask key, asked of the coordinator on first use: a gateway
    /// starts (and answers S3) before it is registered, and a failed fetch is retried by
    /// the next request that needs it.
    mask_key: tokio::sync::OnceCell<MaskKey>,
}

impl DataPath {
    /// A data path that reaches nodes from `endpoint` as `key` and the coordinator through
    /// `coordinator`.
    pub fn new(
        coordinator: CoordinatorClient,
        endpoint: quinn::Endpoint,
        key: SecretKey,
        inline_threshold: usize,
    ) -> Self {
        Self {
            coordinator,
            endpoint,
            key,
            nodes: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
            inline_threshold,
            degraded_reads: std::sync::OnceLock::new(),
            mask_key: tokio::sync::OnceCell::new(),
        }
    }

    /// The cluster's segment mask key, fetched from the coordinator the first time.
    pub async fn mask_key(&self) -> Result<&MaskKey, CallError> {
        self.mask_key
            .get_or_try_init(|| self.coordinator.mask_key())
            .await
    }

    /// Counts degraded (hedged) segment reads in `counter` from now on.
    pub fn count_degraded_reads_in(&self, counter: prometheus::IntCounter) {
        let _ = self.degraded_reads.set(counter);
    }

    /// One more read decoded around a slow or failing shard.
    fn degraded_read(&self) {
        if let Some(counter) = self.degraded_reads.get() {
            counter.inc();
        }
    }

    /// Remembers that `node` did not answer, so reads and placements skip it for a while
    /// instead of waiting on it again.
    fn mark_down(&self, node: NodeId) {
        if let Ok(mut down) = self.down.lock() {
            down.retain(|_, at| at.elapsed() < DOWN_FOR);
            down.insert(node, Instant::now());
        }
    }

    /// Whether `node` failed to answer within the last [`DOWN_FOR`].
    fn is_down(&self, node: &NodeId) -> bool {
        self.down
            .lock()
            .is_ok_and(|down| down.get(node).is_some_and(|at| at.elapsed() < DOWN_FOR))
    }

    /// Nodes currently considered down.
    fn down_nodes(&self) -> Vec<NodeId> {
        self.down.lock().map_or_else(
            |_| Vec::new(),
            |down| {
                down.iter()
                    .filter(|(_, at)| at.elapsed() < DOWN_FOR)
                    .map(|(node, _)| *node)
                    .collect()
            },
        )
    }

    /// The client for `node` at `addr` (`host:port`), made on first use.
    async fn node(&self, node: NodeId, addr: &str) -> Result<Arc<NodeClient>, String> {
        let resolved = tokio::net::lookup_host(addr)
            .await
            .map_err(|err| format!("node address {addr}: {err}"))?
            .next()
            .ok_or_else(|| format!("node address {addr} resolves to nothing"))?;
        let mut nodes = self
            .nodes
            .lock()
            .map_err(|_| "node client table poisoned".to_string())?;
        let client = nodes.entry((node, resolved)).or_insert_with(|| {
            Arc::new(NodeClient::new(
                self.endpoint.clone(),
                self.key.clone(),
                resolved,
                node,
            ))
        });
        Ok(client.clone())
    }
}
