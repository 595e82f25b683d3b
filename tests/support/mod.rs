//! Test harness: real `cairn node` processes on loopback, a gateway-like client that signs
//! orders with a test coordinator key, and a fake coordinator that collects heartbeats.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod cluster;
pub mod coordinator;
pub mod healing;
pub mod ports;
pub mod rpc;
pub mod s3clients;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::node::NodeClient;
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, PublicKey, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, SignedOrder, unix_now};
use cairn_proto::transport::{PeerPolicy, client_endpoint, server_endpoint};
use cairn_proto::wire::{
    COORDINATOR_ALPN, CoordinatorRequest, CoordinatorResponse, Heartbeat, read_frame, write_frame,
};
use tokio::sync::mpsc;

/// A `cairn node` child process and what it printed at start.
pub struct NodeProcess {
    pub child: Child,
    pub id: NodeId,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Program and leading arguments it runs as.
    pub command: Vec<PathBuf>,
}

impl NodeProcess {
    /// Writes `extra` TOML lines plus the basics into a config in `dir` and starts the node.
    pub fn start(dir: &Path, coordinator: &PublicKey, extra: &str) -> NodeProcess {
        let command = [PathBuf::from(env!("CARGO_BIN_EXE_cairn")), "node".into()];
        Self::start_as(&command, dir, coordinator, extra)
    }

    /// Like [`NodeProcess::start`], but runs `command` (program and leading arguments,
    /// given `--config FILE` after them), e.g. the misbehaving chaos node.
    pub fn start_as(
        command: &[PathBuf],
        dir: &Path,
        coordinator: &PublicKey,
        extra: &str,
    ) -> NodeProcess {
        let config = dir.join("node.toml");
        let text = format!(
            "data_dir = {data:?}\nlisten = \"127.0.0.1:0\"\ncoordinator_key = \"{coordinator}\"\n{extra}\n",
            data = dir.join("data").display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        Self::spawn(command, dir, config)
    }

    fn spawn(command: &[PathBuf], dir: &Path, config: PathBuf) -> NodeProcess {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .arg("--config")
            .arg(&config)
            .env("CAIRN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cairn node");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut id = None;
        let mut addr = None;
        // The node prints its id and address once it is serving: that is the readiness event.
        while id.is_none() || addr.is_none() {
            let line = lines
                .next()
                .expect("node exited before it was ready")
                .unwrap();
            if let Some(rest) = line.strip_prefix("node id: ") {
                id = Some(rest.parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("listening on ") {
                addr = Some(rest.parse().unwrap());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        NodeProcess {
            child,
            id: id.unwrap(),
            addr: addr.unwrap(),
            dir: dir.to_path_buf(),
            config,
            command: command.to_vec(),
        }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the node again on the same data dir and config (it gets a new port).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let again = Self::spawn(&self.command, &self.dir, self.config.clone());
        assert_eq!(again.id, self.id, "identity must survive a restart");
        *self = again;
    }

    /// Every regular file under the node's shard directory.
    pub fn shard_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.join("data").join("shards"), &mut out);
        out
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays the coordinator's signing role and a gateway's client role.
pub struct Cluster {
    pub coordinator: SecretKey,
    pub gateway: SecretKey,
    pub endpoint: quinn::Endpoint,
    serial: std::sync::atomic::AtomicU64,
}

impl Cluster {
    pub fn new() -> Cluster {
        let gateway = SecretKey::generate();
        let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), &gateway).unwrap();
        Cluster {
            coordinator: SecretKey::generate(),
            gateway,
            endpoint,
            serial: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn client(&self, node: &NodeProcess) -> NodeClient {
        NodeClient::new(
            self.endpoint.clone(),
            self.gateway.clone(),
            node.addr,
            node.id,
        )
    }

    /// A fresh order for `node`, valid for a minute, from this gateway.
    pub fn order(&self, node: NodeId, action: Action) -> SignedOrder {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

pub fn shard_id(n: u64) -> ShardId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&bytes(8, n));
    ShardId(id)
}

/// A stand-in coordinator that acknowledges heartbeats and hands them to the test.
pub struct FakeCoordinator {
    pub addr: SocketAddr,
    pub heartbeats: mpsc::UnboundedReceiver<(PublicKey, Heartbeat)>,
    _endpoint: quinn::Endpoint,
}

impl FakeCoordinator {
    pub fn start(key: &SecretKey) -> FakeCoordinator {
        let endpoint = server_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            key,
            &[COORDINATOR_ALPN],
            PeerPolicy::Any,
        )
        .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let accept = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let Some(peer) = cairn_proto::transport::peer_key(&conn) else {
                        return;
                    };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(CoordinatorRequest::Heartbeat(beat)) = read_frame(&mut recv).await
                        else {
                            continue;
                        };
                        let _ = tx.send((peer, beat));
                        let _ = write_frame(&mut send, &CoordinatorResponse::Ack).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        FakeCoordinator {
            addr,
            heartbeats: rx,
            _endpoint: endpoint,
        }
    }

    /// The next heartbeat that satisfies `wanted`, waiting at most `limit`.
    pub async fn heartbeat_where(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&Heartbeat) -> bool,
    ) -> (PublicKey, Heartbeat) {
        tokio::time::timeout(limit, async {
            loop {
                let (peer, beat) = self
                    .heartbeats
                    .recv()
                    .await
                    .expect("heartbeat channel open");
                if wanted(&beat) {
                    return (peer, beat);
                }
            }
        })
        .await
        .expect("expected heartbeat did not arrive")
    }
}

pub type Shared<T> = Arc<T>;
