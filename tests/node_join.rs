//! A node joins a real coordinator with `cairn admin invite` → `cairn node --join`, shows up
//! in `cairn admin nodes` with heartbeats; the same invitation cannot admit a second node,
//! and a node without one is never registered.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "join-test-admin-token-0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cairn` with `args`; waits for a stdout line starting with `ready`.
fn start(args: &[&str], ready: &str) -> (Killed, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .env("CAIRN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("process exited before it was ready")
            .unwrap();
        let done = line.starts_with(ready);
        seen.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), seen)
}

fn admin(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["admin", "--endpoint", endpoint])
        .args(args)
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_args<'a>(dir: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut args = vec![
        "node".to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--heartbeat-interval-ms".into(),
        "100".into(),
        "--org".into(),
        "uni-a".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn invited_nodes_join_and_others_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let coordinator_dir = root.path().join("coordinator");
    let (_coordinator, lines) = start(
        &[
            "coordinator",
            "--init",
            "--data-dir",
            coordinator_dir.to_str().unwrap(),
            "--listen",
            &quic.to_string(),
            "--admin-listen",
            &admin_addr.to_string(),
        ],
        "admin API on",
    );
    let coordinator_key = lines
        .iter()
        .find_map(|l| l.strip_prefix("coordinator key: "))
        .unwrap()
        .to_string();
    let endpoint = format!("http://{admin_addr}");

    // Invited: joins, and its heartbeats reach the leader.
    let token = admin(&endpoint, &["invite", "--org", "uni-a"])
        .trim()
        .to_string();
    let first = root.path().join("n1");
    let args = node_args(&first, &["--join", &token]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_node, lines) = start(&args, "listening on");
    let id = lines
        .iter()
        .find_map(|l| l.strip_prefix("node id: "))
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes: Vec<serde_json::Value> =
            serde_json::from_str(&admin(&endpoint, &["--json", "nodes"])).unwrap();
        let me = nodes.iter().find(|n| n["id"] == id.as_str());
        if let Some(me) = me
            && me["last_heartbeat_ms"].is_u64()
        {
            assert_eq!(me["state"], "vetting");
            assert_eq!(me["org"], "uni-a");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "joined node never showed heartbeats: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same invitation again, from another node: refused, and the node does not start.
    let second = root.path().join("n2");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(node_args(&second, &["--join", &token]))
        .env("CAIRN_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invitation refused"), "{stderr}");

    // No invitation at all: the node runs (it may be invited later) but is never
    // registered, so its heartbeats are refused and it is not listed.
    let third = root.path().join("n3");
    let args = node_args(
        &third,
        &[
            "--coordinator",
            &quic.to_string(),
            "--coordinator-key",
            &coordinator_key,
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_stranger, lines) = start(&args, "listening on");
    let stranger = lines
        .iter()
        .find_map(|l| l.strip_prefix("node id: "))
        .unwrap()
        .to_string();
    let nodes = admin(&endpoint, &["--json", "nodes"]);
    assert!(!nodes.contains(&stranger), "{nodes}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&nodes).unwrap();
    assert_eq!(listed.len(), 1);

    // A garbled token is a plain error at start.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(node_args(
            &root.path().join("n4"),
            &["--join", "cairn-join-1-nonsense"],
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Cairn join token"));
}
