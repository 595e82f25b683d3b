//! Raft RPCs between coordinator members, over QUIC on ALPN `cairn-raft/1`.
//!
//! Each RPC is one bi-directional stream: a request frame, a response frame. The caller
//! presents its own member key and pins the callee to the coordinator key (every member
//! serves under it); the callee accepts Raft traffic only from member keys in its current
//! membership ([`admits`]), and every call carries a [`MemberCredential`]: the coordinator
//! key's signature over the caller's member key. Only holders of the coordinator key can
//! issue one, so a member that has no membership yet (started, not yet added) still hears
//! Raft only from the group it belongs to, never from a stranger who reaches it first.

// openraft fixes the RPC error types, which are large.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_proto::identity::{PublicKey, SecretKey, Signature};
use cairn_proto::transport::connect;
use cairn_proto::wire::{WireError, read_frame_within, write_frame_within};
use openraft::Raft;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{Member, TypeConfig};

/// Protocol name (and version) of member-to-member Raft traffic.
pub const RAFT_ALPN: &[u8] = b"cairn-raft/1";

/// Largest Raft frame: entry batches and snapshot chunks between trusted members are far
/// larger than anything an untrusted peer may send.
pub const MAX_RAFT_FRAME: u32 = 64 << 20;

/// Domain separation of [`MemberCredential`] signatures: no other message the coordinator
/// key signs (orders, invitations) can be mistaken for one.
const CREDENTIAL_CONTEXT: &[u8] = b"cairn-member-credential-v1\0";

/// Proof that a member key belongs to the group: the coordinator key's signature over it.
///
/// Every member holds the coordinator key (it serves under it), so each issues its own at
/// start; the key is not stored anywhere else and a stranger cannot make one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MemberCredential(Signature);

impl MemberCredential {
    /// The credential of `member`, signed with the coordinator key.
    pub fn issue(coordinator: &SecretKey, member: &PublicKey) -> Self {
        Self(coordinator.sign(&Self::message(member)))
    }

    /// A credential that proves nothing, for tests of refusals.
    pub fn forged(signer: &SecretKey, member: &PublicKey) -> Self {
        Self(signer.sign(&Self::message(member)))
    }

    /// Whether this credential was issued by `coordinator` for `member`.
    pub fn admits(&self, coordinator: &PublicKey, member: &PublicKey) -> bool {
        coordinator.verify(&Self::message(member), &self.0)
    }

    fn message(member: &PublicKey) -> Vec<u8> {
        let mut message = CREDENTIAL_CONTEXT.to_vec();
        message.extend_from_slice(member.as_bytes());
        message
    }
}

/// One Raft RPC as it travels: the caller's credential and the request.
#[derive(Debug, Serialize, Deserialize)]
pub struct RaftCall {
    /// The caller's [`MemberCredential`], checked against the key it connected with.
    pub credential: MemberCredential,
    /// The RPC.
    pub request: RaftRequest,
}

/// A Raft RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Replicate entries (or heartbeat).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote.
    Vote(VoteRequest<u64>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`], as the receiving member's Raft produced it.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// Answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Answer to `InstallSnapshot`.
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// Makes [`Peer`]s for openraft; one per target member.
pub struct Network {
    endpoint: quinn::Endpoint,
    key: SecretKey,
    coordinator: PublicKey,
    credential: MemberCredential,
}

impl Network {
    /// Dials from `endpoint` as `key` (this member's own key), expecting every member to
    /// prove `coordinator`, and presenting `credential` (issued for `key`).
    pub fn new(
        endpoint: quinn::Endpoint,
        key: SecretKey,
        coordinator: PublicKey,
        credential: MemberCredential,
    ) -> Self {
        Self {
            endpoint,
            key,
            coordinator,
            credential,
        }
    }
}

/// Whether `peer` may open a Raft connection to this member: its key belongs to a member
/// of the current membership. A member that has never joined has no membership yet and
/// accepts the connection of the first leader that replicates to it (which the operator's
/// `members add` makes happen right after its start); [`serve_connection`] then hears it
/// only with a valid [`MemberCredential`]. Once it holds a membership, only members are
/// heard.
pub fn admits(raft: &Raft<TypeConfig>, peer: &PublicKey) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    let mut nodes = membership.nodes().peekable();
    if nodes.peek().is_none() {
        return true;
    }
    let peer = peer.to_string();
    nodes.any(|(_, member)| member.key == peer)
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Peer {
        Peer {
            endpoint: self.endpoint.clone(),
            key: self.key.clone(),
            coordinator: self.coordinator,
            credential: self.credential,
            target,
            member: node.clone(),
            conn: None,
        }
    }
}

/// The connection to one other member, reopened when it drops.
pub struct Peer {
    endpoint: quinn::Endpoint,
    key: SecretKey,
    coordinator: PublicKey,
    credential: MemberCredential,
    target: u64,
    member: Member,
    conn: Option<quinn::Connection>,
}

/// Why an RPC did not get an answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("member {0} has an unusable address: {1}")]
    Address(String, String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("stream failed: {0}")]
    Stream(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer does not match the request")]
    Mismatch,
}

impl From<WireError> for CallError {
    fn from(err: WireError) -> Self {
        CallError::Stream(err.to_string())
    }
}

impl Peer {
    async fn call(
        &mut self,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftResponse, CallError> {
        let call = RaftCall {
            credential: self.credential,
            request,
        };
        tokio::time::timeout(ttl, self.call_inner(&call))
            .await
            .map_err(|_| CallError::Timeout(ttl))?
    }

    async fn call_inner(&mut self, call: &RaftCall) -> Result<RaftResponse, CallError> {
        let conn = match self.conn.take() {
            Some(conn) if conn.close_reason().is_none() => conn,
            _ => {
                let addr: SocketAddr =
                    self.member
                        .addr
                        .parse()
                        .map_err(|err: std::net::AddrParseError| {
                            CallError::Address(self.member.addr.clone(), err.to_string())
                        })?;
                connect(
                    &self.endpoint,
                    &self.key,
                    addr,
                    &self.coordinator,
                    RAFT_ALPN,
                )
                .await
                .map_err(|err| CallError::Connect(err.to_string()))?
            }
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|err| CallError::Stream(err.to_string()))?;
        write_frame_within(&mut send, call, MAX_RAFT_FRAME).await?;
        let _ = send.finish();
        let response = read_frame_within(&mut recv, MAX_RAFT_FRAME).await?;
        self.conn = Some(conn);
        Ok(response)
    }

    fn unreachable<E: std::error::Error>(&self, err: CallError) -> RPCError<u64, Member, E> {
        tracing::debug!(target_member = self.target, %err, "raft rpc failed");
        match err {
            CallError::Connect(_) | CallError::Address(..) => {
                RPCError::Unreachable(Unreachable::new(&err))
            }
            _ => RPCError::Network(NetworkError::new(&err)),
        }
    }

    fn remote<E: std::error::Error>(&self, err: E) -> RPCError<u64, Member, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.member.clone(),
            err,
        ))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self
            .call(RaftRequest::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftResponse::AppendEntries(result)) => result.map_err(|err| self.remote(err)),
            Ok(_) => Err(self.unreachable(CallError::Mismatch)),
            Err(err) => Err(self.unreachable(err)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(RaftRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftResponse::InstallSnapshot(result)) => result.map_err(|err| self.remote(err)),
            Ok(_) => Err(self.unreachable(CallError::Mismatch)),
            Err(err) => Err(self.unreachable(err)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        match self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftResponse::Vote(result)) => result.map_err(|err| self.remote(err)),
            Ok(_) => Err(self.unreachable(CallError::Mismatch)),
            Err(err) => Err(self.unreachable(err)),
        }
    }
}

/// Answers Raft RPCs arriving on `conn` from `peer` (already [`admits`]ted) until it
/// closes. The first call's credential must have been issued by `coordinator` for `peer`,
/// or the connection is closed before anything reaches Raft.
pub async fn serve_connection(
    conn: quinn::Connection,
    peer: PublicKey,
    coordinator: PublicKey,
    raft: Raft<TypeConfig>,
) {
    let proven = Arc::new(AtomicBool::new(false));
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (raft, proven, conn) = (raft.clone(), proven.clone(), conn.clone());
        tokio::spawn(async move {
            let call = match read_frame_within::<_, RaftCall>(&mut recv, MAX_RAFT_FRAME).await {
                Ok(call) => call,
                Err(err) => {
                    tracing::warn!(%err, "unreadable raft request");
                    return;
                }
            };
            if !proven.load(Ordering::Acquire) {
                if !call.credential.admits(&coordinator, &peer) {
                    tracing::warn!(%peer, remote = %conn.remote_address(), "raft call without a member credential");
                    conn.close(1u32.into(), b"no member credential");
                    return;
                }
                proven.store(true, Ordering::Release);
            }
            let response = match call.request {
                RaftRequest::AppendEntries(rpc) => {
                    RaftResponse::AppendEntries(raft.append_entries(rpc).await)
                }
                RaftRequest::Vote(rpc) => RaftResponse::Vote(raft.vote(rpc).await),
                RaftRequest::InstallSnapshot(rpc) => {
                    RaftResponse::InstallSnapshot(raft.install_snapshot(rpc).await)
                }
            };
            if let Err(err) = write_frame_within(&mut send, &response, MAX_RAFT_FRAME).await {
                tracing::debug!(%err, "raft response not delivered");
            }
            let _ = send.finish();
        });
    }
}
