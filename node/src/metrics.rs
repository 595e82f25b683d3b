//! [`NodeMetrics`]: the node's Prometheus metrics, served as text on `/metrics`.

use std::net::SocketAddr;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

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
            heartbeats: counter_vec(
                "cairn_node_heartbeats_total",
                "Heartbeats sent to the coordinator, by result.",
                &["result"],
            ),
            registry,
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

/// Serves `/metrics` on `addr` until the returned task is aborted; also returns the address
/// actually bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<NodeMetrics>,
) -> std::io::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics");
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(%err, "metrics server stopped");
        }
    });
    Ok((task, bound))
}
