//! [`GatewayMetrics`]: the gateway's Prometheus metrics, served as text on `/metrics`.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the gateway exports, named `cairn_gateway_<thing>_<unit>`.
pub struct GatewayMetrics {
    registry: Registry,
    /// Requests by S3 operation, HTTP method and status code.
    pub requests: IntCounterVec,
    /// Request latency (to the response head) by HTTP method.
    pub latency: HistogramVec,
    /// Object bytes accepted in uploads.
    pub bytes_in: IntCounter,
    /// Object bytes promised in GET responses.
    pub bytes_out: IntCounter,
    /// Shard reads whose bytes failed verification (or that the node said were damaged).
    pub verification_failures: IntCounter,
    /// Shard reads a node refused for a reason of its own (reported for an audit).
    pub refused_reads: IntCounter,
    /// Segment reads that gave up on a slow or failing data shard and decoded the range
    /// from other shards (the read path's hedging).
    pub degraded_reads: IntCounter,
    /// Shards rebuilt and stored for the coordinator's repair queue.
    pub repaired_shards: IntCounter,
    /// Bytes of those shards.
    pub repaired_bytes: IntCounter,
    /// Anonymous requests, and requests signed with a key not known to be real, answered
    /// `503 SlowDown` because their client was past its rate.
    pub throttled: IntCounter,
    /// Access key ids the gateway asked the coordinator about.
    pub access_key_lookups: IntCounter,
    /// Connections closed because the client read nothing of an answer for the send-stall
    /// timeout.
    pub send_stalls: IntCounter,
    /// Segment buffers held idle for reuse, read from the erasure crate at each scrape.
    idle_buffers: IntGauge,
}

impl GatewayMetrics {
    /// Registers every metric in a fresh registry.
    #[allow(clippy::expect_used)] // constant names and labels; a failure is a bug here
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "cairn_gateway_requests_total",
                "S3 requests by operation (as s3s routed them; `unknown` when refused before routing), HTTP method and status.",
            ),
            &["operation", "method", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "cairn_gateway_request_duration_seconds",
                "Time from request to response head, by HTTP method.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        Self {
            requests,
            latency,
            bytes_in: counter(
                "cairn_gateway_received_bytes_total",
                "Object bytes accepted in uploads.",
            ),
            bytes_out: counter(
                "cairn_gateway_sent_bytes_total",
                "Object bytes in GET responses.",
            ),
            verification_failures: counter(
                "cairn_gateway_verification_failures_total",
                "Shard reads that failed verification and were served from other shards.",
            ),
            refused_reads: counter(
                "cairn_gateway_refused_reads_total",
                "Shard reads a node refused for a reason of its own (busy, not found…), reported to the coordinator for an audit.",
            ),
            degraded_reads: counter(
                "cairn_gateway_degraded_reads_total",
                "Segment reads decoded around a slow or failing shard (hedged reads).",
            ),
            repaired_shards: counter(
                "cairn_gateway_repaired_shards_total",
                "Shards rebuilt and stored for repair jobs.",
            ),
            repaired_bytes: counter(
                "cairn_gateway_repaired_bytes_total",
                "Bytes of shards rebuilt and stored for repair jobs.",
            ),
            throttled: counter(
                "cairn_gateway_throttled_requests_total",
                "Anonymous requests, and requests signed with a key not known to be real, answered 503 SlowDown because their client address was past its rate.",
            ),
            access_key_lookups: counter(
                "cairn_gateway_access_key_lookups_total",
                "Access key ids looked up at the coordinator (real keys every 5 s while used, unknown ones at most every 30 s).",
            ),
            send_stalls: counter(
                "cairn_gateway_send_stalls_total",
                "Connections closed because the client read nothing of an answer for send_stall_timeout_ms.",
            ),
            idle_buffers: {
                let gauge = IntGauge::new(
                    "cairn_gateway_segment_buffers_idle_bytes",
                    "Memory of segment buffers kept for the next uploads' segments (bounded by the erasure crate).",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(gauge.clone()))
                    .expect("registered once");
                gauge
            },
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.idle_buffers
            .set(i64::try_from(cairn_erasure::idle_buffer_bytes()).unwrap_or(i64::MAX));
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
