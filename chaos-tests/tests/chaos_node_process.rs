//! The `cairn-chaos-node` binary as other tests use it: a real process that joins a real
//! coordinator with an invitation, heartbeats through its own advertised (relay) address,
//! signs receipts, and lies as told; its command line refuses what makes no sense.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_coordinator::config::CoordinatorConfig;
use cairn_erasure::ShardRoot;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::order::Action;
use cairn_proto::wire::ErrorCode;
use support::{Signer, bytes, refused, shard_id};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-chaos-node");

/// A chaos node process, killed when dropped.
struct ChaosNode {
    child: Child,
    id: NodeId,
    addr: SocketAddr,
    misbehaviour: String,
}

impl Drop for ChaosNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChaosNode {
    /// Starts the binary with `args`; returns once it printed its id and address (it
    /// prints them once serving, as `cairn node` does).
    fn start(args: &[&str]) -> ChaosNode {
        let mut child = Command::new(BIN)
            .args(args)
            .env("CAIRN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cairn-chaos-node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut id, mut addr, mut misbehaviour) = (None, None, None);
        while id.is_none() || addr.is_none() {
            let line = lines
                .next()
                .expect("chaos node exited before it was ready")
                .unwrap();
            if let Some(rest) = line.strip_prefix("misbehaviour: ") {
                misbehaviour = Some(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("node id: ") {
                id = Some(rest.parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("listening on ") {
                addr = Some(rest.parse().unwrap());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        ChaosNode {
            child,
            id: id.unwrap(),
            addr: addr.unwrap(),
            misbehaviour: misbehaviour.expect("the misbehaviour is announced first"),
        }
    }
}

/// The coordinator's `/v1/nodes` entry for `id`, once it has a heartbeat.
fn heartbeat_entry(admin: SocketAddr, token: &str, id: &NodeId) -> serde_json::Value {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes: Option<Vec<serde_json::Value>> = agent
            .get(&format!("http://{admin}/v1/nodes"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|text| serde_json::from_str(&text).ok());
        let id = id.to_string();
        if let Some(entry) = nodes
            .into_iter()
            .flatten()
            .find(|n| n["id"] == id.as_str() && n["last_heartbeat_ms"].is_u64())
        {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat from the chaos node"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_heartbeats_behind_its_link_and_drops_what_it_acknowledges() {
    let root = tempfile::tempdir().unwrap();
    let config = CoordinatorConfig {
        data_dir: root.path().join("coordinator"),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        raft_heartbeat_ms: 100,
        election_timeout_ms: 600,
        ..CoordinatorConfig::default()
    };
    let coordinator = cairn_coordinator::daemon::start(config, true, None)
        .await
        .expect("coordinator starts");
    coordinator
        .raft
        .wait(Some(Duration::from_secs(30)))
        .current_leader(coordinator.id, "this member leads")
        .await
        .expect("the coordinator leads");
    let token = coordinator.invite("chaos").await.unwrap();
    let admin_token = coordinator.new_token.clone().expect("a fresh admin token");

    let dir = root.path().join("chaos");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nheartbeat_interval_ms = 100\ncapacity = \"1GiB\"\norg = \"chaos\"\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let node = tokio::task::spawn_blocking(move || {
        ChaosNode::start(&[
            "--config",
            &config,
            "--join",
            &token,
            "--drop-after-receipt",
            "--link-delay-ms",
            "20",
            "--link-drop-percent",
            "5",
        ])
    })
    .await
    .unwrap();
    assert!(
        node.misbehaviour.starts_with("drop-after-receipt"),
        "{}",
        node.misbehaviour
    );

    // Registered and heartbeating under the relay's address, the one clients dial.
    let (admin, id) = (coordinator.admin_addr, node.id);
    let entry = tokio::task::spawn_blocking(move || heartbeat_entry(admin, &admin_token, &id))
        .await
        .unwrap();
    assert_eq!(entry["addr"], node.addr.to_string().as_str());
    assert_eq!(entry["org"], "chaos");

    // Orders from the real coordinator key, through the lossy relay.
    let key = SecretKey::load(&root.path().join("coordinator").join("coordinator.key")).unwrap();
    let signer = Signer::with_coordinator(key);
    let client = signer.client(node.addr, node.id);
    let (data, shard) = (bytes(300_000, 1), shard_id(1));
    let receipt = client
        .put_shard(&signer.put(node.id, shard, &data), &data)
        .await
        .expect("the chaos node acknowledges");
    assert_eq!(receipt.verify().unwrap().root, ShardRoot::of(&data));
    let get = client
        .get_shard(&signer.get(node.id, shard, &data), None)
        .await;
    assert_eq!(refused(get), ErrorCode::NotFound);
    let inventory = client
        .inventory(&signer.order(node.id, Action::Inventory))
        .await
        .unwrap();
    assert_eq!(inventory, vec![shard]);

    drop(node);
    coordinator.shutdown().await;
}

#[test]
fn the_command_line_explains_itself_and_refuses_nonsense() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--config",
        "--join",
        "--honest",
        "--drop-after-receipt",
        "--drop-share",
        "--flip-bytes",
        "--late-audits",
        "--refetch-audits",
        "--public-object",
        "--k",
        "--m",
        "--segment-size",
        "--link-delay-ms",
        "--link-drop-percent",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
    let config = config.display().to_string();
    for args in [
        // No misbehaviour chosen.
        vec!["--config", &config],
        // Two at once.
        vec!["--config", &config, "--flip-bytes", "--honest"],
        // Refetching without the code to rebuild with.
        vec![
            "--config",
            &config,
            "--refetch-audits",
            "--public-object",
            "http://x/y",
        ],
        // Refetch options without refetching.
        vec!["--config", &config, "--honest", "--k", "4"],
        // A share that is not one.
        vec!["--config", &config, "--drop-share", "1.5"],
        vec!["--config", &config, "--drop-share", "a fifth"],
        // An impossible link.
        vec![
            "--config",
            &config,
            "--honest",
            "--link-drop-percent",
            "150",
        ],
        // A config without the coordinator's key.
        vec!["--config", &config, "--honest"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!out.stderr.is_empty(), "{args:?} failed without saying why");
    }
}
