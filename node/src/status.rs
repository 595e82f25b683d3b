//! [`NodeStatus`]: what a node operator wants to know at a glance (what the node holds,
//! what it serves against its caps, how audits and heartbeats went), read back from the
//! node's own Prometheus metrics.
//!
//! Both views are made from the metrics text: the status page the metrics listener serves
//! at `/` and `cairn node status`, which fetches `/metrics` from a running node. So the
//! page, the command and Prometheus always tell the same story, and the command needs
//! nothing the node does not already export.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cairn_client::page::{age, escape};
use cairn_proto::bytesize::ByteSize;

/// One sample of the metrics text: name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one sample line (`name{label="value",…} value [timestamp]`); `None` for comments,
/// blank lines and anything malformed (a status view skips what it cannot read).
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut end = None;
        loop {
            // Label name up to `=`, or the closing brace.
            let mut label = String::new();
            let mut closed = false;
            for (i, c) in chars.by_ref() {
                match c {
                    '}' => {
                        end = Some(i);
                        closed = true;
                        break;
                    }
                    '=' => break,
                    ',' | ' ' => {}
                    c => label.push(c),
                }
            }
            if closed {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            let mut finished = false;
            for (_, c) in chars.by_ref() {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        finished = true;
                        break;
                    }
                    (false, c) => value.push(c),
                }
            }
            if !finished {
                return None;
            }
            labels.push((label, value));
        }
        rest = &inner[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The last heartbeat round's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    /// `ok`, `refused` or `unreachable`.
    pub result: String,
    /// The member that took it, refused it, or was tried last.
    pub coordinator: String,
    /// The refusal or error (empty when taken).
    pub reason: String,
}

/// What a node holds, serves and last heard, as its metrics say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStatus {
    /// The node's id.
    pub node: Option<String>,
    /// Its organisation.
    pub org: Option<String>,
    /// Its site.
    pub site: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// When it started, seconds since the Unix epoch.
    pub started_at: Option<f64>,
    /// Shards held.
    pub shards: Option<u64>,
    /// Bytes of shards held.
    pub stored_bytes: Option<u64>,
    /// Space offered.
    pub capacity_bytes: Option<u64>,
    /// Shards known to be damaged.
    pub damaged_shards: Option<u64>,
    /// Bytes per second sent over the last minute.
    pub upload_rate: Option<u64>,
    /// Cap on bytes per second sent (0: none).
    pub upload_limit: Option<u64>,
    /// Bytes per second received over the last minute.
    pub download_rate: Option<u64>,
    /// Cap on bytes per second received (0: none).
    pub download_limit: Option<u64>,
    /// Bytes sent since start.
    pub sent_bytes: Option<u64>,
    /// Bytes received since start.
    pub received_bytes: Option<u64>,
    /// Audit challenges answered with proofs.
    pub audits_answered: u64,
    /// Audit challenges refused, by error code.
    pub audits_refused: BTreeMap<String, u64>,
    /// Shard reads served.
    pub reads_served: u64,
    /// Heartbeat rounds some member took.
    pub heartbeats_ok: u64,
    /// Heartbeat rounds no member took.
    pub heartbeats_failed: u64,
    /// The last round's outcome, once there was one.
    pub heartbeat: Option<HeartbeatAnswer>,
    /// When the last round ended, seconds since the Unix epoch.
    pub heartbeat_at: Option<f64>,
    /// When a member last took one, seconds since the Unix epoch.
    pub heartbeat_ok_at: Option<f64>,
}

/// A section of the status: a heading and its rows of label and value.
type Section = (&'static str, Vec<(&'static str, String)>);

impl NodeStatus {
    /// Reads the node's metrics text (what `/metrics` serves). Unknown and malformed lines
    /// are skipped; [`NodeStatus::is_node`] says whether it was a node's at all.
    pub fn from_metrics(text: &str) -> Self {
        let mut status = NodeStatus::default();
        let count = |v: f64| (v.is_finite() && v >= 0.0).then_some(v as u64);
        let time = |v: f64| (v.is_finite() && v > 0.0).then_some(v);
        for sample in text.lines().filter_map(parse_sample) {
            let v = sample.value;
            match sample.name.as_str() {
                "cairn_node_info" => {
                    let label = |n: &str| sample.label(n).map(str::to_string);
                    status.node = label("node");
                    status.org = label("org");
                    status.site = label("site");
                    status.version = label("version");
                }
                "cairn_node_start_timestamp_seconds" => status.started_at = time(v),
                "cairn_node_stored_shards" => status.shards = count(v),
                "cairn_node_stored_bytes" => status.stored_bytes = count(v),
                "cairn_node_capacity_bytes" => status.capacity_bytes = count(v),
                "cairn_node_damaged_shards" => status.damaged_shards = count(v),
                "cairn_node_upload_rate_bytes_per_second" => status.upload_rate = count(v),
                "cairn_node_upload_limit_bytes_per_second" => status.upload_limit = count(v),
                "cairn_node_download_rate_bytes_per_second" => status.download_rate = count(v),
                "cairn_node_download_limit_bytes_per_second" => status.download_limit = count(v),
                "cairn_node_sent_bytes_total" => status.sent_bytes = count(v),
                "cairn_node_received_bytes_total" => status.received_bytes = count(v),
                "cairn_node_requests_total" => {
                    let n = count(v).unwrap_or(0);
                    match (sample.label("op"), sample.label("result")) {
                        (Some("audit"), Some("ok")) => status.audits_answered += n,
                        (Some("audit"), Some(code)) => {
                            *status.audits_refused.entry(code.to_string()).or_default() += n
                        }
                        (Some("get"), Some("ok")) => status.reads_served += n,
                        _ => {}
                    }
                }
                "cairn_node_heartbeats_total" => {
                    let n = count(v).unwrap_or(0);
                    match sample.label("result") {
                        Some("ok") => status.heartbeats_ok += n,
                        Some(_) => status.heartbeats_failed += n,
                        None => {}
                    }
                }
                "cairn_node_heartbeat_answer_info" => {
                    status.heartbeat = Some(HeartbeatAnswer {
                        result: sample.label("result").unwrap_or("?").to_string(),
                        coordinator: sample.label("coordinator").unwrap_or("").to_string(),
                        reason: sample.label("reason").unwrap_or("").to_string(),
                    })
                }
                "cairn_node_heartbeat_last_attempt_timestamp_seconds" => {
                    status.heartbeat_at = time(v)
                }
                "cairn_node_heartbeat_last_ok_timestamp_seconds" => {
                    status.heartbeat_ok_at = time(v)
                }
                _ => {}
            }
        }
        status
    }

    /// Whether the text was a Cairn node's metrics (it names the node and its capacity).
    pub fn is_node(&self) -> bool {
        self.node.is_some() && self.capacity_bytes.is_some()
    }

    /// The last heartbeat answer in words, ages measured from `now` (Unix seconds).
    pub fn heartbeat_summary(&self, now: f64) -> String {
        let ago = |at: Option<f64>| at.map_or_else(|| "at an unknown time".into(), |t| age(now, t));
        let last_ok = match self.heartbeat_ok_at {
            Some(t) => format!("last taken {}", age(now, t)),
            None => "never taken yet".to_string(),
        };
        match &self.heartbeat {
            None => "none sent yet".to_string(),
            Some(answer) => match answer.result.as_str() {
                "ok" => format!(
                    "ok: taken by {} {}",
                    answer.coordinator,
                    ago(self.heartbeat_at)
                ),
                "refused" => format!(
                    "refused by {} {}: {} ({last_ok})",
                    answer.coordinator,
                    ago(self.heartbeat_at),
                    answer.reason
                ),
                other => format!(
                    "{other} {}: {}{} ({last_ok})",
                    ago(self.heartbeat_at),
                    if answer.coordinator.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", answer.coordinator)
                    },
                    answer.reason
                ),
            },
        }
    }

    /// Every fact, in sections, as both views show them.
    fn sections(&self, now: f64) -> Vec<Section> {
        let size = |v: Option<u64>| v.map_or_else(|| "unknown".into(), |b| ByteSize(b).to_string());
        let number = |v: Option<u64>| v.map_or_else(|| "unknown".into(), |n| n.to_string());
        let fill = match (self.stored_bytes, self.capacity_bytes) {
            (Some(used), Some(cap)) if cap > 0 => {
                format!("{:.1}%", used as f64 * 100.0 / cap as f64)
            }
            _ => "unknown".into(),
        };
        let rate = |rate: Option<u64>, limit: Option<u64>| {
            let rate = rate.map_or_else(|| "unknown".into(), |r| format!("{}/s", ByteSize(r)));
            match limit {
                Some(0) => format!("{rate} (no cap)"),
                Some(cap) => format!("{rate} of a {}/s cap", ByteSize(cap)),
                None => rate,
            }
        };
        let refused = if self.audits_refused.is_empty() {
            "0".to_string()
        } else {
            let total: u64 = self.audits_refused.values().sum();
            let reasons: Vec<String> = self
                .audits_refused
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            format!("{total} ({})", reasons.join(", "))
        };
        vec![
            (
                "Node",
                vec![
                    ("id", self.node.clone().unwrap_or_else(|| "unknown".into())),
                    ("organisation", self.org.clone().unwrap_or_default()),
                    ("site", self.site.clone().unwrap_or_default()),
                    ("version", self.version.clone().unwrap_or_default()),
                    (
                        "started",
                        self.started_at
                            .map_or_else(|| "unknown".into(), |t| age(now, t)),
                    ),
                ],
            ),
            (
                "Storage",
                vec![
                    ("shards held", number(self.shards)),
                    ("bytes held", size(self.stored_bytes)),
                    ("capacity", size(self.capacity_bytes)),
                    ("fill", fill),
                    ("damaged shards", number(self.damaged_shards)),
                ],
            ),
            (
                "Bandwidth (last minute)",
                vec![
                    ("upload", rate(self.upload_rate, self.upload_limit)),
                    ("download", rate(self.download_rate, self.download_limit)),
                    ("sent since start", size(self.sent_bytes)),
                    ("received since start", size(self.received_bytes)),
                    ("shard reads served", self.reads_served.to_string()),
                ],
            ),
            (
                "Audits (as this node saw them)",
                vec![
                    ("answered with proofs", self.audits_answered.to_string()),
                    ("refused", refused),
                    (
                        "reputation",
                        "not reported by the coordinator (heartbeat answers carry no \
                         score; the coordinator's status page shows it)"
                            .to_string(),
                    ),
                ],
            ),
            (
                "Heartbeats",
                vec![
                    ("last answer", self.heartbeat_summary(now)),
                    ("taken since start", self.heartbeats_ok.to_string()),
                    ("failed since start", self.heartbeats_failed.to_string()),
                ],
            ),
        ]
    }

    /// Plain text for a terminal, ages measured from `now` (Unix seconds).
    pub fn to_text(&self, now: f64) -> String {
        let mut out = String::new();
        for (i, (heading, rows)) in self.sections(now).iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "{heading}");
            for (label, value) in rows {
                let _ = writeln!(out, "  {label:<22} {value}");
            }
        }
        out
    }

    /// The node's status page: plain, semantic HTML that reads the same in a text browser,
    /// refreshing itself every five seconds.
    pub fn to_html(&self, now: f64) -> String {
        let title = match &self.node {
            Some(id) => format!("Cairn node {}", short(id)),
            None => "Cairn node".to_string(),
        };
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"refresh\" content=\"5\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            escape(&title),
            escape(&title)
        );
        for (heading, rows) in self.sections(now) {
            let _ = writeln!(out, "<h2>{}</h2>\n<table>", escape(heading));
            for (label, value) in rows {
                let _ = writeln!(
                    out,
                    "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                    escape(label),
                    escape(&value)
                );
            }
            out.push_str("</table>\n");
        }
        out.push_str(
            "<p>Raw figures: <a href=\"/metrics\">/metrics</a>. \
             This page refreshes every 5 seconds.</p>\n</body>\n</html>\n",
        );
        out
    }
}

/// Looks that help a graphical browser and that a text browser can ignore.
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;max-width:60em}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f4f4f4;font-weight:normal;width:14em}";

/// The first characters of a node id: enough to tell nodes apart in a title.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{HeartbeatResult, NodeMetrics};

    #[test]
    fn samples_parse_with_escaped_labels() {
        let sample =
            parse_sample(r#"cairn_node_info{node="n1",org="a\"b\\c,d}",site="s"} 1"#).unwrap();
        assert_eq!(sample.name, "cairn_node_info");
        assert_eq!(sample.label("org"), Some("a\"b\\c,d}"));
        assert_eq!(sample.label("site"), Some("s"));
        assert_eq!(sample.value, 1.0);
        assert_eq!(
            parse_sample("cairn_node_stored_bytes 42").map(|s| s.value),
            Some(42.0)
        );
        assert_eq!(parse_sample("# HELP cairn_node_stored_bytes x"), None);
        assert_eq!(parse_sample(r#"x{a="unterminated} 1"#), None);
        assert_eq!(parse_sample("x{a=1} 1"), None);
    }

    /// A node's metrics as the daemon sets them, read back through the text format.
    fn metrics() -> NodeMetrics {
        let metrics = NodeMetrics::new();
        metrics
            .info
            .with_label_values(&["nodeid0123456789", "uni<script>&co", "site-1", "0.1.0"])
            .set(1);
        metrics.capacity_bytes.set(10 << 30);
        metrics.stored_bytes.set(3 << 20);
        metrics.stored_shards.set(7);
        metrics.upload_limit.set(20 << 20);
        metrics.upload_rate.set(1 << 20);
        metrics
            .requests
            .with_label_values(&["audit", "ok"])
            .inc_by(5);
        metrics
            .requests
            .with_label_values(&["audit", "not_found"])
            .inc_by(2);
        metrics.heartbeats.with_label_values(&["ok"]).inc_by(3);
        metrics
    }

    #[test]
    fn status_reads_back_what_the_metrics_hold() {
        let metrics = metrics();
        metrics.record_heartbeat(HeartbeatResult::Ok, "10.0.0.1:7300", "");
        let status = NodeStatus::from_metrics(&metrics.render());
        assert!(status.is_node());
        assert_eq!(status.org.as_deref(), Some("uni<script>&co"));
        assert_eq!(status.shards, Some(7));
        assert_eq!(status.capacity_bytes, Some(10 << 30));
        assert_eq!(status.audits_answered, 5);
        assert_eq!(status.audits_refused.get("not_found"), Some(&2));
        assert_eq!(status.heartbeats_ok, 3);
        let now = status.heartbeat_at.unwrap() + 2.0;
        let text = status.to_text(now);
        for expected in [
            "10.0 GiB",
            "3.0 MiB",
            "1.0 MiB/s of a 20.0 MiB/s cap",
            "(no cap)",
            "refused                2 (not_found 2)",
            "not reported by the coordinator",
            "ok: taken by 10.0.0.1:7300 2.0 s ago",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(!NodeStatus::from_metrics("up 1\n").is_node());
    }

    #[test]
    fn refusals_and_silence_are_told_apart() {
        let metrics = metrics();
        metrics.record_heartbeat(HeartbeatResult::Ok, "10.0.0.1:7300", "");
        metrics.record_heartbeat(
            HeartbeatResult::Refused,
            "10.0.0.2:7300",
            "busy: not the leader",
        );
        let status = NodeStatus::from_metrics(&metrics.render());
        let now = status.heartbeat_at.unwrap();
        let summary = status.heartbeat_summary(now);
        assert!(
            summary.starts_with("refused by 10.0.0.2:7300 0.0 s ago: busy: not the leader"),
            "{summary}"
        );
        assert!(summary.contains("last taken"), "{summary}");
        metrics.record_heartbeat(HeartbeatResult::Unreachable, "10.0.0.3:7300", "timed out");
        let status = NodeStatus::from_metrics(&metrics.render());
        let summary = status.heartbeat_summary(status.heartbeat_at.unwrap());
        assert!(
            summary.starts_with("unreachable 0.0 s ago: 10.0.0.3:7300: timed out"),
            "{summary}"
        );
        let fresh = NodeStatus::from_metrics(&NodeMetrics::new().render());
        assert_eq!(fresh.heartbeat_summary(0.0), "none sent yet");
    }

    #[test]
    fn the_page_escapes_what_operators_chose() {
        let status = NodeStatus::from_metrics(&metrics().render());
        let html = status.to_html(0.0);
        assert!(html.contains("uni&lt;script&gt;&amp;co"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\""));
        assert!(html.contains("<th scope=\"row\">capacity</th><td>10.0 GiB</td>"));
    }
}
