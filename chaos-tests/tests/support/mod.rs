//! Shared by the chaos tests: in-process nodes started with a chosen conduct, and a client
//! that signs orders with a test coordinator key (after the root crate's `tests/support`,
//! which this crate cannot include: it starts the `cairn` binary, which another package
//! builds).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_client::node::{ClientError, NodeClient};
use cairn_erasure::ShardRoot;
use cairn_node::conduct::Conduct;
use cairn_node::config::NodeConfig;
use cairn_node::daemon::RunningNode;
use cairn_proto::bytesize::ByteSize;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, SignedOrder, unix_now};
use cairn_proto::transport::client_endpoint;
use cairn_proto::wire::ErrorCode;

/// Plays the coordinator's signing role and a gateway's client role.
pub struct Signer {
    pub coordinator: SecretKey,
    pub gateway: SecretKey,
    pub endpoint: quinn::Endpoint,
    serial: AtomicU64,
}

impl Signer {
    /// A fresh coordinator key and gateway identity.
    pub fn new() -> Signer {
        Self::with_coordinator(SecretKey::generate())
    }

    /// Orders signed by `coordinator` (a real coordinator's key, in process tests).
    pub fn with_coordinator(coordinator: SecretKey) -> Signer {
        let gateway = SecretKey::generate();
        let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), &gateway).unwrap();
        Signer {
            coordinator,
            gateway,
            endpoint,
            serial: AtomicU64::new(1),
        }
    }

    /// A client for node `id` at `addr`.
    pub fn client(&self, addr: SocketAddr, id: NodeId) -> NodeClient {
        NodeClient::new(self.endpoint.clone(), self.gateway.clone(), addr, id)
    }

    /// A fresh order for `node`, valid for a minute, from this gateway.
    pub fn order(&self, node: NodeId, action: Action) -> SignedOrder {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        SignedOrder::sign(
            Order {
                node,
                client: self.gateway.public(),
                serial,
                expires_at: unix_now() + 60,
                action,
            },
            &self.coordinator,
        )
    }

    pub fn put(&self, node: NodeId, shard: ShardId, bytes: &[u8]) -> SignedOrder {
        self.order(
            node,
            Action::Put {
                shard,
                root: ShardRoot::of(bytes),
                size: bytes.len() as u64,
            },
        )
    }

    pub fn get(&self, node: NodeId, shard: ShardId, bytes: &[u8]) -> SignedOrder {
        self.order(
            node,
            Action::Get {
                shard,
                root: ShardRoot::of(bytes),
                size: bytes.len() as u64,
            },
        )
    }

    pub fn audit(&self, node: NodeId, shard: ShardId, bytes: &[u8]) -> SignedOrder {
        self.order(
            node,
            Action::Audit {
                shard,
                root: ShardRoot::of(bytes),
                size: bytes.len() as u64,
            },
        )
    }
}

/// A node config in `dir` that obeys `coordinator`, serving on a free loopback port, with
/// no coordinator to heartbeat to and no scrub (tests drive every request themselves).
pub fn node_config(dir: &std::path::Path, coordinator: &SecretKey) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        coordinator_key: Some(coordinator.public()),
        capacity: ByteSize(1 << 30),
        scrub_rate: ByteSize(0),
        ..NodeConfig::default()
    }
}

/// The real node daemon in this process, answering with `conduct`.
pub async fn start_node(
    dir: &std::path::Path,
    signer: &Signer,
    conduct: Arc<dyn Conduct>,
) -> RunningNode {
    cairn_node::daemon::start_with_conduct(node_config(dir, &signer.coordinator), conduct)
        .await
        .expect("node starts")
}

/// The refusal code of a failed request; panics on success or any other failure.
pub fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A shard id made from `n`.
pub fn shard_id(n: u64) -> ShardId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&bytes(8, n));
    ShardId(id)
}
