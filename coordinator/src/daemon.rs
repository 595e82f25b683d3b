//! Starting one coordinator member: its key, Raft group member, QUIC service and admin API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::identity::{KeyFileError, PublicKey, SecretKey};
use cairn_proto::invite::JoinToken;
use cairn_proto::order::unix_now_ms;
use cairn_proto::transport::{
    Admission, HandshakeGate, PeerPolicy, TransportError, negotiated_alpn, peer_key,
    server_endpoint, trust_peer,
};
use cairn_proto::wire::COORDINATOR_ALPN;
use openraft::error::{InitializeError, RaftError};
use openraft::{Config, Raft, SnapshotPolicy};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminContext, AdminState};
use crate::catalog::model::ErasureProfile;
use crate::catalog::{Catalog, Command, CommandResult};
use crate::config::CoordinatorConfig;
use crate::failure;
use crate::liveness::Liveness;
use crate::node_rpc::{NodeRpc, serve_nodes};
use crate::raft::log_store::LogStore;
use crate::raft::network::{MemberCredential, Network, RAFT_ALPN, admits, serve_connection};
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{Member, TypeConfig};
use crate::rpc::GATEWAY_ALPN;
use crate::rpc::context::RpcContext;
use crate::rpc::serve::serve_gateway;

/// File holding the coordinator key, shared by every member of the group.
pub const KEY_FILE: &str = "coordinator.key";
/// File holding this member's own key (created on first start), which it speaks Raft as.
pub const MEMBER_KEY_FILE: &str = "member.key";
/// File holding the admin API's bearer token.
pub const TOKEN_FILE: &str = "admin.token";

/// A member that is up.
pub struct RunningCoordinator {
    /// Raft id.
    pub id: u64,
    /// The coordinator key's public half (what nodes pin and join tokens carry).
    pub key: PublicKey,
    /// This member's own key (what `cairn admin members add --key` registers).
    pub member_key: PublicKey,
    /// QUIC address bound.
    pub quic_addr: SocketAddr,
    /// Admin HTTP address bound.
    pub admin_addr: SocketAddr,
    /// The admin token, when this start created it (to say where it was written).
    pub new_token: Option<String>,
    /// The Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The catalog (reads).
    pub catalog: Catalog,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The coordinator key is missing (on a joining member) or unreadable.
    #[error("coordinator key: {0}")]
    Key(String),
    /// Raft storage or the catalog could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// The QUIC endpoint could not be set up.
    #[error("QUIC endpoint: {0}")]
    Transport(#[from] TransportError),
    /// Something else on the way up.
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for StartError {
    fn from(err: std::io::Error) -> Self {
        StartError::Other(err.to_string())
    }
}

impl From<KeyFileError> for StartError {
    fn from(err: KeyFileError) -> Self {
        StartError::Key(err.to_string())
    }
}

/// Starts a member. With `init`, a group that has never been formed is formed with this
/// member as its only voter (and the coordinator key is created if missing); without it,
/// the member waits to be added by `cairn admin members add` on the leader, and needs a
/// copy of the group's coordinator key in its data dir.
///
/// With `restore`, the new group starts from a catalog backup (`cairn admin backup`): only
/// together with `init`, on an empty data dir.
pub async fn start(
    config: CoordinatorConfig,
    init: bool,
    restore: Option<&Path>,
) -> Result<RunningCoordinator, StartError> {
    config.validate().map_err(StartError::Config)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let key = coordinator_key(&config, init, restore)?;
    let (member_key, _) = SecretKey::load_or_create(&config.data_dir.join(MEMBER_KEY_FILE))?;
    let (token, new_token) = admin_token(&config.data_dir)?;
    let (log, sm) = open_storage(&config.data_dir).await?;
    let catalog = sm.catalog().clone();
    if let Some(path) = restore {
        restore_catalog(&sm, &catalog, path).await?;
    }
    let endpoint = server_endpoint(
        config.listen,
        &key,
        &[RAFT_ALPN, COORDINATOR_ALPN, GATEWAY_ALPN],
        PeerPolicy::Any,
    )?;
    let quic_addr = endpoint.local_addr()?;
    let raft = start_raft(&config, &endpoint, &key, &member_key, log, sm).await?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
    let admin_addr = admin_listener.local_addr()?;
    let me = advertised_member(&config, quic_addr, admin_addr, &member_key);

    let services = Services::new(&config, &raft, &catalog, &endpoint, &key);
    let tasks = vec![
        services.spawn_quic(&config),
        services.spawn_admin_api(&config, admin_listener, token),
        services.spawn_repairs(),
        services.spawn_gc(&config),
        services.spawn_audits(&config),
        services.spawn_failure_detector(&config),
    ];

    if init {
        form_group(&raft, config.id, me, restore.is_some()).await?;
    }
    tracing::info!(id = config.id, quic = %quic_addr, admin = %admin_addr, key = %key.public(), "coordinator member serving");
    Ok(RunningCoordinator {
        id: config.id,
        key: key.public(),
        member_key: member_key.public(),
        quic_addr,
        admin_addr,
        new_token,
        raft,
        catalog,
        endpoint,
        tasks,
    })
}

/// The coordinator key this member serves under: a restore's must be the one its backup
/// names, `init` creates one if missing, any other start needs a copy of the group's.
fn coordinator_key(
    config: &CoordinatorConfig,
    init: bool,
    restore: Option<&Path>,
) -> Result<SecretKey, StartError> {
    let key_path = config
        .key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(KEY_FILE));
    // A backup is read first: it names the coordinator key its catalog needs (segments are
    // masked under a key derived from it), and a restore must run under that key or none.
    let backup = match restore {
        Some(path) if init => Some(backup_key(path)?),
        Some(_) => {
            return Err(StartError::Config(
                "--restore starts a new group: use it with --init".into(),
            ));
        }
        None => None,
    };
    if let Some(needed) = backup.flatten() {
        restore_key(&key_path, &needed)
    } else if init {
        Ok(SecretKey::load_or_create(&key_path)?.0)
    } else if key_path.exists() {
        Ok(SecretKey::load(&key_path)?)
    } else {
        Err(StartError::Key(format!(
            "{} is missing: copy it from an existing member (or start the first member with --init)",
            key_path.display()
        )))
    }
}

/// Opens the Raft log and the state machine (with the catalog) in `dir`, off the async
/// threads: opening may migrate or rebuild indexes.
async fn open_storage(dir: &Path) -> Result<(LogStore<TypeConfig>, StateMachine), StartError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let log = LogStore::<TypeConfig>::open(&dir.join("raft-log.redb"))
            .map_err(|err| StartError::Storage(err.to_string()))?;
        let sm = StateMachine::open(&dir.join("catalog.redb"))
            .map_err(|err| StartError::Storage(err.to_string()))?;
        Ok::<_, StartError>((log, sm))
    })
    .await
    .map_err(|err| StartError::Other(err.to_string()))?
}

/// Streams the backup at `path` into the state machine's catalog, which must be empty.
async fn restore_catalog(
    sm: &StateMachine,
    catalog: &Catalog,
    path: &Path,
) -> Result<(), StartError> {
    if !catalog
        .buckets()
        .map_err(|e| StartError::Storage(e.to_string()))?
        .is_empty()
    {
        return Err(StartError::Config(
            "--restore needs an empty data dir".into(),
        ));
    }
    let restoring = sm.clone();
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        restoring
            .restore_file(&path)
            .map_err(|err| StartError::Storage(err.to_string()))
    })
    .await
    .map_err(|err| StartError::Other(err.to_string()))??;
    let stats = catalog
        .stats()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    tracing::info!(objects = stats.objects, "catalog restored from backup");
    Ok(())
}

/// Starts this member's Raft node on `endpoint`, speaking as its member key.
async fn start_raft(
    config: &CoordinatorConfig,
    endpoint: &quinn::Endpoint,
    key: &SecretKey,
    member_key: &SecretKey,
    log: LogStore<TypeConfig>,
    sm: StateMachine,
) -> Result<Raft<TypeConfig>, StartError> {
    let raft_config = Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: config.raft_heartbeat_ms,
        election_timeout_min: config.election_timeout_ms,
        election_timeout_max: config.election_timeout_ms * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        // Keep some entries behind the snapshot so a briefly lagging member catches up from
        // the log, not a whole snapshot.
        max_in_snapshot_log_to_keep: (config.snapshot_every / 2).min(1_000),
        // openraft waits for the answer to a snapshot's last chunk until the follower has
        // installed it, which for a large catalog takes minutes, not openraft's 200 ms: a
        // timeout would send the whole snapshot again. A dead follower is still noticed
        // sooner, by its connection timing out.
        install_snapshot_timeout: SNAPSHOT_INSTALL_TIMEOUT_MS,
        ..Config::default()
    }
    .validate()
    .map_err(|err| StartError::Config(err.to_string()))?;
    Raft::new(
        config.id,
        Arc::new(raft_config),
        Network::new(
            endpoint.clone(),
            member_key.clone(),
            key.public(),
            MemberCredential::issue(key, &member_key.public()),
        ),
        log,
        sm,
    )
    .await
    .map_err(|err| StartError::Other(err.to_string()))
}

/// This member as the membership records it: the addresses others reach it at (advertised
/// ones if configured, else the bound ones) and its member key.
fn advertised_member(
    config: &CoordinatorConfig,
    quic_addr: SocketAddr,
    admin_addr: SocketAddr,
    member_key: &SecretKey,
) -> Member {
    Member {
        addr: config
            .advertise
            .clone()
            .unwrap_or_else(|| quic_addr.to_string()),
        admin: config
            .admin_advertise
            .clone()
            .unwrap_or_else(|| admin_addr.to_string()),
        key: member_key.public().to_string(),
    }
}

/// What the member's services share, and how each is started: the QUIC service (Raft,
/// node and gateway RPC), the admin API, and the leader's loops (repair, garbage
/// collection, audits, failure detection), each of which idles while another member leads.
struct Services {
    raft: Raft<TypeConfig>,
    catalog: Catalog,
    endpoint: quinn::Endpoint,
    key: SecretKey,
    liveness: Arc<Liveness>,
    repairs: Arc<crate::repair::Repairs>,
    gc_stats: Arc<crate::gc::GcStats>,
    audit_stats: Arc<crate::audit::AuditStats>,
}

impl Services {
    fn new(
        config: &CoordinatorConfig,
        raft: &Raft<TypeConfig>,
        catalog: &Catalog,
        endpoint: &quinn::Endpoint,
        key: &SecretKey,
    ) -> Self {
        Self {
            raft: raft.clone(),
            catalog: catalog.clone(),
            endpoint: endpoint.clone(),
            key: key.clone(),
            liveness: Arc::new(Liveness::default()),
            repairs: crate::repair::Repairs::new(crate::repair::RepairSettings::from(config)),
            gc_stats: Arc::new(crate::gc::GcStats::default()),
            audit_stats: Arc::new(crate::audit::AuditStats::default()),
        }
    }

    /// The QUIC service: Raft between members, the node RPC, the gateway RPC.
    fn spawn_quic(&self, config: &CoordinatorConfig) -> JoinHandle<()> {
        let rpc = RpcContext {
            repairs: self.repairs.clone(),
            commit_within: std::time::Duration::from_secs(config.orphan_delay_secs / 2),
            quorum_lease: std::time::Duration::from_millis(config.election_timeout_ms * 2),
            raft: self.raft.clone(),
            catalog: self.catalog.clone(),
            liveness: self.liveness.clone(),
            key: self.key.clone(),
            default_erasure: ErasureProfile {
                k: config.default_k,
                m: config.default_m,
                segment_size: ErasureProfile::PRODUCTION.segment_size,
            },
        };
        let nodes = NodeRpc::new(
            self.raft.clone(),
            self.catalog.clone(),
            self.liveness.clone(),
            self.endpoint.clone(),
            self.key.clone(),
        );
        tokio::spawn(serve_quic(self.endpoint.clone(), rpc, nodes))
    }

    /// The admin API on `listener`.
    fn spawn_admin_api(
        &self,
        config: &CoordinatorConfig,
        listener: tokio::net::TcpListener,
        token: String,
    ) -> JoinHandle<()> {
        let state = AdminState::from(AdminContext {
            raft: self.raft.clone(),
            catalog: self.catalog.clone(),
            token,
            id: config.id,
            liveness: self.liveness.clone(),
            default_k: config.default_k,
            default_m: config.default_m,
            key: self.key.public(),
            repairs: self.repairs.clone(),
            gc: self.gc_stats.clone(),
            audits: self.audit_stats.clone(),
        });
        tokio::spawn(admin::serve(listener, state))
    }

    /// The repair loop: surveys, rebuilds, drains, rebalancing.
    fn spawn_repairs(&self) -> JoinHandle<()> {
        tokio::spawn(crate::repair::run(
            self.raft.clone(),
            self.catalog.clone(),
            self.repairs.clone(),
        ))
    }

    /// Garbage collection: expired uploads, queued garbage, orphans found in inventories.
    fn spawn_gc(&self, config: &CoordinatorConfig) -> JoinHandle<()> {
        tokio::spawn(crate::gc::run(
            crate::gc::GcContext {
                raft: self.raft.clone(),
                catalog: self.catalog.clone(),
                endpoint: self.endpoint.clone(),
                key: self.key.clone(),
                liveness: self.liveness.clone(),
                repairs: self.repairs.clone(),
                stats: self.gc_stats.clone(),
            },
            crate::gc::GcSettings::from(config),
        ))
    }

    /// The audit loop: challenges, judgements, reputation.
    fn spawn_audits(&self, config: &CoordinatorConfig) -> JoinHandle<()> {
        tokio::spawn(crate::audit::run(
            crate::audit::AuditContext {
                raft: self.raft.clone(),
                catalog: self.catalog.clone(),
                endpoint: self.endpoint.clone(),
                key: self.key.clone(),
                liveness: self.liveness.clone(),
                repairs: self.repairs.clone(),
                stats: self.audit_stats.clone(),
            },
            crate::audit::AuditSettings::from(config),
        ))
    }

    /// The failure detector: nodes not heard from turn suspect, then lost.
    fn spawn_failure_detector(&self, config: &CoordinatorConfig) -> JoinHandle<()> {
        tokio::spawn(failure::run(
            self.raft.clone(),
            self.catalog.clone(),
            self.liveness.clone(),
            failure::Settings::from(config),
        ))
    }
}

/// Forms a new group with `me` as its only voter (`--init`), unless it is formed already;
/// a restored catalog is then compacted into a snapshot.
async fn form_group(
    raft: &Raft<TypeConfig>,
    id: u64,
    me: Member,
    restored: bool,
) -> Result<(), StartError> {
    // A member that already holds a vote or log is past forming (a restart with --init):
    // asking openraft again would only log an error.
    let formed = raft
        .is_initialized()
        .await
        .map_err(|err| StartError::Other(err.to_string()))?;
    if formed {
        tracing::info!("coordinator group already formed");
        return Ok(());
    }
    match raft.initialize(BTreeMap::from([(id, me)])).await {
        Ok(()) => {
            tracing::info!(id, "formed a new coordinator group");
            if restored {
                compact_after_restore(raft).await?;
            }
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("coordinator group already formed");
        }
        Err(err) => return Err(StartError::Other(format!("cannot form the group: {err}"))),
    }
    Ok(())
}

/// How long the leader waits for a follower to answer one snapshot chunk, the last one's
/// answer coming after the whole install.
const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// A restored catalog is in the state machine but in no log entry, so members added later
/// must receive it as a snapshot: take one now and purge the log it covers.
async fn compact_after_restore(raft: &Raft<TypeConfig>) -> Result<(), StartError> {
    let fail = |err: &dyn std::fmt::Display| StartError::Other(err.to_string());
    let metrics = raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.last_applied.is_some(), "initial membership applied")
        .await
        .map_err(|e| fail(&e))?;
    // Taken out of the metrics before any await: holding a borrow of the metrics channel
    // across an await would stall Raft, which publishes to it.
    let Some(applied) = metrics.last_applied else {
        return Err(StartError::Other(
            "nothing applied after forming the group".into(),
        ));
    };
    raft.trigger().snapshot().await.map_err(|e| fail(&e))?;
    raft.wait(Some(Duration::from_secs(30)))
        .snapshot(applied, "snapshot of the restored catalog")
        .await
        .map_err(|e| fail(&e))?;
    raft.trigger()
        .purge_log(applied.index)
        .await
        .map_err(|e| fail(&e))?;
    Ok(())
}

impl RunningCoordinator {
    /// Commits one command through this member, which must lead (for programs that run a
    /// coordinator in process: `cairn dev`, benchmarks); a refusal is an error.
    pub async fn commit(&self, command: Command) -> Result<CommandResult, String> {
        let response = self
            .raft
            .client_write(command)
            .await
            .map_err(|err| format!("coordinator: {err}"))?;
        match response.data {
            CommandResult::Refused(err) => Err(format!("coordinator refused: {err}")),
            result => Ok(result),
        }
    }

    /// A fresh one-time invitation for one node, valid for an hour, naming this member's
    /// QUIC address and bound to organisation `org` (what `cairn admin invite --org` makes
    /// for a group).
    pub async fn invite(&self, org: &str) -> Result<String, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|err| format!("no randomness: {err}"))?;
        self.commit(Command::CreateInvite {
            secret_hash: JoinToken::secret_hash(&secret),
            expires_ms: unix_now_ms() + 3_600_000,
            org: Some(org.to_string()),
        })
        .await?;
        Ok(JoinToken {
            coordinators: vec![self.quic_addr.to_string()],
            key: self.key,
            secret,
        }
        .encode())
    }

    /// Leaves the group's work to the others and stops serving.
    pub async fn shutdown(self) {
        let _ = self.raft.shutdown().await;
        self.endpoint
            .close(0u32.into(), b"coordinator shutting down");
        for task in &self.tasks {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// The admin token: `CAIRN_ADMIN_TOKEN` if set, else the token file, else a new random
/// token written to the file (mode 0600) and returned as new, so the start can say where.
fn admin_token(dir: &Path) -> Result<(String, Option<String>), StartError> {
    if let Ok(token) = std::env::var("CAIRN_ADMIN_TOKEN") {
        if token.len() < 16 {
            return Err(StartError::Config(
                "CAIRN_ADMIN_TOKEN must be at least 16 characters".into(),
            ));
        }
        return Ok((token, None));
    }
    let path = dir.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if token.len() >= 16 {
            return Ok((token, None));
        }
        return Err(StartError::Config(format!(
            "{} holds no usable token",
            path.display()
        )));
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|err| StartError::Other(err.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, token.as_bytes())?;
    Ok((token.clone(), Some(token)))
}

/// Writes a secret file readable by its owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Accepts QUIC connections: Raft from holders of the coordinator key, cluster RPC from
/// nodes, gateway RPC from registered gateways.
async fn serve_quic(endpoint: quinn::Endpoint, rpc: RpcContext, nodes: NodeRpc) {
    let handshakes = HandshakeGate::new();
    while let Some(incoming) = endpoint.accept().await {
        let (rpc, nodes, handshakes) = (rpc.clone(), nodes.clone(), handshakes.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match handshakes.admit(incoming).await {
                Admission::Connected(conn) => conn,
                Admission::Refused => {
                    tracing::info!(%remote, "too many handshakes from one address; refused");
                    return;
                }
                Admission::Retried | Admission::Failed => return,
            };
            let Some(peer) = peer_key(&conn) else { return };
            let raft = rpc.raft.clone();
            match negotiated_alpn(&conn).as_deref() {
                Some(RAFT_ALPN) if admits(&raft, &peer) => {
                    trust_peer(&conn);
                    serve_connection(conn, peer, rpc.key.public(), raft).await
                }
                Some(RAFT_ALPN) => {
                    tracing::warn!(%peer, remote = %conn.remote_address(), "raft connection from a key that is not a member's");
                    conn.close(1u32.into(), b"not a coordinator member");
                }
                Some(COORDINATOR_ALPN) => serve_nodes(conn, peer, nodes).await,
                Some(GATEWAY_ALPN) => serve_gateway(conn, peer, rpc).await,
                _ => conn.close(1u32.into(), b"unknown protocol"),
            }
        });
    }
}

/// The coordinator key a catalog backup (`cairn admin backup`) for `--restore` names,
/// from its header (the rows are streamed in later).
fn backup_key(path: &Path) -> Result<Option<PublicKey>, StartError> {
    crate::catalog::backup_file_key(path)
        .map_err(|err| StartError::Other(format!("{}: {err}", path.display())))
}

/// The coordinator key a restored catalog needs, from `key_path`: it must be there (kept
/// from the group the backup comes from) and be the one the backup names. A new key would
/// start a group whose orders no node obeys and whose masked segments nobody can unmask.
fn restore_key(key_path: &Path, needed: &PublicKey) -> Result<SecretKey, StartError> {
    if !key_path.exists() {
        return Err(StartError::Key(format!(
            "the backup was made under coordinator key {needed}; put that key's file \
             (coordinator.key from the original group's data dir, or its escrowed copy) at {} \
             or name it with --key-file: without it no stored segment can be read",
            key_path.display()
        )));
    }
    let key = SecretKey::load(key_path)?;
    if key.public() != *needed {
        return Err(StartError::Key(format!(
            "{} holds coordinator key {}, but the backup was made under {needed}: restore \
             with the original group's key file",
            key_path.display(),
            key.public()
        )));
    }
    Ok(key)
}
