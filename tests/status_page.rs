//! The coordinator's status page and a node's own page, opened in a real browser.
//!
//! `cairn dev --fast-timers` runs a coordinator, three nodes (2+1) and a gateway; one more
//! `cairn node` process joins with `cairn admin invite --org example-university` and serves
//! its metrics and status page. The aws cli uploads a few objects, and the cluster moves
//! some shards onto the new node (it is the emptiest).
//!
//! Then, with headless Chromium (Debian's `chromium` package):
//! - the node's page and `cairn node status` show what the node's metrics hold (shards,
//!   capacity as `10.0 GiB`, a heartbeat taken, reputation "not reported by the
//!   coordinator");
//! - the coordinator's page, fetched without a token, shows the durability figures that
//!   `cairn admin --json status` reports (segments surveyed, unreadable, per margin, repair
//!   queue and jobs, stored bytes, garbage queue, modelled annual loss probability), the
//!   node's operator-chosen site escaped, and neither the admin token nor the access key's
//!   secret;
//! - the coordinator's `/metrics` has the figures the dashboards read: the annual loss
//!   probability, per-organisation capacity and stored bytes, heartbeat ages, Raft log size;
//! - the extra node is killed, and the page (polled through the browser) shows it lost.
//!
//! Screenshots of both pages are written to `$CARGO_TARGET_TMPDIR/status_page/` (those in
//! `docs/` were taken by this test). Without a `chromium` binary the test fails when `CI`
//! is set (`.ci/run` installs it) and is skipped, saying why, otherwise.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::ports::free_ports;

use cairn_proto::bytesize::ByteSize;

const TOKEN: &str = "status-page-test-admin-token-0123456789";
/// `cairn dev`'s own nodes, coded 2+1: the extra node makes four.
const DEV_NODES: u16 = 3;
/// The extra node's organisation, as its invitation binds it.
const ORG: &str = "example-university";
/// The extra node's site: chosen by the node, with characters HTML gives meaning to.
const SITE: &str = "rack<1>&2";

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

/// The extra `cairn node` process.
struct Node {
    process: Process,
    id: String,
    metrics: SocketAddr,
}

#[test]
fn status_pages_show_durability_and_a_lost_node_in_a_browser() {
    let Some(chromium) = chromium_binary() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let browser = Browser {
        binary: chromium,
        profile: root.path().join("chromium-profile"),
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page");
    std::fs::create_dir_all(&shots).unwrap();

    let dev = start_dev(&root.path().join("dev"));
    let node = start_node(&dev, &root.path().join("node"));
    let page_url = format!("http://{}/", dev.admin);
    let node_url = format!("http://{}/", node.metrics);

    // Objects of a few MiB: erasure-coded, so their segments show in the survey.
    let data = root.path().join("object.bin");
    std::fs::write(&data, pseudo_random(3 << 20)).unwrap();
    for i in 0..4 {
        run(aws(
            &dev,
            &[
                "s3",
                "cp",
                data.to_str().unwrap(),
                &format!("s3://cache/status/object-{i}.bin"),
            ],
        ));
    }

    // The new node is the emptiest, so it receives shards (rebalancing, or new placements).
    // Rebalancing waits for a quiet survey pass and moves through the gateway's repair
    // workers: seconds alone, minutes on a machine running other clusters beside it.
    let shards = wait_for(
        "the extra node to hold shards",
        Duration::from_secs(240),
        || {
            let metrics = get(&format!("http://{}/metrics", node.metrics))?;
            match metric(&metrics, "cairn_node_stored_shards") {
                Some(n) if n >= 1.0 => Ok(n as u64),
                other => {
                    let state = admin_json(&dev, "nodes").ok().and_then(|nodes| {
                        nodes
                            .as_array()?
                            .iter()
                            .find(|n| n["id"] == node.id.as_str())
                            .cloned()
                    });
                    Err(format!(
                        "cairn_node_stored_shards {other:?}; the node: {state:?}"
                    ))
                }
            }
        },
    );
    println!("the extra node holds {shards} shards");

    // The node operator's view: `cairn node status` and the node's page, from its metrics.
    let text = wait_for(
        "cairn node status to agree with the node's metrics",
        Duration::from_secs(30),
        || {
            let text = run(Command::new(env!("CARGO_BIN_EXE_cairn")).args([
                "node",
                "status",
                "--metrics",
                &format!("http://{}", node.metrics),
            ]));
            let metrics = get(&format!("http://{}/metrics", node.metrics))?;
            let held = metric(&metrics, "cairn_node_stored_shards").unwrap_or(-1.0) as i64;
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let expected = [
                format!("id {}", node.id),
                format!("organisation {ORG}"),
                format!("shards held {held}"),
                "capacity 10.0 GiB".to_string(),
                "reputation not reported by the coordinator".to_string(),
                "last answer ok: taken by".to_string(),
            ];
            match expected.iter().find(|line| !flat.contains(line.as_str())) {
                None => Ok(text),
                Some(line) => Err(format!("{line:?} missing from:\n{text}")),
            }
        },
    );
    println!("cairn node status:\n{text}");
    let node_dom = browser.dump_dom(&node_url);
    let node_text = page_text(&node_dom);
    for expected in [
        format!("id {}", node.id),
        format!("organisation {ORG}"),
        format!("site {SITE}"),
        "capacity 10.0 GiB".to_string(),
        "reputation not reported by the coordinator".to_string(),
    ] {
        assert!(
            node_text.contains(&expected),
            "the node's page lacks {expected:?}:\n{node_text}"
        );
    }
    browser.screenshot(&node_url, &shots.join("node-page.png"), 1000);

    // The coordinator's page, open to anyone, agrees with the admin API's JSON.
    let raw = get(&page_url).unwrap_or_else(|err| panic!("the status page without a token: {err}"));
    assert!(
        raw.contains("rack&lt;1&gt;&amp;2") && !raw.contains(SITE),
        "the node's site is not escaped on the status page"
    );
    for secret in [TOKEN, dev.key.1.as_str()] {
        assert!(!raw.contains(secret), "the status page shows a secret");
    }
    let checked = wait_for(
        "the status page to show the admin API's durability figures",
        Duration::from_secs(60),
        || {
            let status = admin_json(&dev, "status")?;
            let text = page_text(&browser.dump_dom(&page_url));
            durability_matches(&status, &text).map(|()| status)
        },
    );
    let durability = &checked["durability"];
    assert!(
        durability["segments"].as_u64().is_some_and(|n| n >= 4),
        "four uploads of 3 MiB make at least four segments: {durability}"
    );
    println!("durability on the page matches the admin API: {durability}");

    // The metrics the dashboards read.
    let metrics = get(&format!("http://{}/metrics", dev.admin)).unwrap();
    for series in [
        "cairn_coordinator_annual_loss_probability ".to_string(),
        format!("cairn_coordinator_org_capacity_bytes{{org=\"{ORG}\"}} 10737418240"),
        format!("cairn_coordinator_org_stored_bytes{{org=\"{ORG}\"}} "),
        format!(
            "cairn_coordinator_node_heartbeat_age_seconds{{node=\"{}\",org=\"{ORG}\"}} ",
            node.id
        ),
        "cairn_coordinator_raft_log_entries ".to_string(),
        "cairn_coordinator_snapshot_log_index ".to_string(),
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(&series)),
            "/metrics lacks {series:?}"
        );
    }
    let log_entries = metric(&metrics, "cairn_coordinator_raft_log_entries").unwrap_or(0.0);
    assert!(log_entries >= 1.0, "raft log entries: {log_entries}");

    // The extra node stops: the page, read through the browser, shows it lost.
    let Node { process, id, .. } = node;
    drop(process);
    let started = Instant::now();
    let row = wait_for(
        "the status page to show the stopped node lost",
        Duration::from_secs(60),
        || {
            let dom = browser.dump_dom(&page_url);
            let row = node_row(&dom, &id).ok_or_else(|| format!("no row for node {id}"))?;
            if row.contains("data-state=\"lost\"") {
                Ok(row)
            } else {
                Err(format!("its row: {row}"))
            }
        },
    );
    println!(
        "the page showed node {id} lost {:.1} s after it stopped",
        started.elapsed().as_secs_f64()
    );
    assert!(
        page_text(&row).contains(" lost "),
        "the lost node's row does not say so: {row}"
    );
    let state = admin_json(&dev, "nodes").ok().and_then(|nodes| {
        nodes.as_array().and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n["id"] == id.as_str())
                .and_then(|n| n["state"].as_str().map(str::to_string))
        })
    });
    assert_eq!(
        state.as_deref(),
        Some("lost"),
        "cairn admin nodes disagrees"
    );
    let metrics = get(&format!("http://{}/metrics", dev.admin)).unwrap();
    let age = metrics
        .lines()
        .find(|line| {
            line.starts_with(&format!(
                "cairn_coordinator_node_heartbeat_age_seconds{{node=\"{id}\""
            ))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok());
    assert!(
        age.is_some_and(|age| age >= 5.0),
        "a lost node's heartbeat age is past lost_after (5 s): {age:?}"
    );
    browser.screenshot(&page_url, &shots.join("status-page.png"), 1500);
}

/// Compares the page's text with `GET /v1/status`: every durability figure, as the page
/// words it. `Err` names the first that differs (the figures move while a survey runs).
fn durability_matches(status: &serde_json::Value, text: &str) -> Result<(), String> {
    let d = &status["durability"];
    if d.is_null() {
        return Err("no survey yet".into());
    }
    let number = |field: &str| d[field].as_u64().ok_or(format!("no {field} in {d}"));
    let mut expected = vec![
        format!("Segments surveyed {}", number("segments")?),
        format!("Unreadable segments {}", number("unreadable")?),
        format!("Segments waiting for repair {}", number("repair_queue")?),
        format!("Repairs in progress {}", number("repairs_in_progress")?),
        format!("Garbage queue (shards) {}", number("garbage_queue")?),
        format!("Stored bytes {}", ByteSize(number("stored_bytes")?)),
        format!(
            "Member {} · term {}",
            status["member"],
            status["term"].as_u64().unwrap_or(0)
        ),
    ];
    for (margin, count) in d["segments_by_margin"].as_object().into_iter().flatten() {
        expected.push(format!("Segments at margin {margin} {count}"));
    }
    if let Some(missing) = expected.iter().find(|e| !text.contains(e.as_str())) {
        return Err(format!("{missing:?} not on the page:\n{text}"));
    }
    let modelled = d["loss_model"]["annual_loss_probability"]
        .as_f64()
        .ok_or("no loss model")?;
    let shown: f64 = text
        .split("Modelled annual loss probability ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .ok_or("no annual loss probability on the page")?;
    // Three significant digits on the page; the model moves a little with time.
    let close = if modelled == 0.0 {
        shown == 0.0
    } else {
        ((shown - modelled) / modelled).abs() < 0.02
    };
    if !close {
        return Err(format!(
            "annual loss probability {shown} on the page, {modelled} from the API"
        ));
    }
    Ok(())
}

/// The `<tr>` of node `id` in a page's DOM.
fn node_row(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("<tr id=\"node-{id}\""))?;
    let end = dom[start..].find("</tr>")? + start;
    Some(dom[start..end].to_string())
}

/// What a reader sees of an HTML document: its body's text, tags as spaces, entities
/// decoded, whitespace collapsed.
fn page_text(html: &str) -> String {
    let body = html.split("<body").nth(1).unwrap_or(html);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                text.push(' ');
            }
            (true, '>') => in_tag = false,
            (false, c) => text.push(c),
            (true, _) => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    format!(
        " {} ",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

// ---------------------------------------------------------------------------------------
// Chromium

/// Headless Chromium with a profile of its own.
struct Browser {
    binary: PathBuf,
    profile: PathBuf,
}

impl Browser {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .stdin(Stdio::null());
        command
    }

    /// The DOM of `url` after the page loaded, as the browser serialises it.
    fn dump_dom(&self, url: &str) -> String {
        let dom = run(self.command().args(["--dump-dom", url]));
        assert!(
            dom.contains("</html>"),
            "chromium dumped no page for {url}: {dom}"
        );
        dom
    }

    /// A screenshot of `url`, 1280 pixels wide and `height` high, in `file` (PNG).
    fn screenshot(&self, url: &str, file: &Path, height: u32) {
        let _ = std::fs::remove_file(file);
        run(self
            .command()
            .arg(format!("--screenshot={}", file.display()))
            .arg(format!("--window-size=1280,{height}"))
            .arg(url));
        let png = std::fs::read(file)
            .unwrap_or_else(|err| panic!("no screenshot at {}: {err}", file.display()));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{} is not a screenshot ({} bytes)",
            file.display(),
            png.len()
        );
        println!("screenshot of {url}: {}", file.display());
    }
}

/// The `chromium` binary, or `None` (after saying why) where it is missing and CI is not
/// set.
fn chromium_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("chromium"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let why = "no `chromium` binary on PATH or at /usr/bin/chromium \
                   (Debian: apt-get install chromium; .ci/run installs it)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping the status page test: {why}");
    }
    found
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
    let (mut id, mut secret, mut pages) = (String::new(), String::new(), String::new());
    loop {
        let line = lines
            .next()
            .expect("cairn dev exited before it was ready (its stderr is above)")
            .unwrap();
        if let Some(v) = line.strip_prefix("access key id:") {
            id = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("secret access key:") {
            secret = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("node pages:") {
            pages = v.trim().to_string();
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(
        !id.is_empty() && !secret.is_empty(),
        "cairn dev printed no key"
    );
    // Each in-process node serves its own page too.
    let pages: Vec<&str> = pages.split_whitespace().collect();
    assert_eq!(
        pages.len(),
        usize::from(DEV_NODES),
        "cairn dev should list one page per node: {pages:?}"
    );
    for page in pages {
        let html = get(page).unwrap_or_else(|err| panic!("a dev node's page: {err}"));
        assert!(html.contains("<h1>Cairn node "), "{page}: {html}");
    }
    Dev {
        _process: process,
        s3,
        admin,
        key: (id, secret),
    }
}

/// Invites a node into [`ORG`] and starts it with a metrics listener; returns once it
/// printed its id and metrics address.
fn start_node(dev: &Dev, dir: &Path) -> Node {
    let token = run(Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["admin", "--endpoint", &format!("http://{}", dev.admin)])
        .args(["invite", "--org", ORG])
        .env("CAIRN_ADMIN_TOKEN", TOKEN))
    .trim()
    .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("node")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--org", ORG, "--site", SITE, "--capacity", "10GiB"])
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
        metrics: metrics.unwrap(),
    }
}

/// `cairn admin --json WHAT`, parsed.
fn admin_json(dev: &Dev, what: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["admin", "--endpoint", &format!("http://{}", dev.admin)])
        .args(["--json", what])
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .output()
        .map_err(|err| err.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|err| err.to_string())
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

/// GET `url` without credentials; the body, or why not.
fn get(url: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|err| format!("GET {url}: {err}"))?;
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

/// The value of the first sample of `name` (without labels) in a metrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
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
