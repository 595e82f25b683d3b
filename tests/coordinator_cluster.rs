//! Three `cairn coordinator` processes formed with the documented commands: commits
//! acknowledged before a `kill -9` of the leader survive it, a new leader serves within
//! seconds, a member that was down through a compaction catches up, and a full restart
//! gives identical state. Wrong tokens and strangers are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token-0123456789";

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    id: u64,
    dir: PathBuf,
    quic: SocketAddr,
    admin: SocketAddr,
    child: Option<Child>,
}

impl Member {
    fn new(id: u64, root: &Path) -> Member {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = tcp.local_addr().unwrap();
        drop(tcp);
        Member {
            id,
            dir: root.join(format!("m{id}")),
            quic: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            admin,
            child: None,
        }
    }

    fn start(&mut self, init: bool) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .arg("coordinator")
            .args(["--id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &self.quic.to_string()])
            .args(["--admin-listen", &self.admin.to_string()])
            .args([
                "--raft-heartbeat-ms",
                "100",
                "--election-timeout-ms",
                "600",
                "--snapshot-every",
                "20",
            ])
            .env("CAIRN_ADMIN_TOKEN", TOKEN)
            .env("CAIRN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if init {
            command.arg("--init");
        }
        let mut child = command.spawn().unwrap();
        // Ready once it prints its admin address.
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("coordinator exited early").unwrap();
            if line.starts_with("admin API on") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `cairn admin` against `member`; returns stdout, or stderr on failure.
fn admin(member: &Member, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("admin")
        .args(["--endpoint", &member.url()])
        .args(args)
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn status(member: &Member) -> Option<serde_json::Value> {
    admin(member, &["--json", "status"])
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// Waits until `check` holds for `member`'s status, polling its admin API.
fn wait_status(
    member: &Member,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = status(member)
            && check(&status)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "member {} never reached: {what}",
            member.id
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_bucket(agent: &ureq::Agent, member: &Member, name: &str) -> Result<(), String> {
    let response = agent
        .post(format!("{}/v1/buckets", member.url()))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send_json(serde_json::json!({ "name": name }))
        .map_err(|e| e.to_string())?;
    if response.status().as_u16() == 201 {
        Ok(())
    } else {
        Err(response.status().to_string())
    }
}

#[test]
fn three_members_survive_leader_kill_compaction_and_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, root.path())).collect();

    // Form the group as the README says: init the first, copy its key, add the others.
    members[0].start(true);
    for i in 1..3 {
        std::fs::create_dir_all(&members[i].dir).unwrap();
        std::fs::copy(
            members[0].dir.join("coordinator.key"),
            members[i].dir.join("coordinator.key"),
        )
        .unwrap();
        members[i].start(false);
        let (id, quic, adm) = (
            members[i].id.to_string(),
            members[i].quic.to_string(),
            members[i].admin.to_string(),
        );
        admin(
            &members[0],
            &[
                "members", "add", "--id", &id, "--addr", &quic, "--admin", &adm,
            ],
        )
        .unwrap();
    }
    let formed = wait_status(&members[2], "three voters", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["voter"] == true))
    });
    let leader = formed["leader"].as_u64().unwrap();

    // A stream of commits, round-robin over members (followers redirect), while the leader
    // is killed part-way; every bucket whose creation was acknowledged must survive.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut acknowledged = Vec::new();
    let mut killed_at = None;
    for n in 0..60 {
        if n == 25 {
            members[(leader - 1) as usize].kill9();
            killed_at = Some(Instant::now());
        }
        let name = format!("b-{n:03}");
        // Try members until one acknowledges (a dead one, or one between leaders, fails).
        let deadline = Instant::now() + Duration::from_secs(20);
        'retry: loop {
            for member in members.iter().filter(|m| m.child.is_some()) {
                let target = status(member)
                    .and_then(|s| s["leader"].as_u64())
                    .and_then(|l| members.iter().find(|m| m.id == l && m.child.is_some()));
                if let Some(target) = target
                    && create_bucket(&agent, target, &name).is_ok()
                {
                    acknowledged.push(name.clone());
                    break 'retry;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no member accepted {name} for 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let failover = killed_at.unwrap().elapsed();
    assert_eq!(acknowledged.len(), 60);

    let survivors: Vec<&Member> = members.iter().filter(|m| m.child.is_some()).collect();
    let new_leader = wait_status(survivors[0], "a new leader", |s| {
        s["leader"].as_u64().is_some_and(|l| l != leader)
    })["leader"]
        .as_u64()
        .unwrap();
    let on_leader = admin(&members[(new_leader - 1) as usize], &["--json", "buckets"]).unwrap();
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&on_leader)
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names, acknowledged,
        "acknowledged buckets lost after the leader was killed"
    );
    println!("leader {leader} killed; 35 more commits acknowledged within {failover:?}");

    // The killed member was down through at least one compaction (snapshot every 20
    // entries); it comes back and catches up to the same state.
    let old = (leader - 1) as usize;
    members[old].start(false);
    let target = status(&members[(new_leader - 1) as usize]).unwrap()["last_applied"]
        .as_u64()
        .unwrap();
    for member in &members {
        wait_status(member, "caught up", |s| {
            s["last_applied"].as_u64() >= Some(target) && s["buckets"] == 60
        });
    }

    // All three stop at once and start again on their files: same state everywhere.
    for member in members.iter_mut() {
        member.kill9();
    }
    for member in members.iter_mut() {
        member.start(false);
    }
    for member in &members {
        let s = wait_status(member, "back with a leader", |s| {
            s["leader"].is_u64() && s["buckets"] == 60
        });
        assert_eq!(s["members"].as_array().unwrap().len(), 3);
    }

    // Refusals: a wrong token, and no token at all.
    let wrong = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "admin",
            "--endpoint",
            &members[0].url(),
            "--token",
            "not-the-token-at-all",
            "buckets",
        ])
        .env_remove("CAIRN_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong admin token"));
    let bare = agent
        .get(format!("{}/v1/buckets", members[0].url()))
        .call()
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let health = agent
        .get(format!("{}/health", members[0].url()))
        .call()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
