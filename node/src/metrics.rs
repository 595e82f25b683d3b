//! [`NodeMetrics`]: the node's Prometheus metrics, served as text on `/metrics`, and the
//! node's status page at `/` (rendered from those same metrics by [`crate::status`], so the
//! page, `cairn node status` and Prometheus never disagree).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the node exports, named `cairn_node_<thing>_<unit>`.
pub struct NodeMetrics {
    registry: Registry,
    /// Bytes of shards stored.
    pub stored_bytes: IntGauge,
    /// Shards stored.
    pub stored_shards: IntGauge,
    /// Capacity offered.
    pub capacity_bytes: IntGauge,
    /// Requests by operation and result (`ok` or an error code).
    pub requests: IntCounterVec,
    /// Shard bytes received (uploads).
    pub received_bytes: IntCounter,
    /// Shard and proof bytes sent (reads, audits).
    pub sent_bytes: IntCounter,
    /// Stored shards found not to match their roots (scrub or read).
    pub verification_failures: IntCounter,
    /// Bytes re-hashed by the background scrub.
    pub scrubbed_bytes: IntCounter,
    /// Shards currently known to be damaged.
    pub damaged_shards: IntGauge,
    /// Heartbeats sent, by result.
    pub heartbeats: IntCounterVec,
    /// Cap on bytes per second sent (0: none).
    pub upload_limit: IntGauge,
    /// Cap on bytes per second received (0: none).
    pub download_limit: IntGauge,
    /// Bytes per second sent, averaged over the last minute.
    pub upload_rate: IntGauge,
    /// Bytes per second received, averaged over the last minute.
    pub download_rate: IntGauge,
    /// Always 1, labelled with the node's id, organisation, site and version.
    pub info: IntGaugeVec,
    /// Always 1, labelled with the last heartbeat round's outcome (`ok`, `refused`,
    /// `unreachable`), the member that answered or was tried last, and the reason.
    pub heartbeat_answer: IntGaugeVec,
    /// When the last heartbeat round ended, seconds since the Unix epoch.
    pub heartbeat_attempt_time: Gauge,
    /// When a coordinator last took a heartbeat, seconds since the Unix epoch (0: never).
    pub heartbeat_ok_time: Gauge,
    /// When the node started, seconds since the Unix epoch.
    pub start_time: Gauge,
    /// The coordinator's clock minus this machine's, in seconds, as the last heartbeat
    /// answer measured it (orders are checked against the coordinator's).
    pub clock_offset: Gauge,
    /// QUIC connections turned away before their peer was known, by reason: `handshakes`
    /// (too many handshakes in progress from one address) or `strangers` (too many
    /// connections of unknown peers from one address).
    pub connections_refused: IntCounterVec,
}

/// Longest heartbeat refusal or error kept in a label: the coordinator's message is free
/// text, and a label value is stored with every sample.
const MAX_REASON_LEN: usize = 200;

/// How a heartbeat round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatResult {
    /// A coordinator member took it.
    Ok,
    /// A member answered with a refusal (and none took it).
    Refused,
    /// No member answered at all.
    Unreachable,
}

impl HeartbeatResult {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            HeartbeatResult::Ok => "ok",
            HeartbeatResult::Refused => "refused",
            HeartbeatResult::Unreachable => "unreachable",
        }
    }
}

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl NodeMetrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("metric name and help are valid");
            registry
                .register(Box::new(gauge.clone()))
                .expect("each metric is registered once");
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("metric name and help are valid");
            registry
                .register(Box::new(counter.clone()))
                .expect("each metric is registered once");
            counter
        };
        let float_gauge = |name: &str, help: &str| {
            let gauge = Gauge::new(name, help).expect("metric name and help are valid");
            registry
                .register(Box::new(gauge.clone()))
                .expect("each metric is registered once");
            gauge
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let gauge = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric name, help and labels are valid");
            registry
                .register(Box::new(gauge.clone()))
                .expect("each metric is registered once");
            gauge
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric name, help and labels are valid");
            registry
                .register(Box::new(counter.clone()))
                .expect("each metric is registered once");
            counter
        };
        Self {
            stored_bytes: gauge("cairn_node_stored_bytes", "Bytes of shards stored."),
            stored_shards: gauge("cairn_node_stored_shards", "Shards stored."),
            capacity_bytes: gauge(
                "cairn_node_capacity_bytes",
                "Disk space offered for shards.",
            ),
            requests: counter_vec(
                "cairn_node_requests_total",
                "Shard requests by operation and result.",
                &["op", "result"],
            ),
            received_bytes: counter(
                "cairn_node_received_bytes_total",
                "Shard bytes received from uploads.",
            ),
            sent_bytes: counter(
                "cairn_node_sent_bytes_total",
                "Shard and proof bytes sent for reads and audits.",
            ),
            verification_failures: counter(
                "cairn_node_verification_failures_total",
                "Stored shards found not to match their roots.",
            ),
            scrubbed_bytes: counter(
                "cairn_node_scrubbed_bytes_total",
                "Bytes re-read and re-hashed by the background scrub.",
            ),
            damaged_shards: gauge(
                "cairn_node_damaged_shards",
                "Shards currently known to be damaged.",
            ),
            connections_refused: counter_vec(
                "cairn_node_connections_refused_total",
                "QUIC connections turned away before their peer was known, by reason.",
                &["reason"],
            ),
            heartbeats: counter_vec(
                "cairn_node_heartbeats_total",
                "Heartbeats sent to the coordinator, by result.",
                &["result"],
            ),
            upload_limit: gauge(
                "cairn_node_upload_limit_bytes_per_second",
                "Cap on bytes per second sent (0: no cap).",
            ),
            download_limit: gauge(
                "cairn_node_download_limit_bytes_per_second",
                "Cap on bytes per second received (0: no cap).",
            ),
            upload_rate: gauge(
                "cairn_node_upload_rate_bytes_per_second",
                "Bytes per second sent for reads and audits, averaged over the last minute.",
            ),
            download_rate: gauge(
                "cairn_node_download_rate_bytes_per_second",
                "Bytes per second received from uploads, averaged over the last minute.",
            ),
            info: gauge_vec(
                "cairn_node_info",
                "Always 1: the node's id, organisation, site and version as labels.",
                &["node", "org", "site", "version"],
            ),
            heartbeat_answer: gauge_vec(
                "cairn_node_heartbeat_answer_info",
                "Always 1: how the last heartbeat round ended (ok, refused, unreachable), \
                 the coordinator member concerned and the reason.",
                &["result", "coordinator", "reason"],
            ),
            heartbeat_attempt_time: float_gauge(
                "cairn_node_heartbeat_last_attempt_timestamp_seconds",
                "When the last heartbeat round ended, seconds since the Unix epoch.",
            ),
            heartbeat_ok_time: float_gauge(
                "cairn_node_heartbeat_last_ok_timestamp_seconds",
                "When a coordinator last took a heartbeat, seconds since the Unix epoch (0: never).",
            ),
            start_time: float_gauge(
                "cairn_node_start_timestamp_seconds",
                "When the node started, seconds since the Unix epoch.",
            ),
            clock_offset: float_gauge(
                "cairn_node_clock_offset_seconds",
                "The coordinator's clock minus this machine's, in seconds, at the last heartbeat.",
            ),
            registry,
        }
    }

    /// Records how a heartbeat round ended: `coordinator` is the member that took it, or
    /// the one whose refusal or error is `reason`.
    pub fn record_heartbeat(&self, result: HeartbeatResult, coordinator: &str, reason: &str) {
        let now = unix_now();
        let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
        // One series at a time: the previous round's labels go.
        self.heartbeat_answer.reset();
        self.heartbeat_answer
            .with_label_values(&[result.as_str(), coordinator, reason.as_str()])
            .set(1);
        self.heartbeat_attempt_time.set(now);
        if result == HeartbeatResult::Ok {
            self.heartbeat_ok_time.set(now);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|err| format!("# encoding metrics failed: {err}\n"))
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds of traffic the rate gauges average over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Keeps the upload and download rate gauges at their average over the last minute (or
/// since start, for a younger node), from the byte counters sampled every second.
async fn track_rates(metrics: Arc<NodeMetrics>) {
    let mut samples: VecDeque<(Instant, u64, u64)> = VecDeque::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let (sent, received) = (metrics.sent_bytes.get(), metrics.received_bytes.get());
        samples.push_back((now, sent, received));
        while samples
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
        if let Some((first, sent_then, received_then)) = samples.front() {
            let secs = now.duration_since(*first).as_secs_f64();
            if secs > 0.0 {
                let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs) as i64;
                metrics.upload_rate.set(rate(sent, *sent_then));
                metrics.download_rate.set(rate(received, *received_then));
            }
        }
    }
}

/// Serves `/metrics` and the status page `/` on `addr` until the returned task is aborted;
/// also returns the address actually bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<NodeMetrics>,
) -> std::io::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    use axum::http::header;
    use axum::routing::get;
    let text = metrics.clone();
    let page = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = text.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/",
            get(move || {
                let metrics = page.clone();
                async move {
                    let status = crate::status::NodeStatus::from_metrics(&metrics.render());
                    (
                        [
                            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        status.to_html(unix_now()),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics and the status page");
    let task = tokio::spawn(async move {
        tokio::select! {
            served = axum::serve(listener, app) => {
                if let Err(err) = served {
                    tracing::warn!(%err, "metrics server stopped");
                }
            }
            () = track_rates(metrics) => {}
        }
    });
    Ok((task, bound))
}
