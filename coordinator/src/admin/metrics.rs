//! `/metrics`: the coordinator's Prometheus metrics, read from Raft, the catalog and the
//! leader's loops at scrape time.
//!
//! Nothing is kept between scrapes: each one fills a fresh registry from the current
//! state, so a node removed from the cluster or a margin no segment has any more leaves no
//! stale series behind, and the crate writes the text format (label escaping included:
//! organisation names come from operators).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use prometheus::{Opts, Registry, TextEncoder};

use super::{AdminState, loss_model};
use crate::catalog::MoveReason;
use crate::catalog::model::NodeState;

/// Prometheus metrics, computed from Raft and catalog state at scrape time.
pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    let scrape = Scrape::default();
    record(&state, &scrape);
    let mut body = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&scrape.registry.gather(), &mut body) {
        tracing::error!(%err, "encoding the metrics failed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Fills `scrape` with every metric the coordinator shows.
fn record(state: &AdminState, scrape: &Scrape) {
    let inner = &state.inner;
    let raft = inner.raft.metrics().borrow().clone();
    let leading = raft.current_leader == Some(inner.id);
    scrape.gauge(
        "cairn_coordinator_is_leader",
        "Whether this member leads the group.",
        u64::from(leading),
    );
    scrape.gauge(
        "cairn_coordinator_raft_term",
        "Current Raft term.",
        raft.current_term,
    );
    scrape.gauge(
        "cairn_coordinator_raft_applied_index",
        "Last log index applied to the catalog.",
        raft.last_applied.map_or(0, |l| l.index),
    );
    // Entries still in the log (indexes start at 0): what a restart replays and what grows
    // until the next snapshot lets openraft purge it.
    let log_entries = raft
        .last_log_index
        .map_or(0, |last| last + 1)
        .saturating_sub(raft.purged.map_or(0, |purged| purged.index + 1));
    scrape.gauge(
        "cairn_coordinator_raft_log_entries",
        "Raft log entries held by this member (last log index minus the last purged one).",
        log_entries,
    );
    // Snapshots carry no time, so their age is not knowable across restarts; the index
    // they cover, against the applied index, says how far behind the latest one is.
    scrape.gauge(
        "cairn_coordinator_snapshot_log_index",
        "Log index the latest catalog snapshot covers (0 before the first).",
        raft.snapshot.map_or(0, |s| s.index),
    );

    let view = inner.repairs.view();
    if let Ok(nodes) = inner.catalog.nodes() {
        // Per organisation, over the nodes whose shards still count: what placement can use
        // and (as of the leader's survey) what the catalog places there.
        let mut capacity: BTreeMap<&str, u64> = BTreeMap::new();
        let mut stored: BTreeMap<&str, u64> = BTreeMap::new();
        for node in nodes.iter().filter(|n| n.state.holds_data()) {
            *capacity.entry(node.org.as_str()).or_default() += node.capacity;
            if let Some(survey) = &view.survey {
                *stored.entry(node.org.as_str()).or_default() +=
                    survey.bytes_by_node.get(&node.id).copied().unwrap_or(0);
            }
        }
        if let Some(by_org) = scrape.gauge_vec(
            "cairn_coordinator_org_capacity_bytes",
            "Space offered by each organisation's nodes that hold data.",
            &["org"],
        ) {
            for (org, bytes) in &capacity {
                by_org.with_label_values(&[org]).set(saturating_i64(*bytes));
            }
        }
        if view.survey.is_some()
            && let Some(by_org) = scrape.gauge_vec(
                "cairn_coordinator_org_stored_bytes",
                "Shard bytes the catalog places on each organisation's nodes that hold data, \
                 as last surveyed.",
                &["org"],
            )
        {
            for (org, bytes) in &stored {
                by_org.with_label_values(&[org]).set(saturating_i64(*bytes));
            }
        }
        // Heartbeats reach only the leader; a follower's (empty or stale) memory of them
        // would read as silence.
        if leading
            && let Some(age) = scrape.float_gauge_vec(
                "cairn_coordinator_node_heartbeat_age_seconds",
                "Seconds since each node's last heartbeat reached the leader.",
                &["node", "org"],
            )
        {
            for node in nodes.iter().filter(|n| n.state != NodeState::Gone) {
                if let Some((ago, _)) = inner.liveness.last(&node.id) {
                    age.with_label_values(&[node.id.to_string().as_str(), &node.org])
                        .set(ago.as_secs_f64());
                }
            }
        }
        if let Some(by_state) = scrape.gauge_vec(
            "cairn_coordinator_nodes",
            "Storage nodes by lifecycle state.",
            &["state"],
        ) {
            // Every state, so a dashboard sees zeros rather than gaps.
            for node_state in NodeState::ALL {
                by_state.with_label_values(&[node_state.as_str()]).set(0);
            }
            for node in &nodes {
                by_state.with_label_values(&[node.state.as_str()]).inc();
            }
        }
        // One series per node that may still hold data: what durability dashboards watch
        // fall before a disqualification.
        if let Some(score) = scrape.float_gauge_vec(
            "cairn_coordinator_node_audit_score_ratio",
            "Audit score of each node holding data (0 to 1; disqualified below the threshold).",
            &["node", "org"],
        ) {
            for node in nodes.iter().filter(|n| n.state.holds_data()) {
                score
                    .with_label_values(&[node.id.to_string().as_str(), &node.org])
                    .set(node.reputation.score());
            }
        }
    }

    if let Some(survey) = &view.survey {
        if let Ok(model) = loss_model(state, survey) {
            scrape.float_gauge(
                "cairn_coordinator_annual_loss_probability",
                "Modelled chance of losing data within a year, from node churn, margins and \
                 the repair window (as last surveyed).",
                model.annual_loss_probability,
            );
        }
        if let Some(by_margin) = scrape.gauge_vec(
            "cairn_coordinator_segments",
            "Segments by margin (shards left minus k), as last surveyed.",
            &["margin"],
        ) {
            for (margin, count) in &survey.segments_by_margin {
                by_margin
                    .with_label_values(&[margin.to_string().as_str()])
                    .set(saturating_i64(*count));
            }
        }
        scrape.gauge(
            "cairn_coordinator_unreadable_segments",
            "Segments with fewer than k shards left.",
            survey.unreadable,
        );
        scrape.gauge(
            "cairn_coordinator_segments_below_spread",
            "Segments with more shards in one organisation than their bucket's spread rule \
             allows.",
            survey.below_spread,
        );
        scrape.gauge(
            "cairn_coordinator_spread_check_segments",
            "Segments the spread check under way has read (it reads a bounded number per \
             survey round).",
            survey.spread_checked,
        );
        scrape.gauge(
            "cairn_coordinator_stored_bytes",
            "Bytes of shards on nodes that hold data.",
            survey.stored_bytes,
        );
        scrape.gauge(
            "cairn_coordinator_repair_queue_segments",
            "Segments waiting to be rebuilt or moved.",
            view.queue,
        );
        scrape.gauge(
            "cairn_coordinator_repairs_in_progress",
            "Repair jobs out with gateways.",
            view.in_progress,
        );
        scrape.gauge(
            "cairn_coordinator_missing_shards",
            "Shards missing from their nodes' latest inventories.",
            inner.gc.missing.load(Ordering::Relaxed),
        );
        scrape.gauge(
            "cairn_coordinator_orphan_shards",
            "Unreferenced shards watched until the orphan delay ends.",
            inner.gc.orphans_pending.load(Ordering::Relaxed),
        );
        if let Ok(count) = inner.catalog.garbage_count() {
            scrape.gauge(
                "cairn_coordinator_garbage_shards",
                "Replaced and deleted shards waiting for their safety delay.",
                count,
            );
        }
    }

    scrape.counter(
        "cairn_coordinator_collected_shards_total",
        "Shards deleted from nodes by garbage collection (since this member led).",
        inner.gc.deleted.load(Ordering::Relaxed),
    );
    let audits = &inner.audits;
    if let Some(by_result) = scrape.counter_vec(
        "cairn_coordinator_audits_total",
        "Audit challenges by outcome (since this member led): passed, failed, missed (held \
         for a retry).",
        &["result"],
    ) {
        for (result, count) in [
            ("passed", &audits.passed),
            ("failed", &audits.failed),
            ("missed", &audits.missed),
        ] {
            by_result
                .with_label_values(&[result])
                .inc_by(count.load(Ordering::Relaxed));
        }
    }
    scrape.gauge(
        "cairn_coordinator_audit_contained_nodes",
        "Nodes with a missed audit challenge due again.",
        audits.contained.load(Ordering::Relaxed),
    );
    let moved_shards = scrape.counter_vec(
        "cairn_coordinator_moved_shards_total",
        "Shards rebuilt or moved, by reason.",
        &["reason"],
    );
    let moved_bytes = scrape.counter_vec(
        "cairn_coordinator_moved_bytes_total",
        "Shard bytes rebuilt or moved, by reason.",
        &["reason"],
    );
    if let (Some(moved_shards), Some(moved_bytes)) = (moved_shards, moved_bytes) {
        for reason in MoveReason::ALL {
            if let Ok((shards, bytes)) = inner.catalog.moved(reason) {
                let label = [reason.as_str()];
                moved_shards.with_label_values(&label).inc_by(shards);
                moved_bytes.with_label_values(&label).inc_by(bytes);
            }
        }
    }
    if let Ok(stats) = inner.catalog.stats() {
        scrape.gauge(
            "cairn_coordinator_objects",
            "Objects in the catalog.",
            stats.objects,
        );
        scrape.gauge(
            "cairn_coordinator_logical_bytes",
            "Sum of object sizes.",
            stats.logical_bytes,
        );
    }
}

/// One scrape's registry. A metric that cannot be registered (a name given twice: a bug)
/// is logged and left out rather than failing the whole scrape.
#[derive(Default)]
struct Scrape {
    registry: Registry,
}

impl Scrape {
    /// Registers `metric` (made by `make`), or logs why not.
    fn add<M: Collector + Clone + 'static>(
        &self,
        name: &str,
        make: impl FnOnce() -> prometheus::Result<M>,
    ) -> Option<M> {
        let made = make().and_then(|metric| {
            self.registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        });
        made.inspect_err(|err| tracing::error!(metric = name, %err, "metric left out"))
            .ok()
    }

    fn gauge(&self, name: &str, help: &str, value: u64) {
        if let Some(gauge) = self.add(name, || IntGauge::new(name, help)) {
            gauge.set(saturating_i64(value));
        }
    }

    fn float_gauge(&self, name: &str, help: &str, value: f64) {
        if let Some(gauge) = self.add(name, || Gauge::new(name, help)) {
            gauge.set(value);
        }
    }

    fn counter(&self, name: &str, help: &str, value: u64) {
        if let Some(counter) = self.add(name, || IntCounter::new(name, help)) {
            counter.inc_by(value);
        }
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
        self.add(name, || IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<GaugeVec> {
        self.add(name, || GaugeVec::new(Opts::new(name, help), labels))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
        self.add(name, || IntCounterVec::new(Opts::new(name, help), labels))
    }
}

/// Byte and segment counts are u64; Prometheus' integer gauges are i64 (far beyond any
/// real cluster's figures, so saturating never shows).
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_operators_are_escaped_and_a_name_given_twice_is_left_out() {
        let scrape = Scrape::default();
        let by_org = scrape
            .gauge_vec("cairn_test_org_bytes", "Bytes.", &["org"])
            .expect("registered");
        by_org.with_label_values(&["uni \"a\"\\b\nc"]).set(7);
        scrape.gauge("cairn_test_plain", "Plain.", 10 << 40);
        // A second metric of the same name is left out, not a failed scrape.
        assert!(
            scrape
                .gauge_vec("cairn_test_org_bytes", "Again.", &["org"])
                .is_none()
        );
        let mut body = Vec::new();
        TextEncoder::new()
            .encode(&scrape.registry.gather(), &mut body)
            .expect("encoded");
        let text = String::from_utf8(body).expect("utf-8");
        assert!(
            text.contains("cairn_test_org_bytes{org=\"uni \\\"a\\\"\\\\b\\nc\"} 7"),
            "{text}"
        );
        // Byte counts print whole (samples are floats in the text format: exact to 2⁵³).
        assert!(text.contains("cairn_test_plain 10995116277760\n"), "{text}");
    }
}
