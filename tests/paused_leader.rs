//! Nothing acknowledged is lost when the leader stalls mid-commit. Three `cairn coordinator`
//! members, six nodes in three organisations and a gateway, formed as the README says;
//! writers put fresh keys through the gateway while the Raft leader is paused (SIGSTOP) for
//! longer than the gateway's coordinator client waits for an answer, four times. A commit
//! that reached the other members before the pause is applied by the next leader while the
//! gateway resends it; the resend must be answered, not applied again. With garbage
//! collected one second after it is queued, a resend that queued the object's own shards
//! (as a replaced version) would delete an acknowledged object within the test.
//!
//! Then: every acknowledged key reads back byte-exact, nothing is waiting in the garbage
//! queue (nothing was overwritten or deleted), and every segment is at full margin.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::NodeProcess;
use support::cluster::GatewayProcess;
use support::coordinator::{
    Member, admin, coordinator_key, invite, join_members_with, node_entry, status, wait_nodes,
    wait_status,
};

/// Longer than the gateway's client waits before it gives a silent member up (a second,
/// then a two-second ping), so every request in flight at the pause is resent.
const PAUSE: Duration = Duration::from_secs(5);
const PAUSES: usize = 4;

const FLAGS: &[&str] = &[
    "--gc-interval-ms",
    "300",
    "--gc-delay-secs",
    "1",
    "--orphan-delay-secs",
    "12",
    "--repair-interval-ms",
    "300",
];

fn signal(member: &Member, signal: &str) {
    let pid = member.child.as_ref().expect("member running").id();
    let done = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(done.success(), "kill {signal} {pid}");
}

fn acknowledged(history: &Path) -> usize {
    std::fs::read_to_string(history)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("ok "))
        .count()
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn acknowledged_writes_survive_a_leader_paused_mid_commit() {
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, root.path())).collect();
    members[0].start_with(true, FLAGS);
    join_members_with(&mut members, FLAGS);
    wait_status(&members[0], "three voting members", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["voter"] == true))
    });
    let key = coordinator_key(&members[0]);
    let mut nodes = Vec::new();
    for (i, org) in ["a", "a", "b", "b", "c", "c"].iter().enumerate() {
        let token = invite(&members[0], org);
        let dir = root.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = format!(
            "join = \"{token}\"\norg = \"{org}\"\nsite = \"site-{org}\"\nheartbeat_interval_ms = 100\ncapacity = \"1GiB\""
        );
        nodes.push(NodeProcess::start(&dir, &key, &extra));
    }
    wait_nodes(
        &members[0],
        "all six nodes heartbeated",
        Duration::from_secs(60),
        |view| {
            nodes
                .iter()
                .all(|n| node_entry(view, &n.id).is_some_and(|e| e["last_heartbeat_ms"].is_u64()))
        },
    );
    let addrs: Vec<_> = members.iter().map(|m| m.quic).collect();
    let gateway = GatewayProcess::start(&root.path().join("gw"), &addrs, &key);
    admin(&members[0], &["gateway", "add", &gateway.key.to_string()]).unwrap();
    admin(
        &members[0],
        &[
            "bucket",
            "create",
            "cache",
            "--k",
            "4",
            "--m",
            "2",
            "--segment-size",
            "1MiB",
        ],
    )
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(
        &admin(&members[0], &["--json", "key", "create", "--name", "hydra"]).unwrap(),
    )
    .unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/writer.py");
    let history = root.path().join("history");
    let stop = root.path().join("stop");
    let python = |args: &[&str]| {
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .args(args)
            .env("CAIRN_S3_ENDPOINT", &gateway.endpoint)
            .env("CAIRN_S3_KEY", created["id"].as_str().unwrap())
            .env("CAIRN_S3_SECRET", created["secret"].as_str().unwrap());
        command
    };
    let mut writers = python(&[
        "write",
        "cache",
        "w",
        "6",
        stop.to_str().unwrap(),
        history.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();

    for round in 0..PAUSES {
        let before = acknowledged(&history);
        wait_for("writes acknowledged", Duration::from_secs(60), || {
            acknowledged(&history) >= before + 30
        });
        let leader = members
            .iter()
            .find_map(|m| status(m).and_then(|s| s["leader"].as_u64()))
            .expect("a leader");
        let paused = members.iter().position(|m| m.id == leader).unwrap();
        signal(&members[paused], "-STOP");
        std::thread::sleep(PAUSE);
        signal(&members[paused], "-CONT");
        println!(
            "round {round}: member {leader} paused for {PAUSE:?}; {} acknowledged so far",
            acknowledged(&history)
        );
    }
    let before = acknowledged(&history);
    wait_for(
        "writes after the last pause",
        Duration::from_secs(60),
        || acknowledged(&history) >= before + 30,
    );
    std::fs::write(&stop, b"").unwrap();
    assert!(writers.wait().unwrap().success(), "the writers failed");
    let written = std::fs::read_to_string(&history).unwrap();
    let failed = written.lines().filter(|l| l.starts_with("fail ")).count();
    println!(
        "{} acknowledged, {failed} failed (outcome unknown)",
        acknowledged(&history)
    );

    // Let collection act on whatever was queued: a survey that began after two garbage
    // delays and several collection rounds have passed since the last write.
    let ended_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut last = serde_json::Value::Null;
    wait_for(
        "a survey after collection, nothing queued, full margin",
        Duration::from_secs(90),
        || {
            let Some(leader) = members
                .iter()
                .find_map(|m| status(m).and_then(|s| s["leader"].as_u64()))
            else {
                return false;
            };
            let Some(s) = members.iter().find(|m| m.id == leader).and_then(status) else {
                return false;
            };
            last = s["durability"].clone();
            let d = &last;
            d["surveyed_ms"].as_u64() > Some(ended_ms + 3_000)
                && d["garbage_queue"] == 0
                && d["unreadable"] == 0
                && d["segments_by_margin"]
                    .as_object()
                    .is_some_and(|m| m.keys().all(|k| k == "2"))
        },
    );
    println!("durability after the faults: {last}");

    let out = python(&["check", "cache", history.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
