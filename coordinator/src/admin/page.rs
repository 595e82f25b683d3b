//! The status page at `/`: the cluster's health at a glance, as plain server-rendered HTML
//! that refreshes itself and reads as well in a text browser (headings and tables, no
//! script, no layout that needs CSS) as in a graphical one.
//!
//! It is open like `/metrics`, so it shows only what is safe to show anyone who can reach
//! the admin listener: durability figures, nodes and their judgements, members. Never
//! access keys, the admin token or invitations. Every string that comes from the catalog
//! (organisation and site names are chosen by operators and nodes) is escaped.
//!
//! The figures come from the same views as `GET /v1/status` and `GET /v1/nodes`, so the
//! page and `cairn admin` agree. A follower renders what it knows (its replica of the
//! catalog; durability, fill and heartbeats are measured by the leader) and links to the
//! leader's page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_client::admin_views::{NodeView, StatusView};
use cairn_client::page::{age, escape};
use cairn_proto::bytesize::ByteSize;
use cairn_proto::order::unix_now_ms;

use super::{AdminState, placed_shards, status_view};

/// Seconds between the page's own refreshes.
const REFRESH_SECS: u32 = 5;
/// Latest node state changes listed under "Recent judgements".
const STATE_CHANGES_SHOWN: usize = 10;

/// Audit outcomes counted by this member while it led.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AuditCounts {
    passed: u64,
    failed: u64,
    missed: u64,
    contained: u64,
    rounds: u64,
}

/// Everything the page shows, gathered first so rendering is a pure function of it.
#[derive(Debug, Clone)]
pub(super) struct Page {
    /// The status as `GET /v1/status` answers it.
    status: StatusView,
    /// Every node as `GET /v1/nodes` lists it.
    nodes: Vec<NodeView>,
    /// This member's audit counters.
    audits: AuditCounts,
    /// When the page was made, ms since the Unix epoch.
    now_ms: u64,
}

/// `GET /`: the status page.
pub(super) async fn status_page(State(state): State<AdminState>) -> Response {
    let page = match gather(&state) {
        Ok(page) => page,
        Err(err) => {
            let body = format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
                 <title>Cairn status</title></head><body><h1>Cairn status</h1>\
                 <p>This member could not read its catalog: {}</p></body></html>\n",
                escape(&err.1.error)
            );
            return (StatusCode::INTERNAL_SERVER_ERROR, html_headers(), body).into_response();
        }
    };
    (html_headers(), render(&page)).into_response()
}

fn html_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

/// Reads what the page shows from this member's state; no read-index round trip, so the
/// page answers even while no member leads.
fn gather(state: &AdminState) -> Result<Page, super::ApiError> {
    let status = status_view(state)?;
    let placed = placed_shards(state);
    let nodes = state
        .inner
        .catalog
        .nodes()
        .map_err(super::internal)?
        .iter()
        .map(|n| super::convert::node_view(n, state.inner.liveness.last(&n.id), placed(&n.id)))
        .collect();
    let stats = &state.inner.audits;
    let audits = AuditCounts {
        passed: stats.passed.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        missed: stats.missed.load(Ordering::Relaxed),
        contained: stats.contained.load(Ordering::Relaxed),
        rounds: stats.rounds.load(Ordering::Relaxed),
    };
    Ok(Page {
        status,
        nodes,
        audits,
        now_ms: unix_now_ms(),
    })
}

/// Looks that help a graphical browser; a text browser ignores them and loses nothing.
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;max-width:90em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
thead th,tr.org th{background:#eee}tbody th,table.facts th{background:#f7f7f7;font-weight:normal}\
tr.org th{font-weight:bold}section.facts{display:inline-block;vertical-align:top;margin-right:2em}\
td{white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.verdict{font-size:1.2em;padding:.4em .8em;border-left:.4em solid}\
.good{border-color:#2a2;background:#efe}.warn{border-color:#d90;background:#ffd}\
.bad{border-color:#c22;background:#fee}\
tr[data-state=lost] td,tr[data-state=disqualified] td{color:#b00}\
tr[data-state=suspect] td{color:#a60}";

/// The page as HTML.
pub(super) fn render(page: &Page) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Cairn status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Cairn cluster status</h1>\n"
    );
    leadership(&mut out, page);
    verdict(&mut out, page);
    // Sections side by side where the screen is wide (the style's inline blocks); one
    // after the other without a style sheet.
    out.push_str("<section class=\"facts\">\n");
    durability(&mut out, page);
    out.push_str("</section>\n<section class=\"facts\">\n");
    repair(&mut out, page);
    out.push_str("</section>\n");
    nodes(&mut out, page);
    out.push_str("<section class=\"facts\">\n");
    judgements(&mut out, page);
    out.push_str("</section>\n<section class=\"facts\">\n");
    members(&mut out, page);
    out.push_str("</section>\n");
    let _ = write!(
        out,
        "<p>Rendered by member {} {}; refreshes every {REFRESH_SECS} s. Raw figures: \
         <a href=\"/metrics\">/metrics</a>.</p>\n</body>\n</html>\n",
        page.status.member,
        escape(&utc(page.now_ms))
    );
    out
}

/// Who answers and who leads.
fn leadership(out: &mut String, page: &Page) {
    let status = &page.status;
    let _ = writeln!(
        out,
        "<p>Member {} · term {} · applied index {} · {} · {} · {} logical</p>",
        status.member,
        status.term,
        status.last_applied.unwrap_or(0),
        plural(status.buckets as usize, "bucket"),
        plural(status.objects as usize, "object"),
        ByteSize(status.logical_bytes)
    );
    match status.leader {
        Some(leader) if leader == status.member => {
            out.push_str("<p>This member leads the group.</p>\n");
        }
        Some(leader) => {
            let admin = status
                .members
                .iter()
                .find(|m| m.id == leader)
                .map(|m| m.admin.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<p>This member follows: member {leader} leads \
                 (<a href=\"http://{0}/\">its status page, http://{0}/</a>). Shown here is this \
                 member's copy of the catalog; durability, fill and heartbeats are measured by \
                 the leader.</p>",
                escape(&admin)
            );
        }
        None => out.push_str(
            "<p>No member leads right now (an election may be under way): nothing is \
             uploaded, audited or repaired until one does.</p>\n",
        ),
    }
}

/// One line an operator reads first. Margins alone do not tell health (a 2+1 code is at
/// full margin at 1), so the line speaks of unreadable segments, segments one loss away
/// from it, and repair work.
fn verdict(out: &mut String, page: &Page) {
    let (class, text) = match &page.status.durability {
        None => (
            "warn",
            "Durability unknown here: no survey on this member.".to_string(),
        ),
        Some(d) if d.unreadable > 0 => (
            "bad",
            format!(
                "{} unreadable: bring lost nodes back before anything else.",
                plural(d.unreadable as usize, "segment")
            ),
        ),
        Some(d) => {
            let lowest = d.segments_by_margin.keys().next().copied();
            let at_edge: u64 = d.segments_by_margin.range(..=0).map(|(_, n)| n).sum();
            if lowest.is_none() {
                ("good", "Nothing stored in segments yet.".to_string())
            } else if at_edge > 0 {
                (
                    "warn",
                    format!(
                        "{} at margin 0: one more loss makes them unreadable. \
                         {} queued for repair, {} in progress.",
                        plural(at_edge as usize, "segment"),
                        d.repair_queue,
                        d.repairs_in_progress
                    ),
                )
            } else if d.repair_queue > 0 || d.repairs_in_progress > 0 || d.missing_shards > 0 {
                (
                    "warn",
                    format!(
                        "Every segment readable; repairing: {} queued, {} in progress, \
                         {} missing from inventories.",
                        plural(d.repair_queue as usize, "segment"),
                        d.repairs_in_progress,
                        plural(d.missing_shards as usize, "shard")
                    ),
                )
            } else {
                (
                    "good",
                    format!(
                        "Every segment readable, nothing waiting for repair; the lowest \
                         margin is {}.",
                        lowest.unwrap_or_default()
                    ),
                )
            }
        }
    };
    let _ = writeln!(
        out,
        "<p class=\"verdict {class}\"><strong>{}</strong></p>",
        escape(&text)
    );
}

/// A two-column table of facts.
fn facts(out: &mut String, rows: &[(String, String)]) {
    out.push_str("<table class=\"facts\">\n");
    for (label, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"n\">{}</td></tr>",
            escape(label),
            escape(value)
        );
    }
    out.push_str("</table>\n");
}

fn durability(out: &mut String, page: &Page) {
    out.push_str("<h2 id=\"durability\">Durability</h2>\n");
    let Some(d) = &page.status.durability else {
        out.push_str(match page.status.leader {
            Some(l) if l == page.status.member => {
                "<p>No survey has finished yet; the first comes within one repair interval.</p>\n"
            }
            _ => "<p>Not surveyed by this member: only the leader surveys (see its page).</p>\n",
        });
        return;
    };
    let mut rows = vec![
        ("Segments surveyed".to_string(), d.segments.to_string()),
        ("Unreadable segments".to_string(), d.unreadable.to_string()),
        (
            "Segments below the organisation spread rule".to_string(),
            d.below_spread.to_string(),
        ),
        (
            "Spread check under way".to_string(),
            format!(
                "{} of {} segments read (passes done: {})",
                d.spread_checked, d.segments, d.spread_passes
            ),
        ),
    ];
    for (margin, count) in d.segments_by_margin.iter().rev() {
        rows.push((format!("Segments at margin {margin}"), count.to_string()));
    }
    rows.extend([
        (
            "Stored bytes".to_string(),
            ByteSize(d.stored_bytes).to_string(),
        ),
        (
            "Logical bytes".to_string(),
            ByteSize(page.status.logical_bytes).to_string(),
        ),
        (
            "Stored ÷ logical".to_string(),
            d.stored_per_logical
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}")),
        ),
        (
            "Modelled annual loss probability".to_string(),
            probability(d.loss_model.annual_loss_probability),
        ),
        (
            "Node failures per node-year (model)".to_string(),
            format!("{:.2}", d.loss_model.failures_per_node_year),
        ),
        (
            "Repair window (model)".to_string(),
            format!("{:.0} s", d.loss_model.repair_window_secs),
        ),
        (
            "Garbage queue (shards)".to_string(),
            d.garbage_queue.to_string(),
        ),
        (
            "Orphan shards watched".to_string(),
            d.orphans_pending.to_string(),
        ),
        (
            "Surveyed".to_string(),
            age(page.now_ms as f64 / 1000.0, d.surveyed_ms as f64 / 1000.0),
        ),
    ]);
    facts(out, &rows);
}

fn repair(out: &mut String, page: &Page) {
    out.push_str("<h2 id=\"repair\">Repair queue</h2>\n");
    let Some(d) = &page.status.durability else {
        out.push_str("<p>The repair queue lives on the leader.</p>\n");
        return;
    };
    facts(
        out,
        &[
            (
                "Segments waiting for repair".to_string(),
                d.repair_queue.to_string(),
            ),
            (
                "Repairs in progress".to_string(),
                d.repairs_in_progress.to_string(),
            ),
            (
                "Shards missing from inventories".to_string(),
                d.missing_shards.to_string(),
            ),
        ],
    );
    out.push_str(
        "<table>\n<caption>Shards moved so far, by reason</caption>\n\
         <thead><tr><th scope=\"col\">Reason</th><th scope=\"col\">Shards</th>\
         <th scope=\"col\">Bytes</th></tr></thead>\n<tbody>\n",
    );
    for (reason, moved) in &d.moved {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(reason),
            moved.shards,
            ByteSize(moved.bytes)
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// The first characters of a node id: enough to tell nodes apart on a screen.
fn short_id(id: &str) -> String {
    id.chars().take(16).collect()
}

fn nodes(out: &mut String, page: &Page) {
    out.push_str("<h2 id=\"nodes\">Nodes by organisation</h2>\n");
    if page.nodes.is_empty() {
        out.push_str(
            "<p>No node has joined yet (<code>cairn admin invite --org ORG</code>).</p>\n",
        );
        return;
    }
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_org: BTreeMap<&str, Vec<&NodeView>> = BTreeMap::new();
    for node in &page.nodes {
        *by_state.entry(node.state.as_str()).or_default() += 1;
        by_org.entry(node.org.as_str()).or_default().push(node);
    }
    let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(
        out,
        "<p>{} in {}: {}.</p>",
        plural(page.nodes.len(), "node"),
        plural(by_org.len(), "organisation"),
        escape(&states.join(", "))
    );
    // One table, one row group per organisation headed by its totals: columns line up
    // across organisations, and a text browser still reads it group by group.
    out.push_str(
        "<table>\n<thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Site</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Since</th>\
         <th scope=\"col\">Used of capacity</th><th scope=\"col\">Shards</th>\
         <th scope=\"col\">Score</th><th scope=\"col\">Audits passed / failed</th>\
         <th scope=\"col\">Bad reads</th><th scope=\"col\">Last heartbeat</th></tr></thead>\n",
    );
    let now = page.now_ms as f64 / 1000.0;
    for (org, nodes) in by_org {
        let capacity: u64 = nodes.iter().map(|n| n.capacity).sum();
        let used: Option<u64> = nodes.iter().map(|n| n.used).sum();
        let _ = writeln!(
            out,
            "<tbody>\n<tr class=\"org\"><th colspan=\"10\" scope=\"rowgroup\">\
             Organisation {} · {} · capacity {} · used {}</th></tr>",
            escape(org),
            plural(nodes.len(), "node"),
            ByteSize(capacity),
            used.map_or_else(|| "unknown here".to_string(), |u| fill(u, capacity))
        );
        for node in nodes {
            let used = node.used.map_or_else(
                || format!("? of {}", ByteSize(node.capacity)),
                |u| format!("{} of {}", fill(u, node.capacity), ByteSize(node.capacity)),
            );
            let shards = node
                .shards
                .or(node.placed_shards)
                .map_or_else(|| "-".to_string(), |n| n.to_string());
            let heartbeat = node.last_heartbeat_ms.map_or_else(
                || "-".to_string(),
                |ms| format!("{:.1} s ago", ms as f64 / 1000.0),
            );
            let _ = writeln!(
                out,
                "<tr id=\"node-{id}\" data-state=\"{state}\"><th scope=\"row\">\
                 <code title=\"{id}\">{short}</code></th><td>{site}</td><td>{state}</td>\
                 <td>{since}</td><td class=\"n\">{used}</td><td class=\"n\">{shards}</td>\
                 <td class=\"n\">{score:.3}</td><td class=\"n\">{passed} / {failed}</td>\
                 <td class=\"n\">{bad}</td><td class=\"n\">{heartbeat}</td></tr>",
                id = escape(&node.id),
                short = escape(&short_id(&node.id)),
                site = escape(&node.site),
                state = escape(&node.state),
                since = escape(&age(now, node.state_since_ms as f64 / 1000.0)),
                used = escape(&used),
                shards = escape(&shards),
                score = node.score,
                passed = node.audits_passed,
                failed = node.audits_failed,
                bad = node.bad_reads,
                heartbeat = escape(&heartbeat),
            );
        }
        out.push_str("</tbody>\n");
    }
    out.push_str("</table>\n");
}

/// `n` and a noun, plural unless one.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A probability in scientific notation, or a plain 0.
fn probability(p: f64) -> String {
    if p == 0.0 {
        "0".to_string()
    } else {
        format!("{p:.2e}")
    }
}

/// `used` and its share of `capacity`, human-readable.
fn fill(used: u64, capacity: u64) -> String {
    if capacity == 0 {
        return ByteSize(used).to_string();
    }
    format!(
        "{} ({:.1}%)",
        ByteSize(used),
        used as f64 * 100.0 / capacity as f64
    )
}

fn judgements(out: &mut String, page: &Page) {
    out.push_str("<h2 id=\"judgements\">Recent judgements</h2>\n");
    let a = page.audits;
    out.push_str("<p>Audit challenges since this member last became leader:</p>\n");
    facts(
        out,
        &[
            ("Audits passed".to_string(), a.passed.to_string()),
            ("Audits failed".to_string(), a.failed.to_string()),
            (
                "Audits missed (asked again)".to_string(),
                a.missed.to_string(),
            ),
            (
                "Nodes with a missed audit due again".to_string(),
                a.contained.to_string(),
            ),
            ("Audit rounds".to_string(), a.rounds.to_string()),
        ],
    );
    let mut changes: Vec<&NodeView> = page.nodes.iter().collect();
    changes.sort_by(|a, b| {
        b.state_since_ms
            .cmp(&a.state_since_ms)
            .then(a.id.cmp(&b.id))
    });
    changes.truncate(STATE_CHANGES_SHOWN);
    if changes.is_empty() {
        return;
    }
    let now = page.now_ms as f64 / 1000.0;
    out.push_str(
        "<table>\n<caption>Latest node state changes</caption>\n<thead><tr>\
         <th scope=\"col\">When</th><th scope=\"col\">Node</th>\
         <th scope=\"col\">Organisation</th><th scope=\"col\">Now</th></tr></thead>\n<tbody>\n",
    );
    for node in changes {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&age(now, node.state_since_ms as f64 / 1000.0)),
            escape(&node.id),
            escape(&short_id(&node.id)),
            escape(&node.org),
            escape(&node.state)
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn members(out: &mut String, page: &Page) {
    out.push_str(
        "<h2 id=\"members\">Coordinator members</h2>\n<table>\n<thead><tr>\
         <th scope=\"col\">Id</th><th scope=\"col\">Raft address</th>\
         <th scope=\"col\">Admin address</th><th scope=\"col\">Role</th></tr></thead>\n<tbody>\n",
    );
    for member in &page.status.members {
        let role = match (page.status.leader == Some(member.id), member.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}{}</th><td>{}</td><td><a href=\"http://{admin}/\">{admin}</a></td>\
             <td>{role}</td></tr>",
            member.id,
            if member.id == page.status.member {
                " (this one)"
            } else {
                ""
            },
            escape(&member.addr),
            admin = escape(&member.admin),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "at {year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::admin_views::{DurabilityView, LossModelView, MemberView, MovedView};

    fn node(id: &str, org: &str, state: &str, since_ms: u64) -> NodeView {
        NodeView {
            id: id.to_string(),
            addr: "127.0.0.1:7400".into(),
            org: org.to_string(),
            site: "site<1>".into(),
            state: state.to_string(),
            capacity: 10 << 30,
            used: Some(5 << 30),
            shards: Some(3),
            last_heartbeat_ms: Some(1_500),
            state_since_ms: since_ms,
            vetted: true,
            bad_reads: 0,
            audits_passed: 4,
            audits_failed: 1,
            score: 0.95,
            placed_shards: Some(3),
        }
    }

    fn page(leader: Option<u64>, durability: bool) -> Page {
        let status = StatusView {
            member: 1,
            leader,
            coordinator_key: "key".into(),
            term: 3,
            last_applied: Some(42),
            members: vec![
                MemberView {
                    id: 1,
                    addr: "127.0.0.1:7300".into(),
                    admin: "127.0.0.1:7301".into(),
                    key: String::new(),
                    voter: true,
                },
                MemberView {
                    id: 2,
                    addr: "127.0.0.1:7310".into(),
                    admin: "127.0.0.1:7311".into(),
                    key: String::new(),
                    voter: true,
                },
            ],
            nodes_by_state: BTreeMap::new(),
            buckets: 1,
            objects: 5,
            logical_bytes: 3 << 20,
            durability: durability.then(|| DurabilityView {
                segments_by_margin: [(1, 2), (2, 7)].into_iter().collect(),
                segments: 9,
                unreadable: 0,
                below_spread: 3,
                spread_checked: 4,
                spread_passes: 1,
                repair_queue: 2,
                repairs_in_progress: 1,
                moved: [(
                    "repair".to_string(),
                    MovedView {
                        shards: 4,
                        bytes: 4096,
                    },
                )]
                .into_iter()
                .collect(),
                stored_bytes: 9 << 19,
                stored_per_logical: Some(1.5),
                surveyed_ms: 1_000_000,
                missing_shards: 0,
                garbage_queue: 6,
                orphans_pending: 0,
                collected_shards: 0,
                loss_model: LossModelView {
                    failures_per_node_year: 1.0,
                    repair_window_secs: 300.0,
                    annual_loss_probability: 1.25e-7,
                    expected_segments_lost_per_year: 0.0,
                },
            }),
        };
        Page {
            status,
            nodes: vec![
                node(
                    "aaaaaaaaaaaaaaaaaaaaaaaa",
                    "uni<script>alert(1)</script>",
                    "active",
                    1,
                ),
                node("bbbbbbbbbbbbbbbbbbbbbbbb", "corp&\"co'", "lost", 900_000),
            ],
            audits: AuditCounts {
                passed: 10,
                failed: 1,
                ..AuditCounts::default()
            },
            now_ms: 1_001_000,
        }
    }

    #[test]
    fn strings_from_the_catalog_are_escaped() {
        let html = render(&page(Some(1), true));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("uni&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("corp&amp;&quot;co&#39;"));
        assert!(html.contains("site&lt;1&gt;"));
        assert!(!html.contains("site<1>"));
    }

    #[test]
    fn durability_figures_and_nodes_are_shown() {
        let html = render(&page(Some(1), true));
        for expected in [
            "<th scope=\"row\">Segments surveyed</th><td class=\"n\">9</td>",
            "<th scope=\"row\">Unreadable segments</th><td class=\"n\">0</td>",
            "<th scope=\"row\">Segments below the organisation spread rule</th><td class=\"n\">3</td>",
            "<th scope=\"row\">Segments at margin 1</th><td class=\"n\">2</td>",
            "<th scope=\"row\">Segments waiting for repair</th><td class=\"n\">2</td>",
            "<th scope=\"row\">Modelled annual loss probability</th><td class=\"n\">1.25e-7</td>",
            "<th scope=\"row\">Stored bytes</th><td class=\"n\">4.5 MiB</td>",
            "5.0 GiB (50.0%) of 10.0 GiB",
            "id=\"node-bbbbbbbbbbbbbbbbbbbbbbbb\" data-state=\"lost\"",
            "Every segment readable; repairing: 2 segments queued, 1 in progress",
            "This member leads the group.",
            "<meta http-equiv=\"refresh\"",
        ] {
            assert!(
                html.contains(expected),
                "{expected:?} missing from:\n{html}"
            );
        }
        // The latest state change is listed first.
        let changes = html.split("Latest node state changes").nth(1).unwrap();
        let (lost, active) = (
            changes.find("bbbbbbbbbbbbbbbb").unwrap(),
            changes.find("aaaaaaaaaaaaaaaa").unwrap(),
        );
        assert!(lost < active);
    }

    #[test]
    fn the_verdict_speaks_of_unreadable_segments_then_margin_zero_then_repairs() {
        let verdict = |edit: &dyn Fn(&mut DurabilityView)| {
            let mut page = page(Some(1), true);
            if let Some(d) = page.status.durability.as_mut() {
                edit(d);
            }
            let mut out = String::new();
            verdict(&mut out, &page);
            out
        };
        let bad = verdict(&|d| {
            d.unreadable = 3;
            d.segments_by_margin.insert(-1, 3);
        });
        assert!(
            bad.contains("verdict bad") && bad.contains("3 segments unreadable"),
            "{bad}"
        );
        let edge = verdict(&|d| {
            d.segments_by_margin.insert(0, 1);
        });
        assert!(
            edge.contains("verdict warn") && edge.contains("1 segment at margin 0"),
            "{edge}"
        );
        let good = verdict(&|d| {
            d.repair_queue = 0;
            d.repairs_in_progress = 0;
        });
        assert!(
            good.contains("verdict good") && good.contains("the lowest margin is 1"),
            "{good}"
        );
    }

    #[test]
    fn a_follower_names_the_leader_and_says_what_it_cannot_know() {
        let html = render(&page(Some(2), false));
        assert!(html.contains("member 2 leads"), "{html}");
        assert!(html.contains("http://127.0.0.1:7311/"));
        assert!(html.contains("only the leader surveys"));
        let html = render(&page(None, false));
        assert!(html.contains("No member leads right now"));
    }

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(utc(0), "at 1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "at 2024-02-29 12:34:56 UTC");
    }
}
