//! Starting and stopping a whole node: identity, store, QUIC service, heartbeats, scrub and
//! metrics, wired together from a [`NodeConfig`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::identity::{KeyFileError, NodeId, SecretKey};
use cairn_proto::transport::connect;
use cairn_proto::transport::{PeerPolicy, TransportError, server_endpoint};
use cairn_proto::wire::{
    COORDINATOR_ALPN, CoordinatorRequest, CoordinatorResponse, ErrorCode, Heartbeat, JoinRequest,
    NODE_ALPN, read_frame, write_frame,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::bandwidth::Bandwidth;
use crate::conduct::{Conduct, Honest};
use crate::config::{ConfigError, NodeConfig};
use crate::heartbeat::{self, HeartbeatTarget};
use crate::metrics::{self, NodeMetrics};
use crate::scrub;
use crate::server::{self, NodeState};
use crate::store::{ShardStore, StoreError};

/// Name of the identity key file in the data dir.
pub const KEY_FILE: &str = "identity.key";
/// Present once the node's invitation was accepted.
pub const JOINED_FILE: &str = "joined";

/// A node that is up: its id, where it listens, and the handles to stop it.
pub struct RunningNode {
    /// The node's id (its public key).
    pub id: NodeId,
    /// The QUIC address actually bound (useful when the config asked for port 0).
    pub quic_addr: SocketAddr,
    /// The metrics address actually bound, if metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// The shard store, for in-process users such as `cairn dev` and benchmarks.
    pub store: Arc<ShardStore>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity key could not be read or created.
    #[error("identity key: {0}")]
    Key(#[from] KeyFileError),
    /// The shard store could not be opened.
    #[error("shard store: {0}")]
    Store(#[from] StoreError),
    /// The QUIC endpoint could not be set up.
    #[error("QUIC endpoint: {0}")]
    Transport(#[from] TransportError),
    /// The data dir or the metrics listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The coordinator refused the invitation, or no coordinator could be reached to use it.
    #[error("joining the cluster: {0}")]
    Join(String),
}

/// Starts a node and returns once it is serving.
pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
    start_with_conduct(config, Arc::new(Honest)).await
}

/// Starts a node that answers with `conduct` (see [`crate::conduct`]): the same daemon as
/// [`start`], for chaos tests that need a node lying in one chosen way.
pub async fn start_with_conduct(
    mut config: NodeConfig,
    conduct: Arc<dyn Conduct>,
) -> Result<RunningNode, StartError> {
    let invitation = config.apply_join_token()?;
    config.validate()?;
    let coordinator_key = config
        .coordinator_key
        .ok_or(ConfigError::Missing("coordinator_key"))?;
    std::fs::create_dir_all(&config.data_dir)?;
    let (key, created) = SecretKey::load_or_create(&config.data_dir.join(KEY_FILE))?;
    let id = key.public();
    if created {
        tracing::info!(node = %id, "created a new node identity");
    }

    let dir = config.data_dir.clone();
    let capacity = config.capacity.0;
    let (store, report) = tokio::task::spawn_blocking(move || ShardStore::open(&dir, capacity))
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))??;
    tracing::info!(
        shards = report.shards,
        bytes = report.bytes,
        removed_temp_files = report.removed_temp_files,
        removed_orphan_files = report.removed_orphan_files,
        dropped_index_entries = report.dropped_index_entries.len(),
        "shard store opened"
    );
    let store = Arc::new(store);

    let metrics = Arc::new(NodeMetrics::new());
    metrics.capacity_bytes.set(capacity as i64);
    metrics.stored_bytes.set(store.used() as i64);
    metrics.stored_shards.set(store.shard_count() as i64);
    metrics.upload_limit.set(config.upload_limit.0 as i64);
    metrics.download_limit.set(config.download_limit.0 as i64);
    metrics.start_time.set(metrics::unix_now());
    metrics
        .info
        .with_label_values(&[
            id.to_string().as_str(),
            config.org.as_str(),
            config.site.as_str(),
            env!("CARGO_PKG_VERSION"),
        ])
        .set(1);

    let endpoint = server_endpoint(config.listen, &key, &[NODE_ALPN], PeerPolicy::Any)?;
    let quic_addr = endpoint.local_addr()?;
    let clock = Arc::new(crate::clock::Clock::new());
    let state = Arc::new(NodeState {
        key: key.clone(),
        id,
        coordinator: coordinator_key,
        store: store.clone(),
        metrics: metrics.clone(),
        upload: Bandwidth::new(config.upload_limit.0),
        download: Bandwidth::new(config.download_limit.0),
        puts: Semaphore::new(config.max_concurrent_puts),
        max_shard_size: config.max_shard_size.0,
        clock: clock.clone(),
        send_stall: std::time::Duration::from_millis(config.send_stall_timeout_ms),
        conduct,
    });
    let mut tasks = vec![tokio::spawn(server::serve(endpoint.clone(), state))];

    // A node joins once; the marker file records that its invitation was accepted.
    let joined = config.data_dir.join(JOINED_FILE);
    if let Some(secret) = invitation
        && !joined.exists()
    {
        let request = JoinRequest {
            secret,
            listen: config
                .advertise
                .clone()
                .unwrap_or_else(|| quic_addr.to_string()),
            capacity_bytes: capacity,
            org: config.org.clone(),
            site: config.site.clone(),
        };
        let joined_now = join(
            &endpoint,
            &key,
            &config.coordinators,
            &coordinator_key,
            request,
        )
        .await;
        if let Err(err) = joined_now {
            for task in &tasks {
                task.abort();
            }
            endpoint.close(0u32.into(), b"join failed");
            return Err(err);
        }
        std::fs::write(&joined, b"joined\n")?;
        tracing::info!(node = %id, "joined the cluster");
    }

    if !config.coordinators.is_empty() {
        let target = HeartbeatTarget {
            coordinators: config.coordinators.clone(),
            coordinator_key,
            interval: config.heartbeat_interval(),
        };
        let store = store.clone();
        let advertised = config
            .advertise
            .clone()
            .unwrap_or_else(|| quic_addr.to_string());
        let (org, site) = (config.org.clone(), config.site.clone());
        let beat = move || Heartbeat {
            node: id,
            listen: advertised.clone(),
            used_bytes: store.used(),
            capacity_bytes: store.capacity(),
            shard_count: store.shard_count(),
            damaged: store.damaged().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            org: org.clone(),
            site: site.clone(),
        };
        tasks.push(tokio::spawn(heartbeat::run(
            endpoint.clone(),
            key.clone(),
            target,
            metrics.clone(),
            clock.clone(),
            beat,
        )));
    }
    if config.scrub_rate.0 > 0 {
        tasks.push(tokio::spawn(scrub::run(
            store.clone(),
            metrics.clone(),
            config.scrub_rate.0,
            Duration::from_millis(config.scrub_pause_ms),
        )));
    }
    let metrics_addr = match config.metrics_listen {
        Some(addr) => {
            let (handle, bound) = metrics::serve(addr, metrics.clone()).await?;
            tasks.push(handle);
            Some(bound)
        }
        None => None,
    };
    tracing::info!(node = %id, quic = %quic_addr, org = %config.org, site = %config.site, "node serving");
    Ok(RunningNode {
        id,
        quic_addr,
        metrics_addr,
        store,
        endpoint,
        tasks,
    })
}

/// Presents the invitation to the coordinator members in turn until the leader answers,
/// for up to a minute (an election may be under way).
async fn join(
    endpoint: &quinn::Endpoint,
    key: &SecretKey,
    coordinators: &[SocketAddr],
    coordinator_key: &cairn_proto::identity::PublicKey,
    request: JoinRequest,
) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no coordinator address");
    loop {
        for addr in coordinators {
            match ask(
                endpoint,
                key,
                *addr,
                coordinator_key,
                &CoordinatorRequest::Join(request.clone()),
            )
            .await
            {
                Ok(CoordinatorResponse::Ack | CoordinatorResponse::Time { .. }) => return Ok(()),
                Ok(CoordinatorResponse::Error {
                    code: ErrorCode::Forbidden,
                    message,
                }) => {
                    return Err(StartError::Join(format!("invitation refused: {message}")));
                }
                Ok(CoordinatorResponse::Error { code, message }) => {
                    last = format!("{addr}: {code}: {message}")
                }
                Err(err) => last = format!("{addr}: {err}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Join(last));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn ask(
    endpoint: &quinn::Endpoint,
    key: &SecretKey,
    addr: SocketAddr,
    coordinator_key: &cairn_proto::identity::PublicKey,
    request: &CoordinatorRequest,
) -> Result<CoordinatorResponse, String> {
    let conn = connect(endpoint, key, addr, coordinator_key, COORDINATOR_ALPN)
        .await
        .map_err(|err| err.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|err| err.to_string())?;
    write_frame(&mut send, request)
        .await
        .map_err(|err| err.to_string())?;
    let _ = send.finish();
    let response = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|err| err.to_string());
    conn.close(0u32.into(), b"done");
    response
}

/// Asks the coordinator to let this node leave (the node must have joined): it turns
/// draining, the cluster moves its shards elsewhere, and it is gone once nothing depends
/// on it. The node keeps serving meanwhile; `cairn admin node drain` shows the progress.
pub async fn leave(mut config: NodeConfig) -> Result<(), StartError> {
    config.apply_join_token()?;
    config.validate()?;
    let Some(coordinator_key) = config.coordinator_key else {
        return Err(StartError::Join("no coordinator key configured".into()));
    };
    let key = SecretKey::load(&config.data_dir.join(KEY_FILE))?;
    let endpoint =
        cairn_proto::transport::client_endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), &key)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no coordinator address");
    loop {
        for addr in &config.coordinators {
            match ask(
                &endpoint,
                &key,
                *addr,
                &coordinator_key,
                &CoordinatorRequest::Leave,
            )
            .await
            {
                Ok(CoordinatorResponse::Ack | CoordinatorResponse::Time { .. }) => return Ok(()),
                Ok(CoordinatorResponse::Error {
                    code: code @ (ErrorCode::Forbidden | ErrorCode::NotFound),
                    message,
                }) => return Err(StartError::Join(format!("refused ({code}): {message}"))),
                Ok(CoordinatorResponse::Error { code, message }) => {
                    last = format!("{addr}: {code}: {message}")
                }
                Err(err) => last = format!("{addr}: {err}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Join(last));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl RunningNode {
    /// Stops accepting work, closes connections and waits for them to drain.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"node shutting down");
        for task in &self.tasks {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
    }
}
