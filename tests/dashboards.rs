//! The Grafana dashboards (`ops/grafana/dashboards/*.json`) show data from a real cluster,
//! and the alert rules (`ops/prometheus/alerts.yml`) read the metrics Cairn really exports.
//!
//! `cairn dev --fast-timers` runs a coordinator, three nodes and a gateway; two more
//! `cairn node` processes join it with invitations and serve their metrics (the dev
//! cluster's in-process nodes have no metrics listener). A real Prometheus (Debian's
//! `prometheus` package) scrapes the coordinator, both nodes and the gateway every second,
//! with `alerts.yml` loaded. The aws cli uploads objects, curl reads them back anonymously
//! and asks for a key that does not exist (a 404). Then one of the two nodes is killed:
//! Prometheus sees its target go down, the coordinator lists it as lost (and Prometheus
//! counts a lost node), and CairnNodeLost becomes active. Finally **every** `expr` of every panel target of every
//! dashboard is evaluated through Prometheus' HTTP API (`/api/v1/query`), and each must
//! return at least one series: the failure names the dashboard, panel and query that came
//! back empty (a metric or label name that does not exist, a typo, a broken expression).
//!
//! Without a `prometheus` binary the test fails when `CI` is set (`.ci/run` installs it)
//! and is skipped, saying why, otherwise.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::ports::free_ports;

const TOKEN: &str = "dashboards-test-admin-token-0123456789";
/// `cairn dev`'s own nodes and code: 2+1, so five nodes leave room to repair after a loss.
const DEV_NODES: u16 = 3;
/// Nodes started as their own processes, with metrics.
const METRIC_NODES: usize = 2;

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `cairn dev`: its S3 endpoint, admin API and access key.
struct Dev {
    _process: Process,
    s3: SocketAddr,
    admin: SocketAddr,
    key: (String, String),
}

/// A `cairn node` process joined to the dev cluster.
struct Node {
    process: Process,
    id: String,
    org: String,
    metrics: SocketAddr,
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let Some(prometheus) = prometheus_binary() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dashboards = load_dashboards();

    let dev = start_dev(&root.path().join("dev"));
    let mut nodes: Vec<Node> = (0..METRIC_NODES)
        .map(|i| start_node(&dev, &root.path().join(format!("node-{i}")), i))
        .collect();

    // Prometheus scrapes every process once a second, with Cairn's alert rules loaded.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/prometheus/alerts.yml");
    let config = root.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&dev, &nodes, &rules)).unwrap();
    let (_prometheus, api) = start_prometheus(&prometheus, &config, &root.path().join("tsdb"));
    let targets = 2 + nodes.len();
    wait_for("every scrape target up", Duration::from_secs(60), || {
        let up = targets_up(&api);
        (up.len() == targets && up.iter().all(|(_, health)| health == "up"))
            .then_some(())
            .ok_or_else(|| format!("targets: {up:?}"))
    });

    // Load through the gateway: uploads (a shard-coded size), anonymous reads, a 404.
    let data = root.path().join("object.bin");
    std::fs::write(&data, pseudo_random(3 << 20)).unwrap();
    for i in 0..3 {
        run(aws(
            &dev,
            &[
                "s3",
                "cp",
                data.to_str().unwrap(),
                &format!("s3://cache/dashboards/object-{i}.bin"),
            ],
        ));
        let url = format!("http://{}/cache/dashboards/object-{i}.bin", dev.s3);
        assert_eq!(curl_status(&url), 200, "GET {url}");
    }
    run(aws(&dev, &["s3", "ls", "s3://cache/dashboards/"]));
    let missing = format!("http://{}/cache/dashboards/no-such-object", dev.s3);
    assert_eq!(curl_status(&missing), 404, "GET {missing}");
    wait_for("Prometheus to see the 404", Duration::from_secs(30), || {
        non_empty(&api, r#"cairn_gateway_requests_total{status="404"}"#)
    });

    // One node stops: its target goes down, the coordinator declares it lost, and the
    // CairnNodeLost rule, evaluated on the real metrics, becomes active.
    let stopped = nodes.remove(0);
    let (stopped_id, stopped_metrics) = (stopped.id.clone(), stopped.metrics);
    drop(stopped.process);
    println!("stopped node {stopped_id} (metrics {stopped_metrics})");
    let stopped_target = stopped_metrics.to_string();
    wait_for(
        "the stopped node's target down",
        Duration::from_secs(30),
        || {
            let up = targets_up(&api);
            up.iter()
                .any(|(target, health)| *target == stopped_target && health == "down")
                .then_some(())
                .ok_or_else(|| format!("targets: {up:?}"))
        },
    );
    wait_for("the stopped node lost", Duration::from_secs(60), || {
        let state = node_state(&dev, &stopped_id);
        let lost = scalar(&api, r#"max(cairn_coordinator_nodes{state="lost"})"#);
        (state.as_deref() == Some("lost") && lost.is_some_and(|n| n >= 1.0))
            .then_some(())
            .ok_or_else(|| format!("its state: {state:?}; lost nodes in Prometheus: {lost:?}"))
    });
    wait_for("CairnNodeLost active", Duration::from_secs(30), || {
        let active = active_alerts(&api);
        active
            .iter()
            .any(|(name, _)| name == "CairnNodeLost")
            .then_some(())
            .ok_or_else(|| format!("active alerts: {active:?}"))
    });

    // Every query of every panel returns data. Rates need two samples after the load, so
    // the empty ones are asked again until the deadline; then every empty one is named.
    let queries: Vec<&Query> = dashboards.iter().flat_map(|d| &d.queries).collect();
    assert!(
        queries.len() >= 40,
        "only {} panel queries found: is the dashboard walk broken?",
        queries.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty: Vec<(&Query, String)> = queries.iter().map(|q| (*q, String::new())).collect();
    loop {
        empty.retain_mut(|(query, why)| match evaluate(&api, &query.expr) {
            Ok(0) => {
                *why = "no series".into();
                true
            }
            Ok(_) => false,
            Err(err) => {
                *why = err;
                true
            }
        });
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}",
        empty.len(),
        queries.len(),
        empty
            .iter()
            .map(|(q, why)| format!(
                "  {} / panel {:?} / {}: {} ({why})",
                q.dashboard, q.panel, q.ref_id, q.expr
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "{} queries of {} dashboards ({}) all returned data; node {} was lost as expected",
        queries.len(),
        dashboards.len(),
        dashboards
            .iter()
            .map(|d| d.title.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        stopped_id
    );
    drop(nodes);
}

// ---------------------------------------------------------------------------------------
// Dashboards

/// One dashboard: its title and every query of its panels.
struct Dashboard {
    title: String,
    queries: Vec<Query>,
}

/// One panel target's PromQL expression and where it is.
struct Query {
    dashboard: String,
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every `*.json` under ops/grafana/dashboards with the `expr` of every target of every
/// panel (rows' nested panels included). Template variables are not used by the
/// dashboards; one would make its query fail here, since nothing substitutes it.
fn load_dashboards() -> Vec<Dashboard> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the four dashboards in {}",
        dir.display()
    );
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: not JSON: {err}", file.display()));
            let title = json["title"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no title", file.display()))
                .to_string();
            assert!(
                json["uid"].as_str().is_some_and(|uid| !uid.is_empty()),
                "{}: no uid",
                file.display()
            );
            let mut queries = Vec::new();
            collect_queries(&title, &json["panels"], &mut queries);
            assert!(!queries.is_empty(), "{title}: no panel queries");
            Dashboard { title, queries }
        })
        .collect()
}

fn collect_queries(dashboard: &str, panels: &serde_json::Value, out: &mut Vec<Query>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array();
            assert!(
                targets.is_some_and(|t| !t.is_empty()),
                "{dashboard} / panel {title:?} has no targets"
            );
            for target in targets.into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("{dashboard} / panel {title:?}: a target without expr")
                });
                out.push(Query {
                    dashboard: dashboard.to_string(),
                    panel: title.to_string(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                    expr: expr.to_string(),
                });
            }
        }
        collect_queries(dashboard, &panel["panels"], out);
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus

/// The `prometheus` binary, or `None` (after saying why) where it is missing and CI is
/// not set.
fn prometheus_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/prometheus")])
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let why = "no `prometheus` binary on PATH or at /usr/bin/prometheus \
                   (Debian: apt-get install prometheus; .ci/run installs it)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping the dashboards test: {why}");
    }
    found
}

fn prometheus_config(dev: &Dev, nodes: &[Node], rules: &Path) -> String {
    let node_groups: String = nodes
        .iter()
        .map(|node| {
            format!(
                "      - targets: [\"{}\"]\n        labels: {{org: \"{}\"}}\n",
                node.metrics, node.org
            )
        })
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules:?}\n\
         scrape_configs:\n\
         \x20 - job_name: cairn-coordinator\n    static_configs:\n      - targets: [\"{admin}\"]\n\
         \x20 - job_name: cairn-node\n    static_configs:\n{node_groups}\
         \x20 - job_name: cairn-gateway\n    static_configs:\n      - targets: [\"{s3}\"]\n",
        rules = rules.display().to_string(),
        admin = dev.admin,
        s3 = dev.s3,
    )
}

/// Starts Prometheus on a free port and waits until it answers `/-/ready`; returns it and
/// its base URL.
fn start_prometheus(binary: &Path, config: &Path, tsdb: &Path) -> (Process, String) {
    let listen = free_tcp_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| panic!("{}: {err}", binary.display()));
    let process = Process(child);
    let api = format!("http://{listen}");
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        get(&format!("{api}/-/ready"), &[]).map(drop)
    });
    (process, api)
}

/// GET `url` with `query` parameters; the body, or why not.
fn get(url: &str, query: &[(&str, &str)]) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut request = agent.get(url);
    for (name, value) in query {
        request = request.query(*name, *value);
    }
    let mut response = request.call().map_err(|err| format!("GET {url}: {err}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|err| format!("GET {url}: {err}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("GET {url}: {status}: {body}"))
    }
}

/// The `data` of a successful Prometheus API answer.
fn api_get(api: &str, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let body = get(&format!("{api}{path}"), query)?;
    let mut json: serde_json::Value =
        serde_json::from_str(&body).map_err(|err| format!("{path}: {err}: {body}"))?;
    if json["status"] != "success" {
        return Err(format!("{path}: {body}"));
    }
    Ok(json["data"].take())
}

/// How many series (or a scalar: 1) an instant query returns, or Prometheus' error.
fn evaluate(api: &str, expr: &str) -> Result<usize, String> {
    let data = api_get(api, "/api/v1/query", &[("query", expr)])?;
    match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => Ok(data["result"].as_array().map_or(0, Vec::len)),
        Some("scalar") | Some("string") => Ok(1),
        other => Err(format!("unexpected result type {other:?}")),
    }
}

fn non_empty(api: &str, expr: &str) -> Result<(), String> {
    match evaluate(api, expr)? {
        0 => Err(format!("{expr}: no series")),
        _ => Ok(()),
    }
}

/// The value of a query that returns one series without labels.
fn scalar(api: &str, expr: &str) -> Option<f64> {
    let data = api_get(api, "/api/v1/query", &[("query", expr)]).ok()?;
    data["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Every active target's scrape address and health (`up`, `down`, `unknown`).
fn targets_up(api: &str) -> Vec<(String, String)> {
    api_get(api, "/api/v1/targets", &[("state", "active")])
        .ok()
        .and_then(|data| data["activeTargets"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["labels"]["instance"].as_str().unwrap_or("?").to_string(),
                t["health"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// Alerts pending or firing: name and state.
fn active_alerts(api: &str) -> Vec<(String, String)> {
    api_get(api, "/api/v1/alerts", &[])
        .ok()
        .and_then(|data| data["alerts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or("?").to_string(),
                a["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The cluster

/// Starts `cairn dev --fast-timers` in `dir` and returns once it printed its banner.
fn start_dev(dir: &Path) -> Dev {
    let base = free_ports(3 + DEV_NODES);
    let (s3, admin): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{base}").parse().unwrap(),
        format!("127.0.0.1:{}", base + 1).parse().unwrap(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--fast-timers", "--nodes", &DEV_NODES.to_string()])
        .args(["--k", "2", "--m", "1"])
        .args(["--s3-listen", &s3.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .arg("--data")
        .arg(dir)
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let process = Process(child);
    let (mut id, mut secret) = (String::new(), String::new());
    loop {
        let line = lines
            .next()
            .expect("cairn dev exited before it was ready (its stderr is above)")
            .unwrap();
        if let Some(v) = line.strip_prefix("access key id:") {
            id = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("secret access key:") {
            secret = v.trim().to_string();
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(
        !id.is_empty() && !secret.is_empty(),
        "cairn dev printed no key"
    );
    Dev {
        _process: process,
        s3,
        admin,
        key: (id, secret),
    }
}

/// Invites a node into organisation `ext-org-{i}` and starts it with a metrics listener;
/// returns once it printed its id and metrics address.
fn start_node(dev: &Dev, dir: &Path, i: usize) -> Node {
    let org = format!("ext-org-{i}");
    let token = run(Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["admin", "--endpoint", &format!("http://{}", dev.admin)])
        .args(["invite", "--org", &org])
        .env("CAIRN_ADMIN_TOKEN", TOKEN))
    .trim()
    .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("node")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--org", &org, "--capacity", "10GiB"])
        .args(["--heartbeat-interval-ms", "200", "--join", &token])
        .env("CAIRN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let process = Process(child);
    let (mut id, mut metrics) = (None, None);
    while id.is_none() || metrics.is_none() {
        let line = lines
            .next()
            .expect("cairn node exited before it was ready (its stderr is above)")
            .unwrap();
        if let Some(rest) = line.strip_prefix("node id: ") {
            id = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("metrics on http://") {
            metrics = Some(rest.trim_end_matches("/metrics").parse().unwrap());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Node {
        process,
        id: id.unwrap(),
        org,
        metrics: metrics.unwrap(),
    }
}

/// Node `id`'s lifecycle state as `cairn admin nodes` lists it.
fn node_state(dev: &Dev, id: &str) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["admin", "--endpoint", &format!("http://{}", dev.admin)])
        .args(["--json", "nodes"])
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .output()
        .ok()?;
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    nodes
        .iter()
        .find(|node| node["id"] == id)
        .and_then(|node| node["state"].as_str().map(str::to_string))
}

/// `aws --endpoint-url … ARGS` with the dev cluster's key and no configuration files.
fn aws(dev: &Dev, args: &[&str]) -> Command {
    let mut command = Command::new("aws");
    command
        .args(["--endpoint-url", &format!("http://{}", dev.s3)])
        .args(["--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &dev.key.0)
        .env("AWS_SECRET_ACCESS_KEY", &dev.key.1)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    command
}

/// Runs `command`; its stdout, or the test fails with its output.
fn run(mut command: impl std::borrow::BorrowMut<Command>) -> String {
    let command = command.borrow_mut();
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An anonymous GET with curl; the HTTP status.
fn curl_status(url: &str) -> u16 {
    let out = run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url]));
    out.trim().parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Polls `check` every 200 ms until it succeeds; fails the test with its last answer
/// after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(
                started.elapsed() < limit,
                "waited {limit:?} for {what}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_tcp_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `len` bytes that do not compress, the same for the same length.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
