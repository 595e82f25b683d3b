//! The node-facing RPC on the coordinator port: joining with an invitation, heartbeats and
//! leaving.
//!
//! Anyone can open a connection here, so nothing a peer sends is trusted or even read in
//! full before it is known: a registered node may send heartbeats (bounded frames, one
//! request per stream, each read within a deadline); an unregistered key gets exactly one
//! request, which must be a join, read under a small size limit, rate-limited per address,
//! and checked against the catalog's invitation *before* anything is proposed to Raft (a
//! stranger's junk never reaches the log).
//!
//! A heartbeat is signed by the node's own connection key, so the address it reports can be
//! believed to be the node's wish; it is recorded only once the leader has reached the node
//! there (a QUIC handshake proving the node's key), so a node cannot point the cluster at an
//! address where it is not, and a node that moved is found again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::invite::JoinToken;
use cairn_proto::order::unix_now_ms;
use cairn_proto::transport::{MAX_STRANGER_CONNECTIONS, StrangerCap, connect};
use cairn_proto::wire::{
    CoordinatorRequest, CoordinatorResponse, ErrorCode, Heartbeat, JoinRequest, NODE_ALPN,
    WireError, read_frame_within, write_frame,
};
use openraft::Raft;

use crate::catalog::model::{MAX_ADDR_LEN, NodeRecord, NodeState, validate_domain};
use crate::catalog::{Catalog, Command, CommandResult};
use crate::liveness::Liveness;
use crate::raft::types::TypeConfig;

/// Largest request a registered node may send (a heartbeat with its damaged-shard list).
const MAX_NODE_FRAME: u32 = 256 << 10;
/// Largest request from a key the catalog does not know: a join is a few hundred bytes.
const MAX_JOIN_FRAME: u32 = 4 << 10;
/// How long one request may take to arrive once its stream is open.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// Join attempts allowed per remote address per [`JOIN_WINDOW`].
const JOINS_PER_WINDOW: u32 = 60;
/// The window of [`JOINS_PER_WINDOW`].
const JOIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered by the join limiter before it starts over.
const MAX_JOIN_ADDRS: usize = 10_000;
/// How long the leader has to reach a node at a newly reported address.
const PROBE_LIMIT: Duration = Duration::from_secs(3);
/// An address that could not be reached is tried again after this long, not on every
/// heartbeat.
const PROBE_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// What serving nodes needs.
#[derive(Clone)]
pub(crate) struct NodeRpc {
    /// This member's Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The catalog.
    pub catalog: Catalog,
    /// Heartbeats seen.
    pub liveness: Arc<Liveness>,
    /// The endpoint to reach nodes from (to check a reported address).
    pub endpoint: quinn::Endpoint,
    /// The coordinator key (the identity nodes expect of the leader).
    pub key: SecretKey,
    /// Join attempts per remote address.
    pub joins: Arc<JoinLimiter>,
    /// Connections of keys not registered, per address.
    pub strangers: Arc<StrangerCap>,
    /// Reported addresses that could not be reached, and when they were tried.
    pub unreachable: Arc<Mutex<HashMap<PublicKey, (String, Instant)>>>,
}

impl NodeRpc {
    /// The node-facing RPC over `raft` and `catalog`.
    pub fn new(
        raft: Raft<TypeConfig>,
        catalog: Catalog,
        liveness: Arc<Liveness>,
        endpoint: quinn::Endpoint,
        key: SecretKey,
    ) -> Self {
        Self {
            raft,
            catalog,
            liveness,
            endpoint,
            key,
            joins: Arc::new(JoinLimiter::default()),
            strangers: StrangerCap::new(MAX_STRANGER_CONNECTIONS),
            unreachable: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Serves one node connection.
pub(crate) async fn serve_nodes(conn: quinn::Connection, peer: PublicKey, rpc: NodeRpc) {
    let registered = matches!(rpc.catalog.node(&peer), Ok(Some(_)));
    if !registered && !rpc.joins.allow(conn.remote_address().ip()) {
        tracing::warn!(%peer, remote = %conn.remote_address(), "too many join attempts from one address");
        conn.close(2u32.into(), b"too many join attempts; try again later");
        return;
    }
    // A stranger's connection (one join at most) counts toward its address's cap until it
    // ends; a registered node's never does.
    let _slot = if registered {
        cairn_proto::transport::trust_peer(&conn);
        None
    } else {
        let Some(slot) = rpc.strangers.admit(conn.remote_address().ip()) else {
            tracing::warn!(%peer, remote = %conn.remote_address(), "too many connections of strangers from one address");
            conn.close(2u32.into(), b"too many connections from your address");
            return;
        };
        Some(slot)
    };
    let limit = if registered {
        MAX_NODE_FRAME
    } else {
        MAX_JOIN_FRAME
    };
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let read = tokio::time::timeout(
            READ_LIMIT,
            read_frame_within::<_, CoordinatorRequest>(&mut recv, limit),
        )
        .await;
        let response = match read {
            Err(_) => refuse(ErrorCode::Malformed, "request not received in time"),
            Ok(Err(WireError::Closed)) => return,
            Ok(Err(err)) => refuse(ErrorCode::Malformed, &err.to_string()),
            Ok(Ok(request)) => match (registered, request) {
                (_, CoordinatorRequest::Join(join)) => join_node(&rpc, peer, join).await,
                (true, request) => handle(&rpc, peer, request).await,
                (false, _) => refuse(
                    ErrorCode::NotFound,
                    "node is not registered; join with an invitation",
                ),
            },
        };
        let _ = write_frame(&mut send, &response).await;
        let _ = send.finish();
        if !registered {
            // A stranger gets one answer per connection; a node that joined reconnects.
            let _ = send.stopped().await;
            conn.close(0u32.into(), b"done");
            return;
        }
    }
}

async fn handle(
    rpc: &NodeRpc,
    peer: PublicKey,
    request: CoordinatorRequest,
) -> CoordinatorResponse {
    if let Some(refusal) = not_leader(&rpc.raft).await {
        return refusal;
    }
    match request {
        CoordinatorRequest::Heartbeat(heartbeat) => heartbeat_from(rpc, peer, heartbeat).await,
        CoordinatorRequest::Leave => leave(peer, &rpc.raft, &rpc.catalog).await,
        CoordinatorRequest::Join(join) => join_node(rpc, peer, join).await,
    }
}

async fn not_leader(raft: &Raft<TypeConfig>) -> Option<CoordinatorResponse> {
    (raft.current_leader().await != Some(raft.metrics().borrow().id)).then(|| {
        refuse(
            ErrorCode::Busy,
            "not the leader; try another coordinator member",
        )
    })
}

/// Records a heartbeat; a changed address is recorded once the node is reached there, and
/// until then the heartbeat does not count as a sign of life (a node nobody can dial is
/// not serving).
async fn heartbeat_from(
    rpc: &NodeRpc,
    peer: PublicKey,
    heartbeat: Heartbeat,
) -> CoordinatorResponse {
    if heartbeat.node != peer {
        return refuse(
            ErrorCode::WrongNode,
            "a heartbeat must come from the node it describes",
        );
    }
    let record = match rpc.catalog.node(&peer) {
        Ok(Some(record)) => record,
        Ok(None) => {
            return refuse(
                ErrorCode::NotFound,
                "node is not registered; join with an invitation",
            );
        }
        Err(err) => return refuse(ErrorCode::Internal, &err.to_string()),
    };
    let addr = heartbeat.listen.trim();
    if !addr.is_empty() && addr != record.addr {
        if let Err(message) = check_addr(addr) {
            return refuse(ErrorCode::Malformed, &message);
        }
        if let Err(message) = move_node(rpc, &record, addr).await {
            tracing::warn!(node = %peer, from = %record.addr, to = addr, %message, "node reports an address it cannot be reached at");
            return refuse(ErrorCode::Forbidden, &message);
        }
    }
    rpc.liveness.record(heartbeat);
    CoordinatorResponse::Time {
        now_ms: unix_now_ms(),
    }
}

/// Reaches `node` at `addr` (at most every [`PROBE_AGAIN_AFTER`] per address), then
/// commits the new address.
async fn move_node(rpc: &NodeRpc, node: &NodeRecord, addr: &str) -> Result<(), String> {
    let recent_failure = rpc.unreachable.lock().ok().and_then(|failed| {
        failed
            .get(&node.id)
            .filter(|(tried, at)| tried == addr && at.elapsed() < PROBE_AGAIN_AFTER)
            .map(|_| ())
    });
    if recent_failure.is_some() {
        return Err(format!("not reachable at {addr} when last tried"));
    }
    if let Err(message) = probe(rpc, node, addr).await {
        if let Ok(mut failed) = rpc.unreachable.lock() {
            failed.insert(node.id, (addr.to_string(), Instant::now()));
        }
        return Err(message);
    }
    let command = Command::MoveNode {
        node: node.id,
        addr: addr.to_string(),
    };
    match rpc.raft.client_write(command).await {
        Ok(response) => match response.data {
            CommandResult::Refused(err) => Err(err.to_string()),
            _ => {
                tracing::info!(node = %node.id, from = %node.addr, to = addr, "node moved");
                if let Ok(mut failed) = rpc.unreachable.lock() {
                    failed.remove(&node.id);
                }
                Ok(())
            }
        },
        Err(err) => Err(err.to_string()),
    }
}

/// A QUIC handshake with `node` at `addr`, which only the holder of the node's key
/// completes.
async fn probe(rpc: &NodeRpc, node: &NodeRecord, addr: &str) -> Result<(), String> {
    let resolved: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(|err| format!("{addr}: {err}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let conn = tokio::time::timeout(
        PROBE_LIMIT,
        connect(&rpc.endpoint, &rpc.key, resolved, &node.id, NODE_ALPN),
    )
    .await
    .map_err(|_| format!("no answer at {addr} within {PROBE_LIMIT:?}"))?
    .map_err(|err| format!("{addr}: {err}"))?;
    conn.close(0u32.into(), b"address checked");
    Ok(())
}

/// A join: checked field by field and against the invitation before it is proposed, so a
/// stranger without a valid invitation never writes to the Raft log.
async fn join_node(rpc: &NodeRpc, peer: PublicKey, join: JoinRequest) -> CoordinatorResponse {
    if let Some(refusal) = not_leader(&rpc.raft).await {
        return refusal;
    }
    let checked = check_addr(&join.listen)
        .and_then(|()| validate_domain("organisation", &join.org))
        .and_then(|()| validate_domain("site", &join.site));
    if let Err(message) = checked {
        return refuse(ErrorCode::Malformed, &message);
    }
    let now_ms = unix_now_ms();
    let secret_hash = JoinToken::secret_hash(&join.secret);
    match rpc.catalog.invite(&secret_hash) {
        Ok(Some(invite))
            if invite.used_by.is_none()
                && invite.expires_ms > now_ms
                && invite.org.as_deref() == Some(join.org.as_str()) => {}
        Ok(Some(invite)) if invite.used_by.is_none() && invite.expires_ms > now_ms => {
            return refuse(
                ErrorCode::Forbidden,
                &format!(
                    "the invitation is for organisation {}, not {}",
                    invite.org.as_deref().unwrap_or("(none)"),
                    join.org
                ),
            );
        }
        Ok(_) => {
            return refuse(
                ErrorCode::Forbidden,
                "the invitation is unknown, used up or expired",
            );
        }
        Err(err) => return refuse(ErrorCode::Internal, &err.to_string()),
    }
    // The node is registered under the key it connected with: an invitation cannot be
    // used to register someone else's identity.
    let node = NodeRecord {
        id: peer,
        addr: join.listen,
        org: join.org,
        site: join.site,
        capacity: join.capacity_bytes,
        state: NodeState::Vetting,
        joined_ms: now_ms,
        state_since_ms: now_ms,
        vetted: false,
        reputation: Default::default(),
    };
    let command = Command::JoinNode {
        node,
        secret_hash,
        now_ms,
    };
    match rpc.raft.client_write(command).await {
        Ok(response) => match response.data {
            CommandResult::Refused(err) => refuse(ErrorCode::Forbidden, &err.to_string()),
            _ => {
                tracing::info!(node = %peer, "node joined");
                CoordinatorResponse::Ack
            }
        },
        Err(err) => refuse(ErrorCode::Busy, &err.to_string()),
    }
}

/// A node address as reported: `host:port`, at most [`MAX_ADDR_LEN`] printable characters.
fn check_addr(addr: &str) -> Result<(), String> {
    let fits = !addr.is_empty()
        && addr.len() <= MAX_ADDR_LEN
        && addr.bytes().all(|b| b.is_ascii_graphic())
        && addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if fits {
        Ok(())
    } else {
        Err(format!(
            "a node address is host:port, at most {MAX_ADDR_LEN} printable characters"
        ))
    }
}

/// A node asking to leave turns draining (from a state that holds data and still takes
/// work); asking again while draining or gone is answered the same.
async fn leave(peer: PublicKey, raft: &Raft<TypeConfig>, catalog: &Catalog) -> CoordinatorResponse {
    let record = match catalog.node(&peer) {
        Ok(Some(record)) => record,
        Ok(None) => return refuse(ErrorCode::NotFound, "node is not registered"),
        Err(err) => return refuse(ErrorCode::Internal, &err.to_string()),
    };
    match record.state {
        NodeState::Draining | NodeState::Gone => return CoordinatorResponse::Ack,
        NodeState::Vetting | NodeState::Active | NodeState::Suspect => {}
        other => {
            return refuse(
                ErrorCode::Forbidden,
                &format!(
                    "a {} node cannot leave; ask the cluster's operator",
                    other.as_str()
                ),
            );
        }
    }
    let command = Command::ChangeNodeState {
        node: peer,
        from: record.state,
        to: NodeState::Draining,
        now_ms: unix_now_ms(),
    };
    match raft.client_write(command).await {
        Ok(response) => match response.data {
            CommandResult::Refused(err) => refuse(ErrorCode::Busy, &err.to_string()),
            _ => {
                tracing::info!(node = %peer, "node asked to leave: draining");
                CoordinatorResponse::Ack
            }
        },
        Err(err) => refuse(ErrorCode::Busy, &err.to_string()),
    }
}

/// Join attempts per remote address, in fixed windows: enough for an operator retrying,
/// too few for a stranger to keep the leader busy checking invitations.
#[derive(Default)]
pub(crate) struct JoinLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl JoinLimiter {
    /// Whether one more attempt from `addr` is allowed now.
    pub fn allow(&self, addr: IpAddr) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        if windows.len() >= MAX_JOIN_ADDRS {
            windows.retain(|_, (start, _)| start.elapsed() < JOIN_WINDOW);
            if windows.len() >= MAX_JOIN_ADDRS {
                return false;
            }
        }
        let entry = windows.entry(addr).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= JOIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 <= JOINS_PER_WINDOW
    }
}

fn refuse(code: ErrorCode, message: &str) -> CoordinatorResponse {
    CoordinatorResponse::Error {
        code,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port_and_bounded() {
        assert!(check_addr("127.0.0.1:7400").is_ok());
        assert!(check_addr("node.example.org:443").is_ok());
        assert!(check_addr("[::1]:7400").is_ok());
        for bad in ["", "nohost", ":7400", "host:", "host:99999", "a b:1"] {
            assert!(check_addr(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_addr(&format!("{}:1", "a".repeat(300))).is_err());
    }

    #[test]
    fn joins_are_limited_per_address_and_window() {
        let limiter = JoinLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..JOINS_PER_WINDOW {
            assert!(limiter.allow(a));
        }
        assert!(!limiter.allow(a), "one attempt past the window's allowance");
        assert!(limiter.allow(b), "another address has its own allowance");
    }
}
