//! [`CoordinatorClient`]: how a gateway talks to the coordinator group.
//!
//! The client knows every member's address, keeps one connection to the member it believes
//! leads, and follows the group when leadership moves: a follower answers
//! [`GatewayResponse::NotLeader`] with the leader's address, a dead member times out and the
//! next is tried.

use std::time::Duration;

use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::transport::{TransportError, connect};
use cairn_proto::wire::{WireError, read_frame_within, write_frame_within};
use tokio::sync::Mutex;

use crate::gateway_rpc::{GATEWAY_ALPN, GatewayRequest, GatewayResponse, MAX_RPC_FRAME, RpcCode};
use crate::records::RequestId;

/// Longest one attempt (connect, ask, answer) may take before the next member is tried.
/// Commits of large objects wait for a Raft round, which takes milliseconds on a healthy
/// group; a member that died mid-request never answers.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);
/// Longest a QUIC handshake with a member may take. A handshake is one round trip, so a
/// member that has not answered in this long is down or cut off, and the next one is tried.
const CONNECT_LIMIT: Duration = Duration::from_secs(3);
/// How long an answer may take before the client checks that the member is still there
/// (a member killed mid-request never answers, and QUIC only notices after its idle
/// timeout).
const PROBE_AFTER: Duration = Duration::from_secs(1);
/// How long a liveness probe may take.
const PROBE_LIMIT: Duration = Duration::from_secs(2);
/// Pause before going round the members again when none leads (an election is running).
const NO_LEADER_PAUSE: Duration = Duration::from_millis(250);
/// Rounds over all members before giving up.
const ROUNDS: usize = 8;

/// A client of the coordinator group's gateway RPC.
pub struct CoordinatorClient {
    endpoint: quinn::Endpoint,
    key: SecretKey,
    coordinator: PublicKey,
    members: Vec<String>,
    state: Mutex<State>,
}

struct State {
    /// Address believed to lead (may be one the group told us that is not in `members`).
    current: String,
    conn: Option<quinn::Connection>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The coordinator refused or failed the request.
    #[error("coordinator refused ({code:?}): {message}")]
    Refused {
        /// What kind of refusal.
        code: RpcCode,
        /// The coordinator's explanation.
        message: String,
    },
    /// No member could be reached or none leads.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// The coordinator answered with something that does not fit the request (names both):
    /// a bug on one side or the other, never a refusal.
    #[error("unexpected coordinator answer: {0}")]
    Unexpected(String),
}

impl CoordinatorClient {
    /// A client that connects from `endpoint` as `key` (a registered gateway key) to the
    /// members at `members` (`host:port`), which must prove `coordinator`.
    pub fn new(
        endpoint: quinn::Endpoint,
        key: SecretKey,
        coordinator: PublicKey,
        members: Vec<String>,
    ) -> Self {
        let current = members.first().cloned().unwrap_or_default();
        Self {
            endpoint,
            key,
            coordinator,
            members,
            state: Mutex::new(State {
                current,
                conn: None,
            }),
        }
    }

    /// Sends the change `request` to the leader, to be applied at most once however often
    /// it is resent: the request travels under one fresh id (see
    /// [`GatewayRequest::Once`]), so a commit whose answer was lost (the leader paused or
    /// died after committing) is answered, not applied again, when this client retries.
    pub async fn change(&self, request: GatewayRequest) -> Result<GatewayResponse, CallError> {
        let id = RequestId::random()
            .map_err(|err| CallError::Unavailable(format!("no random request id: {err}")))?;
        let request = GatewayRequest::Once {
            id,
            request: Box::new(request),
        };
        self.call(&request).await
    }

    /// Sends `request` to the leader and returns its answer; refusals are errors. A change
    /// sent this way may be applied twice if an answer is lost; see [`Self::change`].
    pub async fn call(&self, request: &GatewayRequest) -> Result<GatewayResponse, CallError> {
        if self.members.is_empty() {
            return Err(CallError::Unavailable(
                "no coordinator address configured".into(),
            ));
        }
        let mut last = String::new();
        for attempt in 0..ROUNDS * self.members.len() {
            let (addr, conn) = match self.connection().await {
                Ok(found) => found,
                Err((addr, err)) => {
                    last = format!("{addr}: {err}");
                    self.move_to(self.after(&addr)).await;
                    continue;
                }
            };
            let answered = tokio::select! {
                answer = tokio::time::timeout(ATTEMPT_LIMIT, exchange(&conn, request)) => answer,
                () = unresponsive(&conn) => Ok(Err(WireError::Io(std::io::Error::other(
                    "the member stopped answering",
                )))),
            };
            match answered {
                Ok(Ok(GatewayResponse::NotLeader { leader })) => {
                    last = format!("{addr} is not the leader");
                    match leader {
                        Some(leader) if leader != addr => self.move_to(&leader).await,
                        _ => {
                            if (attempt + 1) % self.members.len() == 0 {
                                tokio::time::sleep(NO_LEADER_PAUSE).await;
                            }
                            self.move_to(self.after(&addr)).await;
                        }
                    }
                }
                Ok(Ok(GatewayResponse::Error { code, message })) => {
                    return Err(CallError::Refused { code, message });
                }
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(err)) => {
                    last = format!("{addr}: {err}");
                    self.drop_connection(&addr).await;
                    self.move_to(self.after(&addr)).await;
                }
                Err(_) => {
                    last = format!("{addr}: no answer within {ATTEMPT_LIMIT:?}");
                    self.drop_connection(&addr).await;
                    self.move_to(self.after(&addr)).await;
                }
            }
        }
        Err(CallError::Unavailable(last))
    }

    /// The connection to the member believed to lead, opened if needed.
    async fn connection(&self) -> Result<(String, quinn::Connection), (String, String)> {
        let mut state = self.state.lock().await;
        let addr = state.current.clone();
        if let Some(conn) = &state.conn
            && conn.close_reason().is_none()
        {
            return Ok((addr, conn.clone()));
        }
        let resolved = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|err| (addr.clone(), err.to_string()))?
            .next()
            .ok_or_else(|| (addr.clone(), "address resolves to nothing".to_string()))?;
        let conn = tokio::time::timeout(
            CONNECT_LIMIT,
            connect(
                &self.endpoint,
                &self.key,
                resolved,
                &self.coordinator,
                GATEWAY_ALPN,
            ),
        )
        .await
        .map_err(|_| (addr.clone(), "connection timed out".to_string()))?
        .map_err(|err: TransportError| (addr.clone(), err.to_string()))?;
        state.conn = Some(conn.clone());
        Ok((addr, conn))
    }

    /// The member to try after `addr` failed or could not say who leads: the next in the
    /// configured order, so every member gets its turn (an address the group named that is
    /// not configured is followed by the first member).
    fn after(&self, addr: &str) -> &str {
        let next = self
            .members
            .iter()
            .position(|member| member == addr)
            .map_or(0, |i| (i + 1) % self.members.len());
        &self.members[next]
    }

    async fn move_to(&self, addr: &str) {
        let mut state = self.state.lock().await;
        if state.current != addr {
            state.current = addr.to_string();
            state.conn = None;
        }
    }

    async fn drop_connection(&self, addr: &str) {
        let mut state = self.state.lock().await;
        if state.current == addr {
            state.conn = None;
        }
    }
}

/// Returns once the member on `conn` fails to answer a ping; never while it answers. Lets
/// a slow request (a large commit on a busy group) keep waiting while a dead member is
/// given up on within seconds.
async fn unresponsive(conn: &quinn::Connection) {
    tokio::time::sleep(PROBE_AFTER).await;
    loop {
        match tokio::time::timeout(PROBE_LIMIT, exchange(conn, &GatewayRequest::Ping)).await {
            Ok(Ok(_)) => tokio::time::sleep(PROBE_AFTER).await,
            _ => return,
        }
    }
}

async fn exchange(
    conn: &quinn::Connection,
    request: &GatewayRequest,
) -> Result<GatewayResponse, WireError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|err| WireError::Io(std::io::Error::other(err)))?;
    write_frame_within(&mut send, request, MAX_RPC_FRAME).await?;
    let _ = send.finish();
    read_frame_within(&mut recv, MAX_RPC_FRAME).await
}
