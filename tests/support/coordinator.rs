//! Running `cairn coordinator` processes and driving them with `cairn admin`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A loopback port below the ephemeral range: members are restarted on their ports.
pub fn free_port() -> u16 {
    super::ports::free_ports(1)
}

pub struct Member {
    pub id: u64,
    pub dir: PathBuf,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    pub child: Option<Child>,
}

impl Member {
    pub fn new(id: u64, root: &Path) -> Member {
        let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Member {
            id,
            dir: root.join(format!("m{id}")),
            quic: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            admin,
            child: None,
        }
    }

    pub fn start(&mut self, init: bool) {
        self.start_with(init, &[]);
    }

    /// Starts the member with extra flags.
    pub fn start_with(&mut self, init: bool, extra: &[&str]) {
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
        command.args(extra);
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

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `cairn admin` against `member`; returns stdout, or stderr on failure.
pub fn admin(member: &Member, args: &[&str]) -> Result<String, String> {
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

pub fn status(member: &Member) -> Option<serde_json::Value> {
    admin(member, &["--json", "status"])
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// Waits until `check` holds for `member`'s status, polling its admin API.
pub fn wait_status(
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

/// Starts `members[1..]` with a copy of the first member's coordinator key and adds each
/// to the group through the first member, as the README describes.
pub fn join_members(members: &mut [Member]) {
    let (first, rest) = members.split_first_mut().expect("at least one member");
    for member in rest {
        std::fs::create_dir_all(&member.dir).unwrap();
        std::fs::copy(
            first.dir.join("coordinator.key"),
            member.dir.join("coordinator.key"),
        )
        .unwrap();
        member.start(false);
        let (id, quic, adm) = (
            member.id.to_string(),
            member.quic.to_string(),
            member.admin.to_string(),
        );
        let key = member_key(member).to_string();
        admin(
            first,
            &[
                "members", "add", "--id", &id, "--addr", &quic, "--admin", &adm, "--key", &key,
            ],
        )
        .unwrap();
    }
}

/// Starts `members[1..]` like [`join_members`], each with `extra` flags.
pub fn join_members_with(members: &mut [Member], extra: &[&str]) {
    let (first, rest) = members.split_first_mut().expect("at least one member");
    for member in rest {
        std::fs::create_dir_all(&member.dir).unwrap();
        std::fs::copy(
            first.dir.join("coordinator.key"),
            member.dir.join("coordinator.key"),
        )
        .unwrap();
        member.start_with(false, extra);
        let (id, quic, adm) = (
            member.id.to_string(),
            member.quic.to_string(),
            member.admin.to_string(),
        );
        let key = member_key(member).to_string();
        admin(
            first,
            &[
                "members", "add", "--id", &id, "--addr", &quic, "--admin", &adm, "--key", &key,
            ],
        )
        .unwrap();
    }
}

/// A member's own key (what `members add --key` registers), from its data dir.
pub fn member_key(member: &Member) -> cairn_proto::identity::PublicKey {
    cairn_proto::identity::SecretKey::load(&member.dir.join("member.key"))
        .unwrap()
        .public()
}

/// The group's coordinator key, as nodes pin it.
pub fn coordinator_key(member: &Member) -> cairn_proto::identity::PublicKey {
    cairn_proto::identity::SecretKey::load(&member.dir.join("coordinator.key"))
        .unwrap()
        .public()
}

/// A one-time join token from `cairn admin invite --org ORG`.
pub fn invite(member: &Member, org: &str) -> String {
    admin(member, &["invite", "--org", org])
        .unwrap()
        .trim()
        .to_string()
}

/// `cairn admin --json nodes` (the CLI retries a follower's answer at the leader).
pub fn nodes(member: &Member) -> Option<Vec<serde_json::Value>> {
    admin(member, &["--json", "nodes"])
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// The listed entry of node `id`.
pub fn node_entry<'a>(
    nodes: &'a [serde_json::Value],
    id: &cairn_proto::identity::NodeId,
) -> Option<&'a serde_json::Value> {
    let id = id.to_string();
    nodes.iter().find(|n| n["id"] == id.as_str())
}

/// The listed lifecycle state of node `id` (`vetting`, `suspect`, …).
pub fn node_state(
    nodes: &[serde_json::Value],
    id: &cairn_proto::identity::NodeId,
) -> Option<String> {
    node_entry(nodes, id).and_then(|n| n["state"].as_str().map(str::to_string))
}

/// Polls `member`'s node list until `check` holds, for at most `limit`. `check` may panic
/// to fail the test on a state that must never be seen on the way.
pub fn wait_nodes(
    member: &Member,
    what: &str,
    limit: Duration,
    mut check: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(nodes) = nodes(member)
            && check(&nodes)
        {
            return nodes;
        }
        assert!(Instant::now() < deadline, "never reached: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
