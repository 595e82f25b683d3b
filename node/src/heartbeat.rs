//! Heartbeats: the node tells the coordinator, on an interval, that it is alive and how full
//! it is. They go to the leader's memory, not the Raft log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::transport::connect;
use cairn_proto::wire::{
    COORDINATOR_ALPN, CoordinatorRequest, CoordinatorResponse, Heartbeat, read_frame, write_frame,
};

use crate::metrics::{HeartbeatResult, NodeMetrics};

/// Why one member did not take a heartbeat.
enum Failure {
    /// It answered with a refusal: the reason is the coordinator's.
    Refused(String),
    /// It could not be reached, or did not answer in time.
    Unreachable(String),
}

/// Where and how to send heartbeats.
pub struct HeartbeatTarget {
    /// Coordinator members, tried in turn.
    pub coordinators: Vec<SocketAddr>,
    /// The coordinator's key, pinned on every connection.
    pub coordinator_key: PublicKey,
    /// Time between heartbeats.
    pub interval: Duration,
}

/// Longest time one attempt (connect, send, answer) may take, however slow the interval.
const ATTEMPT_MAX: Duration = Duration::from_secs(10);
/// Shortest, however fast the interval: a loaded member still gets a fair chance to answer.
const ATTEMPT_MIN: Duration = Duration::from_secs(1);

impl HeartbeatTarget {
    /// How long one member gets to take a heartbeat before the next is tried: about one
    /// interval. A member killed mid-connection never answers (QUIC would notice only after
    /// its 30 s idle timeout), and a node that waited that long would miss the new leader's
    /// grace period; a live leader answers a heartbeat in milliseconds.
    fn attempt_limit(&self) -> Duration {
        self.interval.clamp(ATTEMPT_MIN, ATTEMPT_MAX)
    }
}

/// Sends a heartbeat built by `beat` every interval until the task is dropped. Members are
/// tried in turn, starting with the one that last took a heartbeat, so after a failover the
/// node moves on from a dead or demoted leader (which refuses with `Busy`) to the new one.
pub async fn run(
    endpoint: quinn::Endpoint,
    key: SecretKey,
    target: HeartbeatTarget,
    metrics: Arc<NodeMetrics>,
    clock: Arc<crate::clock::Clock>,
    beat: impl Fn() -> Heartbeat + Send + 'static,
) {
    let mut ticker = tokio::time::interval(target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<quinn::Connection> = None;
    let mut next = 0usize;
    loop {
        ticker.tick().await;
        let heartbeat = beat();
        let mut sent = false;
        // What the operator is shown if no member takes it: a refusal says more than a
        // timeout, so the last refusal wins over the last error.
        let mut refused: Option<(SocketAddr, String)> = None;
        let mut unreachable: Option<(SocketAddr, String)> = None;
        for _ in 0..target.coordinators.len() {
            let addr = target.coordinators[next % target.coordinators.len()];
            let attempt = send(
                &endpoint, &key, &target, addr, &mut conn, &heartbeat, &clock,
            );
            let outcome = tokio::time::timeout(target.attempt_limit(), attempt)
                .await
                .unwrap_or_else(|_| Err(Failure::Unreachable("no answer in time".to_string())));
            match outcome {
                Ok(()) => {
                    sent = true;
                    metrics.clock_offset.set(clock.offset_ms() as f64 / 1000.0);
                    metrics.record_heartbeat(HeartbeatResult::Ok, &addr.to_string(), "");
                    break;
                }
                Err(failure) => {
                    let (kind, err) = match failure {
                        Failure::Refused(err) => (&mut refused, err),
                        Failure::Unreachable(err) => (&mut unreachable, err),
                    };
                    tracing::debug!(%addr, %err, "heartbeat failed");
                    *kind = Some((addr, err));
                    conn = None;
                    next += 1;
                }
            }
        }
        let result = if sent { "ok" } else { "failed" };
        metrics.heartbeats.with_label_values(&[result]).inc();
        if !sent {
            match (refused, unreachable) {
                (Some((addr, reason)), _) => {
                    metrics.record_heartbeat(HeartbeatResult::Refused, &addr.to_string(), &reason)
                }
                (None, Some((addr, reason))) => metrics.record_heartbeat(
                    HeartbeatResult::Unreachable,
                    &addr.to_string(),
                    &reason,
                ),
                (None, None) => metrics.record_heartbeat(
                    HeartbeatResult::Unreachable,
                    "",
                    "no coordinator address",
                ),
            }
            tracing::warn!(coordinators = ?target.coordinators, "no coordinator took the heartbeat");
            // Start the next round one member later, so a dead member is not always the
            // first tried (and waited for) while the others elect a leader.
            next += 1;
        }
    }
}

async fn send(
    endpoint: &quinn::Endpoint,
    key: &SecretKey,
    target: &HeartbeatTarget,
    addr: SocketAddr,
    conn: &mut Option<quinn::Connection>,
    heartbeat: &Heartbeat,
    clock: &crate::clock::Clock,
) -> Result<(), Failure> {
    let sent_ms = crate::clock::Clock::local_ms();
    let unreachable = |err: &dyn std::fmt::Display| Failure::Unreachable(err.to_string());
    let live = match conn.take() {
        Some(c) if c.close_reason().is_none() => c,
        _ => connect(
            endpoint,
            key,
            addr,
            &target.coordinator_key,
            COORDINATOR_ALPN,
        )
        .await
        .map_err(|err| unreachable(&err))?,
    };
    let (mut send, mut recv) = live.open_bi().await.map_err(|err| unreachable(&err))?;
    write_frame(&mut send, &CoordinatorRequest::Heartbeat(heartbeat.clone()))
        .await
        .map_err(|err| unreachable(&err))?;
    let _ = send.finish();
    // Bounded by the caller's attempt limit.
    let response = read_frame::<_, CoordinatorResponse>(&mut recv)
        .await
        .map_err(|err| unreachable(&err))?;
    *conn = Some(live);
    match response {
        CoordinatorResponse::Time { now_ms } => {
            clock.observe(now_ms, sent_ms, crate::clock::Clock::local_ms());
            Ok(())
        }
        CoordinatorResponse::Ack => Ok(()),
        CoordinatorResponse::Error { code, message } => {
            Err(Failure::Refused(format!("{code}: {message}")))
        }
    }
}
