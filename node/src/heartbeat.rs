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

use crate::metrics::NodeMetrics;

/// Where and how to send heartbeats.
pub struct HeartbeatTarget {
    /// Coordinator members, tried in turn.
    pub coordinators: Vec<SocketAddr>,
    /// The coordinator's key, pinned on every connection.
    pub coordinator_key: PublicKey,
    /// Time between heartbeats.
    pub interval: Duration,
}

/// Sends a heartbeat built by `beat` every interval until the task is dropped.
pub async fn run(
    endpoint: quinn::Endpoint,
    key: SecretKey,
    target: HeartbeatTarget,
    metrics: Arc<NodeMetrics>,
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
        for _ in 0..target.coordinators.len() {
            let addr = target.coordinators[next % target.coordinators.len()];
            match send(&endpoint, &key, &target, addr, &mut conn, &heartbeat).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(err) => {
                    tracing::debug!(%addr, %err, "heartbeat failed");
                    conn = None;
                    next += 1;
                }
            }
        }
        let result = if sent { "ok" } else { "failed" };
        metrics.heartbeats.with_label_values(&[result]).inc();
        if !sent {
            tracing::warn!(coordinators = ?target.coordinators, "no coordinator took the heartbeat");
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
) -> Result<(), String> {
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
        .map_err(|err| err.to_string())?,
    };
    let (mut send, mut recv) = live.open_bi().await.map_err(|err| err.to_string())?;
    write_frame(&mut send, &CoordinatorRequest::Heartbeat(heartbeat.clone()))
        .await
        .map_err(|err| err.to_string())?;
    let _ = send.finish();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame::<_, CoordinatorResponse>(&mut recv),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_string())?
    .map_err(|err| err.to_string())?;
    *conn = Some(live);
    match response {
        CoordinatorResponse::Ack => Ok(()),
        CoordinatorResponse::Error { code, message } => Err(format!("refused ({code}): {message}")),
    }
}
